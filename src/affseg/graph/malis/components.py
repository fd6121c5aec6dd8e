"""Threshold + connected components of an affinity graph (MALIS's inference), in numba."""
from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import ArrayLike

from ..._checks import as_affinities, as_mask, as_number
from ..core.edges import as_3d, edge_bounds
from ..core.unionfind import find, union

__all__ = ["connected_components"]


@njit(cache=True, nogil=True)
def _join_edges(affs, offsets, threshold, mask, parent):
    nc, nz, ny, nx = affs.shape
    for c in range(nc):
        oz, oy, ox = offsets[c, 0], offsets[c, 1], offsets[c, 2]
        z0, z1, y0, y1, x0, x1 = edge_bounds(nz, ny, nx, oz, oy, ox)
        for z in range(z0, z1):
            for y in range(y0, y1):
                for x in range(x0, x1):
                    if affs[c, z, y, x] > threshold:
                        i = (z * ny + y) * nx + x
                        j = ((z + oz) * ny + y + oy) * nx + x + ox
                        if mask[i] and mask[j]:
                            union(parent, i, j)


@njit(cache=True, nogil=True)
def _roots_to_labels(parent, mask, start):
    n = parent.shape[0]
    out = np.zeros(n, dtype=np.uint64)
    next_label = np.uint64(start)
    for i in range(n):
        if not mask[i]:
            continue
        r = find(parent, i)
        if r == i:
            out[i] = next_label
            next_label += np.uint64(1)
        else:
            out[i] = out[r]
    return out


def connected_components(affs: ArrayLike, offsets: ArrayLike | None = None, *, threshold: float = 0.5,
                         mask: ArrayLike | None = None) -> np.ndarray:
    """Segment by joining every edge whose affinity exceeds ``threshold``.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities in affseg's convention (see ``docs/conventions.md``); float64 and float16 are
        cast to float32, uint8 is divided by 255.
    offsets : (C, ndim) array_like of int, optional
        Default: nearest neighbours ``-e_d``.
    threshold : float
        Edges with ``affinity > threshold`` (compared in float32) join their voxels.
    mask : bool array, spatial shape, optional
        Voxels outside (zero) get label 0 and join nothing.

    Returns
    -------
    labels : (z, y, x) or (y, x) uint64
        1..n in raster order of each component's first voxel, 0 where masked.

    Raises
    ------
    InputError
        If ``affs``, ``offsets`` or ``mask`` are invalid, or ``threshold`` is not a finite number.
    """
    affs, offsets = as_affinities(affs, offsets)
    threshold = as_number(threshold, name="threshold")
    shape = affs.shape[1:]
    mask = as_mask(mask, shape)
    if mask is None:
        mask = np.ones(shape, dtype=bool)
    affs, offsets = as_3d(affs, offsets)
    parent = np.arange(mask.size, dtype=np.int64)
    flat_mask = mask.reshape(-1)
    _join_edges(affs, np.ascontiguousarray(offsets), np.float32(threshold), flat_mask, parent)
    return _roots_to_labels(parent, flat_mask, 1).reshape(shape)


