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
    """A process spinning on one CPU counts as that CPU busy at once (the 1-minute load average
    would take a minute to see it, and a minute to forget it). Measured on that CPU alone, so
    other work on the machine does not move the figure."""
    import os
    import subprocess
    import sys
    import time

    from affseg.cli import busy_cores

    if busy_cores(0.05) is None:
        pytest.skip("no /proc/stat here (not Linux): cpu_threads uses the load average")
    cpu = min(os.sched_getaffinity(0))
    spin = f"import os, time\nos.sched_setaffinity(0, {{{cpu}}})\nend = time.time() + 20\nwhile time.time() < end: pass"
    spinner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(1.0)  # the interpreter has started and spins
        busy = busy_cores(0.5, cpus=[cpu])
    finally:
        spinner.kill()
        spinner.wait()
    assert 0.8 <= busy <= 1.0, busy


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000\n", 1), ("100000 100000\n", 1),
    ("garbage\n", None), (None, None),
])
def test_a_cgroup_cpu_quota_caps_the_cores(cpu_max, expected, monkeypatch, tmp_path):
    """A container's CPU quota (cgroup v2 ``cpu.max``) caps the cores, rounded up; "max", an
    unreadable or absent file leave the CPU affinity."""
    from affseg import cli

    monkeypatch.setattr(cli, "_affinity", lambda: set(range(4)))
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    monkeypatch.setattr(cli, "_CPU_MAX", path)
    assert cli._usable_cores() == (4 if expected is None else expected)


def test_without_proc_stat_the_load_average_is_used(monkeypatch, tmp_path):
    """busy_cores is None where /proc/stat cannot be read; cpu_threads then subtracts the
    1-minute load average."""
    from affseg import cli

    monkeypatch.delenv("AFFSEG_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cli, "_PROC_STAT", tmp_path / "absent")
    assert cli.busy_cores(window=0.01) is None
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (2.6, 0.0, 0.0))
    assert cpu_threads(4) == 1
    monkeypatch.setattr(cli.os, "getloadavg", lambda: (0.4, 0.0, 0.0))
    assert cpu_threads(4) == 4
