"""Shared test helpers: partitions, quiet reference tools, the real data folder."""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None)
settings.load_profile("ci")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True if the two label volumes group voxels identically (ids may differ)."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    pairs = np.unique(np.stack([a, b]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


@contextlib.contextmanager
def quiet_stdout():
    """Silence C++ code that prints to the process's stdout (waterz)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


def write_affs_and_mask(path: Path, affs: np.ndarray, offsets, *, chunks) -> np.ndarray:
    """Zarr datasets ``path/affs`` (with their offsets) and ``path/mask`` (ones with a hole) for
    the blockwise stages; returns the mask."""
    from affseg.io import write_volume

    write_volume(path / "affs", affs, axes=["c^", "z", "y", "x"], attrs={"offsets": offsets}, chunks=chunks)
    mask = np.ones(affs.shape[1:], np.uint8)
    mask[3:9, 20:40, :12] = 0
    write_volume(path / "mask", mask)
    return mask


def kill_when_done(job, store_path: Path, stage: str, count: int, timeout: float = 120) -> set:
    """SIGKILL a blockwise job (a subprocess) once its store has ``count`` blocks of ``stage``
    done; returns the blocks done at the kill."""
    import signal
    import time

    from affseg.blockwise.store import open_store

    done = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and job.poll() is None:
        try:
            with open_store(store_path) as store:
                done = store.done_blocks(stage) if stage in store.stages() else set()
        except Exception:  # not there yet, or the job is creating it
            done = set()
        if len(done) >= count:
            break
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    with open_store(store_path) as store:
        return store.done_blocks(stage)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real EM data folder {SHARED_DATA} is absent (see its README.md: the data sits beside the checkout)")
    return SHARED_DATA


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write to: a read-only tmpfs mount when running as root (permissions do
    not stop root), else a folder without write permission."""
    import subprocess

    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only folder as root here (mount: {mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)
