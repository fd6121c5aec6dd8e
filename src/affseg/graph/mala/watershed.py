"""Seeded watershed by priority flooding (scikit-image's order), in numba."""
from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import ArrayLike

from ..._checks import as_int, as_labels, as_mask
from ...errors import InputError
from ..core.heap import heap_pop, heap_push
from ..core.prefetch import prefetch

__all__ = ["flood_levels", "ordered_keys", "seeded_watershed"]


def ordered_keys(values: ArrayLike) -> np.ndarray:
    """uint32 keys that sort like the float32 ``values`` (finite values and infinities).

    Parameters
    ----------
    values : array_like of float, any shape
        Values, cast to float32; NaN has no defined place (``-0.0`` sorts before ``0.0``).

    Returns
    -------
    keys : uint32, shape of ``values``
        Keys whose unsigned order is the order of the values.
    """
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    negative = (bits >> np.uint32(31)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint32(0x80000000))


@njit(cache=True, nogil=True)
def _flood(height_keys, labels, mask, in_plane):
    """Flood from the labelled voxels in order of (height, arrival); labels are set on arrival.

    ``labels`` holds the seeds and is filled in place; voxels with ``mask == 0`` stay 0. At most
    ``MAX_WATERSHED_VOXELS`` voxels: the arrival count shares the heap key with the height.
    """
    nz, ny, nx = labels.shape
    n = nz * ny * nx
    flat = labels.reshape(n)
    hk = height_keys.reshape(n)
    msk = mask.reshape(n)
    keys = np.empty(n, dtype=np.uint64)  # a heap on height << 32 | arrival: one compare
    items = np.empty(n, dtype=np.int64)
    size = 0
    for i in range(n):
        if flat[i] != 0:
            heap_push(keys, None, items, size, np.uint64(hk[i]) << np.uint64(32), None, i)
            size += 1
    age = np.uint64(0)
    sxy = ny * nx
    while size > 0:
        i = items[0]
        heap_pop(keys, None, items, size)
        size -= 1
        z = i // sxy
        y = (i // nx) % ny
        x = i % nx
        lab = flat[i]
        for d in range(6):
            if d == 0:
                if in_plane or z == 0:
                    continue
                j = i - sxy
            elif d == 1:
                if in_plane or z == nz - 1:
                    continue
                j = i + sxy
            elif d == 2:
                if y == 0:
                    continue
                j = i - nx
            elif d == 3:
                if y == ny - 1:
                    continue
                j = i + nx
            elif d == 4:
                if x == 0:
                    continue
                j = i - 1
            else:
                if x == nx - 1:
                    continue
                j = i + 1
            if flat[j] != 0 or not msk[j]:
                continue
            age += np.uint64(1)
            flat[j] = lab
            heap_push(keys, None, items, size, (np.uint64(hk[j]) << np.uint64(32)) | age, None, j)
            size += 1


@njit(cache=True, nogil=True, inline="always")
def _lowest_bit(word):
    """Index of the lowest set bit of a non-zero uint64."""
    k = 0
    while (word >> np.uint64(k)) & np.uint64(1) == 0:
        k += 1
    return k


@njit(cache=True, nogil=True, inline="always")
def _next_level(words, summary, level, n_levels):
    """The lowest non-empty level >= ``level`` (two-level bitmap), or ``n_levels``."""
    if level >= n_levels:
        return n_levels
    w = level >> 6
    word = words[w] & (~np.uint64(0) << np.uint64(level & 63))
    if word != 0:
        return (w << 6) + _lowest_bit(word)
    w += 1
    s = w >> 6
    while s < summary.shape[0]:
        sword = summary[s] if (w & 63) == 0 else summary[s] & (~np.uint64(0) << np.uint64(w & 63))
        if sword != 0:
            w = (s << 6) + _lowest_bit(sword)
            return (w << 6) + _lowest_bit(words[w])
        s += 1
        w = s << 6
    return n_levels


@njit(cache=True, nogil=True, inline="always")
def _mark(words, summary, level, on):
    w = level >> 6
    if on:
        words[w] |= np.uint64(1) << np.uint64(level & 63)
        summary[w >> 6] |= np.uint64(1) << np.uint64(w & 63)
    else:
        words[w] &= ~(np.uint64(1) << np.uint64(level & 63))
        if words[w] == 0:
            summary[w >> 6] &= ~(np.uint64(1) << np.uint64(w & 63))


def queue_index_type(n_voxels: int) -> type:
    """The integer type of the flood queue's voxel indices: int32 (half the memory traffic) where
    every index of a volume of ``n_voxels`` (padded) fits, int64 from 2**31 voxels on."""
    return np.int32 if n_voxels <= np.iinfo(np.int32).max + 1 else np.int64


@njit(cache=True, nogil=True)
def _flood_buckets(lv, n_levels, flat, steps, index_type):
    """:func:`_flood` on integer levels with a bucket queue: (level, arrival) order in O(n).

    ``flat`` (uint32, raveled, padded with a border of ``MASKED``) holds the seeds, 0 for voxels
    to flood and ``MASKED`` for voxels to leave alone, so that a neighbour ``i + step`` needs no
    bounds check and one array read. Each voxel enters the queue at most once (it is labelled
    on arrival) and its level is known in advance, so every level gets a contiguous slice of
    one array, sized by counting, as its first-in, first-out queue: pushes to a level are
    sequential in memory. A bitmap of non-empty levels finds the next one. The order is exactly
    that of a heap on (level, arrival). The queue holds indices of the dtype of ``index_type``
    (an empty array; see :func:`queue_index_type`).
    """
    n = flat.shape[0]
    masked = np.uint32(MASKED)
    start = np.zeros(n_levels + 1, dtype=np.int64)
    for i in range(n):
        if flat[i] != masked:
            start[np.int64(lv[i]) + 1] += 1
    for b in range(n_levels):
        start[b + 1] += start[b]
    queue = np.empty(start[n_levels], dtype=index_type.dtype)
    head = start[:n_levels].copy()
    tail = start[:n_levels].copy()
    n_words = (n_levels + 63) >> 6
    words = np.zeros(n_words, dtype=np.uint64)
    summary = np.zeros((n_words + 63) >> 6, dtype=np.uint64)
    for i in range(n):
        if flat[i] != 0 and flat[i] != masked:
            b = np.int64(lv[i])
            queue[tail[b]] = i
            tail[b] += 1
            _mark(words, summary, b, True)
    _flood_queue(lv, n_levels, flat, steps, queue, head, tail, words, summary)


@njit(cache=True, nogil=True, _nrt=False)
def _flood_queue(lv, n_levels, flat, steps, queue, head, tail, words, summary):
    """The flooding loop of :func:`_flood_buckets`. It allocates nothing and is compiled
    without reference counting, which would otherwise cost on every level change; the
    neighbours of the voxel ``FLOOD_AHEAD`` places further on in the current level's queue are
    prefetched (the queue is known in advance, the voxels' memory is not in cache)."""
    cursor = _next_level(words, summary, 0, n_levels)
    while cursor < n_levels:
        k = head[cursor]
        i = queue[k]
        if k + FLOOD_AHEAD < tail[cursor]:
            ahead = queue[k + FLOOD_AHEAD]
            for step in steps:
                prefetch(flat, ahead + step)
                prefetch(lv, ahead + step)
        head[cursor] = k + 1
        if head[cursor] == tail[cursor]:
            _mark(words, summary, cursor, False)
        lab = flat[i]
        for step in steps:
            j = i + step
            if flat[j] != 0:
                continue
            flat[j] = lab
            b = np.int64(lv[j])
            if head[b] == tail[b]:
                _mark(words, summary, b, True)
            queue[tail[b]] = j
            tail[b] += 1
            cursor = min(cursor, b)
        if head[cursor] == tail[cursor]:
            cursor = _next_level(words, summary, cursor, n_levels)

MASKED = 2**32 - 1
# seeded_watershed's heap key is height << 32 | arrival: the arrival count (at most the number of
# voxels less one seed) must fit in 32 bits
MAX_WATERSHED_VOXELS = 2**32
FLOOD_AHEAD = 8  # queue places ahead whose neighbours are prefetched


def flood_levels(levels: ArrayLike, seeds: ArrayLike, mask: ArrayLike | None, *, n_levels: int,
                 in_plane: bool = False) -> np.ndarray:
    """Seeded watershed on integer ``levels`` (< ``n_levels``); returns uint32 labels.

    Same order as :func:`seeded_watershed` on heights that sort like ``levels``, in linear time.
    ``seeds`` are ids below 2**32 - 1; voxels outside ``mask`` (or not reached) get 0.

    Parameters
    ----------
    levels : (z, y, x) or (y, x) array_like of int
        Flooding level of each voxel, in ``[0, n_levels)``.
    seeds : int array, shape of ``levels``
        Seed ids below 2**32 - 1, 0 = no seed. Seeds outside ``mask`` are dropped.
    mask : bool array, shape of ``levels``, or None
        Voxels that may be labelled (non-zero); None: all.
    n_levels : int
        Number of levels, 1 to 2**31.
    in_plane : bool
        Flood within z-sections only.

    Returns
    -------
    labels : uint32, shape of ``levels``
        The seed id that reached each voxel first; 0 where not reached or masked.

    Raises
    ------
    InputError
        If ``levels`` is not a 2D or 3D integer array or lies outside ``[0, n_levels)``, the
        seeds or mask do not fit it, or a seed id is 2**32 - 1 or more.
    """
    levels, seeds = np.asarray(levels), np.asarray(seeds)
    n_levels = as_int(n_levels, name="n_levels", minimum=1, maximum=2**31)
    if levels.ndim not in (2, 3) or levels.dtype.kind not in "iu":
        raise InputError(f"levels must be a 2D or 3D integer array, got shape {levels.shape}, dtype {levels.dtype}")
    seeds = as_labels(seeds, name="seeds", shape=levels.shape)
    mask = as_mask(mask, levels.shape)
    if levels.size and (int(levels.min()) < 0 or int(levels.max()) >= n_levels):
        raise InputError(f"levels must lie in [0, {n_levels}), found [{int(levels.min())}, {int(levels.max())}]")
    if seeds.size and int(seeds.max()) >= MASKED:
        raise InputError(f"seed ids must be below {MASKED}, got {int(seeds.max())}")
    vol = seeds if seeds.ndim == 3 else seeds[None]
    lev = levels if levels.ndim == 3 else levels[None]
    nz, ny, nx = vol.shape
    padded = np.full((nz + 2, ny + 2, nx + 2), MASKED, dtype=np.uint32)
    inner = padded[1:-1, 1:-1, 1:-1]
    inner[...] = vol
    if mask is not None:
        inner[~(mask if mask.ndim == 3 else mask[None])] = MASKED
    padded_levels = np.zeros(padded.shape, dtype=np.uint16 if n_levels <= 2**16 else np.int64)
    padded_levels[1:-1, 1:-1, 1:-1] = lev
    sy, sz = nx + 2, (ny + 2) * (nx + 2)
    steps = [-1, 1, -sy, sy] if in_plane or seeds.ndim == 2 else [-sz, sz, -sy, sy, -1, 1]
    _flood_buckets(padded_levels.reshape(-1), n_levels, padded.reshape(-1), np.array(steps, dtype=np.int64),
                   np.empty(0, queue_index_type(padded.size)))
    labels = np.ascontiguousarray(inner)
    labels[labels == MASKED] = 0
    return labels if seeds.ndim == 3 else labels[0]


def seeded_watershed(heights: ArrayLike, seeds: ArrayLike, *, mask: ArrayLike | None = None,
                     in_plane: bool = False) -> np.ndarray:
    """Seeded watershed of a height map with face connectivity.

    Voxels are flooded in order of (height, arrival) from the seeds and take the label of the
    voxel that reached them first, as ``skimage.segmentation.watershed(heights, seeds, mask=mask)``
    does (arrival counts from 1 for flooded voxels; seeds of equal height may be taken in another
    order). Heights are compared as float32.

    Parameters
    ----------
    heights : (z, y, x) or (y, x) array_like of float
        Finite heights (compared as float32).
    seeds : int array, shape of ``heights``
        Seed ids (non-negative, up to 2**64 - 1), 0 = no seed. Seeds outside ``mask`` are dropped.
    mask : bool array, shape of ``heights``, optional
        Voxels that may be labelled (non-zero).
    in_plane : bool
        Flood within z-sections only.

    Returns
    -------
    labels : uint64, shape of ``heights``
        The seed id that reached each voxel first; 0 where not reached or masked.

    Raises
    ------
    InputError
        If ``heights`` is not 2D or 3D, has more than 2**32 voxels or holds NaN or infinite
        values, or the seeds or the mask do not fit it.
    """
    heights = np.asarray(heights)
    if heights.ndim not in (2, 3):
        raise InputError(f"heights must be 2D or 3D, got shape {heights.shape}")
    if heights.size > MAX_WATERSHED_VOXELS:  # on the shape alone, before any pass or copy
        raise InputError(f"heights has {heights.size} voxels (shape {heights.shape}), more than the "
                         "watershed's limit of 2**32 (its queue counts arrivals in 32 bits); use flood_levels "
                         "(integer levels) or segment blockwise")
    if heights.size and not np.all(np.isfinite(heights)):
        raise InputError("heights contain NaN or infinite values")
    labels = as_labels(seeds, name="seeds", shape=heights.shape).copy()
    mask = as_mask(mask, heights.shape)
    if mask is None:
        mask = np.ones(heights.shape, dtype=bool)
    labels[~mask] = 0
    keys = ordered_keys(heights)
    lift = (lambda a: a) if heights.ndim == 3 else (lambda a: a[None])
    _flood(lift(keys), lift(labels), lift(mask), in_plane or heights.ndim == 2)
    return labels
