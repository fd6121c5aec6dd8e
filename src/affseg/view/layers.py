"""Which layer each volume becomes, and the checks that come before any viewer starts.

Shared by the neuroglancer viewer (:mod:`affseg.view.server`) and :func:`affseg.view.napari_layers`;
imports neither.

Kinds
-----
``image``
    Raw data: uint8, floating point, or any volume forced with ``image=``.
``affinities``
    An image with a channel axis (``axes`` such as ``["c^", "z", "y", "x"]``, or an ``offsets``
    attribute): shown as RGB, channels 0, 1, 2 (the nearest-neighbour z, y, x affinities of the
    default neighbourhood) as red, green, blue.
``segmentation``
    Integer labels: every integer dtype but uint8 (and bool) unless the dataset's name says raw
    (``raw``, ``image``, ``img``, ``em``), or any integer volume forced with ``segmentation=``.

World coordinates: every volume is placed by its own ``voxel_size`` and ``offset`` (converted to
nm), so volumes of different shapes and voxel sizes are shown aligned (a prediction cropped by the
network's context sits where it belongs in the raw). Refused: volumes with different numbers of
spatial axes (2D beside 3D), a unit that is not a length, and an offset that is not a whole number
of voxels.

Sources: each volume is served under ``python://volume/<viewer token>.<volume token>``, the volume
token a hash of the dataset's absolute address (:func:`volume_token`), so a link written elsewhere
(:func:`viewer_source`, used by ``affseg evaluate --report``) names the same volume whenever it is
served by the viewer at that URL.
"""
from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..errors import InputError, VolumeNotFound

KINDS = ("image", "affinities", "segmentation")

# length units to nm; a volume without units is taken to be in nm (affseg's default)
_TO_NM = {"": 1.0, "nm": 1.0, "pm": 1e-3, "um": 1e3, "µm": 1e3, "μm": 1e3, "micrometer": 1e3, "micron": 1e3,
          "nanometer": 1.0, "mm": 1e6, "cm": 1e7, "m": 1e9}
NEUROGLANCER_LENGTHS = frozenset({"m", "mm", "um", "µm", "nm", "pm"})  # of these, what neuroglancer takes as it is
_RAW_NAMES = {"raw", "image", "img", "em"}


@dataclass
class Layer:
    """One volume to show: its name, kind and placement (zyx, nm) beside the open :class:`~affseg.io.Volume`."""

    name: str
    address: str
    kind: str
    volume: object  # affseg.io.Volume, open
    voxel_size: tuple[float, ...]  # nm per voxel, spatial axes
    offset: tuple[float, ...]  # nm, world position of voxel 0
    axes: tuple[str, ...]  # spatial axes, e.g. ("z", "y", "x")
    channels: int  # 0 without a channel axis

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.volume.shape[-len(self.axes):]

    @property
    def voxel_offset(self) -> tuple[int, ...]:
        return tuple(round(o / v) for o, v in zip(self.offset, self.voxel_size))

    def world_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Start and stop of the volume in world units (nm), spatial axes."""
        start = np.asarray(self.offset)
        return start, start + np.asarray(self.spatial_shape) * np.asarray(self.voxel_size)


def nm_per_unit(units: Sequence[str], address: str) -> np.ndarray:
    """Nanometres per unit of each axis (a volume without units is in nm); InputError naming
    ``address`` for a unit that is not a length."""
    factors = []
    for unit in units:
        key = str(unit).strip()
        if key not in _TO_NM and key.lower() not in _TO_NM:
            raise InputError(f"{address}: unit {unit!r} is not a length unit affseg view knows "
                             f"({', '.join(repr(u) for u in _TO_NM if u)})")
        factors.append(_TO_NM.get(key, _TO_NM.get(key.lower())))
    return np.asarray(factors)


_VIEWER_URL = re.compile(r"^https?://[^/#?]+/v/(?P<token>[A-Za-z0-9_-]+)/?(?:[#?].*)?$")
OPEN_PATH = "/affseg/open/"  # + TOKEN?state=JSON: the viewer's server sets that state (server.py)
VIEWER_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # no "." (neuroglancer splits volume keys there) nor "/"


def volume_token(address: str | os.PathLike) -> str:
    """The token a dataset is served under: a hash of its container's absolute path and the path
    inside it, the same for every spelling of the address and in every process."""
    from ..io import parse_address

    container, dataset, _ = parse_address(address)
    canonical = f"{Path(container).resolve()}::{dataset.strip('/')}"
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def viewer_token(viewer_url: str) -> str:
    """The TOKEN of an ``affseg view`` URL (``http://HOST:PORT/v/TOKEN/``, as the command prints
    it); InputError for any other address."""
    match = _VIEWER_URL.match(viewer_url) if isinstance(viewer_url, str) else None
    if match is None:
        raise InputError(f"viewer URL {viewer_url!r} is not one that affseg view prints "
                         "(http://HOST:PORT/v/TOKEN/)")
    return match["token"]


def is_viewer_url(url: str) -> bool:
    """Whether ``url`` is one that ``affseg view`` prints (``http://HOST:PORT/v/TOKEN/``)."""
    return isinstance(url, str) and _VIEWER_URL.match(url) is not None


def viewer_link(viewer_url: str, state_json: str) -> str:
    """The link that loads a neuroglancer state (JSON text) into the ``affseg view`` viewer at
    ``viewer_url``: the viewer's server takes it (``OPEN_PATH``) and sends the browser to the
    viewer, which stays connected to the server (a ``#!`` state in the URL would cut it off)."""
    token = viewer_token(viewer_url)
    origin = viewer_url.split("/v/", 1)[0]
    return f"{origin}{OPEN_PATH}{token}?state={quote(state_json, safe=':,')}"


def viewer_source(viewer_url: str, address: str | os.PathLike) -> str:
    """The neuroglancer source under which the ``affseg view`` viewer at ``viewer_url`` serves
    the dataset ``address`` (whenever that viewer shows it)."""
    return f"python://volume/{viewer_token(viewer_url)}.{volume_token(address)}"


def auto_kind(volume, address: str) -> str:
    """The kind of a volume from its dtype, axes and attributes (see the module's docstring)."""
    n_channel_axes = sum(1 for a in volume.axes if a.endswith("^"))
    if n_channel_axes or "offsets" in volume.data.attrs:
        return "affinities"
    dtype = volume.dtype
    if dtype.kind in "iu" and dtype != np.uint8:
        name = str(address).rstrip("/").rsplit("/", 1)[-1].lower()
        return "image" if name in _RAW_NAMES else "segmentation"
    return "image"


def _check_forced(volume, address: str, kind: str) -> None:
    n_channel_axes = sum(1 for a in volume.axes if a.endswith("^"))
    if kind == "segmentation":
        if volume.dtype.kind not in "iub":
            raise InputError(f"{address} has dtype {volume.dtype}: a segmentation must hold integer labels "
                             "(show it as an image instead)")
        if n_channel_axes:
            raise InputError(f"{address} has a channel axis (axes {list(volume.axes)}): a segmentation has "
                             "spatial axes only")
    if volume.dtype.kind not in "iubf":
        raise InputError(f"{address} has dtype {volume.dtype}, which cannot be shown")
    if n_channel_axes > 1:
        raise InputError(f"{address} has {n_channel_axes} channel axes (axes {list(volume.axes)}); one at most")


def _key(address: str | os.PathLike) -> str:
    """An address in one spelling (``./a.zarr/raw/`` is ``a.zarr/raw``)."""
    return str(Path(address))


def _unique_names(addresses: Sequence[str]) -> list[str]:
    """Layer names: the dataset's path inside its container, with the container's name where two
    volumes would share one."""
    from ..io import parse_address

    parsed = [parse_address(a) for a in addresses]
    names = [dataset for _, dataset, _ in parsed]
    if len(set(names)) < len(names):
        names = [f"{container.name}/{dataset}" for container, dataset, _ in parsed]
    if len(set(names)) < len(names):
        names = [str(a) for a in addresses]
    return names


def expand_addresses(addresses: Iterable[str | os.PathLike]) -> list[str]:
    """Each address as given, or, for a group or a container (``out.zarr``, ``out.zarr/seg``), the
    datasets directly inside it (sorted by name)."""
    from ..io import parse_address, volume_exists
    from ..io.volumes import group_members

    expanded = []
    for address in map(_key, addresses):
        try:
            parse_address(address)
            is_dataset = volume_exists(address)
        except InputError:
            is_dataset = False  # a container alone: its root group
        if is_dataset:
            expanded.append(address)
            continue
        try:
            container, group, names = group_members(address)
        except InputError:
            raise InputError(f"{address} is not a volume address: expected 'file.zarr/dataset', 'file.h5/dataset' "
                             "or a container or group holding datasets") from None
        except VolumeNotFound as e:
            if "no such file" in str(e):
                raise
            container, dataset, _ = parse_address(address)
            raise VolumeNotFound(f"no dataset or group '{dataset}' in {container}") from None
        if not names:
            raise InputError(f"{address} holds no datasets")
        expanded += [str(Path(container, group, name)) for name in names]
    return list(dict.fromkeys(expanded))


def plan_layers(addresses: Sequence[str | os.PathLike], *, segmentation: Iterable[str | os.PathLike] = (),
                image: Iterable[str | os.PathLike] = ()) -> list[Layer]:
    """Open the volumes and decide their layers; every check is done here, before a viewer starts.

    ``segmentation`` and ``image`` name volumes (shown in addition to ``addresses``, or forcing the
    kind of one of them). Layers come in the order images, affinities, segmentations (each in the
    order given): later layers are drawn on top. The volumes stay open: close them with
    :func:`close_layers`.
    """
    forced = {}
    for kind, given in (("segmentation", segmentation), ("image", image)):
        for address in [given] if isinstance(given, (str, os.PathLike)) else given:
            key = _key(address)
            if forced.get(key, kind) != kind:
                raise InputError(f"{key} is given both as a segmentation and as an image")
            forced[key] = kind
    given = [_key(a) for a in addresses]
    requested = given + [a for a in forced if a not in given]
    if not requested:
        raise InputError("no volumes to show: give at least one address, e.g. out.zarr/raw")
    for key in forced:
        from ..io import parse_address

        parse_address(key)  # a forced kind names one dataset, not a group
    flat = expand_addresses(requested)
    names = _unique_names(flat)
    layers: list[Layer] = []
    try:
        for address, name in zip(flat, names):
            layers.append(_open_layer(address, name, forced.get(address)))
        _check_together(layers)
    except BaseException:
        close_layers(layers)
        raise
    order = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(layers, key=lambda layer: order[layer.kind])


def _open_layer(address: str, name: str, kind: str | None) -> Layer:
    from ..io import open_volume

    volume = open_volume(address)
    try:
        if kind is not None:
            _check_forced(volume, address, kind)
            if kind == "image" and any(a.endswith("^") for a in volume.axes):
                kind = "affinities"
        else:
            _check_forced(volume, address, "image")
            kind = auto_kind(volume, address)
        spatial = tuple(a for a in volume.axes if not a.endswith("^"))
        if len(spatial) not in (2, 3):
            raise InputError(f"{address} has {len(spatial)} spatial axes (axes {list(volume.axes)}); "
                             "affseg view shows 2D and 3D volumes")
        spatial_units = volume.units if len(volume.units) == len(spatial) else (volume.units[:1] * len(spatial))
        factors = nm_per_unit(spatial_units, address)
        voxel_size = tuple(float(v) for v in np.asarray(volume.voxel_size) * factors)
        offset = tuple(float(o) for o in np.asarray(volume.offset) * factors)
        if min(voxel_size) <= 0:
            raise InputError(f"{address}: voxel_size {volume.voxel_size} must be positive")
        voxels = np.asarray(offset) / np.asarray(voxel_size)
        if not np.allclose(voxels, np.round(voxels), rtol=0, atol=1e-6):
            raise InputError(f"{address}: offset {volume.offset} is not a whole number of voxels of size "
                             f"{volume.voxel_size}; affseg view places volumes on their voxel grid")
        channels = volume.shape[0] if volume.ndim > len(spatial) else 0
        return Layer(name, address, kind, volume, voxel_size, offset, spatial, channels)
    except BaseException:
        volume.close()
        raise


def _check_together(layers: Sequence[Layer]) -> None:
    """Volumes shown in one view: the same spatial axes; a warning for one that lies apart from the first."""
    first = layers[0]
    for layer in layers[1:]:
        if len(layer.axes) != len(first.axes):
            raise InputError(f"{layer.address} is {len(layer.axes)}D ({layer.volume.shape}) but {first.address} "
                             f"is {len(first.axes)}D ({first.volume.shape}): show 2D and 3D volumes in separate views")
    start, stop = first.world_box()
    for layer in layers[1:]:
        other_start, other_stop = layer.world_box()
        if np.any(other_start >= stop) or np.any(other_stop <= start):
            warnings.warn(f"{layer.address} (world box {other_start.tolist()} to {other_stop.tolist()} nm) does not "
                          f"overlap {first.address} ({start.tolist()} to {stop.tolist()} nm): check their offsets",
                          stacklevel=3)


def close_layers(layers: Iterable[Layer]) -> None:
    """Close the volumes of the layers (their HDF5 files)."""
    for layer in layers:
        layer.volume.close()


def display_dtype(layer: Layer) -> np.dtype:
    """The dtype a layer is served in: neuroglancer's types (uint64 labels, float32 for wide images)."""
    dtype = layer.volume.dtype
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if layer.kind == "segmentation":
        return dtype if dtype.kind == "u" else np.dtype(np.uint64)
    if dtype.kind == "f" or dtype.itemsize > 4:
        return np.dtype(np.float32)
    return dtype


def display_range(layer: Layer) -> tuple[float, float]:
    """The value range an image is shown over: the dtype's for uint8 and for affinities (0..1 or
    0..255), else the 0.5 and 99.5 percentiles of the volume's central section (one read)."""
    dtype = layer.volume.dtype
    if dtype == np.uint8 or dtype == np.bool_:
        return (0.0, 255.0) if dtype == np.uint8 else (0.0, 1.0)
    if layer.kind == "affinities":
        return (0.0, 1.0) if dtype.kind == "f" else (0.0, float(np.iinfo(dtype).max))
    shape = layer.volume.shape
    key = tuple(slice(None) for _ in shape[:-2])
    if len(layer.axes) == 3:
        key = key[:-1] + (shape[-3] // 2,)
    sample = layer.volume[key].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
    return (low, high) if high > low else (low, low + 1.0)
