"""Validated inputs of the signed-graph methods, shared by the Mutex Watershed and GASP: the
per-channel biases, long-range channels, explicit graphs, and the node limit of the kernels.

Package-internal: the public functions are in :mod:`.mutex` and :mod:`.gasp` (``channel_biases``
is re-exported there).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ..._checks import as_array, as_number, describe
from ...errors import InputError


def is_long_range(offsets: np.ndarray) -> np.ndarray:
    """Per channel: whether the offset is not a nearest-neighbour unit vector."""
    return np.abs(offsets).sum(axis=1) > 1


def channel_biases(offsets: np.ndarray, bias: ArrayLike = 0.5, long_range_bias: float | None = None) -> np.ndarray:
    """One bias per channel, float64, each in (0, 1).

    ``bias`` is a scalar or one value per channel. With ``long_range_bias`` (a scalar), channels
    whose offset is not a nearest-neighbour unit vector take it and ``bias`` applies to the
    nearest-neighbour channels only.

    Parameters
    ----------
    offsets : (C, ndim) int64
        Validated offsets (as ``as_offsets`` gives them).
    bias : float or (C,) array_like of float
        Bias of every channel, or one per channel; each in (0, 1).
    long_range_bias : float, optional
        Bias of the long-range channels, in (0, 1).

    Returns
    -------
    biases : (C,) float64
        The bias of each channel.

    Raises
    ------
    InputError
        If ``bias`` is not a real number or ``C`` of them, or a bias lies outside (0, 1) or is NaN.
    """
    n = len(offsets)
    try:
        raw = np.asarray(bias)
    except ValueError:  # ragged nesting
        raw = np.asarray(None)
    if raw.dtype.kind not in "iuf":  # strings, bools, complex, None, objects
        raise InputError(f"bias must be a number or {n} numbers (one per channel), got {describe(bias)}")
    values = raw.astype(np.float64)
    if values.ndim == 0:
        values = np.full(n, float(values))
    elif values.shape != (n,):
        raise InputError(f"bias must be a scalar or {n} values (one per channel), got shape {values.shape}")
    _check_biases(values)  # also those that long_range_bias replaces: a NaN is a mistake anywhere
    if long_range_bias is not None:
        long_range_bias = as_number(long_range_bias, name="long_range_bias")
        if not 0 < long_range_bias < 1:
            raise InputError(f"biases must lie in (0, 1), got long_range_bias={long_range_bias}")
        values[is_long_range(offsets)] = long_range_bias
    return values


def _check_biases(values: np.ndarray) -> None:
    bad = ~((values > 0) & (values < 1))
    if bad.any():
        raise InputError(f"biases must lie in (0, 1), got {values[bad].tolist()} for channels "
                         f"{np.flatnonzero(bad).tolist()}")

# Graphs share the grid's limit of 2**31 - 1 nodes (voxels): node ids then fit the kernels'
# 32-bit state (and each node costs about 40 bytes in the Mutex Watershed's and GASP's
# kernels, so more nodes would not fit in memory anyway).
MAX_NODES = 2**31 - 1


def as_num_nodes(num_nodes) -> int:
    """``num_nodes`` of a graph as an int in ``[1, MAX_NODES]``."""
    if isinstance(num_nodes, (bool, np.bool_)) or not isinstance(num_nodes, (int, np.integer)) or num_nodes < 1:
        raise InputError(f"num_nodes must be a positive integer, got {describe(num_nodes)}")
    if num_nodes > MAX_NODES:
        raise InputError(f"num_nodes must be at most 2**31 - 1 = {MAX_NODES} (the node limit of the graph "
                         f"kernels, as for grids; their state takes tens of bytes per node), got {int(num_nodes)}")
    return int(num_nodes)


def as_edges(num_nodes: int, uv_ids, weights, *, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Edges as (E, 2) int64 and weights as (E,) float64, checked before any work."""
    uv = as_array(uv_ids, name=name)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise InputError(f"{name} must have the shape (E, 2), got {uv.shape}")
    if uv.size and uv.dtype.kind not in "iu":
        raise InputError(f"{name} must be integers, got dtype {uv.dtype}")
    if uv.size and uv.dtype.kind == "u" and uv.max() > np.iinfo(np.int64).max:
        raise InputError(f"{name} has node id {uv.max()} outside [0, {num_nodes})")
    uv = uv.astype(np.int64)
    weight_name = "weights" if name == "uv_ids" else "mutex_weights"
    w = as_array(weights, name=weight_name)
    if w.dtype.kind not in "biuf":  # complex, strings, objects, None
        raise InputError(f"{weight_name} must be real numbers, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.shape != (uv.shape[0],):
        raise InputError(f"{weight_name} must have the shape ({uv.shape[0]},) to match {name}, got {w.shape}")
    if not np.isfinite(w).all():
        raise InputError(f"{weight_name} contain {int((~np.isfinite(w)).sum())} NaN or infinite values")
    if uv.size:
        bad = (uv < 0) | (uv >= num_nodes)
        if bad.any():
            raise InputError(f"{name} has node id {uv[bad][0]} outside [0, {num_nodes})")
        loops = np.flatnonzero(uv[:, 0] == uv[:, 1])
        if loops.size:
            raise InputError(f"{name} has a self-loop at edge {loops[0]}: {uv[loops[0]].tolist()}")
        pairs = np.sort(uv, axis=1)
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
        if (counts > 1).any():
            dup = uniq[np.argmax(counts > 1)]
            raise InputError(f"{name} lists the edge {dup.tolist()} more than once")
    return uv, w


def check_grid_nodes(shape: tuple[int, ...], *, method: str) -> int:
    """The number of voxels of ``shape``, when they fit the node limit (``MAX_NODES``) of the
    graph kernels that make every voxel a node; an InputError naming the shape otherwise."""
    n = int(np.prod(shape, dtype=object))
    if n > MAX_NODES:
        raise InputError(f"{method} on voxels: the spatial shape {tuple(shape)} has {n} voxels, more than the "
                         f"kernels' limit of 2**31 - 1 = {MAX_NODES} nodes; pass fragments or segment blockwise")
    return n
