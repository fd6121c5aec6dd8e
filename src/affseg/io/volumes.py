"""Volumes in zarr v3 and HDF5, addressed as ``container.zarr/dataset`` or ``file.h5/dataset``.

Metadata (attributes of the dataset): ``voxel_size`` (world units per voxel, spatial axes only,
also read from ``resolution``), ``offset`` (world units of voxel 0), ``axes`` (names, channel
axes first, e.g. ``["c^", "z", "y", "x"]``) and ``units`` (also read from ``unit``).
Reads are lazy: indexing a :class:`Volume` reads only the chunks it touches.
Writes are atomic: the data goes to a temporary node that is renamed into place at the end, so a
crash never leaves a half-written dataset under the final name. Temporary nodes are named
``.<name>.tmp-<pid>-<random>`` (zarr) or ``<name>.tmp-<pid>-<random>`` (HDF5); the next write of
the same dataset removes those of processes that no longer run. Every dataset affseg writes carries
the attribute ``written_by = "affseg <version>"``; ``overwrite=True`` replaces only such datasets,
never data that affseg did not write.

Errors: a missing file or dataset raises :class:`~affseg.errors.VolumeNotFound`; a file that is
not what its name says (an empty or truncated HDF5 file, a directory named ``x.h5``, invalid
``zarr.json``, a chunk that does not decompress) raises :class:`~affseg.errors.CorruptInput`
naming it.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from .. import __version__
from ..errors import AffsegError, CorruptInput, InputError, OutputExists, VolumeNotFound
from .atomic import check_output_writable, is_stale_temporary, remove_stale_temporaries, temporary_name

__all__ = ["Volume", "open_volume", "parse_address", "read_volume", "stop_zarr_io", "volume_exists",
           "write_volume", "written_by_affseg"]

WRITTEN_BY = f"affseg {__version__}"

_ZARR = (".zarr", ".zr", ".n5")
_HDF5 = (".h5", ".hdf5", ".hdf")


def parse_address(address: str | os.PathLike) -> tuple[Path, str, str]:
    """Split ``a/b.zarr/group/array`` into (container, dataset, kind), kind 'zarr' or 'hdf5'.

    Parameters
    ----------
    address : str or path-like
        A path through a container: the first part ending in ``.zarr``, ``.zr``, ``.n5``,
        ``.h5``, ``.hdf5`` or ``.hdf`` (any case) is the container.

    Returns
    -------
    container : Path
        The zarr folder or HDF5 file.
    dataset : str
        The path inside it, ``/``-separated.
    kind : str
        ``'zarr'`` or ``'hdf5'``.

    Raises
    ------
    InputError
        If no part of ``address`` is a container, or nothing follows the container.
    """
    parts = Path(address).parts
    for i, part in enumerate(parts):
        suffix = Path(part).suffix.lower()
        if suffix in _ZARR or suffix in _HDF5:
            dataset = "/".join(parts[i + 1:])
            if not dataset:
                raise InputError(f"{address} names a container but no dataset inside it (e.g. {part}/raw)")
            return Path(*parts[: i + 1]), dataset, "zarr" if suffix in _ZARR else "hdf5"
    raise InputError(
        f"{address} is not a volume address: expected 'file.zarr/dataset' or 'file.h5/dataset'"
    )


@dataclass
class Volume:
    """A lazily read dataset with its spatial metadata."""

    address: str
    data: object  # zarr.Array or h5py.Dataset
    voxel_size: tuple[float, ...]
    offset: tuple[float, ...]
    axes: tuple[str, ...]
    units: tuple[str, ...]
    _file: object = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        try:
            return np.asarray(self.data[key])
        except AffsegError:
            raise
        except (RuntimeError, OSError, ValueError, KeyError) as e:  # codec or file errors
            raise CorruptInput(f"{self.address}: the data could not be read, the file may be corrupt "
                               f"({type(e).__name__}: {e})") from e

    def read(self) -> np.ndarray:
        return self[...]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _metadata(attrs, shape, address) -> dict:
    ndim = len(shape)
    axes = tuple(attrs.get("axes", ()))
    n_spatial = min(3, ndim) if not axes else sum(1 for a in axes if not a.endswith("^"))
    if not axes:
        names = ("z", "y", "x")[-n_spatial:]
        axes = tuple(f"c{i}^" for i in range(ndim - n_spatial)) + names
    if len(axes) != ndim:
        raise InputError(f"{address}: axes {list(axes)} do not match the shape {shape}")
    voxel_size = attrs.get("voxel_size", attrs.get("resolution", (1,) * n_spatial))
    offset = attrs.get("offset", (0,) * n_spatial)
    units = attrs.get("units", attrs.get("unit", ""))
    if isinstance(units, str):
        units = (units,) * n_spatial
    try:
        voxel_size = tuple(float(v) for v in np.ravel(voxel_size))
        offset = tuple(float(v) for v in np.ravel(offset))
    except (TypeError, ValueError):
        raise InputError(f"{address}: voxel_size {voxel_size!r} and offset {offset!r} must be numbers") from None
    if len(voxel_size) != n_spatial or len(offset) != n_spatial:
        raise InputError(
            f"{address}: voxel_size {voxel_size} / offset {offset} do not have {n_spatial} spatial values"
        )
    return {"voxel_size": voxel_size, "offset": offset, "axes": axes, "units": tuple(units)}


def open_volume(address: str | os.PathLike) -> Volume:
    """Open a dataset for lazy reading; a missing file or dataset raises FileNotFoundError.

    Parameters
    ----------
    address : str or path-like
        ``container.zarr/dataset`` or ``file.h5/dataset`` (also ``.zr``, ``.n5``, ``.hdf5``, ``.hdf``).

    Returns
    -------
    volume : Volume
        The dataset and its metadata; close it (or use it in a ``with`` block) to close an
        HDF5 file.

    Raises
    ------
    VolumeNotFound
        If the container or the dataset does not exist (a FileNotFoundError).
    CorruptInput
        If the container is not what its name says or its metadata cannot be read.
    InputError
        If the address is not a volume address, or the metadata (axes, voxel_size, offset) do
        not fit the shape.
    """
    container, dataset, kind = parse_address(address)
    if not container.exists():
        raise VolumeNotFound(f"no such file: {container} (from {address})")
    if kind == "hdf5":
        import h5py

        f = _open_h5(container, "r")
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            names = _h5_datasets(f)
            f.close()
            raise VolumeNotFound(f"no dataset '{dataset}' in {container}; it has {names}")
        data = f[dataset]
        meta = _metadata(dict(data.attrs), data.shape, address)
        return Volume(str(address), data, _file=f, **meta)
    import zarr

    if not container.is_dir():
        raise CorruptInput(f"{container} is a file, not a zarr container (a folder)")
    if _zarr_node_type(container / dataset) != "array":
        raise VolumeNotFound(f"no array '{dataset}' in {container}")
    try:
        data = zarr.open_array(store=str(container), path=dataset, mode="r")
    except Exception as e:  # zarr's own errors for metadata it cannot parse
        raise CorruptInput(f"{container / dataset / 'zarr.json'} is not valid zarr metadata "
                           f"({type(e).__name__}: {e})") from e
    meta = _metadata(dict(data.attrs), data.shape, address)
    return Volume(str(address), data, **meta)


def _open_h5(container: Path, mode: str):
    """An h5py file, or a clear error for a directory or a file that is not HDF5."""
    import h5py

    if container.is_dir():
        raise CorruptInput(f"{container} is a directory, not an HDF5 file")
    try:
        return h5py.File(container, mode)
    except OSError as e:
        raise CorruptInput(f"{container} is not a readable HDF5 file (empty, truncated or another "
                           f"format): {e}") from e


def _zarr_node_type(node: Path) -> str | None:
    """'array' or 'group' from a node's zarr.json, None where there is none."""
    meta = node / "zarr.json"
    if not meta.is_file():
        return None
    try:
        kind = json.loads(meta.read_text()).get("node_type")
    except (ValueError, AttributeError, UnicodeDecodeError) as e:
        raise CorruptInput(f"{meta} is not valid zarr metadata ({type(e).__name__}: {e})") from e
    return kind


def written_by_affseg(address: str | os.PathLike) -> bool:
    """True if ``address`` is a dataset that affseg wrote (its ``written_by`` attribute).

    Parameters
    ----------
    address : str or path-like
        ``container.zarr/dataset`` or ``file.h5/dataset`` (also ``.zr``, ``.n5``, ``.hdf5``, ``.hdf``).

    Returns
    -------
    written : bool
        Whether the dataset's ``written_by`` attribute starts with ``affseg``.

    Raises
    ------
    VolumeNotFound, CorruptInput, InputError
        As for :func:`open_volume`.
    """
    with open_volume(address) as vol:
        return str(vol.data.attrs.get("written_by", "")).startswith("affseg")


def _h5_datasets(f) -> list[str]:
    import h5py

    names: list[str] = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return names


def read_volume(address: str | os.PathLike) -> tuple[np.ndarray, Volume]:
    """Read a whole dataset; returns the array and its (closed) :class:`Volume` metadata.

    Parameters
    ----------
    address : str or path-like
        ``container.zarr/dataset`` or ``file.h5/dataset`` (also ``.zr``, ``.n5``, ``.hdf5``, ``.hdf``).

    Returns
    -------
    data : ndarray
        The whole dataset, in its stored dtype and shape.
    volume : Volume
        Its metadata (``voxel_size``, ``offset``, ``axes``, ``units``); its file is closed.

    Raises
    ------
    VolumeNotFound, CorruptInput, InputError
        As for :func:`open_volume`; CorruptInput also for data that cannot be decoded.
    """
    with open_volume(address) as vol:
        return vol.read(), vol


def volume_exists(address: str | os.PathLike) -> bool:
    """True if ``address`` names an existing dataset (not a group).

    Parameters
    ----------
    address : str or path-like
        ``container.zarr/dataset`` or ``file.h5/dataset`` (also ``.zr``, ``.n5``, ``.hdf5``, ``.hdf``).

    Returns
    -------
    exists : bool
        Whether the dataset exists.

    Raises
    ------
    InputError
        If ``address`` is not a volume address.
    CorruptInput
        If the container exists but cannot be read.
    """
    container, dataset, kind = parse_address(address)
    if kind == "hdf5":
        if not container.exists():
            return False
        import h5py

        with _open_h5(container, "r") as f:
            return isinstance(f.get(dataset), h5py.Dataset)
    return _zarr_node_type(container / dataset) == "array"


def write_volume(
    address: str | os.PathLike,
    data: ArrayLike,
    *,
    voxel_size: Sequence[float] | None = None,
    offset: Sequence[float] | None = None,
    axes: Sequence[str] | None = None,
    units: str = "nm",
    chunks: Sequence[int] | None = None,
    overwrite: bool = False,
    attrs: dict | None = None,
) -> str:
    """Write ``data`` atomically to ``address`` with its metadata.

    An existing dataset is replaced only with ``overwrite=True`` and only if affseg wrote it,
    else :class:`~affseg.errors.OutputExists`. ``attrs`` are JSON-like values; None values are
    left out (HDF5 cannot store them) and mappings are stored as JSON text in HDF5.

    Parameters
    ----------
    address : str or path-like
        ``container.zarr/dataset`` or ``file.h5/dataset`` (also ``.zr``, ``.n5``, ``.hdf5``, ``.hdf``).
    data : array_like
        The dataset, any shape and dtype; spatial axes last.
    voxel_size : sequence of float, optional
        World units per voxel, one per spatial axis; default 1.
    offset : sequence of float, optional
        World position of voxel 0, one per spatial axis; default 0.
    axes : sequence of str, optional
        One name per axis, channel axes ending in ``^`` (e.g. ``["c^", "z", "y", "x"]``);
        default: the last (up to 3) axes ``z, y, x``, the others channels.
    units : str
        Unit of ``voxel_size`` and ``offset``.
    chunks : sequence of int, optional
        Chunk shape; default: zarr up to ``(64, 128, 128)`` spatially and 1 per channel, HDF5
        h5py's automatic chunks. HDF5 datasets are gzip-compressed.
    overwrite : bool
        Replace an existing dataset (only one affseg wrote).
    attrs : dict, optional
        More attributes to store.

    Returns
    -------
    address : str
        ``str(address)``.

    Raises
    ------
    InputError
        If the address is not a volume address, or the metadata do not fit the shape of ``data``.
    OutputExists
        If the dataset exists and ``overwrite`` is false, or affseg did not write it.
    OutputNotWritable
        If the container cannot be written.
    """
    container, dataset, kind = parse_address(address)
    data = np.asarray(data)
    check_replaceable(address, overwrite=overwrite)
    check_output_writable(container)
    given = {"axes": axes, "voxel_size": voxel_size, "offset": offset, "units": units}
    # the same defaults and checks as for reading
    meta = _metadata({k: v for k, v in given.items() if v is not None}, data.shape, address)
    meta = {k: list(v) for k, v in meta.items()}
    meta["units"] = units
    meta.update({k: v for k, v in (attrs or {}).items() if v is not None})
    meta["written_by"] = WRITTEN_BY
    if kind == "hdf5":
        _write_h5(container, dataset, data, meta, chunks)
    else:
        _write_zarr(container, dataset, data, meta, chunks)
    return str(address)


def check_replaceable(address: str | os.PathLike, *, overwrite: bool) -> None:
    """Refuse (OutputExists) to replace a dataset without ``overwrite``, or one affseg did not write."""
    if not volume_exists(address):
        return
    if not overwrite:
        raise OutputExists(f"{address} exists; pass overwrite=True to replace it")
    if not written_by_affseg(address):
        raise OutputExists(f"{address} exists and was not written by affseg; affseg replaces only its own "
                           "outputs: choose another output or remove it yourself")


def _h5_attr(value):
    return json.dumps(value) if isinstance(value, dict) else value


def _write_h5(container: Path, dataset: str, data, meta, chunks) -> None:
    container.parent.mkdir(parents=True, exist_ok=True)
    parent, _, name = dataset.rpartition("/")
    tmp, old = ("/".join(filter(None, [parent, temporary_name(name, kind)])) for kind in ("tmp", "old"))
    with _open_h5(container, "a") as f:
        group = f.get(parent or "/")
        for entry in list(group.keys()) if hasattr(group, "keys") else []:
            if is_stale_temporary(entry, name):
                del group[entry]
        try:
            ds = f.create_dataset(tmp, data=data, chunks=chunks or True, compression="gzip")
            for k, v in meta.items():
                ds.attrs[k] = _h5_attr(v)
            if dataset in f:
                f.move(dataset, old)
            f.move(tmp, dataset)
        except BaseException:
            if tmp in f:
                del f[tmp]
            if old in f and dataset not in f:
                f.move(old, dataset)
            raise
        if old in f:
            del f[old]


def _write_zarr(container: Path, dataset: str, data, meta, chunks) -> None:
    import zarr

    root = zarr.open_group(store=str(container), mode="a")
    parent, _, name = dataset.rpartition("/")
    group = root.require_group(parent) if parent else root
    remove_stale_temporaries(container / parent, name)
    tmp_name = temporary_name(name)
    if chunks is None:
        chunks = tuple(min(s, c) for s, c in zip(data.shape, _default_chunks(data.ndim)))
    final = container / dataset
    staged = final.with_name(tmp_name)
    trash = final.with_name(temporary_name(name, "old"))
    try:
        arr = group.create_array(tmp_name, shape=data.shape, dtype=data.dtype, chunks=chunks)
        arr[...] = data
        arr.attrs.update(meta)
        if final.exists():
            os.rename(final, trash)
        os.rename(staged, final)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):  # chunk writes may still run in zarr's thread: stop them first
            stop_zarr_io()
        shutil.rmtree(staged, ignore_errors=True)
        if trash.exists() and not final.exists():
            os.rename(trash, final)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def stop_zarr_io(timeout: float = 5.0) -> int:
    """Cancel the zarr reads and writes still in flight, and wait until they have stopped.

    zarr (v3) runs its I/O as asyncio tasks on an event loop in a thread of its own; the calling
    thread only waits for them. A ``KeyboardInterrupt`` (Ctrl-C) that lands while it waits leaves
    those tasks running: they would go on writing into a dataset that is being removed, and be
    destroyed half-way when the interpreter exits (asyncio's "Task was destroyed but it is
    pending!"). Call this after catching the interrupt, before cleaning up or exiting. Every task
    on zarr's loop is cancelled, those of other threads too: call it only when the process stops
    its work.

    Parameters
    ----------
    timeout : float
        Seconds to wait for the cancelled tasks to finish.

    Returns
    -------
    cancelled : int
        The number of tasks that were still pending (0 if zarr was not used, or none were).
    """
    import asyncio
    import sys

    sync = sys.modules.get("zarr.core.sync")
    loop = (getattr(sync, "loop", None) or [None])[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return 0

    async def cancel_others() -> int:
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)

    future = asyncio.run_coroutine_threadsafe(cancel_others(), loop)
    try:
        cancelled = future.result(timeout)
    except Exception:  # a timeout, or the loop stopped meanwhile: nothing more to do
        future.cancel()
        return 0
    # A cancelled task stops waiting for its file write, but a write already running in the loop's
    # thread pool goes on (and would recreate a directory that the caller removes next).
    _wait_until_threads_idle(getattr(loop, "_default_executor", None), timeout)
    return cancelled


def _wait_until_threads_idle(executor, timeout: float) -> None:
    """Wait until no work item of a ``ThreadPoolExecutor`` runs: every worker joins a barrier, which
    each can reach only after finishing what it runs (work still queued was cancelled with its task)."""
    import threading

    workers = getattr(executor, "_max_workers", 0)
    if not workers:
        return
    barrier = threading.Barrier(workers + 1, timeout=timeout)
    try:
        for _ in range(workers):
            executor.submit(_join, barrier)
    except RuntimeError:  # the executor was shut down: nothing runs on it any more
        barrier.abort()
        return
    _join(barrier)


def _join(barrier) -> None:
    try:
        barrier.wait()
    except Exception:  # broken by a timeout (a write that hangs): give up waiting, as stop_zarr_io does
        barrier.abort()


def _default_chunks(ndim: int) -> tuple[int, ...]:
    spatial = (64, 128, 128)[-min(3, ndim):]
    return (1,) * (ndim - len(spatial)) + spatial


def read_group_record(container: Path, group: str, key: str) -> dict | None:
    """The JSON record ``key`` in the attributes of a group (None where there is none).

    Parameters
    ----------
    container : Path
        A zarr folder or HDF5 file (by its suffix: ``.h5``, ``.hdf5``, ``.hdf`` are HDF5).
    group : str
        Path of the group inside it; ``""`` is the root.
    key : str
        The attribute.

    Returns
    -------
    record : dict or None
        The record, or None if the container, group or attribute does not exist.

    Raises
    ------
    CorruptInput
        If the attribute does not hold a JSON object, or the container cannot be read.
    """
    if not container.exists():
        return None
    if container.suffix.lower() in _HDF5:
        with _open_h5(container, "r") as f:
            node = f.get(group or "/")
            value = node.attrs.get(key) if node is not None else None
    else:
        if _zarr_node_type(container / group) != "group":
            return None
        value = json.loads((container / group / "zarr.json").read_text()).get("attributes", {}).get(key)
    if value is None:
        return None
    try:
        record = json.loads(value) if isinstance(value, (str, bytes)) else value
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise CorruptInput(f"{container}/{group}: the attribute {key!r} is not an affseg record")
    return record


def write_group_record(container: Path, group: str, key: str, record: dict) -> None:
    """Store ``record`` as JSON text in the attribute ``key`` of a group, creating the group.

    Parameters
    ----------
    container : Path
        A zarr folder or HDF5 file (by its suffix: ``.h5``, ``.hdf5``, ``.hdf`` are HDF5),
        created if missing.
    group : str
        Path of the group inside it; ``""`` is the root.
    key : str
        The attribute.
    record : dict
        A JSON-serialisable record.

    Raises
    ------
    CorruptInput
        If an existing HDF5 container cannot be opened.
    """
    text = json.dumps(record)
    if container.suffix.lower() in _HDF5:
        container.parent.mkdir(parents=True, exist_ok=True)
        with _open_h5(container, "a") as f:
            f.require_group(group or "/").attrs[key] = text
        return
    import zarr

    root = zarr.open_group(store=str(container), mode="a")
    node = root.require_group(group) if group else root
    node.attrs[key] = text  # zarr rewrites zarr.json through a temporary file and a rename


def group_members(address: str | os.PathLike) -> tuple[Path, str, list[str]]:
    """(container, group, names of the datasets directly in the group) of a group address; a
    container alone (``out.zarr``) is its root group."""
    address = str(address).rstrip("/")
    try:
        container, group, kind = parse_address(address)
    except InputError:
        container, group, kind = parse_address(f"{address}/_")
        group = ""
    if not container.exists():
        raise VolumeNotFound(f"no such file: {container} (from {address})")
    if kind == "hdf5":
        import h5py

        with _open_h5(container, "r") as f:
            node = f.get(group or "/")
            if not isinstance(node, h5py.Group):
                raise VolumeNotFound(f"no group '{group}' in {container}")
            names = sorted(n for n, o in node.items() if isinstance(o, h5py.Dataset))
        return container, group, names
    folder = container / group
    if _zarr_node_type(folder) != "group" and not (folder.is_dir() and not group):
        raise VolumeNotFound(f"no group '{group}' in {container}")
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and _zarr_node_type(p) == "array")
    return container, group, names


def remove_volume(address: str | os.PathLike) -> None:
    """Delete a dataset that affseg wrote (used by ``--overwrite`` for outputs a new run replaces);
    a dataset affseg did not write raises :class:`~affseg.errors.OutputExists`."""
    check_replaceable(address, overwrite=True)
    container, dataset, kind = parse_address(address)
    if kind == "hdf5":
        with _open_h5(container, "a") as f:
            del f[dataset]
        return
    final = container / dataset
    trash = final.with_name(temporary_name(final.name, "old"))
    os.rename(final, trash)  # gone from the group at once; the files go after
    shutil.rmtree(trash, ignore_errors=True)


def _partial_path(address) -> tuple[Path, str, Path]:
    container, dataset, kind = parse_address(address)
    if kind != "zarr":
        raise InputError(f"{address}: outputs written block by block must be zarr (HDF5 has no safe concurrent "
                         "writers)")
    final = container / dataset
    return container, dataset, final.with_name(f".{final.name}.partial")


def stage_volume(address: str | os.PathLike, *, shape, dtype, chunks, voxel_size=None, offset=None, axes=None,
                 attrs: dict | None = None):
    """A zarr array under a hidden name (``.<name>.partial``) for writing block by block.

    An existing partial array of the same shape, chunks and dtype is reopened (an interrupted run
    resumes into it); one of another geometry is replaced. :func:`publish_volume` renames it into
    place. Every block should write whole chunks only.
    """
    import zarr

    container, dataset, partial = _partial_path(address)
    parent = dataset.rpartition("/")[0]
    root = zarr.open_group(store=str(container), mode="a")
    group = root.require_group(parent) if parent else root
    name = partial.name
    shape, chunks = tuple(int(s) for s in shape), tuple(int(c) for c in chunks)
    if _zarr_node_type(partial) == "array":
        existing = group[name]
        if existing.shape == shape and existing.chunks == chunks and existing.dtype == np.dtype(dtype):
            return existing
        shutil.rmtree(partial)
    given = {"axes": axes, "voxel_size": voxel_size, "offset": offset, "units": "nm"}
    meta = _metadata({k: v for k, v in given.items() if v is not None}, shape, address)
    meta = {k: list(v) for k, v in meta.items()}
    meta.update({k: v for k, v in (attrs or {}).items() if v is not None})
    meta["written_by"] = WRITTEN_BY
    array = group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, fill_value=0)
    array.attrs.update(meta)
    return array


def open_staged(address: str | os.PathLike):
    """The partial array of :func:`stage_volume`, opened for writing (in a worker process)."""
    import zarr

    container, _dataset, partial = _partial_path(address)
    return zarr.open_array(store=str(container), path=str(partial.relative_to(container)), mode="r+")


def publish_volume(address: str | os.PathLike, *, overwrite: bool = False) -> str:
    """Rename the partial array of :func:`stage_volume` into place (replacing an affseg dataset
    only with ``overwrite``)."""
    container, dataset, partial = _partial_path(address)
    check_replaceable(address, overwrite=overwrite)
    final = container / dataset
    trash = final.with_name(temporary_name(final.name, "old"))
    if final.exists():
        os.rename(final, trash)
    os.rename(partial, final)
    shutil.rmtree(trash, ignore_errors=True)
    return str(address)


def discard_staged(address: str | os.PathLike) -> None:
    """Delete the partial array of :func:`stage_volume` (a scratch output no longer needed)."""
    shutil.rmtree(_partial_path(address)[2], ignore_errors=True)


def staged_exists(address: str | os.PathLike) -> bool:
    """Whether the partial array of :func:`stage_volume` exists (not yet published)."""
    return _zarr_node_type(_partial_path(address)[2]) == "array"
