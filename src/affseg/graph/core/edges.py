"""Grid edges as integer ids and the voxel ranges they span, shared by the kernels that sort
or walk grid edges.

Edge ``e = c * n + u`` of a volume with ``n`` voxels is channel ``c``'s edge at voxel ``u``
(its index in the raveled ``(C, *spatial)`` affinities); it joins ``u`` and ``u + deltas[c]``
(``deltas`` from :func:`affseg.conventions.flat_steps`).
"""
from __future__ import annotations

import numpy as np
from numba import njit


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
