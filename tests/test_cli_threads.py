"""The CPU commands use the idle cores: more torch threads than idle cores spin against other work."""
from __future__ import annotations

import pytest

from affseg.cli import cpu_threads


@pytest.mark.parametrize(("cores", "load", "expected"), [
    (2, 0.1, 2), (2, 0.6, 1), (2, 1.2, 1), (2, 5.0, 1), (16, 3.2, 13), (1, 0.0, 1),
])
def test_threads_are_the_idle_cores_and_at_least_one(cores, load, expected, monkeypatch):
    monkeypatch.delenv("AFFSEG_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_threads(cores, load) == expected


def test_the_user_s_thread_count_wins(monkeypatch):
    monkeypatch.delenv("AFFSEG_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads(2, 5.0) == 3
    monkeypatch.setenv("AFFSEG_THREADS", "1")
    assert cpu_threads(16, 0.0) == 1
    monkeypatch.setenv("AFFSEG_THREADS", "zero")  # not a count: ignored
    assert cpu_threads(2, 0.0) == 3


def test_the_machine_s_own_figures_give_a_valid_count(monkeypatch):
    monkeypatch.delenv("AFFSEG_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    import os

    assert 1 <= cpu_threads() <= len(os.sched_getaffinity(0))
