"""Separable maximum filter (scipy's window placement, borders clipped), in numba."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit
from numpy.typing import ArrayLike

from ..._checks import as_int
from ...errors import InputError

__all__ = ["maximum_filter"]


@njit(cache=True, nogil=True)
def _max_1d(line, n, before, after, out, pre, suf):
    """``out[i] = max(line[i - before : i + after + 1])``, clipped to the line.

    van Herk / Gil-Werman: prefix and suffix maxima within blocks of the window size; a full
    window spans the suffix of one block and the prefix of the next.
    """
    size = before + after + 1
    for start in range(0, n, size):
        stop = min(start + size, n)
        pre[start] = line[start]
        for k in range(start + 1, stop):
            pre[k] = max(pre[k - 1], line[k])
        suf[stop - 1] = line[stop - 1]
        for k in range(stop - 2, start - 1, -1):
            suf[k] = max(suf[k + 1], line[k])
    for i in range(n):
        lo = max(i - before, 0)
        hi = min(i + after, n - 1)
        block_lo = lo - lo % size
        if block_lo + size > hi:  # one block
            if lo == block_lo:
                out[i] = pre[hi]
            elif hi == min(block_lo + size, n) - 1:
                out[i] = suf[lo]
            else:
                m = line[lo]
                for k in range(lo + 1, hi + 1):
                    m = max(m, line[k])
                out[i] = m
        else:
            out[i] = max(suf[lo], pre[hi])


@njit(cache=True, nogil=True)
def _max_filter_3d(vol, sizes):
    nz, ny, nx = vol.shape
    res = vol.copy()
    m = max(nz, ny, nx)
    line = np.empty(m, dtype=vol.dtype)
    out = np.empty(m, dtype=vol.dtype)
    pre = np.empty(m, dtype=vol.dtype)
    suf = np.empty(m, dtype=vol.dtype)
    shape = (nz, ny, nx)
    for axis in range(3):
        size = sizes[axis]
        if size <= 1:
            continue
        before = size // 2
        after = size - 1 - before
        n = shape[axis]
        if axis == 0:
            for j in range(ny):
                for k in range(nx):
                    for i in range(n):
                        line[i] = res[i, j, k]
                    _max_1d(line, n, before, after, out, pre, suf)
                    for i in range(n):
                        res[i, j, k] = out[i]
        elif axis == 1:
            for i in range(nz):
                for k in range(nx):
                    for j in range(n):
                        line[j] = res[i, j, k]
                    _max_1d(line, n, before, after, out, pre, suf)
                    for j in range(n):
                        res[i, j, k] = out[j]
        else:
            for i in range(nz):
                for j in range(ny):
                    _max_1d(res[i, j], n, before, after, out, pre, suf)
                    for k in range(n):
                        res[i, j, k] = out[k]
    return res


def maximum_filter(volume: ArrayLike, size: int | Sequence[int]) -> np.ndarray:
    """Maximum over a box of ``size`` voxels per axis, equal to ``scipy.ndimage.maximum_filter``.

    The window of size ``s`` covers ``[i - s//2, i - s//2 + s - 1]``; at the borders it is clipped,
    which equals scipy's default ``reflect`` mode for a maximum.

    Parameters
    ----------
    volume : (z, y, x) or (y, x) array_like of int or float
        The values to filter.
    size : int or sequence of int
        Window size (>= 1), one for every axis or one per axis.

    Returns
    -------
    filtered : ndarray, shape and dtype of ``volume``
        The maximum over the window around each voxel.

    Raises
    ------
    InputError
        If ``volume`` is not a 2D or 3D numeric array, or ``size`` is not one integer >= 1 or
        one per axis.
    """
    volume = np.asarray(volume)
    ndim = volume.ndim
    if ndim not in (2, 3) or volume.dtype.kind not in "iuf":
        raise InputError(f"volume must be a 2D or 3D numeric array, got shape {volume.shape}, dtype {volume.dtype}")
    items = list(np.ravel(np.asarray(size, dtype=object)))
    if len(items) not in (1, ndim):
        raise InputError(f"filter size must be one integer or {ndim}, got {size!r}")
    sizes = np.array([as_int(s, name="filter size", minimum=1) for s in items] * (ndim if len(items) == 1 else 1),
                     dtype=np.int64)
    vol = np.ascontiguousarray(volume if ndim == 3 else volume[None])
    sizes3 = sizes if ndim == 3 else np.concatenate([[1], sizes])
    res = _max_filter_3d(vol, sizes3)
    return res if ndim == 3 else res[0]
