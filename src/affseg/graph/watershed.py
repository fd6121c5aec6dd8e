"""Seeded watershed by priority flooding (scikit-image's order), in numba."""
from __future__ import annotations

import numpy as np
from numba import njit

from .._checks import as_labels, as_mask

__all__ = ["seeded_watershed", "ordered_keys"]


def ordered_keys(values: np.ndarray) -> np.ndarray:
    """uint32 keys that sort like the float32 ``values`` (finite values and infinities)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    negative = (bits >> np.uint32(31)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint32(0x80000000))


@njit(cache=True, nogil=True)
def _sift_up(keys, items, pos):
    key = keys[pos]
    item = items[pos]
    while pos > 0:
        parent = (pos - 1) >> 1
        if keys[parent] <= key:
            break
        keys[pos] = keys[parent]
        items[pos] = items[parent]
        pos = parent
    keys[pos] = key
    items[pos] = item


@njit(cache=True, nogil=True)
def _sift_down(keys, items, size):
    key = keys[0]
    item = items[0]
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        if child + 1 < size and keys[child + 1] < keys[child]:
            child += 1
        if keys[child] >= key:
            break
        keys[pos] = keys[child]
        items[pos] = items[child]
        pos = child
    keys[pos] = key
    items[pos] = item


@njit(cache=True, nogil=True)
def _flood(height_keys, labels, mask, in_plane):
    """Flood from the labelled voxels in order of (height, arrival); labels are set on arrival.

    ``labels`` holds the seeds and is filled in place; voxels with ``mask == 0`` stay 0.
    """
    nz, ny, nx = labels.shape
    n = nz * ny * nx
    flat = labels.reshape(n)
    hk = height_keys.reshape(n)
    msk = mask.reshape(n)
    keys = np.empty(n, dtype=np.uint64)
    items = np.empty(n, dtype=np.int64)
    size = 0
    for i in range(n):
        if flat[i] != 0:
            keys[size] = np.uint64(hk[i]) << np.uint64(32)
            items[size] = i
            size += 1
            _sift_up(keys, items, size - 1)
    age = np.uint64(0)
    sxy = ny * nx
    while size > 0:
        i = items[0]
        size -= 1
        if size > 0:
            keys[0] = keys[size]
            items[0] = items[size]
            _sift_down(keys, items, size)
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
            keys[size] = (np.uint64(hk[j]) << np.uint64(32)) | age
            items[size] = j
            size += 1
            _sift_up(keys, items, size - 1)


def seeded_watershed(heights, seeds, *, mask=None, in_plane: bool = False) -> np.ndarray:
    """Seeded watershed of a height map with face connectivity.

    Voxels are flooded in order of (height, arrival) from the seeds and take the label of the
    voxel that reached them first, as ``skimage.segmentation.watershed(heights, seeds, mask=mask)``
    does (arrival counts from 1 for flooded voxels; seeds of equal height may be taken in another
    order). Heights are compared as float32.

    Parameters
    ----------
    heights : (z, y, x) or (y, x) array of float
    seeds : int array, shape of ``heights``
        Seed ids, 0 = no seed. Seeds outside ``mask`` are dropped.
    mask : bool array, optional
        Voxels that may be labelled.
    in_plane : bool
        Flood within z-sections only.

    Returns
    -------
    labels : uint64 array, shape of ``heights``; 0 where not reached or masked.
    """
    heights = np.asarray(heights)
    if heights.ndim not in (2, 3):
        raise ValueError(f"heights must be 2D or 3D, got shape {heights.shape}")
    if heights.size and not np.all(np.isfinite(heights)):
        raise ValueError("heights contain NaN or infinite values")
    labels = as_labels(seeds, name="seeds", shape=heights.shape).copy()
    mask = as_mask(mask, heights.shape)
    if mask is None:
        mask = np.ones(heights.shape, dtype=bool)
    labels[~mask] = 0
    keys = ordered_keys(heights)
    lift = (lambda a: a) if heights.ndim == 3 else (lambda a: a[None])
    _flood(lift(keys), lift(labels), lift(mask), in_plane or heights.ndim == 2)
    return labels
