"""Exact Euclidean distance transform (Felzenszwalb & Huttenlocher), anisotropic, in numba."""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["distance_transform"]


@njit(cache=True, nogil=True)
def _envelope_1d(f, w, n, out, v, z):
    """``out[i] = min_j f[j] + (w (i - j))^2`` over the finite ``f[j]``; inf where none is."""
    k = -1
    for q in range(n):
        if f[q] == np.inf:
            continue
        if k < 0:
            k = 0
            v[0] = q
            z[0] = -np.inf
            z[1] = np.inf
            continue
        while True:
            p = v[k]
            s = ((f[q] + (w * q) ** 2) - (f[p] + (w * p) ** 2)) / (2.0 * w * w * (q - p))
            if s <= z[k]:
                k -= 1
                if k < 0:
                    break
            else:
                break
        k += 1
        v[k] = q
        if k == 0:
            z[0] = -np.inf
        else:
            z[k] = s
        z[k + 1] = np.inf
    if k < 0:
        for i in range(n):
            out[i] = np.inf
        return
    j = 0
    for i in range(n):
        while z[j + 1] < i:
            j += 1
        d = w * (i - v[j])
        out[i] = f[v[j]] + d * d


@njit(cache=True, nogil=True)
def _squared_edt(inside, wz, wy, wx, in_plane):
    nz, ny, nx = inside.shape
    sq = np.empty(inside.shape, dtype=np.float64)
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
                sq[i, j, k] = np.inf if inside[i, j, k] else 0.0
    m = max(nz, ny, nx)
    f = np.empty(m, dtype=np.float64)
    out = np.empty(m, dtype=np.float64)
    v = np.empty(m, dtype=np.int64)
    z = np.empty(m + 1, dtype=np.float64)
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
                f[k] = sq[i, j, k]
            _envelope_1d(f, wx, nx, out, v, z)
            for k in range(nx):
                sq[i, j, k] = out[k]
        for k in range(nx):
            for j in range(ny):
                f[j] = sq[i, j, k]
            _envelope_1d(f, wy, ny, out, v, z)
            for j in range(ny):
                sq[i, j, k] = out[j]
    if not in_plane and nz > 1:
        for j in range(ny):
            for k in range(nx):
                for i in range(nz):
                    f[i] = sq[i, j, k]
                _envelope_1d(f, wz, nz, out, v, z)
                for i in range(nz):
                    sq[i, j, k] = out[i]
    return sq


def distance_transform(inside, *, sampling=None, in_plane: bool = False) -> np.ndarray:
    """Euclidean distance of every voxel to the nearest voxel outside ``inside``.

    Equal to ``scipy.ndimage.distance_transform_edt(inside, sampling=sampling)`` where any voxel
    is outside; where none is (within a section, if ``in_plane``), the distance is ``inf``.

    Parameters
    ----------
    inside : (z, y, x) or (y, x) array of bool
    sampling : sequence of float, optional
        Voxel size per axis (world units), default 1.
    in_plane : bool
        Measure within each z-section only (anisotropic data, per-section fragments).

    Returns
    -------
    distance : float32 array, shape of ``inside``
    """
    inside = np.asarray(inside, dtype=bool)
    if inside.ndim not in (2, 3):
        raise ValueError(f"inside must be 2D or 3D, got shape {inside.shape}")
    ndim = inside.ndim
    w = np.ones(ndim) if sampling is None else np.asarray(sampling, dtype=np.float64)
    if w.shape != (ndim,) or np.any(~(w > 0)):
        raise ValueError(f"sampling must be {ndim} positive values, got {sampling!r}")
    vol = inside if ndim == 3 else inside[None]
    wz, wy, wx = (w if ndim == 3 else np.concatenate([[1.0], w])).tolist()
    sq = _squared_edt(np.ascontiguousarray(vol), wz, wy, wx, in_plane or ndim == 2)
    dist = np.sqrt(sq).astype(np.float32)
    return dist if ndim == 3 else dist[0]
