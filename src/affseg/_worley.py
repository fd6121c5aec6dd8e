"""Numba kernels of the Worley synthetic volumes (:func:`affseg.synthetic.worley_region`).

Every value is a function of the seed and the global voxel position only: random numbers come
from a 64-bit hash of (seed, stream, global integer coordinates), never from a generator's
state, so a region computes the same bits whatever region it belongs to.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xBF58476D1CE4E5B9)
_K3 = np.uint64(0x94D049BB133111EB)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53

# hash streams: independent random fields of one seed
POINT, WEIGHT, WARP, GAP, SPLIT, CORRELATED, WHITE, TEXTURE, RAW_WHITE, TONE = range(10)


@njit(cache=True, nogil=True, inline="always")
def _mix(h):
    """splitmix64's finaliser."""
    h = (h ^ (h >> np.uint64(30))) * _K2
    h = (h ^ (h >> np.uint64(27))) * _K3
    return h ^ (h >> np.uint64(31))


@njit(cache=True, nogil=True, inline="always")
def _hash(seed, stream, i, j, k):
    h = _mix(np.uint64(seed) * _K1 + np.uint64(stream))
    h = _mix(h ^ (np.uint64(i) * _K1))
    h = _mix(h ^ (np.uint64(j) * _K2))
    return _mix(h ^ (np.uint64(k) * _K3))


@njit(cache=True, nogil=True, inline="always")
def _unit(h):
    """A uint64 hash as a float in [0, 1)."""
    return np.float64(h >> np.uint64(11)) * _INV53


@njit(cache=True, nogil=True, inline="always")
def _gauss(seed, stream, i, j, k):
    """About N(0, 1): the sum of three uniforms, centred and scaled (bounded by +-3)."""
    h = _hash(seed, stream, i, j, k)
    a = np.float64(h & np.uint64(0x1FFFFF)) / 2097152.0
    b = np.float64((h >> np.uint64(21)) & np.uint64(0x1FFFFF)) / 2097152.0
    c = np.float64(h >> np.uint64(43)) / 2097152.0
    return (a + b + c - 1.5) * 2.0


@njit(cache=True, nogil=True, inline="always")
def _smooth(t):
    return t * t * (3.0 - 2.0 * t)


@njit(cache=True, nogil=True, inline="always")
def _corner(seed, stream, iz, iy, ix, k):
    """The random value of lattice corner ``k`` (bits dz, dy, dx) of the cell at (iz, iy, ix)."""
    return _unit(_hash(seed, stream, iz + (k >> 2), iy + ((k >> 1) & 1), ix + (k & 1)))


@njit(cache=True, nogil=True, inline="always")
def _weight(k, fz, fy, fx):
    """The smoothstep weight of corner ``k`` (bits dz, dy, dx, as in :func:`_corner`)."""
    wz = fz if k >> 2 else 1.0 - fz
    wy = fy if (k >> 1) & 1 else 1.0 - fy
    wx = fx if k & 1 else 1.0 - fx
    return wz * wy * wx


@njit(cache=True, nogil=True, inline="always")
def _interpolate(corners, fz, fy, fx):
    """Smoothstep-weighted sum of the 8 ``corners`` (indexed as in :func:`_corner`), mapped to [-1, 1]."""
    total = 0.0
    for k in range(8):
        total += _weight(k, fz, fy, fx) * corners[k]
    return 2.0 * total - 1.0


@njit(cache=True, nogil=True, inline="always")
def _lattice(z, y, x, sz, sy, sx):
    """The lattice cell of voxel (z, y, x) for spacing (sz, sy, sx) and the smoothstep weights in it."""
    tz, ty, tx = z / sz, y / sy, x / sx
    iz, iy, ix = np.floor(tz), np.floor(ty), np.floor(tx)
    return (np.int64(iz), np.int64(iy), np.int64(ix)), _smooth(tz - iz), _smooth(ty - iy), _smooth(tx - ix)


@njit(cache=True, nogil=True)
def value_noise(seed, stream, z, y, x, sz, sy, sx):
    """Smooth noise in [-1, 1] at voxel (z, y, x): random values on a lattice of spacing
    (sz, sy, sx) voxels, interpolated with smoothstep weights."""
    (iz, iy, ix), fz, fy, fx = _lattice(z, y, x, sz, sy, sx)
    total = 0.0
    for k in range(8):
        total += _weight(k, fz, fy, fx) * _corner(seed, stream, iz, iy, ix, k)
    return 2.0 * total - 1.0


@njit(cache=True, nogil=True)
def worley_labels(lo, shape, seed, cell, warp, weight, grid):
    """Labels and distance to the nearest boundary (voxels) of the region ``lo + [0, shape)``.

    A voxel ``p`` goes to cell units ``q = p / cell + warp * V(p)`` (V: smooth noise of lattice
    spacing ``cell``), and takes the id of the point (one per unit cell, uniform in it) nearest to
    ``q`` among the 27 cells around ``floor(q)``, by squared distance minus the point's weight
    (a power diagram: cells of different sizes). Ids are ``1 +`` the row-major index of the
    point's cell in a grid of ``grid`` cells starting at cell -2.
    """
    nz, ny, nx = shape
    labels = np.empty((nz, ny, nx), np.uint64)
    dist = np.empty((nz, ny, nx), np.float32)
    cz, cy, cx = cell
    # neighbouring voxels share lattice corners and cells: their random values are kept, not rehashed
    corners = np.empty((3, 8))
    points = np.empty((27, 4))
    ids = np.empty(27, np.int64)
    last_lattice = (np.int64(-2**62), np.int64(0), np.int64(0))
    last_cell = (np.int64(-2**62), np.int64(0), np.int64(0))
    q = np.empty(3)
    for a in range(nz):
        z = lo[0] + a
        for b in range(ny):
            y = lo[1] + b
            for c in range(nx):
                x = lo[2] + c
                # the warp: value_noise of streams WARP, WARP + 16, WARP + 32, with the corners kept
                lattice, fz, fy, fx = _lattice(z, y, x, cz, cy, cx)
                if lattice != last_lattice:
                    last_lattice = lattice
                    for s in range(3):
                        for k in range(8):
                            corners[s, k] = _corner(seed, WARP + 16 * s, lattice[0], lattice[1], lattice[2], k)
                for s in range(3):
                    q[s] = _interpolate(corners[s], fz, fy, fx)
                qz = z / cz + warp * q[0]
                qy = y / cy + warp * q[1]
                qx = x / cx + warp * q[2]
                kz, ky, kx = np.int64(np.floor(qz)), np.int64(np.floor(qy)), np.int64(np.floor(qx))
                if (kz, ky, kx) != last_cell:
                    last_cell = (kz, ky, kx)
                    k = 0
                    for dz in range(-1, 2):
                        for dy in range(-1, 2):
                            for dx in range(-1, 2):
                                gz, gy, gx = kz + dz, ky + dy, kx + dx
                                h = _hash(seed, POINT, gz, gy, gx)
                                points[k, 0] = gz + np.float64(h & np.uint64(0x1FFFFF)) / 2097152.0
                                points[k, 1] = gy + np.float64((h >> np.uint64(21)) & np.uint64(0x1FFFFF)) / 2097152.0
                                points[k, 2] = gx + np.float64(h >> np.uint64(43)) / 2097152.0
                                points[k, 3] = weight * _unit(_hash(seed, WEIGHT, gz, gy, gx))
                                ids[k] = ((gz + 2) * grid[1] + (gy + 2)) * grid[2] + (gx + 2) + 1
                                k += 1
                best, second = np.inf, np.inf
                bz = by = bx = sz_ = sy_ = sx_ = 0.0
                best_id = np.int64(0)
                for k in range(27):
                    pz, py, px = points[k, 0], points[k, 1], points[k, 2]
                    d = (qz - pz) ** 2 + (qy - py) ** 2 + (qx - px) ** 2 - points[k, 3]
                    if d < best:
                        second, sz_, sy_, sx_ = best, bz, by, bx
                        best, bz, by, bx = d, pz, py, px
                        best_id = ids[k]
                    elif d < second:
                        second, sz_, sy_, sx_ = d, pz, py, px
                labels[a, b, c] = np.uint64(best_id)
                # distance to the power bisector of the two nearest points, in cell units, then in
                # voxels along its normal (cells are anisotropic)
                nz_, ny_, nx_ = sz_ - bz, sy_ - by, sx_ - bx
                norm = np.sqrt(nz_ * nz_ + ny_ * ny_ + nx_ * nx_)
                gap = (second - best) / (2.0 * norm)
                scale = np.sqrt((nz_ / cz) ** 2 + (ny_ / cy) ** 2 + (nx_ / cx) ** 2) / norm
                dist[a, b, c] = gap / scale
    return labels, dist


@njit(cache=True, nogil=True)
def raw_region(labels, dist, lo, seed):
    """EM-like raw (uint8): a grey tone per object, texture, dark membranes, white noise."""
    nz, ny, nx = labels.shape
    raw = np.empty((nz, ny, nx), np.uint8)
    for a in range(nz):
        z = lo[0] + a
        for b in range(ny):
            y = lo[1] + b
            for c in range(nx):
                x = lo[2] + c
                tone = 0.55 + 0.25 * _unit(_hash(seed, TONE, labels[a, b, c], 0, 0))
                v = tone + 0.04 * value_noise(seed, TEXTURE, z, y, x, 3.0, 3.0, 3.0)
                d = dist[a, b, c]
                v *= 1.0 - 0.75 * np.exp(-(d * d) / 1.5)
                v += 0.06 * _gauss(seed, RAW_WHITE, z, y, x)
                raw[a, b, c] = np.uint8(min(255.0, max(0.0, v * 255.0) + 0.5))
    return raw


@njit(cache=True, nogil=True)
def affinity_region(labels, dist, inner, lo, volume, offsets, seed, noise, scale, out):
    """Affinities of the region ``inner`` (start, shape; in the coordinates of ``labels``, whose
    corner is the global voxel ``lo``) into ``out`` (C, *shape): 1 where a voxel and its partner
    (inside ``volume``) carry the same non-zero label, else 0; with ``noise`` made hard: soft
    near boundaries, gaps in boundaries (false merges), spurious boundaries (false splits),
    smooth and white noise. Values are multiplied by ``scale`` (255 for uint8, rounded)."""
    s0, s1, s2 = inner[0], inner[1], inner[2]
    nz, ny, nx = out.shape[1], out.shape[2], out.shape[3]
    for a in range(nz):
        z = lo[0] + s0 + a
        for b in range(ny):
            y = lo[1] + s1 + b
            for c in range(nx):
                x = lo[2] + s2 + c
                u = labels[s0 + a, s1 + b, s2 + c]
                gaps = split = 0.0
                if noise:
                    gaps = min(1.0, max(0.0, (value_noise(seed, GAP, z, y, x, 4.0, 8.0, 8.0) - 0.35) / 0.3))
                    split = min(1.0, max(0.0, (value_noise(seed, SPLIT, z, y, x, 4.0, 8.0, 8.0) - 0.45) / 0.3))
                for ch in range(offsets.shape[0]):
                    oz, oy, ox = offsets[ch, 0], offsets[ch, 1], offsets[ch, 2]
                    inside = 0 <= z + oz < volume[0] and 0 <= y + oy < volume[1] and 0 <= x + ox < volume[2]
                    gt = 0.0
                    if inside and u != 0 and labels[s0 + a + oz, s1 + b + oy, s2 + c + ox] == u:
                        gt = 1.0
                    value = gt
                    if noise:
                        depth = dist[s0 + a, s1 + b, s2 + c]
                        if inside:
                            depth = min(depth, dist[s0 + a + oz, s1 + b + oy, s2 + c + ox])
                        value = gt * min(1.0, max(0.0, (depth + 0.5) / 2.0))
                        value = value + 0.6 * gaps * (1.0 - value) - 0.5 * split * value
                        value += 0.15 * value_noise(seed, CORRELATED + 16 * ch, z, y, x, 3.0, 3.0, 3.0)
                        value += 0.08 * _gauss(seed, WHITE + 16 * ch, z, y, x)
                        value = min(1.0, max(0.0, value))
                    if scale == 1.0:
                        out[ch, a, b, c] = value
                    else:
                        out[ch, a, b, c] = np.floor(value * scale + 0.5)
