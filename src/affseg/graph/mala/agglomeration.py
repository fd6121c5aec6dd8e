"""Hierarchical agglomeration of fragments (MALA / waterz), one partition per threshold."""
from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from numba import njit
from numpy.typing import ArrayLike

from ..._checks import as_affinities, as_flag, as_labels, as_thresholds
from ...errors import InputError
from ..core.relabel import relabel, relabel_into
from . import _kernels as K
from .rag import edge_table
from .statistics import HISTOGRAM_BINS, EdgeStatistics

__all__ = ["Agglomeration", "agglomerate", "agglomerate_graph", "parse_merge_function", "relabel",
           "waterz_scoring_function"]

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

    Parameters
    ----------
    name : str
        The merge function's name.

    Returns
    -------
    function : MergeFunction
        Its kind (``_kernels.MEAN``, ``HIST``, ``MAX`` or ``MIN``), quantile and ``init_with_max``.

    Raises
    ------
    InputError
        If ``name`` is not a string or not one of the names above.
    """
    simple = {"mean": K.MEAN, "max": K.MAX, "min": K.MIN}
    if not isinstance(name, str):
        raise InputError(f"merge_function must be a name like 'hist_quant_75', got {name!r}")
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
    """The waterz C++ scoring function that computes the same scores as ``name``.

    Parameters
    ----------
    name : str
        A merge function name, as for :func:`parse_merge_function`.

    Returns
    -------
    scoring_function : str
        The C++ type for waterz's ``scoring_function`` argument, e.g.
        ``OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>``.

    Raises
    ------
    InputError
        If ``name`` is not a merge function name.
    """
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
    fragments: np.ndarray | None = field(repr=False)
    region_graphs: list[np.ndarray] | None = None

    def lookup(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The fragment -> segment table at ``thresholds[index]``: (fragment_ids, segment_ids)."""
        return self.fragment_ids, self.segment_ids[index]

    def segmentation(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """The segmentation at ``thresholds[index]``.

        Parameters
        ----------
        index : int
            Index into ``thresholds``.
        out : uint64 array, optional
            A C-contiguous uint64 array of the fragments' shape to write the segmentation into
            (e.g. one buffer reused for every threshold, as waterz does); default a new array.

        Returns
        -------
        segmentation : uint64 array
            The fragments with each id replaced by its segment's; ``out`` if given.

        Raises
        ------
        InputError
            If the agglomeration was made from a graph alone (no fragments), or ``out`` is not a
            C-contiguous uint64 array of the fragments' shape.
        """
        if self.fragments is None:
            raise InputError("this agglomeration was made from a graph alone: relabel the fragments with "
                             "relabel(fragments, *result.lookup(index))")
        if out is None:
            out = np.empty(self.fragments.shape, np.uint64)
        elif not (isinstance(out, np.ndarray) and out.dtype == np.uint64 and out.shape == self.fragments.shape
                  and out.flags.c_contiguous and out.flags.writeable):
            raise InputError(f"out must be a writeable C-contiguous uint64 array of shape {self.fragments.shape}, "
                             f"got {_describe(out)}")
        return relabel_into(self.fragments, *self.lookup(index), out)

    def segmentations(self) -> Iterator[np.ndarray]:
        """Segmentations for every threshold, computed one at a time."""
        for i in range(len(self.thresholds)):
            yield self.segmentation(i)


def _initial_statistics(function: MergeFunction, n_edges: int, init) -> tuple[np.ndarray, ...]:
    """``(cnt, val, hist, hist_sum)`` of ``n_edges`` edges for ``function``, filled by
    ``init(kind, init_with_max, bins, cnt, val, hist, hist_sum)``."""
    cnt = np.zeros(n_edges if function.kind == K.MEAN else 0, np.int64)
    val = np.zeros(n_edges if function.kind != K.HIST else 0, np.float32)
    hist_rows = n_edges if function.kind == K.HIST else 0
    hist = np.zeros((hist_rows, HISTOGRAM_BINS), np.uint32)
    hist_sum = np.zeros(hist_rows, np.int64)
    init(function.kind, function.init_with_max, HISTOGRAM_BINS, cnt, val, hist, hist_sum)
    return cnt, val, hist, hist_sum


def _table_statistics(function: MergeFunction) -> tuple[str, ...]:
    """What :func:`~affseg.graph.mala.rag.edge_table` must accumulate for ``function``."""
    if function.kind == K.MEAN:
        return ("mean",)
    if function.kind == K.MIN:
        return ("min",)
    if function.kind == K.MAX or function.init_with_max:
        return ("max",)
    return ("histogram",)


@njit(cache=True, nogil=True)
def _push_all(scores, n_bins, score, qs, bin_head, bin_tail, q_edge, q_next, h_score, h_age):
    """:func:`~affseg.graph.mala._kernels.score_all` with the scores known already."""
    for e in range(scores.shape[0]):
        score[e] = scores[e]
        K.queue_push(e, scores[e], n_bins, qs, bin_head, bin_tail, q_edge, q_next, h_score, h_age)


def _statistics_from_table(function: MergeFunction, table) -> tuple[np.ndarray, ...]:
    """``(cnt, val, hist, hist_sum)`` of ``function`` from an edge table of :func:`_table_statistics`:
    the table's own arrays where they are the state (no copy of the histograms)."""
    n_edges = table.num_edges
    empty_hist = np.zeros((0, HISTOGRAM_BINS), np.uint32)
    empty_f, empty_i = np.zeros(0, np.float32), np.zeros(0, np.int64)
    if function.kind == K.MEAN:
        return table.count, table.mean, empty_hist, empty_i
    if function.kind == K.MIN:
        return empty_i, table.min, empty_hist, empty_i
    if function.kind == K.MAX:
        return empty_i, np.maximum(table.max, np.float32(0)), empty_hist, empty_i
    if not function.init_with_max:
        return empty_i, empty_f, table.histogram, table.count

    def init(kind, init_with_max, bins, cnt, val, hist, hist_sum):  # the largest contact only
        K.init_from_statistics(kind, init_with_max, bins, table.count, np.zeros(n_edges), table.max, table.max,
                               empty_hist, cnt, val, hist, hist_sum)

    return _initial_statistics(function, n_edges, init)


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        order = "C-contiguous" if value.flags.c_contiguous else "not C-contiguous"
        return f"{value.dtype} array of shape {value.shape}, {order}"
    return type(value).__name__


class _State:
    """Arrays of one agglomeration, resumable from threshold to threshold.

    ``ids`` are the fragment ids of nodes ``1..n`` (``ids[0] == 0``), ``u < v`` the node indices
    of the edges, sorted; ``statistics`` the initial ``(cnt, val, hist, hist_sum)`` (see
    :func:`_initial_statistics`), updated in place by the merges.
    """

    def __init__(self, ids: np.ndarray, u: np.ndarray, v: np.ndarray, statistics: tuple[np.ndarray, ...],
                 function: MergeFunction, discretize_queue: int, scores: np.ndarray | None = None):
        n_edges, n = u.shape[0], ids.shape[0] - 1
        self.ids, self.num_nodes, self.f, self.n_bins = ids, n, function, discretize_queue
        self.eu, self.ev = u.copy(), v.copy()
        self.score = np.zeros(n_edges, np.float32)
        self.stale = np.zeros(n_edges, bool)
        self.deleted = np.zeros(n_edges, bool)
        self.parent = np.arange(n + 1, dtype=np.int64)
        self.slot_next, self.head, self.tail = K.build_incidence(self.eu, self.ev, n)
        self.cnt, self.val, self.hist, self.hist_sum = statistics
        self.qs = np.array([-1, -1, 0, 0, 0], np.int64)
        nb = max(discretize_queue, 1)
        self.bin_head = np.full(nb, -1, np.int64)
        self.bin_tail = np.full(nb, -1, np.int64)
        self.q_edge = np.empty(max(n_edges, 1), np.int64)
        self.q_next = np.empty(max(n_edges, 1) if discretize_queue else 0, np.int64)
        self.h_score = np.empty(0 if discretize_queue else max(n_edges, 1), np.float32)
        self.h_age = np.empty(0 if discretize_queue else max(n_edges, 1), np.int64)
        self.hstate = np.zeros(1, np.int64)
        self.hkeys = np.zeros(0, np.uint64)
        self._rehash()
        self.hist_a = np.empty(n + 1, np.int64)
        self.hist_b = np.empty(n + 1, np.int64)
        self.hist_score = np.empty(n + 1, np.float32)
        self.hist_len = np.zeros(1, np.int64)
        self.merged_until = -np.inf
        if scores is None:
            K.score_all(function.kind, function.quantile, HISTOGRAM_BINS, self.n_bins, self.score,
                        self.cnt, self.val, self.hist, self.hist_sum, *self._queue())
        else:
            _push_all(scores, self.n_bins, self.score, *self._queue())

    def _queue(self):
        return (self.qs, self.bin_head, self.bin_tail, self.q_edge, self.q_next, self.h_score, self.h_age)

    def _rehash(self) -> None:
        live = int(np.count_nonzero(~self.deleted))
        capacity = 1 << int(4 * live + 4).bit_length()
        if self.hkeys.shape[0] != capacity:  # else refilled in place (fresh memory costs page faults)
            self.hkeys = np.zeros(capacity, np.uint64)
            self.hvals = np.empty(capacity, np.int64)
        self.hstate[0] = K.hash_fill(self.hkeys, self.hvals, self.eu, self.ev, self.deleted, self.num_nodes)

    def merge_until(self, threshold: np.float32) -> None:
        if threshold <= self.merged_until:
            return
        f = self.f
        while K.merge_until(
            threshold, f.kind, f.quantile, HISTOGRAM_BINS, self.n_bins, self.num_nodes,
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
        out["u"] = self.ids[self.eu[edges]]
        out["v"] = self.ids[self.ev[edges]]
        out["score"] = scores
        return out


def agglomerate(
    affs: ArrayLike,
    fragments: ArrayLike,
    offsets: ArrayLike | None = None,
    *,
    thresholds: Sequence[float] | None = None,
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
    :func:`waterz_scoring_function`) and queue. This is :func:`~affseg.graph.mala.statistics.edge_statistics`
    followed by :func:`agglomerate_graph`, with only the statistic the merge function needs,
    counted in one pass over the volume in waterz's order, so that ``mean`` (a float32 running
    mean) is waterz's too.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities; the nearest-neighbour channels (``-e_d`` or ``+e_d``) are used.
    fragments : (z, y, x) or (y, x) int
        Over-segmentation, any non-negative ids up to 2**64 - 1; 0 is background (no edges).
    offsets : (C, ndim) array_like of int, optional
        The offsets of ``affs``; default nearest neighbours.
    thresholds : sequence of float
        Thresholds on the score, sorted internally; each gives one partition. Required (the
        default None is refused; a sequence passed as the third positional argument is taken
        as thresholds, with a DeprecationWarning).
    merge_function : str
        ``mean``, ``max``, ``min``, ``hist_quant_Q`` or ``hist_quant_Q_initmax``.
    discretize_queue : int
        Number of queue buckets (waterz: 256, at most 65536), or 0 for an exact priority queue
        (better for ``mean`` on float affinities: docs/methods.md, "GASP and the agglomeration
        queue: ties").
    return_region_graph : bool
        Also give the scored region graph of segments after each threshold.
    progress : callable, optional
        Called as ``progress(done, total)`` after each threshold (e.g. a tqdm bar's update); the
        library itself prints nothing.

    Returns
    -------
    result : Agglomeration
        The partitions per threshold, the merge history and the region graph; with the
        fragments, so that ``result.segmentation(i)`` gives the segmentation of threshold ``i``.

    Raises
    ------
    InputError
        If the affinities, fragments, offsets, thresholds or options are invalid, or the shapes
        of ``affs`` and ``fragments`` disagree.
    """
    if thresholds is None and offsets is not None and _looks_like_thresholds(offsets):
        warnings.warn("agglomerate(affs, fragments, thresholds) is deprecated: pass thresholds=... (the third "
                      "argument is now offsets)", DeprecationWarning, stacklevel=2)
        offsets, thresholds = None, offsets
    affs, offsets = as_affinities(affs, offsets)
    frags = as_labels(fragments, name="fragments", shape=affs.shape[1:])
    options = _agglomeration_options(thresholds, merge_function, discretize_queue, progress)
    function = options["function"]
    quantile = function.quantile if function.kind == K.HIST and not function.init_with_max else None
    table = edge_table(affs, offsets, frags, statistics=_table_statistics(function), bins=HISTOGRAM_BINS,
                       quantile=quantile)
    statistics = _statistics_from_table(function, table)
    # the initial scores of the histograms, taken while they were in the cache (as K.one_minus)
    scores = None if table.quantile is None else (1.0 - table.quantile.astype(np.float64)).astype(np.float32)
    ids, u, v = table.ids, table.u, table.v
    del table
    result = _agglomerate(ids, u, v, statistics, return_region_graph=return_region_graph, scores=scores, **options)
    result.fragments = frags
    return result


def agglomerate_graph(
    statistics: EdgeStatistics,
    *,
    thresholds: Sequence[float],
    merge_function: str = "hist_quant_75",
    discretize_queue: int = 256,
    return_region_graph: bool = False,
    progress: Callable[[int, int], None] | None = None,
    overwrite_statistics: bool = False,
) -> Agglomeration:
    """:func:`agglomerate` on a region graph alone: no volume is needed.

    Parameters
    ----------
    statistics : EdgeStatistics
        From :func:`~affseg.graph.mala.statistics.edge_statistics` (of a whole volume) or
        :func:`~affseg.graph.mala.statistics.merge_edge_statistics` (of its blocks). ``hist_quant_*``
        needs the histograms.
    thresholds : sequence of float
        Thresholds on the score, sorted internally; each gives one partition.
    merge_function : str
        As for :func:`agglomerate`; ``hist_quant_Q`` needs the histograms.
    discretize_queue : int
        As for :func:`agglomerate`.
    return_region_graph : bool
        As for :func:`agglomerate`.
    progress : callable, optional
        As for :func:`agglomerate`.
    overwrite_statistics : bool
        Let a ``hist_quant_*`` agglomeration (not ``*_initmax``) merge the histograms in
        ``statistics.histogram`` and ``statistics.count`` themselves instead of in a copy
        (1 KiB per edge less memory); both hold garbage afterwards (on disk, for a writeable
        memory map). Only where they are writeable, C-contiguous uint32 and int64 arrays;
        otherwise they are copied as without it. The other merge functions never change
        ``statistics`` (``*_initmax`` starts from a histogram of each edge's largest contact:
        1 KiB per edge anyway).

    Returns
    -------
    result : Agglomeration
        Without fragments: ``lookup(i)`` gives the fragment -> segment table of threshold ``i``
        (apply it with :func:`relabel`).

    Raises
    ------
    InputError
        If ``statistics`` is not an EdgeStatistics, an edge does not join two listed nodes with
        ``u < v``, a ``hist_quant_*`` function lacks histograms, or an option is invalid.
    """
    if not isinstance(statistics, EdgeStatistics):
        raise InputError(f"statistics must be an EdgeStatistics, got {type(statistics).__name__}")
    options = _agglomeration_options(thresholds, merge_function, discretize_queue, progress)
    overwrite_statistics = as_flag(overwrite_statistics, name="overwrite_statistics")
    ids = np.concatenate([np.zeros(1, np.uint64), statistics.node_ids])
    u = np.searchsorted(statistics.node_ids, statistics.u).astype(np.int64) + 1
    v = np.searchsorted(statistics.node_ids, statistics.v).astype(np.int64) + 1
    if statistics.num_edges and not (np.array_equal(ids[u], statistics.u) and np.array_equal(ids[v], statistics.v)
                                     and (u < v).all()):
        raise InputError("statistics: every edge must join two listed nodes, u < v")
    function = parse_merge_function(merge_function)
    contacts = statistics.contacts
    n_edges = statistics.num_edges
    if contacts is not None:
        def init(kind, init_with_max, bins, cnt, val, hist, hist_sum):
            K.init_statistics(kind, contacts.contact_ptr, contacts.contact_aff, init_with_max, bins, cnt, val,
                              hist, hist_sum)
    else:
        if function.kind == K.HIST and not function.init_with_max and statistics.histogram is None:
            raise InputError(f"merge function {merge_function!r} needs the histograms: compute the statistics "
                             "with histogram=True")
        if overwrite_statistics and _work_space(function, statistics):
            # the histograms and counts are the state itself (as _statistics_from_table's)
            return _agglomerate(ids, u, v, (np.zeros(0, np.int64), np.zeros(0, np.float32), statistics.histogram,
                                            statistics.count), return_region_graph=return_region_graph, **options)
        histogram = statistics.histogram if statistics.histogram is not None else np.zeros((0, HISTOGRAM_BINS),
                                                                                           np.uint32)

        def init(kind, init_with_max, bins, cnt, val, hist, hist_sum):
            K.init_from_statistics(kind, init_with_max, bins, statistics.count, statistics.sum, statistics.max,
                                   statistics.min, histogram, cnt, val, hist, hist_sum)

    return _agglomerate(ids, u, v, _initial_statistics(function, n_edges, init),
                        return_region_graph=return_region_graph, **options)


def _work_space(function: MergeFunction, statistics: EdgeStatistics) -> bool:
    """Whether ``statistics``' histograms and counts can be ``function``'s state as they are."""
    if function.kind != K.HIST or function.init_with_max:
        return False
    histogram, count = statistics.histogram, statistics.count
    return (isinstance(histogram, np.ndarray) and histogram.dtype == np.uint32
            and histogram.shape == (statistics.num_edges, HISTOGRAM_BINS) and histogram.flags.c_contiguous
            and histogram.flags.writeable and isinstance(count, np.ndarray) and count.dtype == np.int64
            and count.shape == (statistics.num_edges,) and count.flags.c_contiguous and count.flags.writeable)


def _looks_like_thresholds(value) -> bool:
    try:
        return np.ndim(value) == 1 and all(isinstance(v, (int, float, np.number)) for v in value)
    except (TypeError, ValueError):  # ragged nesting: not thresholds either
        return False


def _agglomeration_options(thresholds, merge_function, discretize_queue, progress) -> dict:
    function = parse_merge_function(merge_function)
    if isinstance(discretize_queue, bool) or not isinstance(discretize_queue, (int, np.integer)) \
            or not 0 <= int(discretize_queue) <= 2**16:
        raise InputError(f"discretize_queue must be 0 or a number of buckets up to 65536, got {discretize_queue!r}")
    if thresholds is None:
        raise InputError("thresholds are missing: pass thresholds=[...]")
    if progress is not None and not callable(progress):
        raise InputError(f"progress must be a callable progress(done, total) or None, got {progress!r}")
    return {"thresholds": as_thresholds(thresholds).astype(np.float32), "function": function,
            "discretize_queue": int(discretize_queue), "progress": progress}


def _agglomerate(ids, u, v, statistics, *, thresholds, function, discretize_queue, progress,
                 return_region_graph, scores=None) -> Agglomeration:
    state = _State(ids, u, v, statistics, function, discretize_queue, scores)
    initial = state.region_graph()
    n = ids.shape[0] - 1
    segment_ids = np.empty((len(thresholds), n), np.uint64)
    history_index = np.empty(n + 1, np.int32)
    graphs = [] if return_region_graph else None
    for i in range(len(thresholds)):
        before = int(state.hist_len[0])
        state.merge_until(thresholds[i])
        history_index[before:int(state.hist_len[0])] = i
        segment_ids[i] = ids[K.roots_of_all(state.parent)[1:]]
        if graphs is not None:
            graphs.append(state.region_graph())
        if progress is not None:
            progress(i + 1, len(thresholds))
    m = int(state.hist_len[0])
    history = np.empty(m, MERGE_HISTORY_DTYPE)
    history["a"] = ids[state.hist_a[:m]]
    history["b"] = ids[state.hist_b[:m]]
    history["c"] = history["a"]
    history["score"] = state.hist_score[:m]
    history["threshold_index"] = history_index[:m]
    return Agglomeration(thresholds=thresholds, fragment_ids=ids[1:].copy(), segment_ids=segment_ids,
                         merge_history=history, region_graph=initial, region_graphs=graphs, fragments=None)
