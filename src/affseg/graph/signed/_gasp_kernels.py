"""numba kernels of GASP (Bailoni et al.): greedy average-linkage-like agglomeration of signed graphs.

The graph is contracted edge by edge. Each live edge between two clusters carries the linkage
of the original edges between them: MEAN (size-weighted mean weight), SUM (sum of weight x
size), MAX, MIN, or ABS_MAX (the weight of largest magnitude, which makes GASP the Mutex
Watershed where no two weights tie in magnitude). A binary heap with lazy deletion (entries carry a version) orders the edges.

Without cannot-link constraints the heap is ordered by the signed linkage and merging stops at
the first edge that is not positive. With constraints it is ordered by ``|linkage|``: a positive
edge merges unless it is constrained, a non-positive one constrains its two clusters.
Constraints live on the (unique) live edge between two clusters and are inherited by merged
edges. Only mergeable (e.g. nearest-neighbour) edges may merge; the others can still constrain.

Ties of the priority go by a key per heap entry, smaller first: a sign bit (``SIGN_*``: one sign
first, for cannot-link ties of ``|linkage|``), then the edge's tie rank (a hash or the
agreement of its neighbourhood, or 0), then the edge index, which the low 32 bits hold.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..core.edges import edge_bounds
from ..core.hashtable import hash_fill, hash_get, hash_put, pair_key
from ..core.heap import heap_pop_call, heap_push_call
from ..core.unionfind import find
from ._mutex_kernels import agreement, agreement_key

MEAN, SUM, MAX, MIN, ABS_MAX = 0, 1, 2, 3, 4
SIGN_NONE, SIGN_REPULSIVE, SIGN_ATTRACTIVE = 0, 1, 2  # which sign goes first among ties
EDGE_BITS = 32  # the heap key's low bits: the edge index


@njit(cache=True, nogil=True)
def pair_sums(nodes, affs, offsets, biases, local_channel, n_nodes):
    """The node pairs that the edges of a ``(z, y, x)`` volume of node ids join (node ``k`` is
    stored as ``k + 1``, 0 is no node: :func:`affseg.graph.mala.rag.compact_fragments`), in
    the order first met (channel, then raster order), with per pair the ``pair_key``, the sum of
    the weights ``affs[c, u] - biases[c]`` (added in that order), the number of edges and
    whether a ``local_channel`` edge is among them. One hash lookup per edge: the pairs are few
    (fragments), so the table stays in cache.
    """
    nz, ny, nx = nodes.shape
    keys = np.zeros(1024, np.uint64)
    slots = np.zeros(1024, np.int64)
    pair = np.empty(512, np.uint64)
    total = np.zeros(512)
    count = np.zeros(512, np.int64)
    local = np.zeros(512, np.bool_)
    m = 0
    for c in range(offsets.shape[0]):
        oz, oy, ox = offsets[c, 0], offsets[c, 1], offsets[c, 2]
        z0, z1, y0, y1, x0, x1 = edge_bounds(nz, ny, nx, oz, oy, ox)
        for z in range(z0, z1):
            for y in range(y0, y1):
                for x in range(x0, x1):
                    a = nodes[z, y, x]
                    b = nodes[z + oz, y + oy, x + ox]
                    if a == b or a == 0 or b == 0:
                        continue
                    key = pair_key(np.int64(a) - 1, np.int64(b) - 1, n_nodes)
                    k = hash_get(keys, slots, key)
                    if k < 0:
                        if 2 * (m + 1) > pair.shape[0]:  # keep the table at most 1/4 full
                            keys, slots = np.zeros(4 * keys.shape[0], np.uint64), np.zeros(4 * keys.shape[0], np.int64)
                            for j in range(m):
                                hash_put(keys, slots, pair[j], j)
                            pair, total = _grown(pair, m), _grown(total, m)
                            count, local = _grown(count, m), _grown(local, m)
                        k = m
                        hash_put(keys, slots, key, k)
                        pair[k], total[k], count[k], local[k] = key, 0.0, 0, False
                        m += 1
                    total[k] += np.float64(affs[c, z, y, x]) - biases[c]
                    count[k] += 1
                    local[k] |= local_channel[c]
    return pair[:m], total[:m], count[:m], local[:m]


@njit(cache=True, nogil=True)
def agreement_ranks(affs, offsets, bias, channel_starts, voxels, edge_ids, flat_mask, use_mask):
    """The agreement tie rank of each grid edge: edges ``channel_starts[c]`` to
    ``channel_starts[c + 1] - 1`` are channel ``c`` at the flat voxel indices ``voxels`` of a
    ``(C, z, y, x)`` volume (see :func:`affseg.graph.signed._mutex_kernels.agreement`); the hash
    below the agreement is of ``edge_ids`` (:func:`~affseg.graph.signed._mutex_kernels.hash_key`)."""
    ranks = np.empty(voxels.shape[0], np.int64)
    for c in range(offsets.shape[0]):
        for e in range(channel_starts[c], channel_starts[c + 1]):
            agree = agreement(affs, offsets, bias, c, voxels[e], flat_mask, use_mask)
            ranks[e] = np.int64(agreement_key(agree, edge_ids[e]))
    return ranks


@njit(cache=True, nogil=True)
def _grown(arr, used):
    out = np.empty(4 * arr.shape[0], arr.dtype)
    out[:used] = arr[:used]
    return out


@njit(cache=True, nogil=True, inline="always")
def _tie_key(e, val, rank, sign_first):
    """The heap key of edge ``e`` with linkage ``val`` among equal priorities (smaller first)."""
    later = (sign_first == SIGN_REPULSIVE and val > 0) or (sign_first == SIGN_ATTRACTIVE and val <= 0)
    return (np.int64(later) << 62) | (rank[e] << EDGE_BITS) | e


@njit(cache=True, nogil=True)
def _heap_push(h_pri, h_key, h_ver, size, pri, key, ver):
    """Push into the heap, first on (priority, -key): a min-heap on (-priority, key) with the
    version as item; returns the (possibly grown) arrays."""
    if size >= h_pri.shape[0]:
        m = h_pri.shape[0] * 2
        p2, e2, v2 = np.empty(m), np.empty(m, np.int64), np.empty(m, np.int64)
        p2[:size], e2[:size], v2[:size] = h_pri[:size], h_key[:size], h_ver[:size]
        h_pri, h_key, h_ver = p2, e2, v2
    heap_push_call(h_pri, h_key, h_ver, size, -pri, key, ver)
    return h_pri, h_key, h_ver


@njit(cache=True, nogil=True, inline="always")
def _queued(val, local, constrained, cannot_link):
    """Whether an edge belongs in the heap, and its priority."""
    if constrained:
        return False, 0.0
    if cannot_link:
        if local or val <= 0:
            return True, abs(val)
        return False, 0.0
    return local, val


@njit(cache=True, nogil=True, inline="always")
def _merge_linkage(kind, g, f, val, acc, size):
    """Fold edge ``f`` into edge ``g``."""
    if kind == MEAN or kind == SUM:
        acc[g] += acc[f]
        size[g] += size[f]
        val[g] = acc[g] / size[g] if kind == MEAN else acc[g]
    elif kind == MAX:
        val[g] = max(val[g], val[f])
    elif kind == MIN:
        val[g] = min(val[g], val[f])
    elif abs(val[f]) > abs(val[g]):
        val[g] = val[f]


@njit(cache=True, nogil=True)
def gasp(n_nodes, eu, ev, weights, sizes, mergeable, kind, cannot_link, rank, sign_first):
    """Run GASP; returns the union-find parent array (roots = clusters) and the merges in
    order, as the (surviving, absorbed) roots of each. ``rank`` (int64 per edge, below 2**30)
    orders ties before the edge index, ``sign_first`` (``SIGN_*``) before the rank; at most
    2**32 edges."""
    n_edges = eu.shape[0]
    eu = eu.copy()
    ev = ev.copy()
    val = np.empty(n_edges)
    acc = np.empty(n_edges)
    size = sizes.copy()
    local = mergeable.copy()
    constrained = np.zeros(n_edges, dtype=np.bool_)
    dead = np.zeros(n_edges, dtype=np.bool_)
    version = np.zeros(n_edges, dtype=np.int64)
    parent = np.arange(n_nodes, dtype=np.int64)
    merged = np.empty((max(n_nodes - 1, 0), 2), dtype=np.int64)
    n_merged = 0
    capacity = 1024
    while capacity < 4 * n_edges:
        capacity *= 2
    hkeys = np.zeros(capacity, dtype=np.uint64)
    hvals = np.zeros(capacity, dtype=np.int64)
    n_keys = 0
    for e in range(n_edges):
        val[e] = weights[e] * sizes[e] if kind == SUM else weights[e]
        acc[e] = weights[e] * sizes[e]
        g = hash_get(hkeys, hvals, pair_key(eu[e], ev[e], n_nodes))
        if g >= 0:  # a parallel edge: fold it into the first one
            _merge_linkage(kind, g, e, val, acc, size)
            local[g] = local[g] or local[e]
            dead[e] = True
        else:
            hash_put(hkeys, hvals, pair_key(eu[e], ev[e], n_nodes), e)
            n_keys += 1
    # incidence lists (slot 2e in u's list, 2e + 1 in v's), live edges only
    slot_next = np.full(2 * n_edges, -1, dtype=np.int64)
    head = np.full(n_nodes, -1, dtype=np.int64)
    degree = np.zeros(n_nodes, dtype=np.int64)
    for e in range(n_edges):
        if dead[e]:
            continue
        for side in range(2):
            node = eu[e] if side == 0 else ev[e]
            slot_next[2 * e + side] = head[node]
            head[node] = 2 * e + side
            degree[node] += 1
    h_pri = np.empty(max(16, n_edges))
    h_key = np.empty(max(16, n_edges), dtype=np.int64)
    h_ver = np.empty(max(16, n_edges), dtype=np.int64)
    h_size = 0
    for e in range(n_edges):
        if not dead[e]:
            ok, pri = _queued(val[e], local[e], False, cannot_link)
            if ok:
                h_pri, h_key, h_ver = _heap_push(h_pri, h_key, h_ver, h_size, pri,
                                                  _tie_key(e, val[e], rank, sign_first), 0)
                h_size += 1
    edge_mask = (np.int64(1) << EDGE_BITS) - 1
    while h_size > 0:
        e, ver = h_key[0] & edge_mask, h_ver[0]
        heap_pop_call(h_pri, h_key, h_ver, h_size)
        h_size -= 1
        if dead[e] or ver != version[e] or constrained[e]:
            continue
        if not (val[e] > 0 and local[e]):
            if not cannot_link:
                break  # the best edge left does not attract: done
            constrained[e] = True
            continue
        # contract e: the endpoint with more edges survives
        a, b = eu[e], ev[e]
        keep, gone = (a, b) if degree[a] >= degree[b] else (b, a)
        parent[gone] = keep
        merged[n_merged, 0], merged[n_merged, 1] = keep, gone
        n_merged += 1
        dead[e] = True
        degree[keep] -= 1
        s = head[gone]
        while s >= 0:
            nxt = slot_next[s]
            f = s >> 1
            if not dead[f]:
                other = eu[f] if ev[f] == gone else ev[f]
                g = hash_get(hkeys, hvals, pair_key(keep, other, n_nodes))
                if g >= 0 and not dead[g] and g != f:
                    _merge_linkage(kind, g, f, val, acc, size)
                    local[g] = local[g] or local[f]
                    constrained[g] = constrained[g] or constrained[f]
                    dead[f] = True
                    degree[other] -= 1
                    version[g] += 1
                    ok, pri = _queued(val[g], local[g], constrained[g], cannot_link)
                    if ok:
                        h_pri, h_key, h_ver = _heap_push(h_pri, h_key, h_ver, h_size, pri,
                                                          _tie_key(g, val[g], rank, sign_first), version[g])
                        h_size += 1
                else:
                    if eu[f] == gone:
                        eu[f] = keep
                    else:
                        ev[f] = keep
                    if n_keys * 2 > hkeys.shape[0]:
                        n_keys = hash_fill(hkeys, hvals, eu, ev, dead, n_nodes)
                    if hash_put(hkeys, hvals, pair_key(keep, other, n_nodes), f):
                        n_keys += 1
                    slot_next[s] = head[keep]
                    head[keep] = s
                    degree[keep] += 1
            s = nxt
        head[gone] = -1
    for i in range(n_nodes):
        find(parent, i)
    return parent, merged[:n_merged]
