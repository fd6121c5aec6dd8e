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


def test_busy_cores_are_measured_now_not_from_the_load_average(monkeypatch):
    """A process spinning on one core counts as one busy core at once (the 1-minute load average
    would take a minute to see it, and a minute to forget it)."""
    import os
    import subprocess
    import sys

    from affseg.cli import busy_cores

    monkeypatch.delenv("AFFSEG_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    quiet = busy_cores(0.3)
    if quiet is None:
        pytest.skip("no /proc/stat here (not Linux): cpu_threads uses the load average")
    assert 0 <= quiet <= cores
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 20\nwhile time.time() < end: pass"])
    try:
        import time

        time.sleep(1.0)  # the interpreter has started and spins
        busy = busy_cores(0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy >= min(cores - 0.1, quiet + 0.5), (quiet, busy)  # (a busy machine has less room to show it)
    assert cpu_threads(cores, busy) == max(1, min(cores, int(cores - busy + 0.5)))
