"""Grid edges as integer ids and the voxel ranges they span, shared by the kernels that sort
or walk grid edges, and their numpy forms (slices, edge lists) for the code around them.

Edge ``e = c * n + u`` of a volume with ``n`` voxels is channel ``c``'s edge at voxel ``u``
(its index in the raveled ``(C, *spatial)`` affinities); it joins ``u`` and ``u + deltas[c]``
(``deltas`` from :func:`flat_steps`).

The numpy helpers take input validated already (``as_affinities``, ``as_offsets``); they are
shared by the kernel families and :mod:`affseg.conventions` and are not part of the public API.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ...errors import InputError


@njit(cache=True, nogil=True, inline="always")
def split_edge_id(edge, n, inv_n):
    """``(c, u)`` of edge id ``edge`` (``0 <= edge < 2**52``); ``inv_n`` is ``1.0 / n``.

    A float multiply and a correction by at most one instead of an integer division, which
    costs tens of cycles in loops that decode every edge.
    """
    c = np.int64(np.float64(edge) * inv_n)
    u = np.int64(edge) - c * n
    if u < 0:
        c -= 1
        u += n
    elif u >= n:
        c += 1
        u -= n
    return c, u


@njit(cache=True, nogil=True, inline="always")
def edge_ends(edge, n, inv_n, deltas):
    """The two voxels ``(u, u + deltas[c])`` of edge id ``edge`` (see :func:`split_edge_id`)."""
    c, u = split_edge_id(edge, n, inv_n)
    return u, u + deltas[c]


@njit(cache=True, nogil=True, inline="always")
def edge_bounds(nz, ny, nx, oz, oy, ox):
    """``z0, z1, y0, y1, x0, x1``: the voxels ``u`` of a ``(nz, ny, nx)`` volume whose partner
    ``u + (oz, oy, ox)`` lies inside it are ``[z0, z1) x [y0, y1) x [x0, x1)``."""
    return (max(0, -oz), min(nz, nz - oz), max(0, -oy), min(ny, ny - oy),
            max(0, -ox), min(nx, nx - ox))


def edge_slices(offset: np.ndarray, shape: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices of ``u`` and ``u + offset`` over the voxels whose partner lies inside the volume."""
    src, dst = [], []
    for o, n in zip(offset.tolist(), shape):
        length = max(0, n - abs(o))
        src.append(slice(max(0, -o), max(0, -o) + length))
        dst.append(slice(max(0, o), max(0, o) + length))
    return tuple(src), tuple(dst)


def edge_list(shape: tuple[int, ...], offsets: np.ndarray):
    """(u, v, flat index into the affinities) of the edges inside the volume, channel-major."""
    n = int(np.prod(shape))
    ids = np.arange(n, dtype=np.int64).reshape(shape)
    us, vs, es = [], [], []
    for c, offset in enumerate(offsets):
        src, dst = edge_slices(offset, shape)
        u = ids[src].ravel()
        v = ids[dst].ravel()
        us.append(u)
        vs.append(v)
        es.append(u + c * n)
    return np.concatenate(us), np.concatenate(vs), np.concatenate(es)


def flat_steps(shape: tuple[int, ...], offsets) -> np.ndarray:
    """Per offset, the step of the flat (C-order) voxel index from ``u`` to ``u + offset``, int64."""
    strides = np.cumprod((1,) + tuple(shape)[:0:-1])[::-1]
    return np.asarray(offsets, dtype=np.int64) @ strides.astype(np.int64)


def as_3d(affs: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 2D problem as one z-section: ``(C, 1, y, x)`` affinities and offsets with a zero z."""
    if affs.ndim == 4:
        return affs, offsets
    return affs[:, None], np.concatenate([np.zeros((len(offsets), 1), np.int64), offsets], axis=1)


def shift_channel(channel: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``out[u + offset] = channel[u]``, 0 where nothing lands."""
    out = np.zeros_like(channel)
    src, dst = edge_slices(offset, channel.shape)
    out[dst] = channel[src]
    return out


def nearest_neighbour_channels(affs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """:func:`affseg.conventions.nearest_neighbour_affinities` of validated affinities (float32,
    ``(C, *spatial)``) and offsets: channel ``d`` links ``u`` and ``u - e_d``; a view of ``affs``
    when its first channels already are ``-e_d`` in axis order."""
    ndim = affs.ndim - 1
    if affs.shape[0] >= ndim and np.array_equal(offsets[:ndim], -np.eye(ndim, dtype=np.int64)):
        return affs[:ndim]  # already in this layout: a view, no copy
    out = np.empty((ndim,) + affs.shape[1:], dtype=np.float32)
    for d in range(ndim):
        unit = np.zeros(ndim, dtype=np.int64)
        unit[d] = -1
        match = np.flatnonzero((offsets == unit).all(axis=1))
        if match.size:
            out[d] = affs[match[0]]
            continue
        match = np.flatnonzero((offsets == -unit).all(axis=1))
        if not match.size:
            raise InputError(
                f"the offsets {offsets.tolist()} have no nearest-neighbour channel along axis {d} "
                f"({unit.tolist()} or {(-unit).tolist()})"
            )
        out[d] = shift_channel(affs[match[0]], -unit)
    return out
