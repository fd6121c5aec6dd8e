"""Atomic file output: write to a temporary sibling, then rename over the target.

Temporaries are named ``.<name>.tmp-<pid>-<random>``; the next write of the same file removes
those whose process no longer runs, so a killed run leaves nothing behind for long.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import OutputExists, OutputNotWritable

__all__ = [
    "atomic_path",
    "check_output_writable",
    "check_writable",
    "is_stale_temporary",
    "is_temporary",
    "output_lock",
    "process_alive",
    "remove_stale_temporaries",
    "temporary_name",
    "write_json",
]

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?:(?P<pid>\d+)-)?[0-9a-f]{8}$")
_PROBE_PREFIX = ".affseg-probe-"  # check_output_writable's test file: + "<pid>-" + random
_PROBE = re.compile(r"^\.affseg-probe-(?:(?P<pid>\d+)-)?")


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine.

    Parameters
    ----------
    pid : int
        Process id; ids <= 0 are never alive.

    Returns
    -------
    alive : bool
        True if the process exists (also when owned by another user).
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; or no such pid at all (a stray name)
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def temporary_name(name: str, kind: str = "tmp") -> str:
    """The hidden name of a temporary (``kind`` 'tmp') or displaced (``'old'``) sibling of ``name``.

    Parameters
    ----------
    name : str
        The file or dataset name (not a path).
    kind : str
        ``'tmp'`` or ``'old'``.

    Returns
    -------
    temporary : str
        ``.<name>.<kind>-<pid>-<8 random hex digits>``, ``pid`` this process's id.
    """
    return f".{name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def is_temporary(entry: str) -> bool:
    """Whether ``entry`` is the name of one of affseg's temporaries (of any writer).

    Parameters
    ----------
    entry : str
        A file or folder name (not a path).

    Returns
    -------
    temporary : bool
        True for the names :func:`temporary_name` gives and for the probe files of
        :func:`check_output_writable`.
    """
    return _TEMPORARY.match(entry) is not None or entry.startswith(_PROBE_PREFIX)


def is_stale_temporary(entry: str, name: str | None = None) -> bool:
    """Whether ``entry`` is a temporary (of ``name``, if given) whose writer no longer runs.

    Parameters
    ----------
    entry : str
        A file or folder name (not a path).
    name : str, optional
        Only temporaries of this name count.

    Returns
    -------
    stale : bool
        True if ``entry`` is a temporary (``tmp`` or ``old``) of ``name`` (or, without ``name``,
        also a probe file of :func:`check_output_writable`) whose process is gone, or that
        carries no process id (older versions of affseg).
    """
    match = _TEMPORARY.match(entry)
    if match is None and name is None:
        match = _PROBE.match(entry)  # a probe file of check_output_writable that a kill left
    if match is None or (name is not None and match.group("name") != name):
        return False
    pid = match.group("pid")
    return pid is None or not process_alive(int(pid))


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporaries in ``folder`` (of ``name`` only, if given) whose writer is gone.

    Temporaries without a process id come from older versions of affseg and are always stale.
    Returns what was removed.

    Parameters
    ----------
    folder : str or path-like
        The folder to clean; nothing happens if it is not a folder.
    name : str, optional
        Only temporaries of this name are removed.

    Returns
    -------
    removed : list of Path
        The files and folders removed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if not is_stale_temporary(entry.name, name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    A context manager. The parent folder is created, and stale temporaries of ``path`` in it are
    removed first. If the block raises, the temporary file is removed and ``path`` is untouched.

    Parameters
    ----------
    path : str or path-like
        The file to write.

    Yields
    ------
    tmp : Path
        The temporary file to write to (it does not exist yet).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = path.with_name(temporary_name(path.name))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def check_writable(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse to replace an existing output unless ``overwrite``.

    Parameters
    ----------
    path : str or path-like
        The output.
    overwrite : bool
        Whether an existing output may be replaced.

    Returns
    -------
    path : Path
        ``path``.

    Raises
    ------
    OutputExists
        If ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExists(f"{path} exists; pass overwrite=True to replace it")
    return path


def check_output_writable(path: str | os.PathLike) -> Path:
    """Check, before any work, that ``path`` (a file or folder to create or update) can be written.

    The nearest existing folder at or above ``path`` must accept a new file (tried for real, so
    read-only file systems and permissions are both caught); an existing file must open for
    writing. Raises :class:`~affseg.errors.OutputNotWritable` naming the path.

    Parameters
    ----------
    path : str or path-like
        The file or folder to be written.

    Returns
    -------
    path : Path
        ``path``.

    Raises
    ------
    OutputNotWritable
        If ``path`` cannot be written.
    """
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        if probe != path:
            raise OutputNotWritable(f"cannot write {path}: {probe} is a file, not a folder")
        try:
            with open(probe, "r+b"):
                pass
        except OSError as e:
            raise OutputNotWritable(f"cannot write {path}: {e.strerror or e}") from None
        probe = probe.parent
    for entry in probe.iterdir() if probe.is_dir() else ():
        if entry.name.startswith(_PROBE_PREFIX) and is_stale_temporary(entry.name):
            with contextlib.suppress(OSError):  # another run may be removing it too
                entry.unlink()
    try:
        fd, name = tempfile.mkstemp(prefix=f"{_PROBE_PREFIX}{os.getpid()}-", dir=probe)
    except OSError as e:
        why = "read-only file system" if e.errno == errno.EROFS else (e.strerror or str(e))
        raise OutputNotWritable(f"cannot write {path}: {probe} is not writable ({why})") from None
    os.close(fd)
    os.unlink(name)
    return path


def write_json(path: str | os.PathLike, data: Any, *, overwrite: bool = False) -> Path:
    """Write ``data`` as indented JSON to ``path``, atomically.

    Parameters
    ----------
    path : str or path-like
        The file to write.
    data : JSON-serialisable object
        What to write (dicts, lists, strings, numbers, bools, None).
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    path : Path
        The file written.

    Raises
    ------
    OutputExists
        If ``path`` exists and ``overwrite`` is false.
    TypeError
        If ``data`` is not JSON-serialisable (``path`` is left untouched).
    """
    path = check_writable(path, overwrite=overwrite)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


@contextlib.contextmanager
def output_lock(container: str | os.PathLike) -> Iterator[Path]:
    """Hold the one-writer lock of an output container (zarr folder or HDF5 file).

    The lock is ``flock`` on a hidden file beside the container, so the kernel releases it when
    the holder dies, however it dies; the file is removed on a normal exit. A second writer gets
    :class:`~affseg.errors.OutputExists` at once instead of interleaving its writes.

    A context manager; the container's parent folder is created.

    Parameters
    ----------
    container : str or path-like
        The zarr folder or HDF5 file to be written.

    Yields
    ------
    lock : Path
        The lock file, ``.<name>.affseg-lock`` beside the container.

    Raises
    ------
    OutputExists
        If another process holds the lock.
    """
    import fcntl

    container = Path(container)
    container.parent.mkdir(parents=True, exist_ok=True)
    lock = container.with_name(f".{container.name}.affseg-lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputExists(f"{container} is being written by another affseg process; wait for it to "
                               "finish") from None
        try:  # the holder before us may have removed the file after we opened it: lock the current one
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield lock
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)
