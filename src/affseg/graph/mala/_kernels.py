"""numba kernels of hierarchical agglomeration on a region graph (waterz's algorithm).

State lives in plain arrays so that merging can resume threshold after threshold. The scoring is
``1 - statistic`` in float32; the statistic is one of:

- MEAN: running mean of the contact affinities (float32, waterz's update order);
- HIST: quantile ``q`` of a 256-bin histogram of affinities (optionally initialised with the
  maximum only);
- MAX / MIN: the largest / smallest contact affinity.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..core.hashtable import hash_fill, hash_get, hash_put, pair_key  # noqa: F401 (hash_fill: K.hash_fill)
from ..core.heap import heap_pop_call, heap_push_call
from ..core.unionfind import find

MEAN, HIST, MAX, MIN = 0, 1, 2, 3

# queue state slots
Q_MIN_BIN, Q_FREE, Q_UNUSED, Q_HEAP_SIZE, Q_AGE = 0, 1, 2, 3, 4


@njit(cache=True, nogil=True, inline="always")
def discretize(value, levels):
    """waterz's ``discretize<int>``: float32 product, truncated, clamped to ``[0, levels - 1]``."""
    if not value > 0:
        return 0
    if value >= 1:
        return levels - 1
    return min(int(np.float32(value) * np.float32(levels)), levels - 1)


@njit(cache=True, nogil=True, inline="always")
def one_minus(x):
    return np.float32(1.0 - np.float64(x))


# ---------------------------------------------------------------- statistics


@njit(cache=True, nogil=True)
def init_statistics(kind, ptr, contact_aff, init_with_max, bins, cnt, val, hist, hist_sum):
    n_edges = ptr.shape[0] - 1
    for e in range(n_edges):
        lo, hi = ptr[e], ptr[e + 1]
        if kind == MEAN:
            mean = np.float32(0)
            n = 0
            for k in range(lo, hi):
                mean = (contact_aff[k] + mean * np.float32(n)) / np.float32(n + 1)
                n += 1
            val[e] = mean
            cnt[e] = n
        elif kind == MAX:
            m = np.float32(0)
            for k in range(lo, hi):
                m = max(m, contact_aff[k])
            val[e] = m
        elif kind == MIN:
            m = np.float32(3.4028234663852886e38)
            for k in range(lo, hi):
                m = min(m, contact_aff[k])
            val[e] = m
        else:
            lowest = bins
            for k in range(lo, hi):
                b = discretize(contact_aff[k], bins)
                if init_with_max and lowest != bins:
                    if b > lowest:
                        hist[e, lowest] = 0
                        hist_sum[e] = 0
                        lowest = bins
                    else:
                        continue
                hist[e, b] += 1
                hist_sum[e] += 1
                lowest = min(lowest, b)


@njit(cache=True, nogil=True)
def init_from_statistics(kind, init_with_max, bins, count, total, top, bottom, histogram, cnt, val, hist,
                         hist_sum):
    """The initial statistics of :func:`init_statistics`, from merged edge statistics."""
    for e in range(count.shape[0]):
        if kind == MEAN:
            val[e] = np.float32(total[e] / count[e])
            cnt[e] = count[e]
        elif kind == MAX:
            val[e] = max(top[e], np.float32(0))
        elif kind == MIN:
            val[e] = bottom[e]
        elif init_with_max:  # the histogram of init_statistics holds the largest contact only
            hist[e, discretize(top[e], bins)] = 1
            hist_sum[e] = 1
        else:
            for b in range(bins):
                hist[e, b] = histogram[e, b]
            hist_sum[e] = count[e]


@njit(cache=True, nogil=True)
def statistic(kind, e, quantile, bins, cnt, val, hist, hist_sum):
    if kind != HIST:
        return val[e]
    pivot = quantile * hist_sum[e] // 100 + 1
    total = 0
    b = 0
    while b < bins:
        total += hist[e, b]
        if total >= pivot:
            break
        b += 1
    return np.float32((np.float64(np.float32(b)) + 0.5) / bins)


@njit(cache=True, nogil=True)
def merge_statistics(kind, src, dst, cnt, val, hist, hist_sum):
    """Merge the statistic of edge ``src`` into ``dst``; True if that of ``dst`` changed."""
    if kind == MEAN:
        fn, tn = cnt[src], cnt[dst]
        val[dst] = (val[src] * np.float32(fn) + val[dst] * np.float32(tn)) / np.float32(fn + tn)
        cnt[dst] = fn + tn
        return True
    if kind == HIST:
        for b in range(hist.shape[1]):
            hist[dst, b] += hist[src, b]
        hist_sum[dst] += hist_sum[src]
        return True
    if kind == MAX:
        if val[dst] >= val[src]:
            return False
        val[dst] = val[src]
        return True
    if val[dst] <= val[src]:
        return False
    val[dst] = val[src]
    return True


# ---------------------------------------------------------------- queue


@njit(cache=True, nogil=True)
def queue_push(e, score, n_bins, qs, bin_head, bin_tail, q_edge, q_next, h_score, h_age):
    if n_bins > 0:
        i = discretize(score, n_bins)
        s = qs[Q_FREE]
        if s >= 0:
            qs[Q_FREE] = q_next[s]
        else:
            s = qs[Q_UNUSED]
            qs[Q_UNUSED] = s + 1
        q_edge[s] = e
        q_next[s] = -1
        if bin_tail[i] >= 0:
            q_next[bin_tail[i]] = s
        else:
            bin_head[i] = s
        bin_tail[i] = s
        if qs[Q_MIN_BIN] < 0 or i < qs[Q_MIN_BIN]:
            qs[Q_MIN_BIN] = i
        return
    # binary heap ordered by (score, age): ties leave in the order they came
    age = qs[Q_AGE]
    qs[Q_AGE] = age + 1
    heap_push_call(h_score, h_age, q_edge, qs[Q_HEAP_SIZE], score, age, e)
    qs[Q_HEAP_SIZE] += 1


@njit(cache=True, nogil=True)
def queue_top(n_bins, qs, bin_head, q_edge):
    """The next edge, or -1 if the queue is empty."""
    if n_bins > 0:
        b = qs[Q_MIN_BIN]
        return -1 if b < 0 else q_edge[bin_head[b]]
    return -1 if qs[Q_HEAP_SIZE] == 0 else q_edge[0]


@njit(cache=True, nogil=True)
def queue_pop(n_bins, qs, bin_head, bin_tail, q_edge, q_next, h_score, h_age):
    if n_bins > 0:
        b = qs[Q_MIN_BIN]
        s = bin_head[b]
        bin_head[b] = q_next[s]
        if bin_head[b] < 0:
            bin_tail[b] = -1
        q_next[s] = qs[Q_FREE]
        qs[Q_FREE] = s
        if bin_head[b] < 0:
            while b < n_bins and bin_head[b] < 0:
                b += 1
            qs[Q_MIN_BIN] = b if b < n_bins else -1
        return
    heap_pop_call(h_score, h_age, q_edge, qs[Q_HEAP_SIZE])
    qs[Q_HEAP_SIZE] -= 1


# ---------------------------------------------------------------- merging


@njit(cache=True, nogil=True)
def merge_until(
    threshold, kind, quantile, bins, n_bins, n_nodes,
    eu, ev, score, stale, deleted, parent, slot_next, head, tail,
    hkeys, hvals, hstate,
    cnt, val, hist, hist_sum,
    qs, bin_head, bin_tail, q_edge, q_next, h_score, h_age,
    hist_a, hist_b, hist_score, hist_len,
):
    """Merge edges cheaper than ``threshold``; returns 0 when done, 1 if the hash needs room.

    ``hstate[0]`` counts the keys in the node-pair table; the caller rebuilds the table from
    the live edges and calls again, which resumes where this stopped.
    """
    while True:
        e = queue_top(n_bins, qs, bin_head, q_edge)
        if e < 0:
            return 0
        s = score[e]
        if s >= threshold:
            return 0
        if hstate[0] * 4 > hkeys.shape[0]:
            return 1
        queue_pop(n_bins, qs, bin_head, bin_tail, q_edge, q_next, h_score, h_age)
        if deleted[e]:
            continue
        if stale[e]:
            new = one_minus(statistic(kind, e, quantile, bins, cnt, val, hist, hist_sum))
            score[e] = new
            queue_push(e, new, n_bins, qs, bin_head, bin_tail, q_edge, q_next, h_score, h_age)
            stale[e] = False
            continue
        a, b = eu[e], ev[e]
        k = hist_len[0]
        hist_a[k] = a
        hist_b[k] = b
        hist_score[k] = s
        hist_len[0] = k + 1
        _merge_regions(
            e, a, b, kind, n_nodes, eu, ev, score, stale, deleted, parent, slot_next, head, tail,
            hkeys, hvals, hstate, cnt, val, hist, hist_sum,
        )


@njit(cache=True, nogil=True)
def _merge_regions(
    e, a, b, kind, n_nodes, eu, ev, score, stale, deleted, parent, slot_next, head, tail,
    hkeys, hvals, hstate, cnt, val, hist, hist_sum,
):
    """Merge region ``b`` into ``a`` along edge ``e`` (``a < b``), moving b's edges to a.

    An edge b-n that a shares (a-n exists) is merged into the cheaper of the two, which turns
    stale if its statistic changed; the other is deleted. Exclusive edges move to a.
    """
    parent[b] = a
    deleted[e] = True
    keep_first = -1
    keep_last = -1
    s = head[b]
    while s >= 0:
        nxt = slot_next[s]
        ne = s >> 1
        keep = False
        if not deleted[ne]:
            n = eu[ne] if ev[ne] == b else ev[ne]
            ae = hash_get(hkeys, hvals, pair_key(a, n, n_nodes))
            if ae < 0 or deleted[ae]:
                keep = True
            elif score[ne] > score[ae]:
                changed = merge_statistics(kind, ne, ae, cnt, val, hist, hist_sum)
                deleted[ne] = True
                if changed:
                    stale[ae] = True
            else:
                changed = merge_statistics(kind, ae, ne, cnt, val, hist, hist_sum)
                deleted[ae] = True
                keep = True
                if changed:
                    stale[ne] = True
            if keep:
                eu[ne] = min(a, n)
                ev[ne] = max(a, n)
                if hash_put(hkeys, hvals, pair_key(a, n, n_nodes), ne):
                    hstate[0] += 1
        if keep:
            slot_next[s] = -1
            if keep_last >= 0:
                slot_next[keep_last] = s
            else:
                keep_first = s
            keep_last = s
        s = nxt
    head[b] = -1
    tail[b] = -1
    if keep_first >= 0:
        if tail[a] >= 0:
            slot_next[tail[a]] = keep_first
        else:
            head[a] = keep_first
        tail[a] = keep_last


@njit(cache=True, nogil=True)
def build_incidence(eu, ev, n_nodes):
    """Singly linked incidence lists: slot ``2e`` sits in u's list, ``2e + 1`` in v's."""
    n_edges = eu.shape[0]
    slot_next = np.full(2 * n_edges, -1, dtype=np.int64)
    head = np.full(n_nodes + 1, -1, dtype=np.int64)
    tail = np.full(n_nodes + 1, -1, dtype=np.int64)
    for e in range(n_edges):
        for side in range(2):
            s = 2 * e + side
            node = eu[e] if side == 0 else ev[e]
            if tail[node] >= 0:
                slot_next[tail[node]] = s
            else:
                head[node] = s
            tail[node] = s
    return slot_next, head, tail


@njit(cache=True, nogil=True)
def score_all(kind, quantile, bins, n_bins, score, cnt, val, hist, hist_sum,
              qs, bin_head, bin_tail, q_edge, q_next, h_score, h_age):
    for e in range(score.shape[0]):
        s = one_minus(statistic(kind, e, quantile, bins, cnt, val, hist, hist_sum))
        score[e] = s
        queue_push(e, s, n_bins, qs, bin_head, bin_tail, q_edge, q_next, h_score, h_age)


@njit(cache=True, nogil=True)
def roots_of_all(parent):
    out = np.empty(parent.shape[0], dtype=np.int64)
    for i in range(parent.shape[0]):
        out[i] = find(parent, i)
    return out


@njit(cache=True, nogil=True)
def live_region_graph(kind, quantile, bins, merged_until, eu, ev, score, stale, deleted,
                      cnt, val, hist, hist_sum):
    """Edges not merged or deleted, scored now, at or above ``merged_until`` (as waterz)."""
    n = 0
    out_e = np.empty(eu.shape[0], dtype=np.int64)
    out_s = np.empty(eu.shape[0], dtype=np.float32)
    for e in range(eu.shape[0]):
        if deleted[e]:
            continue
        s = score[e]
        if stale[e]:
            s = one_minus(statistic(kind, e, quantile, bins, cnt, val, hist, hist_sum))
        if s < merged_until:
            continue
        out_e[n] = e
        out_s[n] = s
        n += 1
    return out_e[:n], out_s[:n]
