"""Region-graph edge statistics that can be computed on any part of a volume and merged.

The building block of blockwise agglomeration: :func:`edge_statistics` on each block (or on the
whole volume), :func:`merge_edge_statistics` over the blocks, then
:func:`~affseg.graph.mala.agglomeration.agglomerate_graph` on the result, with no volume in memory.
Counts, sums, maxima, minima and 256-bin histograms merge exactly, so ``hist_quant_*``, ``max``
and ``min`` agglomerate to the same partitions as one pass over the whole volume; ``mean`` starts
from ``sum / count`` (float64) where waterz keeps a float32 running mean in raster order, which can
differ in the last bit (see docs/conventions.md).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit
from numpy.typing import ArrayLike

from ..._checks import as_affinities, as_labels
from ...errors import InputError
from ._kernels import discretize
from .rag import RegionGraph, edge_table, fragment_graph

__all__ = ["HISTOGRAM_BINS", "EdgeStatistics", "edge_statistics", "merge_edge_statistics"]

HISTOGRAM_BINS = 256


@dataclass(frozen=True)
class EdgeStatistics:
    """Nodes and edges of a region graph of fragments, with mergeable affinity statistics.

    Attributes
    ----------
    node_ids : (N,) uint64
        Fragment ids, increasing, 0 excluded.
    node_sizes : (N,) int64
        Voxels per fragment (in the part of the volume the statistics cover).
    u, v : (E,) uint64
        Fragment ids of each edge, ``u < v``, sorted by (u, v).
    count : (E,) int64
        Contact faces of each edge (voxel pairs along a nearest-neighbour axis).
    sum : (E,) float64
        Sum of the affinities on those faces.
    max, min : (E,) float32
        Largest and smallest of them.
    histogram : (E, 256) uint32 or None
        Their 256-bin histogram (bin ``floor(affinity * 256)``, waterz's discretisation).
    contacts : RegionGraph or None
        The contacts in waterz's order, kept by :func:`edge_statistics` with
        ``keep_contacts=True`` so that ``mean`` agglomerates exactly as waterz; dropped by merging.
    """

    node_ids: np.ndarray
    node_sizes: np.ndarray
    u: np.ndarray
    v: np.ndarray
    count: np.ndarray
    sum: np.ndarray
    max: np.ndarray
    min: np.ndarray
    histogram: np.ndarray | None
    contacts: RegionGraph | None = None

    @property
    def num_nodes(self) -> int:
        return self.node_ids.shape[0]

    @property
    def num_edges(self) -> int:
        return self.u.shape[0]

    @property
    def mean(self) -> np.ndarray:
        """Mean affinity of each edge (float64)."""
        return self.sum / np.maximum(self.count, 1)


@njit(cache=True, nogil=True)
def _contact_statistics(ptr, contact_aff, bins, with_histogram):
    n_edges = ptr.shape[0] - 1
    total = np.zeros(n_edges, np.float64)
    hi = np.zeros(n_edges, np.float32)
    lo = np.zeros(n_edges, np.float32)
    hist = np.zeros((n_edges if with_histogram else 0, bins), np.uint32)
    for e in range(n_edges):
        s = 0.0
        top = np.float32(-np.inf)
        bottom = np.float32(np.inf)
        for k in range(ptr[e], ptr[e + 1]):
            a = contact_aff[k]
            s += np.float64(a)
            top = max(top, a)
            bottom = min(bottom, a)
            if with_histogram:
                hist[e, discretize(a, bins)] += 1
        total[e], hi[e], lo[e] = s, top, bottom
    return total, hi, lo, hist


def empty_edge_statistics(*, histogram: bool) -> EdgeStatistics:
    """No nodes, no edges (with an empty histogram array if ``histogram``). Package-internal."""
    ids = np.zeros(0, np.uint64)
    return EdgeStatistics(node_ids=ids, node_sizes=np.zeros(0, np.int64), u=ids, v=ids.copy(),
                          count=np.zeros(0, np.int64), sum=np.zeros(0, np.float64), max=np.zeros(0, np.float32),
                          min=np.zeros(0, np.float32),
                          histogram=np.zeros((0, HISTOGRAM_BINS), np.uint32) if histogram else None)


def edge_statistics(affs: ArrayLike, fragments: ArrayLike, offsets: ArrayLike | None = None, *,
                    owned: tuple[slice, ...] | None = None, histogram: bool = True,
                    keep_contacts: bool = False) -> EdgeStatistics:
    """The region graph of ``fragments`` with the statistics of the affinities between them.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities; the nearest-neighbour channels (``-e_d`` or ``+e_d``) are used.
    fragments : (z, y, x) or (y, x) int
        Fragment ids (any up to 2**64 - 1); 0 is background and has no edges.
    offsets : (C, ndim) array_like of int, optional
        The offsets of ``affs``; default nearest neighbours.
    owned : tuple of slice, optional
        The region of the arrays this call is responsible for (a block's write region inside its
        read region): only contacts whose upper voxel (the one carrying the affinity, ``u`` of
        ``(u, u - e_d)``) lies in it are counted, and node sizes only there. Blocks that own
        disjoint regions thus count every contact of the volume exactly once; each needs one voxel
        of context below its region. Default: everything.
    histogram : bool
        Also count the 256-bin histograms (1 KiB per edge; needed by ``hist_quant_*``).
    keep_contacts : bool
        Keep every contact affinity in waterz's order (exact ``mean`` agglomeration).

    Returns
    -------
    statistics : EdgeStatistics
        Nodes (with ``owned``: those with voxels or contacts in it) and edges with their counts,
        sums, extremes, histograms (if ``histogram``) and contacts (if ``keep_contacts``).

    Raises
    ------
    InputError
        If the affinities, fragments or offsets are invalid, their shapes disagree, or ``owned``
        is not a tuple of one slice per axis selecting a non-empty box with step 1.
    """
    affs, offsets = as_affinities(affs, offsets)
    fragments = as_labels(fragments, name="fragments", shape=affs.shape[1:])
    region = _as_region(owned, fragments.shape)
    if not keep_contacts:  # one pass, no contacts kept
        table = edge_table(affs, offsets, fragments, region, bins=HISTOGRAM_BINS,
                           statistics=("sum", "max", "min") + (("histogram",) if histogram else ()))
        return EdgeStatistics(node_ids=table.ids[1:], node_sizes=table.sizes[1:], u=table.ids[table.u],
                              v=table.ids[table.v], count=table.count, sum=table.sum, max=table.max, min=table.min,
                              histogram=table.histogram)
    rag = fragment_graph(affs, offsets, fragments, region)
    stats = _from_region_graph(rag, histogram=histogram)
    if owned is None:
        return stats
    # fragments seen only in the context, with no contact here: not this part's nodes
    keep = (stats.node_sizes > 0) | np.isin(stats.node_ids, stats.u) | np.isin(stats.node_ids, stats.v)
    return EdgeStatistics(node_ids=stats.node_ids[keep], node_sizes=stats.node_sizes[keep], u=stats.u, v=stats.v,
                          count=stats.count, sum=stats.sum, max=stats.max, min=stats.min,
                          histogram=stats.histogram, contacts=stats.contacts)


def _as_region(owned, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """``owned`` as in-bounds slices with steps of 1, or an InputError."""
    if owned is None:
        return None
    if not isinstance(owned, tuple) or len(owned) != len(shape) or not all(isinstance(s, slice) for s in owned):
        raise InputError(f"owned must be a tuple of {len(shape)} slices, got {owned!r}")
    region = []
    for s, n in zip(owned, shape):
        start, stop, step = s.indices(n)
        if step != 1 or start >= stop:
            raise InputError(f"owned must select a non-empty box with step 1 in a volume of shape {shape}, got {owned}")
        region.append(slice(start, stop))
    return tuple(region)


def _from_region_graph(rag: RegionGraph, *, histogram: bool) -> EdgeStatistics:
    """The statistics of ``rag``'s contacts, which it keeps (``contacts``)."""
    total, hi, lo, hist = _contact_statistics(rag.contact_ptr, rag.contact_aff, HISTOGRAM_BINS, histogram)
    return EdgeStatistics(
        node_ids=rag.ids[1:].copy(), node_sizes=rag.sizes[1:].copy(), u=rag.ids[rag.u], v=rag.ids[rag.v],
        count=np.diff(rag.contact_ptr), sum=total, max=hi, min=lo, histogram=hist if histogram else None,
        contacts=rag)


def merge_edge_statistics(parts: Sequence[EdgeStatistics]) -> EdgeStatistics:
    """One :class:`EdgeStatistics` from several, e.g. of blocks that share no contact face.

    Node sizes add up; an edge found in several parts gets the sums of their counts, sums and
    histograms and the extremes of their maxima and minima. The result does not depend on the
    order of ``parts``. Histograms are kept only if every part has them.

    Parameters
    ----------
    parts : sequence of EdgeStatistics
        The statistics to merge, at least one.

    Returns
    -------
    statistics : EdgeStatistics
        Their union; ``contacts`` is None.

    Raises
    ------
    InputError
        If ``parts`` is empty or holds anything but EdgeStatistics.
    """
    parts = list(parts)
    if not parts or not all(isinstance(p, EdgeStatistics) for p in parts):
        raise InputError("merge_edge_statistics needs a non-empty list of EdgeStatistics")
    node_ids, node_index = np.unique(np.concatenate([p.node_ids for p in parts]), return_inverse=True)
    node_sizes = np.zeros(node_ids.shape[0], np.int64)
    np.add.at(node_sizes, node_index, np.concatenate([p.node_sizes for p in parts]))
    u = np.concatenate([p.u for p in parts])
    v = np.concatenate([p.v for p in parts])
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    first = np.ones(u.shape[0], bool)
    first[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
    starts = np.flatnonzero(first)

    def reduce(values, ufunc):
        return ufunc.reduceat(values[order], starts) if starts.size else values[:0]

    with_histogram = all(p.histogram is not None for p in parts)
    histogram = None
    if with_histogram:
        stacked = np.concatenate([p.histogram for p in parts])
        histogram = (np.add.reduceat(stacked[order], starts, axis=0).astype(np.uint32) if starts.size
                     else stacked[:0])
    return EdgeStatistics(
        node_ids=node_ids, node_sizes=node_sizes, u=u[starts], v=v[starts],
        count=reduce(np.concatenate([p.count for p in parts]), np.add),
        sum=reduce(np.concatenate([p.sum for p in parts]), np.add),
        max=reduce(np.concatenate([p.max for p in parts]), np.maximum),
        min=reduce(np.concatenate([p.min for p in parts]), np.minimum),
        histogram=histogram)
