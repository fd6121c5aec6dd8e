"""Separable maximum filter (scipy's window placement, borders clipped), in numba."""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["maximum_filter"]


@njit(cache=True, nogil=True)
def _max_1d(line, n, before, after, out, dq):
    """Sliding maximum over ``[i - before, i + after]`` clipped to the line (monotonic deque)."""
    head = 0
    tail = 0
    nxt = 0
    for i in range(n):
        hi = min(n - 1, i + after)
        while nxt <= hi:
            while tail > head and line[dq[tail - 1]] <= line[nxt]:
                tail -= 1
            dq[tail] = nxt
            tail += 1
            nxt += 1
        while dq[head] < i - before:
            head += 1
        out[i] = line[dq[head]]


@njit(cache=True, nogil=True)
def _max_filter_3d(vol, sizes):
    nz, ny, nx = vol.shape
    res = vol.copy()
    m = max(nz, ny, nx)
    line = np.empty(m, dtype=vol.dtype)
    out = np.empty(m, dtype=vol.dtype)
    dq = np.empty(m, dtype=np.int64)
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
                    _max_1d(line, n, before, after, out, dq)
                    for i in range(n):
                        res[i, j, k] = out[i]
        elif axis == 1:
            for i in range(nz):
                for k in range(nx):
                    for j in range(n):
                        line[j] = res[i, j, k]
                    _max_1d(line, n, before, after, out, dq)
                    for j in range(n):
                        res[i, j, k] = out[j]
        else:
            for i in range(nz):
                for j in range(ny):
                    _max_1d(res[i, j], n, before, after, out, dq)
                    for k in range(n):
                        res[i, j, k] = out[k]
    return res


def maximum_filter(volume, size) -> np.ndarray:
    """Maximum over a box of ``size`` voxels per axis, equal to ``scipy.ndimage.maximum_filter``.

    The window of size ``s`` covers ``[i - s//2, i - s//2 + s - 1]``; at the borders it is clipped,
    which equals scipy's default ``reflect`` mode for a maximum.
    """
    volume = np.asarray(volume)
    ndim = volume.ndim
    sizes = np.broadcast_to(np.asarray(size, dtype=np.int64), (ndim,)).copy()
    if np.any(sizes < 1):
        raise ValueError(f"filter size must be at least 1, got {size!r}")
    vol = np.ascontiguousarray(volume if ndim == 3 else volume[None])
    sizes3 = sizes if ndim == 3 else np.concatenate([[1], sizes])
    res = _max_filter_3d(vol, sizes3)
    return res if ndim == 3 else res[0]
