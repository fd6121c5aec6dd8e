"""Watershed fragments from affinities, the MALA recipe (Funke et al. 2018), in numba."""
from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import ArrayLike

from ..._checks import as_affinities, as_int, as_mask, as_number, as_spacing, check_id_range, describe
from ..._deprecation import renamed_keywords
from ...errors import InputError
from ..core.edges import nearest_neighbour_channels
from ..core.relabel import relabel, relabel_consecutive
from ..core.unionfind import find, union
from .distance import distance_transform
from .filters import maximum_filter
from .rag import fragment_graph
from .watershed import flood_levels

__all__ = ["boundary_map", "distance_seeds", "extract_fragments"]


def boundary_map(affs: ArrayLike, offsets: ArrayLike | None = None, *, in_plane: bool = False) -> np.ndarray:
    """Mean nearest-neighbour affinity per voxel (high inside objects), float32.

    With ``in_plane`` only the in-section (y, x) channels are averaged.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities in [0, 1], converted as for :func:`extract_fragments`; only the
        nearest-neighbour channels (``-e_d`` or ``+e_d``) are read.
    offsets : (C, ndim) array_like of int, optional
        The offsets of ``affs``; default the nearest neighbours ``-e_d``.
    in_plane : bool
        Average only the y and x channels (3D affinities; no effect on 2D ones).

    Returns
    -------
    bmap : (z, y, x) or (y, x) float32
        The mean of the nearest-neighbour affinities stored at each voxel.

    Raises
    ------
    InputError
        If ``affs`` or ``offsets`` are invalid, or an axis lacks a nearest-neighbour channel.
    """
    return _boundary_map(*as_affinities(affs, offsets), in_plane=in_plane)


def _boundary_map(affs: np.ndarray, offsets: np.ndarray, *, in_plane: bool) -> np.ndarray:
    nn = nearest_neighbour_channels(affs, offsets)
    channels = nn[1:] if in_plane and nn.shape[0] == 3 else nn
    out = channels[0].copy()
    for c in channels[1:]:
        out += c
    out /= np.float32(len(channels))
    return out


@njit(cache=True, nogil=True)
def _label_maxima(dist, maxfilt, in_plane):
    """Connected plateaus (face connectivity) of local maxima with positive distance."""
    nz, ny, nx = dist.shape
    n = dist.size
    parent = np.arange(n, dtype=np.int64)
    is_max = np.zeros(n, dtype=np.bool_)
    fd = dist.reshape(n)
    fm = maxfilt.reshape(n)
    for i in range(n):
        is_max[i] = fd[i] > 0 and fd[i] == fm[i]
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                i = (z * ny + y) * nx + x
                if not is_max[i]:
                    continue
                if x > 0 and is_max[i - 1]:
                    union(parent, i, i - 1)
                if y > 0 and is_max[i - nx]:
                    union(parent, i, i - nx)
                if not in_plane and z > 0 and is_max[i - nx * ny]:
                    union(parent, i, i - nx * ny)
    seeds = np.zeros(n, dtype=np.uint64)
    label = np.uint64(0)
    for i in range(n):
        if is_max[i]:
            r = find(parent, i)
            if r == i:
                label += np.uint64(1)
                seeds[i] = label
            else:
                seeds[i] = seeds[r]
    return seeds.reshape(dist.shape)


@njit(cache=True, nogil=True)
def _label_unreached(labels, mask, in_plane, start):
    """Give each connected part of unlabelled, unmasked voxels its own label."""
    nz, ny, nx = labels.shape
    n = labels.size
    flat = labels.reshape(n)
    fm = mask.reshape(n)
    parent = np.arange(n, dtype=np.int64)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                i = (z * ny + y) * nx + x
                if flat[i] != 0 or not fm[i]:
                    continue
                if x > 0 and flat[i - 1] == 0 and fm[i - 1]:
                    union(parent, i, i - 1)
                if y > 0 and flat[i - nx] == 0 and fm[i - nx]:
                    union(parent, i, i - nx)
                if not in_plane and z > 0 and flat[i - nx * ny] == 0 and fm[i - nx * ny]:
                    union(parent, i, i - nx * ny)
    label = np.uint64(start)
    for i in range(n):
        if flat[i] == 0 and fm[i]:
            r = find(parent, i)
            if r == i:
                flat[i] = label
                label += np.uint64(1)
    for i in range(n):
        if flat[i] == 0 and fm[i]:
            flat[i] = flat[find(parent, i)]
    return label


@njit(cache=True, nogil=True)
def _merge_small(u, v, mean_aff, sizes, min_size, frozen):
    """Merge fragments under ``min_size`` into their best-linked neighbours until none is left.

    Each round, every small segment (smallest first) joins the segment across its edge of the
    highest mean affinity, which stays the root; rounds repeat while anything merges (segments
    without neighbours stay small). ``frozen`` segments (e.g. seeded ones) are never merged
    away, only merged into, so no two frozen segments end up together.
    """
    n = sizes.shape[0]
    parent = np.arange(n, dtype=np.int64)
    size = sizes.copy()
    best = np.empty(n, dtype=np.int64)
    best_aff = np.empty(n, dtype=np.float32)
    while True:
        best[:] = -1
        best_aff[:] = -1.0
        for e in range(u.shape[0]):
            a = find(parent, u[e])
            b = find(parent, v[e])
            if a == b:
                continue
            w = mean_aff[e]
            if size[a] < min_size and w > best_aff[a]:
                best_aff[a] = w
                best[a] = b
            if size[b] < min_size and w > best_aff[b]:
                best_aff[b] = w
                best[b] = a
        order = np.argsort(size, kind="mergesort")
        merged = 0
        for k in range(n):
            i = order[k]
            if i == 0 or best[i] < 0 or parent[i] != i or size[i] >= min_size or frozen[i]:
                continue
            j = find(parent, best[i])
            if j == i:
                continue
            parent[i] = j  # the neighbour keeps its id
            size[j] += size[i]
            merged += 1
        if merged == 0:
            break
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = find(parent, i)
    return out


FLOOD_LEVELS = 2**16


FLOODS = ("boundary", "distance")
BOUNDARY_WEIGHT = np.float32(0.9)  # flood="boundary": the boundary map's share of the height


def _flood_levels(dist, bmap, inside, flood: str) -> np.ndarray:
    """Flooding order as uint16 levels (lower floods first); see :func:`extract_fragments`.

    "boundary": ``0.9 (1 - boundary map) + 0.1 (1 - distance / max distance)`` everywhere,
    on all 65536 levels. "distance" (the MALA/lsd recipe): interior voxels take ``-distance`` on
    the lower 3/4 of the levels (resolution ``max distance / 49152``, finer than the gap between
    distinct distances of any realistic object), boundary voxels ``1 - boundary map`` on the
    upper quarter.
    """
    if flood == "boundary":
        top = np.float32(max(float(dist.max()), 1e-6))
        height = np.minimum(dist, top)  # float32 throughout: the volume's temporaries stay small
        height /= -top
        height += np.float32(1)
        height *= np.float32(1) - BOUNDARY_WEIGHT
        height += (np.float32(1) - bmap) * BOUNDARY_WEIGHT
        height *= np.float32(FLOOD_LEVELS - 1)
        np.rint(height, out=height)
        return height.astype(np.uint16)
    interior = (FLOOD_LEVELS * 3) // 4
    top = float(dist.max()) if inside.any() else 1.0
    scale = (interior - 1) / max(top, 1e-6)
    deep = np.rint((top - dist) * scale)
    edge = interior + np.rint((1.0 - bmap) * (FLOOD_LEVELS - interior - 1))
    return np.where(inside, deep, edge).astype(np.uint16)


def _distance_seeds(affs, offsets, threshold, min_seed_distance, in_plane, mask, voxel_size):
    """MALA's seeds: plateaus of local maxima of the distance to the boundary (boundary map at
    ``threshold``), with the distance, boundary map and interior they came from."""
    bmap = _boundary_map(affs, offsets, in_plane=in_plane)
    inside = bmap > np.float32(threshold)
    if mask is not None:
        inside &= mask
    dist = distance_transform(inside, voxel_size=voxel_size, in_plane=in_plane)
    # no boundary at all (in a section): every voxel is equally deep
    infinite = np.isinf(dist)
    if infinite.any():
        dist[infinite] = dist[~infinite].max() + 1 if (~infinite).any() else 1
    size = (1, min_seed_distance, min_seed_distance) if in_plane else min_seed_distance
    lift = (lambda a: a) if dist.ndim == 3 else (lambda a: a[None])
    seeds = _label_maxima(lift(dist), lift(maximum_filter(dist, size)), in_plane)
    return seeds.reshape(dist.shape), dist, bmap, inside


def _boundary_threshold(threshold) -> float:
    threshold = as_number(threshold, name="threshold")
    if not 0 <= threshold < 1:
        raise InputError(f"threshold must lie in [0, 1), got {threshold}")
    return threshold


@renamed_keywords(fragments_in_xy="in_plane", sampling="voxel_size")
def distance_seeds(affs: ArrayLike, offsets: ArrayLike | None = None, *, threshold: float = 0.5,
                   min_seed_distance: int = 10, in_plane: bool = False, mask: ArrayLike | None = None,
                   voxel_size: ArrayLike | None = None) -> np.ndarray:
    """The seeds of :func:`extract_fragments` (steps 1-3) as a label volume: each plateau of local
    maxima of the boundary distance gets its own id (1, 2, ...), other voxels 0.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        As for :func:`extract_fragments`.
    offsets : (C, ndim) array_like of int, optional
        As for :func:`extract_fragments`.
    threshold : float
        As for :func:`extract_fragments` (interior: boundary map above it).
    min_seed_distance : int
        As for :func:`extract_fragments` (the maximum filter's size).
    in_plane : bool
        Seeds per z-section (2D distance and plateaus); ``fragments_in_xy=`` is a deprecated alias.
    mask : bool array, spatial shape, optional
        Voxels outside (zero) are boundary: no seed lies there.
    voxel_size : sequence of float, optional
        As for :func:`extract_fragments`; ``sampling=`` is a deprecated alias.

    Returns
    -------
    seeds : (z, y, x) or (y, x) uint64
        Seed ids 1, 2, ... in raster order of their first voxel; 0 elsewhere.

    Raises
    ------
    InputError
        If an argument is invalid (as for :func:`extract_fragments`).
    """
    affs, offsets = as_affinities(affs, offsets)
    mask = as_mask(mask, affs.shape[1:])
    min_seed_distance = as_int(min_seed_distance, name="min_seed_distance", minimum=1)
    threshold = _boundary_threshold(threshold)
    voxel_size = as_spacing(voxel_size, affs.ndim - 1, name="voxel_size")
    in_plane = bool(in_plane) and affs.ndim == 4
    return _distance_seeds(affs, offsets, threshold, min_seed_distance, in_plane, mask, voxel_size)[0]


@renamed_keywords(fragments_in_xy="in_plane", sampling="voxel_size")
def extract_fragments(
    affs: ArrayLike,
    offsets: ArrayLike | None = None,
    *,
    threshold: float = 0.5,
    min_seed_distance: int = 10,
    in_plane: bool = False,
    mask: ArrayLike | None = None,
    min_size: int = 0,
    voxel_size: ArrayLike | None = None,
    id_offset: int = 0,
    flood: str = "boundary",
) -> np.ndarray:
    """Over-segment affinities into fragments: MALA's seeds, a watershed that follows the boundaries.

    1. boundary map = mean nearest-neighbour affinity (in-plane channels with ``in_plane``);
    2. interior = boundary map > ``threshold``; its Euclidean distance transform (``voxel_size``);
    3. seeds = plateaus of local maxima of the distance within a box of ``min_seed_distance``
       voxels (``scipy.ndimage.maximum_filter`` size), on positive distances;
    4. seeded watershed (face connectivity) on a height that ``flood`` chooses, so that every
       unmasked voxel joins a fragment (parts that no seed reaches, e.g. cut off by the mask,
       become fragments of their own); heights are quantized to 65536 levels for a linear-time
       bucket queue. "boundary" (default): ``0.9 (1 - boundary map) + 0.1 (1 - distance / max
       distance)`` everywhere, so that fragments follow faint boundaries inside objects too.
       "distance" (the MALA/lsd recipe): ``-distance`` inside objects and ``1 - boundary map``
       on boundaries, ignoring the boundary evidence inside; see docs/benchmarks.md for both
       on real shapes;
    5. fragments under ``min_size`` voxels merge, smallest first, into the neighbour they share
       the highest mean affinity with.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities in [0, 1]; float64 and float16 are cast to float32, uint8 is divided by 255.
        The nearest-neighbour channels (``-e_d`` or ``+e_d``) are used.
    offsets : (C, ndim) array_like of int, optional
        The offsets of ``affs``; default the nearest neighbours ``-e_d``.
    threshold : float
        Boundary-map threshold between boundary and interior, in [0, 1).
    min_seed_distance : int
        Size of the maximum filter for seeds (voxels, >= 1).
    in_plane : bool
        Fragments per z-section (anisotropic data): 2D distance, seeds and watershed per section.
        ``fragments_in_xy=`` is a deprecated alias.
    mask : bool array, spatial shape, optional
        Voxels outside (zero) get 0.
    min_size : int
        Minimum fragment size in voxels (0 or 1: no merging).
    voxel_size : sequence of float, optional
        Voxel size for the distance transform (zyx or yx); ``sampling=`` is a deprecated alias.
    id_offset : int
        Fragment ids start at ``id_offset + 1`` (>= 0).
    flood : {"boundary", "distance"}
        The watershed's height (step 4).

    Returns
    -------
    fragments : (z, y, x) or (y, x) uint64
        Consecutive ids from ``id_offset + 1``; 0 only where masked.

    Raises
    ------
    InputError
        If ``affs``, ``offsets`` or ``mask`` are invalid, ``threshold`` is outside [0, 1), an
        integer option is out of range, or ids from ``id_offset + 1`` might not fit in uint64.
    """
    affs, offsets = as_affinities(affs, offsets)
    shape = affs.shape[1:]
    mask = as_mask(mask, shape)
    min_seed_distance = as_int(min_seed_distance, name="min_seed_distance", minimum=1)
    min_size = as_int(min_size, name="min_size", minimum=0)
    id_offset = as_int(id_offset, name="id_offset", minimum=0)
    threshold = _boundary_threshold(threshold)
    if not isinstance(flood, str) or flood not in FLOODS:
        raise InputError(f"flood must be one of {FLOODS}, got {describe(flood)}")
    voxel_size = as_spacing(voxel_size, len(shape), name="voxel_size")
    # at most one fragment per voxel: the ids must fit before any work is done
    check_id_range(id_offset + 1, int(np.prod(shape)), name="id_offset")
    in_plane = bool(in_plane) and len(shape) == 3
    lift = (lambda a: a) if len(shape) == 3 else (lambda a: a[None])
    seeds, dist, bmap, inside = _distance_seeds(affs, offsets, threshold, min_seed_distance, in_plane, mask,
                                                voxel_size)
    seeds = lift(seeds)
    levels = _flood_levels(dist, bmap, inside, flood)
    del dist, bmap, inside
    full = np.ones(shape, bool) if mask is None else mask
    flooded = flood_levels(levels, seeds if len(shape) == 3 else seeds[0], mask, n_levels=FLOOD_LEVELS,
                           in_plane=in_plane)
    del levels
    seeds = lift(flooded.astype(np.uint64))
    del flooded
    _label_unreached(seeds, lift(full), in_plane or len(shape) == 2, int(seeds.max()) + 1)
    fragments = seeds if len(shape) == 3 else seeds[0]
    if min_size > 1:
        fragments = merge_small_segments(affs, offsets, fragments, min_size)
    fragments, _ = relabel_consecutive(fragments, start=id_offset + 1)
    return fragments


def merge_small_segments(affs: np.ndarray, offsets: np.ndarray, fragments: np.ndarray, min_size: int,
                         frozen_ids: np.ndarray | None = None) -> np.ndarray:
    """Merge segments under ``min_size`` voxels (see ``_merge_small``); ids in ``frozen_ids``
    are never merged away. A segment that absorbs others keeps its id.

    Package-internal (not in ``__all__``; used by :func:`extract_fragments` and the Mutex
    Watershed's ``min_size``): the inputs must be validated already."""
    rag = fragment_graph(affs, offsets, fragments)
    counts = np.diff(rag.contact_ptr)
    sums = np.add.reduceat(rag.contact_aff, rag.contact_ptr[:-1]) if rag.num_edges else np.zeros(0)
    mean = (sums / np.maximum(counts, 1)).astype(np.float32)
    frozen = np.zeros(rag.ids.shape[0], bool) if frozen_ids is None else np.isin(rag.ids, frozen_ids)
    roots = _merge_small(rag.u, rag.v, mean, rag.sizes, min_size, frozen)
    return relabel(fragments, rag.ids, rag.ids[roots])


@njit(cache=True, nogil=True)
def _sizes_and_sums(flat, shape, first, count):
    """Voxel counts and coordinate sums (float64, one column per axis) of ids ``first ..
    first + count - 1`` in the C-ordered ``flat`` of a volume of ``shape``, and the first id
    outside that range (0 if none: the sums are then incomplete)."""
    ndim = len(shape)
    sizes = np.zeros(count, np.int64)
    sums = np.zeros((count, ndim), np.float64)
    coordinate = np.zeros(ndim, np.int64)
    for k in range(flat.shape[0]):
        label = flat[k]
        if label != 0:
            if label < first or label - first >= count:
                return sizes, sums, label
            i = np.int64(label - first)
            sizes[i] += 1
            for axis in range(ndim):
                sums[i, axis] += coordinate[axis]
        axis = ndim - 1  # the next voxel's coordinate, in C order
        coordinate[axis] += 1
        while axis > 0 and coordinate[axis] == shape[axis]:
            coordinate[axis] = 0
            axis -= 1
            coordinate[axis] += 1
    return sizes, sums, np.uint64(0)


def sizes_and_centres(fragments: np.ndarray, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Sizes (int64) and centres (float64 voxel coordinates, one column per axis) of the fragments
    ``first .. first + count - 1``, which must hold every non-zero id of ``fragments`` (else an
    InputError naming the id), in one pass and without coordinate volumes. An id of the range
    without a voxel gets size 0 and centre 0 (zeros in every column); ``count`` 0 gives empty
    arrays (and an InputError if ``fragments`` holds any non-zero id). Package-internal
    (blockwise node tables)."""
    flat = np.ascontiguousarray(fragments, dtype=np.uint64).reshape(-1)
    sizes, sums, outside = _sizes_and_sums(flat, np.array(fragments.shape, np.int64), np.uint64(first), count)
    if outside:
        raise InputError(f"fragment id {int(outside)} is outside {first}..{first + count - 1}")
    return sizes, sums / np.maximum(sizes, 1)[:, None]
