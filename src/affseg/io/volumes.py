"""Volumes in zarr v3 and HDF5, addressed as ``container.zarr/dataset`` or ``file.h5/dataset``.

Metadata (attributes of the dataset): ``voxel_size`` (world units per voxel, spatial axes only,
also read from ``resolution``), ``offset`` (world units of voxel 0), ``axes`` (names, channel
axes first, e.g. ``["c^", "z", "y", "x"]``) and ``units`` (also read from ``unit``).
Reads are lazy: indexing a :class:`Volume` reads only the chunks it touches.
Writes are atomic: the data goes to a temporary node that is renamed into place at the end, so a
crash never leaves a half-written dataset under the final name.
"""
from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ..errors import InputError, OutputExists, VolumeNotFound

__all__ = ["Volume", "open_volume", "parse_address", "read_volume", "volume_exists", "write_volume"]

_ZARR = (".zarr", ".zr", ".n5")
_HDF5 = (".h5", ".hdf5", ".hdf")


def parse_address(address: str | os.PathLike) -> tuple[Path, str, str]:
    """Split ``a/b.zarr/group/array`` into (container, dataset, kind), kind 'zarr' or 'hdf5'."""
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
        return np.asarray(self.data[key])

    def read(self) -> np.ndarray:
        return np.asarray(self.data[...])

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
    voxel_size = tuple(float(v) for v in np.ravel(voxel_size))
    offset = tuple(float(v) for v in np.ravel(offset))
    if len(voxel_size) != n_spatial or len(offset) != n_spatial:
        raise InputError(
            f"{address}: voxel_size {voxel_size} / offset {offset} do not have {n_spatial} spatial values"
        )
    return {"voxel_size": voxel_size, "offset": offset, "axes": axes, "units": tuple(units)}


def open_volume(address: str | os.PathLike) -> Volume:
    """Open a dataset for lazy reading; a missing file or dataset raises FileNotFoundError."""
    container, dataset, kind = parse_address(address)
    if not container.exists():
        raise VolumeNotFound(f"no such file: {container} (from {address})")
    if kind == "hdf5":
        import h5py

        f = h5py.File(container, "r")
        if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
            names = _h5_datasets(f)
            f.close()
            raise VolumeNotFound(f"no dataset '{dataset}' in {container}; it has {names}")
        data = f[dataset]
        meta = _metadata(dict(data.attrs), data.shape, address)
        return Volume(str(address), data, _file=f, **meta)
    import zarr

    try:
        data = zarr.open_array(store=str(container), path=dataset, mode="r")
    except (FileNotFoundError, KeyError, zarr.errors.NodeTypeValidationError) as e:
        raise VolumeNotFound(f"no array '{dataset}' in {container}") from e
    except Exception as e:  # zarr raises its own errors for missing nodes
        if type(e).__name__ in ("ArrayNotFoundError", "GroupNotFoundError", "PathNotFoundError"):
            raise VolumeNotFound(f"no array '{dataset}' in {container}") from e
        raise
    meta = _metadata(dict(data.attrs), data.shape, address)
    return Volume(str(address), data, **meta)


def _h5_datasets(f) -> list[str]:
    import h5py

    names: list[str] = []
    f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    return names


def read_volume(address: str | os.PathLike) -> tuple[np.ndarray, Volume]:
    """Read a whole dataset; returns the array and its (closed) :class:`Volume` metadata."""
    with open_volume(address) as vol:
        return vol.read(), vol


def volume_exists(address: str | os.PathLike) -> bool:
    """True if ``address`` names an existing dataset (not a group)."""
    container, dataset, kind = parse_address(address)
    if kind == "hdf5":
        if not container.exists():
            return False
        import h5py

        with h5py.File(container, "r") as f:
            return isinstance(f.get(dataset), h5py.Dataset)
    meta = container / dataset / "zarr.json"
    if not meta.exists():
        return False
    import json

    return json.loads(meta.read_text()).get("node_type") == "array"


def write_volume(
    address: str | os.PathLike,
    data: np.ndarray,
    *,
    voxel_size=None,
    offset=None,
    axes=None,
    units: str = "nm",
    chunks=None,
    overwrite: bool = False,
    attrs: dict | None = None,
) -> str:
    """Write ``data`` atomically to ``address`` with its metadata.

    An existing dataset is replaced only with ``overwrite=True``, else FileExistsError.
    """
    container, dataset, kind = parse_address(address)
    data = np.asarray(data)
    if volume_exists(address) and not overwrite:
        raise OutputExists(f"{address} exists; pass overwrite=True (--overwrite) to replace it")
    given = {"axes": axes, "voxel_size": voxel_size, "offset": offset, "units": units}
    # the same defaults and checks as for reading
    meta = _metadata({k: v for k, v in given.items() if v is not None}, data.shape, address)
    meta = {k: list(v) for k, v in meta.items()}
    meta["units"] = units
    meta.update(attrs or {})
    if kind == "hdf5":
        _write_h5(container, dataset, data, meta, chunks)
    else:
        _write_zarr(container, dataset, data, meta, chunks)
    return str(address)


def _write_h5(container: Path, dataset: str, data, meta, chunks) -> None:
    import h5py

    container.parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{dataset}.tmp-{uuid.uuid4().hex[:8]}"
    with h5py.File(container, "a") as f:
        try:
            ds = f.create_dataset(tmp, data=data, chunks=chunks or True, compression="gzip")
            for k, v in meta.items():
                ds.attrs[k] = v
            if dataset in f:
                f.move(dataset, f"{tmp}.old")
            f.move(tmp, dataset)
        except BaseException:
            if tmp in f:
                del f[tmp]
            if f"{tmp}.old" in f and dataset not in f:
                f.move(f"{tmp}.old", dataset)
            raise
        if f"{tmp}.old" in f:
            del f[f"{tmp}.old"]


def _write_zarr(container: Path, dataset: str, data, meta, chunks) -> None:
    import zarr

    root = zarr.open_group(store=str(container), mode="a")
    parent, _, name = dataset.rpartition("/")
    group = root.require_group(parent) if parent else root
    tmp_name = f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    if chunks is None:
        chunks = tuple(min(s, c) for s, c in zip(data.shape, _default_chunks(data.ndim)))
    final = container / dataset
    staged = final.with_name(tmp_name)
    trash = final.with_name(f".{name}.old-{uuid.uuid4().hex[:8]}")
    try:
        arr = group.create_array(tmp_name, shape=data.shape, dtype=data.dtype, chunks=chunks)
        arr[...] = data
        arr.attrs.update(meta)
        if final.exists():
            os.rename(final, trash)
        os.rename(staged, final)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        if trash.exists() and not final.exists():
            os.rename(trash, final)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def _default_chunks(ndim: int) -> tuple[int, ...]:
    spatial = (64, 128, 128)[-min(3, ndim):]
    return (1,) * (ndim - len(spatial)) + spatial
