"""Exact Euclidean distance transform (Felzenszwalb & Huttenlocher), anisotropic, in numba."""
from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import ArrayLike

from ..._checks import as_spacing
from ..._deprecation import renamed_keywords
from ...errors import InputError

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
    big = np.inf
    sq = np.empty(inside.shape, dtype=np.float32)
    # x: distance to the nearest outside voxel along the row, two linear scans
    for i in range(nz):
        for j in range(ny):
            last = -1
            for k in range(nx):
                if not inside[i, j, k]:
                    last = k
                sq[i, j, k] = big if last < 0 else ((k - last) * wx) ** 2
            last = -1
            for k in range(nx - 1, -1, -1):
                if not inside[i, j, k]:
                    last = k
                if last >= 0:
                    d = ((last - k) * wx) ** 2
                    sq[i, j, k] = min(sq[i, j, k], d)
    m = max(nz, ny, nx)
    out = np.empty(m, dtype=np.float64)
    v = np.empty(m, dtype=np.int64)
    z = np.empty(m + 1, dtype=np.float64)
    # y: per section, columns gathered into rows of a small buffer (cache friendly)
    buf = np.empty((nx, ny), dtype=np.float64)
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
                buf[k, j] = sq[i, j, k]
        for k in range(nx):
            _envelope_1d(buf[k], wy, ny, out, v, z)
            for j in range(ny):
                buf[k, j] = out[j]
        for j in range(ny):
            for k in range(nx):
                sq[i, j, k] = buf[k, j]
    if not in_plane and nz > 1:
        buf = np.empty((nx, nz), dtype=np.float64)
        for j in range(ny):
            for i in range(nz):
                for k in range(nx):
                    buf[k, i] = sq[i, j, k]
            for k in range(nx):
                _envelope_1d(buf[k], wz, nz, out, v, z)
                for i in range(nz):
                    buf[k, i] = out[i]
            for i in range(nz):
                for k in range(nx):
                    sq[i, j, k] = buf[k, i]
    return sq


@renamed_keywords(sampling="voxel_size")
def distance_transform(inside: ArrayLike, *, voxel_size: ArrayLike | None = None,
                       in_plane: bool = False) -> np.ndarray:
    """Euclidean distance of every voxel to the nearest voxel outside ``inside``.

    Equal to ``scipy.ndimage.distance_transform_edt(inside, sampling=voxel_size)`` where any voxel
    is outside; where none is (within a section, if ``in_plane``), the distance is ``inf``.

    Parameters
    ----------
    inside : (z, y, x) or (y, x) array_like of bool
        The objects (cast to bool: non-zero is inside).
    voxel_size : sequence of float, optional
        Voxel size per axis (world units), default 1; ``sampling=`` is a deprecated alias.
    in_plane : bool
        Measure within each z-section only (anisotropic data, per-section fragments).

    Returns
    -------
    distance : float32, shape of ``inside``
        0 outside, the distance to the nearest outside voxel inside, ``inf`` where none is.

    Raises
    ------
    InputError
        If ``inside`` is not 2D or 3D, or ``voxel_size`` is not one positive number per axis.
    """
    inside = np.asarray(inside, dtype=bool)
    if inside.ndim not in (2, 3):
        raise InputError(f"inside must be 2D or 3D, got shape {inside.shape}")
    ndim = inside.ndim
    w = as_spacing(voxel_size, ndim, name="voxel_size")
    w = np.ones(ndim) if w is None else w
    vol = inside if ndim == 3 else inside[None]
    wz, wy, wx = (w if ndim == 3 else np.concatenate([[1.0], w])).tolist()
    sq = _squared_edt(np.ascontiguousarray(vol), wz, wy, wx, in_plane or ndim == 2)
    dist = np.sqrt(sq, out=sq)
    return dist if ndim == 3 else dist[0]
