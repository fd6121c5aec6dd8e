"""Hierarchical agglomeration of fragments (MALA / waterz), one partition per threshold."""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from .._checks import as_affinities, as_labels, as_thresholds
from . import _agglomeration_kernels as K
from .rag import RegionGraph, fragment_graph
from ..errors import InputError

__all__ = ["Agglomeration", "agglomerate", "parse_merge_function", "relabel", "waterz_scoring_function"]

HISTOGRAM_BINS = 256
MERGE_HISTORY_DTYPE = np.dtype(
    [("a", np.uint64), ("b", np.uint64), ("c", np.uint64), ("score", np.float32), ("threshold_index", np.int32)]
)
REGION_GRAPH_DTYPE = np.dtype([("u", np.uint64), ("v", np.uint64), ("score", np.float32)])
_HIST = re.compile(r"hist_quant_(\d{1,3})(_initmax)?")


@dataclass(frozen=True)
class MergeFunction:
    """A parsed merge function: ``kind`` (K.MEAN, K.HIST, K.MAX, K.MIN), quantile, init."""

    kind: int
    quantile: int = 0
    init_with_max: bool = False


def parse_merge_function(name: str) -> MergeFunction:
    """Parse ``mean``, ``max``, ``min``, ``hist_quant_Q`` or ``hist_quant_Q_initmax`` (Q in 0-100).

    The names are lsd's: ``hist_quant_75`` is waterz's ``OneMinus<HistogramQuantileAffinity<
    RegionGraphType, 75, ScoreValue, 256, false>>``; ``_initmax`` makes the last argument true.
    """
    simple = {"mean": K.MEAN, "max": K.MAX, "min": K.MIN}
    if name in simple:
        return MergeFunction(simple[name])
    match = _HIST.fullmatch(name) if isinstance(name, str) else None
    if match is None or not 0 <= int(match.group(1)) <= 100:
        raise InputError(
            f"unknown merge function {name!r}: use 'mean', 'max', 'min', 'hist_quant_Q' or "
            "'hist_quant_Q_initmax' with Q in 0..100"
        )
    return MergeFunction(K.HIST, int(match.group(1)), match.group(2) is not None)


def waterz_scoring_function(name: str) -> str:
    """The waterz C++ scoring function that computes the same scores as ``name``."""
    f = parse_merge_function(name)
    if f.kind == K.HIST:
        init = "true" if f.init_with_max else "false"
        stat = f"HistogramQuantileAffinity<RegionGraphType, {f.quantile}, ScoreValue, 256, {init}>"
    else:
        stat = {K.MEAN: "MeanAffinity", K.MAX: "MaxAffinity", K.MIN: "MinAffinity"}[f.kind]
        stat += "<RegionGraphType, ScoreValue>"
    return f"OneMinus<{stat}>"


@dataclass
class Agglomeration:
    """The result of :func:`agglomerate`.

    Attributes
    ----------
    thresholds : (T,) float32
        Increasing thresholds; partition ``i`` merged every edge scored below ``thresholds[i]``.
    fragment_ids : (n,) uint64
        The fragment ids, increasing (0 excluded).
    segment_ids : (T, n) uint64
        Segment of each fragment per threshold: the smallest fragment id in the segment (waterz's).
    merge_history : structured array (a, b, c, score, threshold_index)
        Fragment ``b`` merged into ``a`` giving ``c`` (= a) at ``score``, in merge order.
    region_graph : structured array (u, v, score)
        The initial region graph with every edge's initial score.
    fragments : uint64 array
        The fragments the segmentations are made of.
    region_graphs : list of structured arrays (u, v, score), or None
        The region graph of segments after each threshold (``return_region_graph=True``).
    """

    thresholds: np.ndarray
    fragment_ids: np.ndarray
    segment_ids: np.ndarray
    merge_history: np.ndarray
    region_graph: np.ndarray
    fragments: np.ndarray = field(repr=False)
    region_graphs: list[np.ndarray] | None = None

    def segmentation(self, index: int) -> np.ndarray:
        """The segmentation (uint64 volume) at ``thresholds[index]``."""
        return relabel(self.fragments, self.fragment_ids, self.segment_ids[index])

    def segmentations(self) -> Iterator[np.ndarray]:
        """Segmentations for every threshold, computed one at a time."""
        for i in range(len(self.thresholds)):
            yield self.segmentation(i)


@njit(cache=True, nogil=True)
def _relabel_dense(flat, lut):
    out = np.empty(flat.shape[0], dtype=np.uint64)
    for i in range(flat.shape[0]):
        out[i] = lut[flat[i]]
    return out


def relabel(labels, old_ids, new_ids) -> np.ndarray:
    """Map ``old_ids[i] -> new_ids[i]`` over a label volume; 0 and unlisted ids keep their value."""
    labels = as_labels(labels, name="fragments")
    old_ids = np.asarray(old_ids, dtype=np.uint64)
    new_ids = np.asarray(new_ids, dtype=np.uint64)
    if old_ids.shape != new_ids.shape:
        raise InputError(f"old_ids {old_ids.shape} and new_ids {new_ids.shape} differ in shape")
    flat = labels.reshape(-1)
    top = int(flat.max()) if flat.size else 0
    if top < max(2**20, flat.size // 4):
        lut = np.arange(top + 1, dtype=np.uint64)
        keep = old_ids <= top
        lut[old_ids[keep]] = new_ids[keep]
        return _relabel_dense(flat, lut).reshape(labels.shape)
    order = np.argsort(old_ids)
    pos = np.searchsorted(old_ids[order], flat).clip(0, max(len(old_ids) - 1, 0))
    hit = old_ids[order][pos] == flat if len(old_ids) else np.zeros(flat.shape, bool)
    out = flat.copy()
    out[hit] = new_ids[order][pos[hit]]
    return out.reshape(labels.shape)


class _State:
    """Arrays of one agglomeration, resumable from threshold to threshold."""

    def __init__(self, rag: RegionGraph, function: MergeFunction, discretize_queue: int):
        n_edges, n = rag.num_edges, rag.num_nodes
        self.rag, self.f, self.n_bins = rag, function, discretize_queue
        self.eu, self.ev = rag.u.copy(), rag.v.copy()
        self.score = np.zeros(n_edges, np.float32)
        self.stale = np.zeros(n_edges, bool)
        self.deleted = np.zeros(n_edges, bool)
        self.parent = np.arange(n + 1, dtype=np.int64)
        self.slot_next, self.head, self.tail = K.build_incidence(self.eu, self.ev, n)
        self.cnt = np.zeros(n_edges if function.kind == K.MEAN else 0, np.int64)
        self.val = np.zeros(n_edges if function.kind != K.HIST else 0, np.float32)
        hist_rows = n_edges if function.kind == K.HIST else 0
        self.hist = np.zeros((hist_rows, HISTOGRAM_BINS), np.uint32)
        self.hist_sum = np.zeros(hist_rows, np.int64)
        K.init_statistics(function.kind, rag.contact_ptr, rag.contact_aff, function.init_with_max,
                          HISTOGRAM_BINS, self.cnt, self.val, self.hist, self.hist_sum)
        self.qs = np.array([-1, -1, 0, 0, 0], np.int64)
        nb = max(discretize_queue, 1)
        self.bin_head = np.full(nb, -1, np.int64)
        self.bin_tail = np.full(nb, -1, np.int64)
        self.q_edge = np.empty(max(n_edges, 1), np.int64)
        self.q_next = np.empty(max(n_edges, 1) if discretize_queue else 0, np.int64)
        self.h_score = np.empty(0 if discretize_queue else max(n_edges, 1), np.float32)
        self.h_age = np.empty(0 if discretize_queue else max(n_edges, 1), np.int64)
        self.hstate = np.zeros(1, np.int64)
        self._rehash()
        self.hist_a = np.empty(n + 1, np.int64)
        self.hist_b = np.empty(n + 1, np.int64)
        self.hist_score = np.empty(n + 1, np.float32)
        self.hist_len = np.zeros(1, np.int64)
        self.merged_until = -np.inf
        K.score_all(function.kind, function.quantile, HISTOGRAM_BINS, self.n_bins, self.score,
                    self.cnt, self.val, self.hist, self.hist_sum, *self._queue())

    def _queue(self):
        return (self.qs, self.bin_head, self.bin_tail, self.q_edge, self.q_next, self.h_score, self.h_age)

    def _rehash(self) -> None:
        live = int(np.count_nonzero(~self.deleted))
        capacity = 1 << int(4 * live + 4).bit_length()
        self.hkeys = np.zeros(capacity, np.uint64)
        self.hvals = np.empty(capacity, np.int64)
        self.hstate[0] = K.hash_fill(self.hkeys, self.hvals, self.eu, self.ev, self.deleted,
                                     self.rag.num_nodes)

    def merge_until(self, threshold: np.float32) -> None:
        if threshold <= self.merged_until:
            return
        f = self.f
        while K.merge_until(
            threshold, f.kind, f.quantile, HISTOGRAM_BINS, self.n_bins, self.rag.num_nodes,
            self.eu, self.ev, self.score, self.stale, self.deleted, self.parent,
            self.slot_next, self.head, self.tail, self.hkeys, self.hvals, self.hstate,
            self.cnt, self.val, self.hist, self.hist_sum, *self._queue(),
            self.hist_a, self.hist_b, self.hist_score, self.hist_len,
        ):
            self._rehash()
        self.merged_until = threshold

    def region_graph(self) -> np.ndarray:
        f = self.f
        edges, scores = K.live_region_graph(
            f.kind, f.quantile, HISTOGRAM_BINS, np.float32(self.merged_until), self.eu, self.ev,
            self.score, self.stale, self.deleted, self.cnt, self.val, self.hist, self.hist_sum)
        out = np.empty(len(edges), REGION_GRAPH_DTYPE)
        out["u"] = self.rag.ids[self.eu[edges]]
        out["v"] = self.rag.ids[self.ev[edges]]
        out["score"] = scores
        return out


def agglomerate(
    affs,
    fragments,
    thresholds: Sequence[float],
    *,
    offsets=None,
    merge_function: str = "hist_quant_75",
    discretize_queue: int = 256,
    return_region_graph: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Agglomeration:
    """Agglomerate fragments along their region graph, waterz's algorithm in numba.

    Edges are scored ``1 - statistic`` of the affinities on their contact faces and merged
    cheapest first; merging two regions merges their shared edges' statistics, and an edge whose
    statistic changed is re-scored lazily when it reaches the front of the queue. With
    ``discretize_queue`` bins the queue is a bucket queue (first in, first out within a bucket,
    O(1) per operation), exactly as waterz's ``BinQueue``; with 0 it is a binary heap ordered by
    (score, insertion). The partitions equal waterz 0.10.1's with the same scoring function (see
    :func:`waterz_scoring_function`) and queue.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities; the nearest-neighbour channels (``-e_d`` or ``+e_d``) are used.
    fragments : (z, y, x) or (y, x) int
        Over-segmentation, any non-negative ids up to 2**64 - 1; 0 is background (no edges).
    thresholds : sequence of float
        Thresholds on the score, sorted internally; each gives one partition.
    offsets : (C, ndim) array_like of int, optional
        The offsets of ``affs``; default nearest neighbours.
    merge_function : str
        ``mean``, ``max``, ``min``, ``hist_quant_Q`` or ``hist_quant_Q_initmax``.
    discretize_queue : int
        Number of queue buckets (waterz: 256), or 0 for an exact priority queue.
    return_region_graph : bool
        Also give the scored region graph of segments after each threshold.
    progress : callable, optional
        Called as ``progress(done, total)`` after each threshold (e.g. a tqdm bar's update); the
        library itself prints nothing.

    Returns
    -------
    Agglomeration
    """
    affs, offsets = as_affinities(affs, offsets)
    frags = as_labels(fragments, name="fragments", shape=affs.shape[1:])
    function = parse_merge_function(merge_function)
    if isinstance(discretize_queue, bool) or not 0 <= int(discretize_queue) <= 2**16:
        raise InputError(f"discretize_queue must be 0 or a number of buckets up to 65536, got {discretize_queue!r}")
    thr = as_thresholds(thresholds).astype(np.float32)
    rag = fragment_graph(affs, offsets, frags)
    state = _State(rag, function, int(discretize_queue))
    initial = state.region_graph()
    segment_ids = np.empty((len(thr), rag.num_nodes), np.uint64)
    history_index = np.empty(rag.num_nodes + 1, np.int32)
    graphs = [] if return_region_graph else None
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be a callable progress(done, total) or None, got {progress!r}")
    for i in range(len(thr)):
        before = int(state.hist_len[0])
        state.merge_until(thr[i])
        history_index[before:int(state.hist_len[0])] = i
        segment_ids[i] = rag.ids[K.roots_of_all(state.parent)[1:]]
        if graphs is not None:
            graphs.append(state.region_graph())
        if progress is not None:
            progress(i + 1, len(thr))
    m = int(state.hist_len[0])
    history = np.empty(m, MERGE_HISTORY_DTYPE)
    history["a"] = rag.ids[state.hist_a[:m]]
    history["b"] = rag.ids[state.hist_b[:m]]
    history["c"] = history["a"]
    history["score"] = state.hist_score[:m]
    history["threshold_index"] = history_index[:m]
    return Agglomeration(
        thresholds=thr,
        fragment_ids=rag.ids[1:].copy(),
        segment_ids=segment_ids,
        merge_history=history,
        region_graph=initial,
        region_graphs=graphs,
        fragments=frags,
    )
