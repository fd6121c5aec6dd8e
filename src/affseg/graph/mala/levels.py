"""The threshold at which two fragments first share a segment in an agglomeration.

An agglomeration with thresholds ``t_0 < t_1 < ...`` records for each merge the partition it
belongs to (``threshold_index``: merges done while merging up to ``t_i``). Two fragments are in
one segment of partition ``i`` exactly when every merge on the way that joined them has an index
``<= i``; :func:`join_levels` gives, per pair, the threshold of the first such partition. The
lsd-style hierarchical blockwise mode stores it per edge
(:func:`affseg.blockwise.pipeline.mala_to_zarr` with ``mode="hierarchical"``) and rebuilds each
partition as the connected components of the edges whose level is at most its threshold.

(Merge scores themselves do not give the partitions: an agglomeration stops at the first queue
entry scored ``>= t``, stale ones included, so a run to a higher threshold can do merges scored
below ``t`` that the run stopped at ``t`` never reached.)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numba import njit
from numpy.typing import ArrayLike

from ...errors import InputError

if TYPE_CHECKING:
    from .agglomeration import Agglomeration

__all__ = ["join_levels"]


@njit(cache=True)
def _root(parent: np.ndarray, x: int) -> int:
    while parent[x] != x:  # no path compression: the links keep their times (join_levels walks them)
        x = parent[x]
    return x


@njit(cache=True)
def _levels(n: int, a: np.ndarray, b: np.ndarray, key: np.ndarray, qu: np.ndarray, qv: np.ndarray) -> np.ndarray:
    """For each query pair, the largest ``key`` of the merges on the way that joined it (``key``
    does not decrease along the merges); inf where never joined."""
    parent = np.arange(n)
    rank = np.zeros(n, np.int32)
    link = np.full(n, np.inf, np.float32)  # the key of the merge that linked a node under its parent
    for k in range(a.shape[0]):
        level = key[k]
        ra, rb = _root(parent, a[k]), _root(parent, b[k])
        if ra == rb:
            continue
        if rank[ra] < rank[rb]:
            ra, rb = rb, ra
        parent[rb] = ra  # union by rank: depth O(log n) without path compression
        link[rb] = level
        if rank[ra] == rank[rb]:
            rank[ra] += 1
    out = np.full(qu.shape[0], np.inf, np.float32)
    for i in range(qu.shape[0]):
        x, y = qu[i], qv[i]
        if x < 0 or y < 0 or _root(parent, x) != _root(parent, y):
            continue
        joined = np.float32(-np.inf)
        while x != y:  # links get later towards the root: climb the earlier side until the paths meet
            if link[x] < link[y]:
                joined = max(joined, link[x])
                x = parent[x]
            else:
                joined = max(joined, link[y])
                y = parent[y]
        out[i] = joined
    return out


def join_levels(agglomeration: Agglomeration, u: ArrayLike, v: ArrayLike) -> np.ndarray:
    """The threshold of the first partition of ``agglomeration`` that holds ``u[i]`` and ``v[i]``
    in one segment.

    Parameters
    ----------
    agglomeration : Agglomeration
        From :func:`~affseg.agglomerate` or :func:`~affseg.graph.mala.agglomeration.agglomerate_graph`
        (its ``thresholds`` and ``merge_history``).
    u, v : (n,) array_like of uint64
        Fragment ids, one pair per query (e.g. the edges of a region graph).

    Returns
    -------
    levels : (n,) float32
        ``agglomeration.thresholds[i]`` for the first partition ``i`` that joins the pair, so that
        partition ``i`` holds it in one segment exactly when ``levels <= thresholds[i]``; ``inf``
        for a pair never joined (or a fragment the history never names); ``-inf`` for
        ``u[i] == v[i]``.

    Raises
    ------
    InputError
        If ``agglomeration`` has no ``thresholds`` and ``merge_history`` (with the fields ``a``,
        ``b`` and ``threshold_index``), or ``u`` and ``v`` are not 1D arrays of one length of
        non-negative integers (naming the first negative one).
    """
    history = getattr(agglomeration, "merge_history", None)
    thresholds = getattr(agglomeration, "thresholds", None)
    names = getattr(getattr(history, "dtype", None), "names", None) or ()
    if thresholds is None or not {"a", "b", "threshold_index"} <= set(names) or np.ndim(history) != 1:
        raise InputError(f"agglomeration must be an Agglomeration (thresholds and a merge_history with fields a, b "
                         f"and threshold_index), got {type(agglomeration).__name__}")
    u, v = np.asarray(u), np.asarray(v)
    if u.ndim != 1 or u.shape != v.shape or (u.size and (u.dtype.kind not in "iu" or v.dtype.kind not in "iu")):
        raise InputError(f"u and v must be 1D integer arrays of one length, got {u.dtype} {u.shape} and "
                         f"{v.dtype} {v.shape}")
    for name, ids in (("u", u), ("v", v)):
        if ids.dtype.kind == "i" and ids.size and ids.min() < 0:
            first = int(np.flatnonzero(ids < 0)[0])
            raise InputError(f"{name} must hold non-negative fragment ids, got {int(ids[first])} at index {first}")
    u, v = u.astype(np.uint64, copy=False), v.astype(np.uint64, copy=False)
    a = np.asarray(history["a"], np.uint64)
    b = np.asarray(history["b"], np.uint64)
    ids = np.unique(np.concatenate([a, b]))
    index = _levels(ids.shape[0], np.searchsorted(ids, a), np.searchsorted(ids, b),
                    np.asarray(history["threshold_index"], np.float32), _index(ids, u), _index(ids, v))
    levels = np.full(index.shape, np.inf, np.float32)
    joined = np.isfinite(index)
    levels[joined] = np.asarray(thresholds, np.float32)[index[joined].astype(np.intp)]
    levels[u == v] = -np.inf
    return levels


def _index(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Positions of ``values`` in the sorted ``ids``; -1 where absent."""
    at = np.searchsorted(ids, values)
    found = at < ids.shape[0]
    found[found] = ids[at[found]] == values[found]
    return np.where(found, at, -1)
