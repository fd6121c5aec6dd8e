"""The Mutex Watershed (Wolf et al.): signed-graph partitioning of short- and long-range affinities.

Each affinity becomes an edge of weight ``affinity - bias``: attractive if positive, repulsive
otherwise (as mwatershed: a weight of exactly 0 repels). Edges are processed once, strongest
``|weight|`` first; exact ties of ``|weight|`` (saturated or quantised affinities) go first to
the edges whose neighbourhood agrees most with their sign (``ties``); see :mod:`._mutex_kernels`.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ..._checks import (
    MAX_ID,
    MAX_OFFSET,
    as_affinities,
    as_array,
    as_flag,
    as_int,
    as_labels,
    as_mask,
    check_id_range,
    describe,
)
from ...errors import InputError
from ..core.edges import as_3d, flat_steps
from . import _mutex_kernels as k
from .inputs import as_edges, as_num_nodes, channel_biases, is_long_range

__all__ = ["TIE_ORDERS", "channel_biases", "mutex_watershed", "mutex_watershed_graph", "signed_weights"]

#: Orders of edges whose ``|weight|`` ties exactly (``docs/methods.md``, "Ties"): "agreement"
#: (grids, the default) the edges that the edges beside them (their channel at +-1 along the
#: axes where the offset is 0) agree with most first, then a hash of the edge (runs of at most
#: 32 tied edges by the hash alone); "hash" a fixed pseudo-random order (attractive and
#: repulsive edges interleave); "repulsive-first" / "attractive-first" one sign first, then
#: channel and raster order (the graph: list order).
TIE_ORDERS = {"agreement": k.TIES_AGREEMENT, "hash": k.TIES_HASH, "repulsive-first": k.TIES_REPULSIVE,
              "attractive-first": k.TIES_ATTRACTIVE}


def _tie_order(ties, *, graph: bool = False) -> int:
    allowed = sorted(set(TIE_ORDERS) - {"agreement"}) if graph else sorted(TIE_ORDERS)
    if not isinstance(ties, str) or ties not in allowed:
        raise InputError(f"ties must be one of {allowed}, got {describe(ties)}"
                         + (" ('agreement' needs a grid's neighbourhoods)" if ties == "agreement" else ""))
    return TIE_ORDERS[ties]


def signed_weights(affs: ArrayLike, offsets: ArrayLike | None = None, *, bias: ArrayLike = 0.5,
                   long_range_bias: float | None = None) -> np.ndarray:
    """The signed edge weights ``affinity - bias`` (float64) the Mutex Watershed and GASP use.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities in [0, 1], converted as for :func:`mutex_watershed` (float64 and float16 cast
        to float32, uint8 divided by 255).
    offsets : (C, ndim) array_like of int, optional
        The offsets of ``affs``; default the nearest neighbours ``-e_d``.
    bias : float or (C,) array_like of float
        As for :func:`channel_biases`.
    long_range_bias : float, optional
        As for :func:`channel_biases`.

    Returns
    -------
    weights : (C, z, y, x) or (C, y, x) float64
        ``affs - bias`` of each channel: positive attracts, zero or negative repels.

    Raises
    ------
    InputError
        If ``affs``, ``offsets`` or the biases are invalid.
    """
    affs, offsets = as_affinities(affs, offsets)
    biases = channel_biases(offsets, bias, long_range_bias)
    return affs.astype(np.float64) - biases.reshape((-1,) + (1,) * (affs.ndim - 1))


def _channel_strides(strides, offsets: np.ndarray) -> np.ndarray:
    """Strides as ``(C, ndim)`` int64: ``ndim`` values apply to the long-range channels only."""
    c, ndim = offsets.shape
    out = np.ones((c, ndim), dtype=np.int64)
    if strides is None:
        return out
    try:
        raw = np.asarray(strides)
    except ValueError:  # ragged nesting
        raw = np.asarray(None)
    if (raw.dtype.kind not in "iu" or raw.shape not in ((ndim,), (c, ndim)) or raw.size == 0 or (raw < 1).any()
            or (raw > MAX_OFFSET).any()):
        raise InputError(
            f"strides must be {ndim} positive integers (for the long-range channels) or one such "
            f"row per channel, shape ({c}, {ndim}), each at most {MAX_OFFSET}; got {describe(strides)}"
        )
    if raw.shape == (ndim,):
        out[is_long_range(offsets)] = raw
        return out
    return raw.astype(np.int64)


def mutex_watershed(
    affs: ArrayLike,
    offsets: ArrayLike | None = None,
    *,
    bias: ArrayLike = 0.5,
    long_range_bias: float | None = None,
    strides: ArrayLike | None = None,
    randomized_strides: bool = False,
    rng_seed: int = 0,
    mask: ArrayLike | None = None,
    seeds: ArrayLike | None = None,
    min_size: int = 0,
    ties: str = "agreement",
) -> np.ndarray:
    """Segment affinities with the Mutex Watershed.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities in affseg's convention (``docs/conventions.md``): channel ``c`` at ``u`` links
        ``u`` and ``u + offsets[c]``; 1 = same object.
    offsets : (C, ndim) array_like of int, optional
        Short- and long-range offsets; default: nearest neighbours.
    bias : float or (C,) array_like of float
        Edge weight is ``affinity - bias``; each bias in (0, 1).
    long_range_bias : float, optional
        Bias of the long-range (non nearest-neighbour) channels; ``bias`` then applies to the
        nearest-neighbour channels.
    strides : (ndim,) or (C, ndim) array_like of int, optional
        Keep only the long-range edges on a grid with this step (``ndim`` values: long-range
        channels only; one row per channel: as mwatershed). The grid starts at the first voxel
        whose partner lies inside the volume.
    randomized_strides : bool
        Instead of a grid, keep each edge with probability ``1 / prod(stride)``, deterministically
        from ``rng_seed``.
    rng_seed : int
        Seed of the randomized strides (any integer).
    mask : bool array, spatial shape, optional
        Voxels outside get label 0 and take part in no edge.
    seeds : int array, spatial shape, optional
        Non-zero voxels keep their seed id; voxels of one id are one segment (even if apart);
        different seeds never merge. Seeds on masked voxels are ignored. Any ids up to
        2**64 - 1, as long as the ids of the unseeded segments (below) fit too: from
        ``max(seeds) + 1`` up to one per unseeded voxel inside the mask; seeds that leave no
        room for them raise an InputError before any work.
    min_size : int
        Segments smaller than this many voxels (an integer >= 0) merge into the neighbour of
        highest mean nearest-neighbour affinity (seeded segments absorb but are never merged away). Needs
        the nearest-neighbour channels among the offsets.
    ties : {"agreement", "hash", "repulsive-first", "attractive-first"}
        Order of edges whose ``|weight|`` is exactly equal (common in saturated or uint8
        predictions; without such ties every choice gives mwatershed's partition).
        "agreement": first the edges whose neighbours agree most with their sign (the edges of
        their channel at +-1 along the axes where the offset is 0, inside the mask), then a hash
        of channel and voxel; runs of at most 32 edges with the same strength key go by the
        hash alone. Best overall on the inputs measured in ``docs/benchmarks.md``. "hash": the
        hash alone (attractive and repulsive edges interleave). The others put one sign first,
        then channel and raster order (affseg 0.1: "attractive-first").

    Returns
    -------
    labels : uint64 array, spatial shape
        Seeded segments carry their seed id, the others consecutive ids from ``max(seeds) + 1``
        (the largest seed inside the mask; from 1 without seeds) in raster order of their first
        voxel; 0 only where masked.

    Raises
    ------
    InputError
        If an argument is invalid, the affinities have 2**31 values or more, or the ids of the
        unseeded segments might not fit in uint64.
    """
    affs = as_array(affs, name="affs")  # no copy
    if affs.size >= 2**31:  # before the affinities are converted (copies of that size)
        raise InputError(f"affinities of shape {affs.shape} have too many edges for one call "
                         "(2**31); segment blockwise")
    affs, offsets = as_affinities(affs, offsets)
    shape = affs.shape[1:]
    ndim = len(shape)
    biases = channel_biases(offsets, bias, long_range_bias)
    channel_strides = _channel_strides(strides, offsets)
    mask = as_mask(mask, shape)
    randomized_strides = as_flag(randomized_strides, name="randomized_strides")
    rng_seed = as_int(rng_seed, name="rng_seed")
    min_size = as_int(min_size, name="min_size", minimum=0)
    tie_order = _tie_order(ties)
    if seeds is not None:
        seeds = as_labels(seeds, name="seeds", shape=shape)
        if mask is not None:  # ignored there, so they name no segment and reserve no id
            seeds = np.where(mask, seeds, np.uint64(0))
        _check_seed_ids(seeds, mask)
    if randomized_strides:
        keep_prob = 1.0 / channel_strides.astype(np.float64).prod(axis=1)
        grid_strides = np.ones_like(channel_strides)
    else:
        keep_prob = np.ones(len(offsets))
        grid_strides = channel_strides
    if ndim == 2:  # strides of the added z axis: 1
        grid_strides = np.concatenate([np.ones((len(offsets), 1), np.int64), grid_strides], axis=1)
    affs3, offsets3 = as_3d(affs, offsets)
    labels = _grid_mutex_watershed(affs3, offsets3, biases, grid_strides, keep_prob, rng_seed,
                                   mask, seeds, tie_order).reshape(shape)
    if min_size > 1:
        labels = _clean_small(affs, offsets, labels, min_size, seeds)
    return labels



def _check_seed_ids(seeds: np.ndarray, mask) -> None:
    """The unseeded segments take ids from ``max(seeds) + 1``, at most one per unseeded voxel
    inside the mask: those ids must fit in uint64 (checked before any work)."""
    n_seeded = int(np.count_nonzero(seeds))
    if n_seeded == 0:
        return
    n_free = (seeds.size if mask is None else int(np.count_nonzero(mask))) - n_seeded
    if n_free > 0:  # with every voxel seeded no new id is needed (a seed may be 2**64 - 1)
        check_id_range(int(seeds.max()) + 1, n_free, name="seeds")


def _grid_mutex_watershed(affs, offsets, biases, strides, keep_prob, rng_seed, mask, seeds, tie_order):
    """The kernels on a (C, z, y, x) problem; ``mask`` and ``seeds`` have any matching shape."""
    use_mask = mask is not None
    mask_arr = mask.reshape(affs.shape[1:]) if use_mask else np.ones((1, 1, 1), dtype=bool)
    packed, scratch, n_repulsive = k.grid_edges(affs, offsets, biases, strides, keep_prob,
                                                int(rng_seed) % 2**64, mask_arr, use_mask, tie_order)
    k.exact_order(packed, affs, biases, offsets=offsets, scratch=scratch, ties=tie_order,
                  mask=mask_arr if use_mask else None)
    entries = k.compact(packed)  # 4 bytes per edge from here on, in the front half of packed
    # the sort's scratch and packed's back half hold the rest of the state
    spare = (k.spare_bytes(scratch), k.spare_bytes(packed, entries.nbytes))
    del scratch
    seeded = None
    if seeds is not None:
        seeded = np.flatnonzero((seeds != 0) & mask if use_mask else seeds != 0)
    use_seeds = seeded is not None and seeded.size > 0
    node, seed, *store = k.new_state(affs[0].size, use_seeds, int(n_repulsive), spare=spare)
    del spare
    if use_seeds:
        ids = seeds.reshape(-1)[seeded]
        by_id = np.argsort(ids, kind="stable")
        k.premerge_seeds(seeded[by_id], ids[by_id], node, seed)
    edges = (flat_steps(affs.shape[1:], offsets), affs[0].size, entries)
    k.run(k.process_grid, edges, node, seed, use_seeds, *store)
    del entries, store, packed
    # the next free id (checked to fit by _check_seed_ids unless no voxel is left for one)
    start = min(int(seeds.max()) + 1, MAX_ID) if use_seeds else 1
    return k.labels_from_roots(node[:, k.PARENT], seed, use_seeds, mask_arr, use_mask, np.uint64(start))


def _clean_small(affs, offsets, labels, min_size, seeds):
    """Merge segments under ``min_size`` voxels; seeded ones are never merged away."""
    from ..core.relabel import relabel
    from ..mala.fragments import merge_small_segments

    top_seed = int(seeds.max()) if seeds is not None else 0
    frozen = np.unique(seeds[seeds != 0]) if top_seed else None  # the seed ids, not 1..max (ids up to 2**64 - 1)
    merged = merge_small_segments(affs, offsets, labels, min_size, frozen_ids=frozen)
    ids = np.unique(merged)
    unseeded = ids[ids > np.uint64(top_seed)]
    if unseeded.size == 0:
        return merged
    # fewer than before the merge, so they fit where the uncleaned ids did
    first = np.uint64(top_seed) + np.uint64(1)
    return relabel(merged, unseeded, first + np.arange(unseeded.size, dtype=np.uint64))


def mutex_watershed_graph(
    num_nodes: int,
    uv_ids: ArrayLike,
    weights: ArrayLike,
    *,
    mutex_uv_ids: ArrayLike | None = None,
    mutex_weights: ArrayLike | None = None,
    ties: str = "hash",
) -> np.ndarray:
    """The Mutex Watershed on an explicit graph, e.g. the region graph of fragments.

    Parameters
    ----------
    num_nodes : int
        Nodes are ``0 .. num_nodes - 1``.
    uv_ids : (E, 2) array_like of int
        Edges; no self-loops, no edge twice.
    weights : (E,) array_like of float
        Signed weights (positive attracts, zero or negative repels); or, with ``mutex_uv_ids``,
        the non-negative strengths of the attractive edges.
    mutex_uv_ids : (M, 2) array_like of int, optional
        Repulsive edges, given apart (affogato's convention).
    mutex_weights : (M,) array_like of float, optional
        Their non-negative strengths.
    ties : {"hash", "repulsive-first", "attractive-first"}
        Order of edges of exactly equal strength, as for :func:`mutex_watershed`; "hash" hashes
        the edge's position in the list (``uv_ids`` then ``mutex_uv_ids``); list order breaks the
        others' ties.

    Returns
    -------
    labels : (num_nodes,) uint64
        Segment of each node, ``1 .. k`` in order of the segment's first node.

    Raises
    ------
    InputError
        If ``num_nodes`` is not an integer in ``[1, 2**31 - 1]``, an edge has a node id outside
        ``[0, num_nodes)``, is a self-loop or is listed twice, a weight is not finite (or, with
        ``mutex_uv_ids``, negative), or only one of ``mutex_uv_ids`` and ``mutex_weights`` is given.
    """
    num_nodes = as_num_nodes(num_nodes)
    tie_order = _tie_order(ties, graph=True)
    uv, w = as_edges(num_nodes, uv_ids, weights, name="uv_ids")
    if (mutex_uv_ids is None) != (mutex_weights is None):
        raise InputError("mutex_uv_ids and mutex_weights go together: give both or neither")
    if mutex_uv_ids is not None:
        muv, mw = as_edges(num_nodes, mutex_uv_ids, mutex_weights, name="mutex_uv_ids")
        for name, values in (("weights", w), ("mutex_weights", mw)):
            if (values < 0).any():
                raise InputError(f"{name} are strengths here and must be >= 0, found {values.min()}")
        uv = np.concatenate([uv, muv])
        attractive = np.concatenate([np.ones(len(w), bool), np.zeros(len(mw), bool)])
        strength = np.concatenate([w, mw])
    else:
        attractive = w > 0
        strength = np.abs(w)
    # strongest first, then the tie order, then the given order
    if tie_order == k.TIES_HASH:
        order = np.lexsort((k.edge_hashes(len(strength)), -strength))
    else:
        order = np.lexsort((attractive if tie_order == k.TIES_REPULSIVE else ~attractive, -strength))
    node, seed, *store = k.new_state(num_nodes, False, int((~attractive).sum()))
    edges = (np.ascontiguousarray(uv[order, 0]), np.ascontiguousarray(uv[order, 1]), attractive[order], num_nodes)
    k.run(k.process_sorted, edges, node, seed, False, *store)
    return k.labels_from_roots(node[:, k.PARENT], seed, False, np.ones(1, bool), False, np.uint64(1))
