"""Ctrl-C (SIGINT): one line on what was kept, exit code 130, nothing from zarr's event loop, and a
state that the same command resumes from."""
import argparse
import ctypes
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from affseg.cli import main, run_command
from affseg.io import read_volume

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
NOISE = ("Traceback", "Task was destroyed", "Exception ignored", "KeyboardInterrupt")


def _affseg(*args) -> list[str]:
    return [sys.executable, "-m", "affseg.cli", *map(str, args)]


def _wait_for(condition, process, what: str, timeout: float = 300) -> None:
    """Poll until ``condition()``; fail if the process ended first."""
    started = time.monotonic()
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the command ended (exit {process.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() - started > timeout:
            process.kill()
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.005)


def _interrupt(process) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    return out, err


def _one_line(err: str) -> str:
    """stderr of an interrupted command: progress bars aside, exactly one line, the last."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert not [line for line in lines if any(word in line for word in NOISE)], err
    said = [line for line in lines if "interrupted" in line]
    assert len(said) == 1 and said[0] == lines[-1], err
    assert said[0].startswith("interrupted; ")
    return said[0]


# ------------------------------------------------------------------ in this process


def _command(func) -> argparse.Namespace:
    return argparse.Namespace(func=func, command="test", debug=False)


def _sleep_until_interrupted(seconds: float = 60) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return 0  # reached only if no interrupt came


def test_an_interrupt_swallowed_in_a_ctypes_callback_is_raised_again(capsys):
    """numba's compiler calls back into Python through ctypes; an interrupt landing there is only
    printed as 'Exception ignored' and the command would go on. The CLI raises it again."""
    def callback():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.5)  # the KeyboardInterrupt is raised here, inside the callback

    def command(args):
        args.interrupt_note = lambda: "kept nothing: rerun the same command"
        ctypes.CFUNCTYPE(None)(callback)()  # returns normally: ctypes swallowed the KeyboardInterrupt
        return _sleep_until_interrupted()

    previous = signal.getsignal(signal.SIGINT)
    assert run_command(_command(command)) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted; kept nothing: rerun the same command"
    assert signal.getsignal(signal.SIGINT) is previous  # restored


def test_an_error_caused_by_the_interrupt_counts_as_the_interrupt(capsys):
    def command(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt as e:  # as numba's dispatcher: SystemError "returned a result with an exception set"
            raise SystemError("returned a result with an exception set") from e
        return 0

    assert run_command(_command(command)) == 130
    assert capsys.readouterr().err.strip() == "interrupted; rerun the same command to start again"


def test_stop_zarr_io_cancels_the_tasks_in_flight():
    import asyncio

    from zarr.core.sync import _get_loop

    from affseg.io import stop_zarr_io

    loop = _get_loop()
    future = asyncio.run_coroutine_threadsafe(asyncio.sleep(3600), loop)
    assert stop_zarr_io() == 1
    assert future.cancelled() or isinstance(future.exception(timeout=5), asyncio.CancelledError)
    assert stop_zarr_io() == 0


def test_stop_zarr_io_waits_for_a_file_write_already_running_in_the_thread_pool():
    """Cancelling the task stops only its waiting; the write itself runs on in zarr's thread pool
    and would recreate a staged dataset after the caller removed it (seen in CI)."""
    import asyncio
    import threading

    from zarr.core.sync import _get_loop

    from affseg.io import stop_zarr_io

    started, finished = threading.Event(), threading.Event()

    def slow_write():
        started.set()
        time.sleep(0.5)
        finished.set()

    future = asyncio.run_coroutine_threadsafe(asyncio.to_thread(slow_write), _get_loop())
    assert started.wait(5)
    assert stop_zarr_io() == 1
    assert finished.is_set()  # stop_zarr_io returned only after the write had ended
    assert future.cancelled() or isinstance(future.exception(timeout=5), asyncio.CancelledError)


# ------------------------------------------------------------------ the commands, in a subprocess


def test_synth_interrupted_inside_a_zarr_write_stops_zarr_cleanly(tmp_path):
    """The interrupt lands while zarr's event loop writes chunks: without stopping those tasks the
    interpreter prints 'Task was destroyed but it is pending!' and a staged dataset is left."""
    out = tmp_path / "s.zarr"
    run = subprocess.Popen(_affseg("synth", out, "--shape", 48, 256, 256), env=ENV, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: glob.glob(str(out / ".affs.tmp-*" / "c" / "*")), run, "a chunk of the affinities")
    _out, err = _interrupt(run)
    assert "rerun the same command with --overwrite" in _one_line(err)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the staged dataset is gone


def _record(group: Path) -> dict:
    """The segment record of a zarr group ({} while there is none)."""
    try:
        return json.loads(json.loads((group / "zarr.json").read_text())["attributes"]["affseg_segment"])
    except (OSError, ValueError, KeyError):
        return {}


@pytest.mark.slow
def test_segment_interrupted_midway_says_what_it_kept_and_resumes(tmp_path):
    data = tmp_path / "data.zarr"
    assert main(["synth", str(data), "--shape", "32", "192", "192", "--seed", "2"]) == 0
    out = tmp_path / "out.zarr" / "seg"
    thresholds = ["--thresholds", "0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
    command = _affseg("segment", data / "affs", out, "--min-seed-distance", 6, *thresholds)
    run = subprocess.Popen(command, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: "threshold_0.1" in _record(out).get("written", []), run, "the first segmentation")
    _out, err = _interrupt(run)
    line = _one_line(err)
    record = _record(out)
    assert record["complete"] is False and record["written"][:2] == ["fragments", "threshold_0.1"]
    assert len(record["written"]) < 10, "the run ended before the interrupt: use a larger volume"
    kept = len(record["written"])
    assert line == (f"interrupted; {out} holds {kept} of 10 datasets and is marked incomplete (affseg evaluate "
                    "says so): rerun the same command to resume")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]

    scored = subprocess.run(_affseg("evaluate", out, data / "labels"), env=ENV, text=True, capture_output=True)
    assert scored.returncode == 0, scored.stderr
    missing = [n for n in record["datasets"] if n not in record["written"]]
    assert f"{kept} of 10 datasets are written, missing {', '.join(missing)}" in scored.stderr
    rows = kept - 1  # one per threshold written
    assert len(scored.stdout.strip().splitlines()) == 1 + rows + (rows > 1)  # header, rows, the best

    again = subprocess.run(command, env=ENV, text=True, capture_output=True)
    assert again.returncode == 0, again.stderr
    assert f"resuming {out}: {kept} of 10 datasets were written before" in again.stdout
    scored = subprocess.run(_affseg("evaluate", out, data / "labels"), env=ENV, text=True, capture_output=True)
    assert scored.returncode == 0 and "incomplete" not in scored.stderr
    assert len(scored.stdout.strip().splitlines()) == 11
    assert read_volume(out / "threshold_0.9")[0].shape == (32, 192, 192)


@pytest.mark.slow
def test_train_interrupted_keeps_its_checkpoint_and_says_where_it_resumes(tmp_path):
    pytest.importorskip("torch", reason="train needs the 'train' extra")
    assert main(["synth", str(tmp_path / "d.zarr"), "--shape", "12", "48", "48"]) == 0
    config = tmp_path / "c.yaml"
    config.write_text(
        "data:\n  train: [{raw: d.zarr/raw, labels: d.zarr/labels}]\n  min_labelled: 0.1\n"
        "model: {num_fmaps: 2, fmap_inc_factor: 2, downsample_factors: [[1, 2, 2]], output_shape: [4, 12, 12]}\n"
        "train: {iterations: 1000000, checkpoint_every: 2, snapshot_every: 3}\n")
    checkpoints = tmp_path / "c" / "checkpoints"
    run = subprocess.Popen(_affseg("train", config), env=ENV, text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    _wait_for(lambda: list(checkpoints.glob("iteration_*.pt")), run, "a checkpoint")
    _out, err = _interrupt(run)
    line = _one_line(err)
    kept = sorted(checkpoints.glob("iteration_*.pt"))[-1]
    iteration = int(kept.stem.split("_")[1])
    assert line == (f"interrupted; {tmp_path / 'c'} keeps the checkpoint of iteration {iteration} ({kept}): "
                    "rerun the same command to resume from it")

    rerun = subprocess.Popen(_affseg("train", config), env=ENV, text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    first = rerun.stdout.readline()
    assert first == f"resuming {tmp_path / 'c'} from iteration {iteration} (checkpoint {kept.name})\n"
    _wait_for(lambda: sorted(checkpoints.glob("iteration_*.pt"))[-1] != kept, rerun, "a newer checkpoint")
    _out, err = _interrupt(rerun)
    assert "keeps the checkpoint of iteration" in _one_line(err)
    rows = (tmp_path / "c" / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows][:iteration + 2] == list(range(1, iteration + 3))
