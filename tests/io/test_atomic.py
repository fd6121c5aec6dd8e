"""Atomic outputs, stale temporaries, the one-writer lock, writability checks."""
import os
import signal
import subprocess
import sys

import pytest

from affseg.errors import OutputExists, OutputNotWritable
from affseg.io import atomic_path, check_output_writable, output_lock, write_json
from affseg.io.atomic import is_stale_temporary, remove_stale_temporaries, temporary_name


def test_atomic_path_replaces_in_one_step_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "scores.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the rename
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["scores.json"]


def test_write_json_refuses_to_overwrite(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    with pytest.raises(OutputExists, match="pass overwrite=True to replace it"):
        write_json(tmp_path / "a.json", {"x": 2})
    write_json(tmp_path / "a.json", {"x": 2}, overwrite=True)
    assert '"x": 2' in (tmp_path / "a.json").read_text()


def test_temporaries_of_running_processes_are_kept(tmp_path):
    mine = temporary_name("a.json")
    assert is_stale_temporary(".a.json.tmp-1234abcd")  # an older affseg: no process id
    assert not is_stale_temporary(mine) and not is_stale_temporary("a.json")
    assert not is_stale_temporary(".b.json.tmp-1234abcd", "a.json")
    (tmp_path / mine).write_text("")
    (tmp_path / ".a.json.tmp-1234abcd").write_text("")
    (tmp_path / ".a.json.tmp-999999999-1234abcd").mkdir()  # no such process
    removed = remove_stale_temporaries(tmp_path, "a.json")
    assert sorted(p.name for p in removed) == [".a.json.tmp-1234abcd", ".a.json.tmp-999999999-1234abcd"]
    assert [p.name for p in tmp_path.iterdir()] == [mine]


def test_one_writer_per_output_container(tmp_path):
    container = tmp_path / "out.zarr"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from affseg.io import output_lock\n"
         f"with output_lock({str(container)!r}):\n    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputExists, match="another affseg process"), output_lock(container):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel released the dead holder's lock; a normal exit removes the lock file
    with output_lock(container) as lock:
        assert lock.exists()
    assert not lock.exists()


def test_unwritable_outputs_are_named(tmp_path, read_only_dir):
    with pytest.raises(OutputNotWritable, match="read-only"):
        check_output_writable(read_only_dir / "new" / "out.zarr")
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputNotWritable, match="is a file"):
        check_output_writable(tmp_path / "file" / "out.zarr")
    assert check_output_writable(tmp_path / "a" / "b.zarr") == tmp_path / "a" / "b.zarr"
    assert not (tmp_path / "a").exists()  # checked, not created


def test_a_temporary_with_an_impossible_pid_is_stale_not_a_crash(tmp_path):
    name = ".a.json.tmp-99999999999999999999-abcdef12"
    (tmp_path / name).write_text("")
    assert is_stale_temporary(name)
    write_json(tmp_path / "a.json", {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_probe_files_that_a_kill_left_are_removed_by_the_next_check(tmp_path):
    # a process killed between check_output_writable's probe and its removal leaves the probe
    # file; the next check in that folder removes it, but never a live process's probe
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    left = tmp_path / f".affseg-probe-{int(dead.stdout)}-abcd1234"
    old_format = tmp_path / ".affseg-probe-xyz12345"
    live = tmp_path / f".affseg-probe-{os.getpid()}-live0000"
    for path in (left, old_format, live):
        path.touch()
    check_output_writable(tmp_path / "out.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]
