"""Affinities from central-instance masks: the centre read-out and MaskAggr with its variance.

The masks of a branch live on its grid (see :mod:`affseg.central_masks.targets`). For the edge
``(u, v)`` of a grid offset ``o``:

- *centre* read-out: ``aff(u, v) = M_u(o)``, the mask centred at ``u`` read at ``v``.
- *MaskAggr*: every mask ``M_c`` whose window covers both ``u`` and ``v`` gives an affinity
  ``a_c = M_c(u) * M_c(v)`` (product t-norm: both voxels in ``c``'s instance) with evidence
  ``w_c = M_c(u) + M_c(v) - M_c(u) * M_c(v)`` (probabilistic sum: either voxel in it; masks that
  contain neither voxel say nothing about the edge). The affinity is the ``w``-weighted mean of
  ``a_c`` and the variance its ``w``-weighted (population) variance, accumulated with West's
  weighted form of Welford's update. An edge without evidence gets affinity 0 and variance 0,
  as ``affinities_from_labels`` gives to unlabelled voxels. On binary masks both operators are
  the Boolean ones, so ground-truth masks give ``affinities_from_labels`` exactly, variance 0.

Masks are decoded from a branch's latent map tile by tile through a caller's decoder, so the
masks of a whole volume are never held at once; the result does not depend on the tiling.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numba import njit, prange
from numpy.typing import ArrayLike

from .._checks import as_array, as_int, as_offsets, as_unit_float32, describe
from ..errors import InputError
from .targets import as_factor, as_window

__all__ = ["affinities_from_latents", "affinities_from_masks", "branch_for_offsets"]

READOUTS = ("aggregate", "centre")
TILE_VOXELS = 2**16  # masks decoded at once per tile, halo included: 64 MiB for 5 x 7 x 7 windows


def affinities_from_masks(masks: ArrayLike, offsets: ArrayLike, *, factor: int | Sequence[int] | None = None,
                          readout: str = "aggregate",
                          shape: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Affinities and their variance from the masks of every grid voxel of a branch.

    Parameters
    ----------
    masks : (gz, gy, gx, wz, wy, wx) or (gy, gx, wy, wx) array_like of float
        The mask centred at every grid voxel, values in [0, 1]; window sizes odd.
    offsets : (C, ndim) array_like of int
        Full-resolution offsets; each must be a multiple of ``factor`` whose grid offset lies
        inside the window.
    factor : int or sequence of int, optional, keyword-only
        The branch's downscale factor (default 1).
    readout : {"aggregate", "centre"}, keyword-only
        MaskAggr over all masks covering an edge, or the mask centred at ``u`` alone.
    shape : sequence of int, optional, keyword-only
        Full-resolution output shape, at most one grid voxel more or less than ``grid * factor``
        per axis would need; default ``grid * factor``.

    Returns
    -------
    affs : (C, *shape) float32
        1 = same object, in affseg's convention; 0 where ``u + offset`` is outside the volume or
        its grid voxel ``(u + offset) // factor`` outside the grid (voxels past ``grid * factor``
        take the last grid voxel's values).
    variance : (C, *shape) float32
        The weighted variance of the masks' votes (0 for the centre read-out).

    Raises
    ------
    InputError
        If the masks are not a (grid, window) array in [0, 1], or an offset does not fit the
        branch.
    """
    masks = _as_masks(masks)
    ndim = masks.ndim // 2
    grid, window = masks.shape[:ndim], masks.shape[ndim:]

    def masks_of(start, stop):
        return masks[tuple(slice(a, b) for a, b in zip(start[3 - ndim:], stop[3 - ndim:]))]

    return _affinities(masks_of, grid, offsets, window=window, factor=factor, readout=readout, tile_shape=grid,
                       shape=shape)


def affinities_from_latents(latents: ArrayLike, decode: Callable[[np.ndarray], np.ndarray], offsets: ArrayLike, *,
                            window: Sequence[int], factor: int | Sequence[int] | None = None, readout: str = "aggregate", tile_shape: Sequence[int] | None = None,
                            shape: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Affinities and their variance from a branch's latent map, decoding masks tile by tile.

    Parameters
    ----------
    latents : (Q, gz, gy, gx) or (Q, gy, gx) array_like of float
        The branch's latent code at every grid voxel (any array that numpy can slice, e.g. zarr).
    decode : callable
        ``decode(codes)`` with ``codes`` of shape ``(N, Q)`` float32 returns the ``N`` masks,
        ``(N, *window)`` float, values in [0, 1] (a trained decoder wrapped for numpy).
    offsets : (C, ndim) array_like of int
        Full-resolution offsets, multiples of ``factor`` whose grid offset lies in the window.
    window : sequence of int, keyword-only
        The decoder's odd mask sizes, in grid voxels.
    factor : int or sequence of int, optional, keyword-only
        The branch's downscale factor (default 1).
    readout : {"aggregate", "centre"}, keyword-only
        MaskAggr (default) or the centre read-out.
    tile_shape : sequence of int, optional, keyword-only
        Grid voxels per output tile; the masks of a tile and its halo (``window // 2``) are
        decoded at once. Default: tiles of at most 65,536 masks, halo included.
    shape : sequence of int, optional, keyword-only
        Full-resolution output shape (see :func:`affinities_from_masks`).

    Returns
    -------
    affs, variance : (C, *shape) float32
        As :func:`affinities_from_masks`; equal to it on the masks of all grid voxels.

    Raises
    ------
    InputError
        On a latent map that is not ``(Q, *grid)``, a bad window, factor, readout or tile
        shape, an offset that does not fit the branch, or masks from ``decode`` of the wrong
        shape or outside [0, 1].
    """
    latents = _as_latents(latents)
    ndim = latents.ndim - 1
    window = as_window(window, ndim)

    def masks_of(start, stop):
        codes = np.asarray(latents[(slice(None),) + tuple(slice(a, b) for a, b in zip(start[3 - ndim:], stop[3 - ndim:]))])
        return _decoded(decode, codes, window).reshape(codes.shape[1:] + window)

    return _affinities(masks_of, tuple(latents.shape[1:]), offsets, window=window, factor=factor, readout=readout,
                       tile_shape=tile_shape, shape=shape)


def _affinities(masks_of, grid: tuple[int, ...], offsets, *, window, factor, readout, tile_shape, shape):
    """The tile loop of both entry points: ``masks_of(start, stop)`` (3D corners of a region of
    centres) gives their masks, ``(*region, *window)`` float32 in [0, 1]."""
    ndim = len(grid)
    window = as_window(window, ndim)
    factor = as_factor(factor, ndim)
    grid_offsets = _grid_offsets(offsets, ndim, window, factor)
    if readout not in READOUTS:
        raise InputError(f"readout must be one of {READOUTS}, got {describe(readout)}")
    out_shape = _output_shape(shape, grid, factor)
    halo = tuple(w // 2 for w in window) if readout == "aggregate" else (0,) * ndim
    tiles = _tile_shape(tile_shape, grid, halo, window)

    grid3, window3, offsets3 = _as_3d(grid, window, grid_offsets)
    affs = np.zeros((len(offsets3),) + grid3, np.float32)
    variance = np.zeros_like(affs)
    for lo, hi in _tiles(grid3, (1,) * (3 - ndim) + tiles):
        start, stop = _with_halo(lo, hi, (0,) * (3 - ndim) + halo, grid3)
        masks = np.ascontiguousarray(masks_of(start, stop)).reshape(tuple(np.subtract(stop, start)) + window3)
        if readout == "centre":
            _centre_tile(masks, np.array(start), np.array(grid3), offsets3, affs)
        else:
            _aggregate_into(masks, start, lo, hi, grid3, offsets3, affs, variance)
    squeeze = (slice(None),) + (0,) * (3 - ndim)
    return (_upsample(affs[squeeze], factor, out_shape, grid_offsets),
            _upsample(variance[squeeze], factor, out_shape, grid_offsets))


def _with_halo(lo, hi, halo, grid):
    """The region of centres whose masks reach the tile ``[lo, hi)``."""
    return (tuple(max(0, a - h) for a, h in zip(lo, halo)), tuple(min(n, b + h) for b, h, n in zip(hi, halo, grid)))


def _aggregate_into(masks, start, lo, hi, grid, offsets, affs, variance) -> None:
    """MaskAggr of one tile: accumulators for the tile alone (float64), results into the outputs."""
    size = (len(offsets),) + tuple(np.subtract(hi, lo))
    wsum, mean, m2 = np.zeros(size), np.zeros(size), np.zeros(size)
    window_major = np.ascontiguousarray(np.moveaxis(masks, (3, 4, 5), (0, 1, 2)))
    _aggregate_tile(window_major, np.array(start), np.array(lo), np.array(hi), np.array(grid), offsets, wsum, mean, m2)
    tile = (slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi))
    affs[tile] = mean
    variance[tile] = np.divide(m2, wsum, out=np.zeros_like(m2), where=wsum > 0)


def branch_for_offsets(offsets: ArrayLike,
                       branches: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[int]:
    """For each offset, the branch (a ``(window, factor)`` pair) that serves it.

    The finest branch (smallest factor volume, then the first given) among those whose factor
    divides the offset and whose window holds the grid offset.

    Parameters
    ----------
    offsets : (C, ndim) array_like of int
        Full-resolution offsets.
    branches : sequence of (window, factor)
        The model's branches.

    Returns
    -------
    indices : list of int
        Index into ``branches`` per offset.

    Raises
    ------
    InputError
        If some offset fits no branch (it names the offset and the branches).
    """
    branches = list(branches)
    if not branches:
        raise InputError("branch_for_offsets needs at least one (window, factor) branch")
    ndim = len(branches[0][0])
    offsets = as_offsets(offsets, ndim)
    parsed = [(as_window(w, ndim), as_factor(f, ndim)) for w, f in branches]
    order = sorted(range(len(parsed)), key=lambda i: (int(np.prod(parsed[i][1])), i))
    chosen = []
    for offset in offsets:
        fits = [i for i in order if _fits(offset, *parsed[i])]
        if not fits:
            raise InputError(f"offset {offset.tolist()} fits no branch (window, factor): {parsed}; an offset must "
                             f"be a multiple of the factor with offset / factor inside the window")
        chosen.append(fits[0])
    return chosen


def _fits(offset: np.ndarray, window: tuple[int, ...], factor: tuple[int, ...]) -> bool:
    f = np.array(factor)
    return bool(np.all(offset % f == 0) and np.all(np.abs(offset // f) <= np.array(window) // 2))


def _grid_offsets(offsets, ndim: int, window: tuple[int, ...], factor: tuple[int, ...]) -> np.ndarray:
    offsets = as_offsets(offsets, ndim)
    for offset in offsets:
        if not _fits(offset, window, factor):
            raise InputError(f"offset {offset.tolist()} does not fit the branch: it must be a multiple of the factor "
                             f"{factor} with offset / factor inside the window {window} (at most "
                             f"{[w // 2 for w in window]})")
    return offsets // np.array(factor)


def _as_masks(masks) -> np.ndarray:
    arr = as_array(masks, name="masks")
    if arr.ndim not in (4, 6) or 0 in arr.shape:
        raise InputError(f"masks must be a (grid, window) array of 2D (4 axes) or 3D (6 axes) masks in [0, 1], "
                         f"got shape {arr.shape}, dtype {arr.dtype}")
    return as_unit_float32(arr, name="masks")


def _as_latents(latents):
    shape = getattr(latents, "shape", None)
    if shape is None:
        latents = as_array(latents, name="latents")
        shape = latents.shape
    if len(shape) not in (3, 4) or 0 in shape:
        raise InputError(f"latents must be (Q, y, x) or (Q, z, y, x) with no empty axis, got shape {tuple(shape)}")
    return latents


def _decoded(decode, codes: np.ndarray, window: tuple[int, ...]) -> np.ndarray:
    flat = np.ascontiguousarray(codes.reshape(codes.shape[0], -1).T, dtype=np.float32)
    masks = np.asarray(decode(flat))
    expected = (flat.shape[0],) + window
    if masks.shape != expected:
        raise InputError(f"decode returned masks of shape {masks.shape} for {flat.shape[0]} codes of window {window}; "
                         f"expected {expected}")
    return as_unit_float32(masks, name="decoded masks")


def _output_shape(shape, grid: tuple[int, ...], factor: tuple[int, ...]) -> tuple[int, ...]:
    if shape is None:
        return tuple(g * f for g, f in zip(grid, factor))
    out = tuple(as_int(n, name="shape", minimum=1) for n in shape) if len(shape) == len(grid) else None
    if out is None or any(n // f != g and -(-n // f) != g for n, f, g in zip(out, factor, grid)):
        raise InputError(f"shape {describe(shape)} does not match the grid {grid} at factor {factor} "
                         f"(expected about {tuple(g * f for g, f in zip(grid, factor))})")
    return out


def _tile_shape(tile_shape, grid: tuple[int, ...], halo: tuple[int, ...], window: tuple[int, ...]) -> tuple[int, ...]:
    if tile_shape is not None:
        if len(tile_shape) != len(grid):
            raise InputError(f"tile_shape must have {len(grid)} sizes, got {describe(tile_shape)}")
        return tuple(as_int(t, name="tile_shape", minimum=1) for t in tile_shape)
    tiles = list(grid)
    while np.prod([t + 2 * h for t, h in zip(tiles, halo)]) > TILE_VOXELS and max(tiles) > 1:
        axis = int(np.argmax(tiles))
        tiles[axis] = -(-tiles[axis] // 2)
    return tuple(tiles)


def _tiles(grid: tuple[int, ...], tiles: tuple[int, ...]):
    """(lo, hi) corners of the tiles, in raster order."""
    starts = np.stack(np.meshgrid(*[np.arange(0, n, t) for n, t in zip(grid, tiles)], indexing="ij"), -1)
    for lo in starts.reshape(-1, len(grid)):
        yield tuple(int(a) for a in lo), tuple(min(int(a) + t, n) for a, t, n in zip(lo, tiles, grid))


def _as_3d(grid, window, offsets):
    pad = 3 - len(grid)
    offsets3 = np.concatenate([np.zeros((len(offsets), pad), np.int64), offsets], axis=1)
    return (1,) * pad + tuple(grid), (1,) * pad + tuple(window), np.ascontiguousarray(offsets3)


def _upsample(values: np.ndarray, factor: tuple[int, ...], shape: tuple[int, ...],
              grid_offsets: np.ndarray) -> np.ndarray:
    """Grid values at full resolution (``u`` takes grid voxel ``u // factor``), 0 where ``u + o`` is outside."""
    grid = values.shape[1:]
    if tuple(grid) == tuple(shape):
        return values  # the grid is the volume: the outside edges are 0 already
    index = np.ix_(*[np.minimum(np.arange(n) // f, g - 1) for n, f, g in zip(shape, factor, grid)])
    out = np.empty((len(values),) + tuple(shape), np.float32)
    for c, offset in enumerate(grid_offsets * np.array(factor)):
        out[c] = values[c][index]
        for axis, o in enumerate(offset):
            cut = [slice(None)] * len(shape)
            cut[axis] = slice(max(0, shape[axis] - o), None) if o > 0 else slice(0, -o)
            out[c][tuple(cut)] = 0
    return out


@njit(cache=True, nogil=True)
def _centre_tile(masks, start, grid, offsets, out):
    """``out[c, u] = M_u(r + o_c)`` for the centres ``u`` of this tile whose partner is inside."""
    mz, my, mx = masks.shape[:3]
    rz, ry, rx = masks.shape[3] // 2, masks.shape[4] // 2, masks.shape[5] // 2
    for c in range(offsets.shape[0]):
        oz, oy, ox = offsets[c, 0], offsets[c, 1], offsets[c, 2]
        for z in range(mz):
            uz = start[0] + z
            if uz + oz < 0 or uz + oz >= grid[0]:
                continue
            for y in range(my):
                uy = start[1] + y
                if uy + oy < 0 or uy + oy >= grid[1]:
                    continue
                for x in range(mx):
                    ux = start[2] + x
                    if 0 <= ux + ox < grid[2]:
                        out[c, uz, uy, ux] = masks[z, y, x, rz + oz, ry + oy, rx + ox]


@njit(cache=True, nogil=True, inline="always")
def _centre_range(start, size, k, radius, o, lo, hi, n):
    """Centres ``c`` of the region ``[start, start + size)`` whose window voxel ``k`` is a voxel
    ``u = c - radius + k`` in ``[lo, hi)`` with ``u + o`` in ``[0, n)``."""
    shift = radius - k
    return max(start, lo + shift, -o + shift), min(start + size, hi + shift, n - o + shift)


@njit(cache=True, nogil=True, parallel=True)
def _aggregate_tile(masks, start, lo, hi, grid, offsets, wsum, mean, m2):
    """MaskAggr votes of the masks centred in this tile's region onto the edges ``(u, u + o)``
    with ``u`` in ``[lo, hi)``: weighted Welford (West 1979) per edge, into accumulators
    ``(C, *(hi - lo))`` of the tile.

    ``masks`` is window-major, ``(wz, wy, wx, mz, my, mx)``, so that for one window voxel ``k``
    the votes of all centres are a shifted array operation (contiguous along x). Each edge
    receives the votes of its centres in the same order (by ``k``) whatever the tiling.
    """
    wz, wy, wx, mz, my, mx = masks.shape
    rz, ry, rx = wz // 2, wy // 2, wx // 2
    for c in prange(offsets.shape[0]):  # channels are independent: same result on any thread count
        oz, oy, ox = offsets[c, 0], offsets[c, 1], offsets[c, 2]
        for kz in range(max(0, -oz), min(wz, wz - oz)):
            z0, z1 = _centre_range(start[0], mz, kz, rz, oz, lo[0], hi[0], grid[0])
            for ky in range(max(0, -oy), min(wy, wy - oy)):
                y0, y1 = _centre_range(start[1], my, ky, ry, oy, lo[1], hi[1], grid[1])
                for kx in range(max(0, -ox), min(wx, wx - ox)):
                    x0, x1 = _centre_range(start[2], mx, kx, rx, ox, lo[2], hi[2], grid[2])
                    first, second = masks[kz, ky, kx], masks[kz + oz, ky + oy, kx + ox]
                    for cz in range(z0, z1):
                        for cy in range(y0, y1):
                            pu = first[cz - start[0], cy - start[1]]
                            pv = second[cz - start[0], cy - start[1]]
                            uz, uy = cz - rz + kz - lo[0], cy - ry + ky - lo[1]
                            wrow, mrow, srow = wsum[c, uz, uy], mean[c, uz, uy], m2[c, uz, uy]
                            shift = kx - rx - lo[2]
                            for cx in range(x0, x1):
                                p = np.float64(pu[cx - start[2]])
                                q = np.float64(pv[cx - start[2]])
                                vote = p * q
                                w = p + q - vote
                                # branch-free: a vote without evidence (w = 0) changes nothing
                                total = wrow[cx + shift] + w
                                delta = vote - mrow[cx + shift]
                                updated = mrow[cx + shift] + delta * (w / max(total, 1e-300))
                                srow[cx + shift] += w * delta * (vote - updated)
                                mrow[cx + shift] = updated
                                wrow[cx + shift] = total
