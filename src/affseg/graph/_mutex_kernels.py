"""numba kernels of the Mutex Watershed (Wolf et al. 2018/2020) on grids and explicit graphs.

Edges are processed once, strongest ``|weight|`` first: an attractive edge (weight > 0) joins
its two clusters unless a mutex (a repulsive edge processed earlier) or two different seeds
separate them; a repulsive edge (weight <= 0) adds a mutex between its clusters.

Ordering is a bucket sort on ``|weight|`` (linear in the number of edges) with an exact, stable
sort inside each bucket, so ties keep the edge order (channel, then raster order).

Mutexes are kept per cluster as linked lists of partner nodes plus a set of cluster pairs
(open addressing). When two clusters join, the cluster with more mutexes stays the root and the
other's list is moved over (small into large), so each mutex moves O(log n) times.

State, passed around as plain arrays: ``parent`` (union-find), ``head``/``count`` (mutex list
per root), ``ent_node``/``ent_next`` (list entries, allocated at their bound: two per repulsive
edge), ``keys`` (set of root pairs), ``seed`` (seed id per root, 0 = none), ``state[0]`` entries
used, ``state[1]`` pairs in the set. The pair set may grow, so every call that may grow it
returns it.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._agglomeration_kernels import pair_key
from ._unionfind import find


@njit(cache=True, nogil=True, inline="always")
def _mix(x):
    """splitmix64 finaliser: a uniform pseudo-random uint64 from any uint64."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True, nogil=True, inline="always")
def _probe(keys, key):
    """The slot holding ``key``, or the empty slot where it would go (linear probing)."""
    mask = np.int64(keys.shape[0] - 1)
    i = np.int64(_mix(key) & np.uint64(mask))
    while keys[i] != 0 and keys[i] != key:
        i = (i + 1) & mask
    return i


@njit(cache=True, nogil=True)
def set_add(keys, key):
    """Add ``key`` (non-zero) to the set; True if it was new."""
    i = _probe(keys, key)
    if keys[i] == key:
        return False
    keys[i] = key
    return True


@njit(cache=True, nogil=True)
def set_contains(keys, key):
    return keys[_probe(keys, key)] == key


@njit(cache=True, nogil=True, inline="always")
def _kept(c, i, delta, n, keep_prob, threshold, rng_seed, flat_mask, use_mask):
    """Whether the edge ``(i, i + delta)`` of channel ``c`` survives the mask and sub-sampling."""
    if use_mask and not (flat_mask[i] and flat_mask[i + delta]):
        return False
    if keep_prob < 1.0:
        return _mix(np.uint64(c * n + i) ^ rng_seed) < threshold
    return True


@njit(cache=True, nogil=True, inline="always")
def _rank(key):
    """32-bit rank, ascending = processing order: the float32 bits of ``|w|``, inverted."""
    return np.uint64(0xFFFFFFFF) - np.uint64(np.float32(key).view(np.uint32))


@njit(cache=True, nogil=True)
def grid_edges(affs, offsets, bias, strides, keep_prob, rng_seed, mask, use_mask):
    """The kept grid edges as packed uint64 in processing order, and how many repel.

    An entry is ``rank << 32 | repulsive << 31 | c * n + i`` (see :func:`_rank`); entries are
    scattered into linear buckets of ``|w|`` (one pass to count, one to scatter) and each
    bucket is then sorted, so the array ends sorted by (rank, repulsive, channel, voxel).
    Needs ``C * n < 2**31``.
    """
    nc, nz, ny, nx = affs.shape
    n = nz * ny * nx
    flat = affs.reshape(-1)
    flat_mask = mask.reshape(-1)
    seed = np.uint64(rng_seed)
    top = 0.0
    for c in range(nc):
        base = c * n
        for i in range(n):
            top = max(top, abs(np.float64(flat[base + i]) - bias[c]))
    n_buckets = 1024
    while n_buckets < 65536 and n_buckets * 64 < flat.shape[0]:
        n_buckets *= 2
    scale = (n_buckets - 1) / top if top > 0 else 0.0
    starts = np.zeros(n_buckets + 1, dtype=np.int64)
    packed = np.empty(0, dtype=np.uint64)
    n_repulsive = 0
    for phase in range(2):
        for c in range(nc):
            oz, oy, ox = offsets[c, 0], offsets[c, 1], offsets[c, 2]
            sz, sy, sx = strides[c, 0], strides[c, 1], strides[c, 2]
            delta = (oz * ny + oy) * nx + ox
            threshold = np.uint64(min(keep_prob[c], 1.0) * 18446744073709549568.0)
            b_c = bias[c]
            base = c * n
            for z in range(max(0, -oz), min(nz, nz - oz), sz):
                for y in range(max(0, -oy), min(ny, ny - oy), sy):
                    for x in range(max(0, -ox), min(nx, nx - ox), sx):
                        i = (z * ny + y) * nx + x
                        if not _kept(c, i, delta, n, keep_prob[c], threshold, seed, flat_mask, use_mask):
                            continue
                        w = np.float64(flat[base + i]) - b_c
                        b = int(abs(w) * scale) ^ (n_buckets - 1)  # strongest first
                        if phase == 0:
                            starts[b + 1] += 1
                            n_repulsive += not w > 0
                            continue
                        entry = (_rank(abs(w)) << np.uint64(32)) | np.uint64(base + i)
                        if not w > 0:
                            entry |= np.uint64(1) << np.uint64(31)
                        packed[starts[b]] = entry
                        starts[b] += 1
        if phase == 0:
            for b in range(n_buckets):
                starts[b + 1] += starts[b]
            packed = np.empty(starts[n_buckets], dtype=np.uint64)
    for b in range(n_buckets):
        lo = 0 if b == 0 else starts[b - 1]
        if starts[b] - lo > 1:
            _sort_bucket(packed[lo:starts[b]])
    return packed, n_repulsive


@njit(cache=True, nogil=True)
def _sort_bucket(entries):
    """Sort in place; a bucket of one rank (exact ties) only needs attractive before repulsive,
    which a stable partition does in linear time."""
    rank = entries[0] >> np.uint64(32)
    for k in range(1, entries.shape[0]):
        if entries[k] >> np.uint64(32) != rank:
            entries.sort()
            return
    repulsive = entries[(entries >> np.uint64(31)) & np.uint64(1) == 1]
    k = 0
    for j in range(entries.shape[0]):
        if (entries[j] >> np.uint64(31)) & np.uint64(1) == 0:
            entries[k] = entries[j]
            k += 1
    entries[k:] = repulsive


@njit(cache=True, nogil=True)
def _grow(keys):
    """The set of node pairs at twice the capacity."""
    new_keys = np.zeros(keys.shape[0] * 2, dtype=np.uint64)
    for k in range(keys.shape[0]):
        if keys[k] != 0:
            set_add(new_keys, keys[k])
    return new_keys


def new_state(n_nodes: int, use_seeds: bool, n_repulsive: int):
    """Fresh state arrays (see the module docstring), 32-bit ids where they fit.

    The pair set starts at room for ``n_repulsive`` pairs at half load (it grows if merges
    add more), the entry lists at their bound, ``2 * n_repulsive`` (joins only move entries);
    both are allocated here so that numpy can back them with huge pages.
    """
    node = np.int32 if n_nodes < 2**31 else np.int64
    entry = np.int32 if 2 * n_repulsive < 2**31 else np.int64
    parent = np.arange(n_nodes, dtype=node)
    head = np.full(n_nodes, -1, dtype=entry)
    count = np.zeros(n_nodes, dtype=node)
    seed = np.zeros(n_nodes if use_seeds else 1, dtype=np.uint64)
    capacity = 1 << max(16, int(2 * n_repulsive).bit_length())
    keys = np.zeros(capacity, dtype=np.uint64)
    ent_node = np.empty(max(16, 2 * n_repulsive), dtype=node)
    ent_next = np.empty(max(16, 2 * n_repulsive), dtype=entry)
    return parent, head, count, seed, keys, ent_node, ent_next, np.zeros(2, dtype=np.int64)


@njit(cache=True, nogil=True)
def process_sorted(us, vs, attractive, n_nodes, parent, head, count, seed, use_seeds,
                   keys, ent_node, ent_next, state):
    """Run the Mutex Watershed over edges given in processing order (explicit graphs)."""
    for k in range(us.shape[0]):
        keys = _process_edge(
            us[k], vs[k], attractive[k], n_nodes, parent, head, count, seed, use_seeds,
            keys, ent_node, ent_next, state)
    return keys


@njit(cache=True, nogil=True)
def process_grid(affs, offsets, bias, packed, parent, head, count, seed, use_seeds,
                 keys, ent_node, ent_next, state):
    """Run the Mutex Watershed over packed grid edges (see :func:`grid_edges`).

    Entries of equal 32-bit rank whose exact float64 ``|w|`` differ are put in exact order
    first (float32 rounding can tie weights that float64 tells apart).
    """
    nc, nz, ny, nx = affs.shape
    n = nz * ny * nx
    flat = affs.reshape(-1)
    deltas = np.empty(nc, dtype=np.int64)
    for c in range(nc):
        deltas[c] = (offsets[c, 0] * ny + offsets[c, 1]) * nx + offsets[c, 2]
    id_mask = np.uint64(0x7FFFFFFF)
    m = packed.shape[0]
    k = 0
    while k < m:
        rank = packed[k] >> np.uint64(32)
        end = k + 1
        while end < m and (packed[end] >> np.uint64(32)) == rank:
            end += 1
        if end - k > 1:
            _exact_order(packed[k:end], flat, bias, n, id_mask)
        for j in range(k, end):
            e = np.int64(packed[j] & id_mask)
            c = e // n
            i = e - c * n
            attractive = (packed[j] >> np.uint64(31)) & np.uint64(1) == 0
            keys = _process_edge(
                i, i + deltas[c], attractive, n, parent, head, count, seed, use_seeds,
                keys, ent_node, ent_next, state)
        k = end
    return keys


@njit(cache=True, nogil=True)
def _exact_order(run, flat, bias, n, id_mask):
    """Stable re-sort of a run of equal float32 rank by the exact float64 ``|w|``, descending."""
    m = run.shape[0]
    exact = np.empty(m, dtype=np.float64)
    tied = True
    for j in range(m):
        e = np.int64(run[j] & id_mask)
        exact[j] = -abs(np.float64(flat[e]) - bias[e // n])
        tied = tied and exact[j] == exact[0]
    if tied:
        return
    order = np.argsort(exact, kind="mergesort")
    copy = run.copy()
    for j in range(m):
        run[j] = copy[order[j]]


@njit(cache=True, nogil=True, inline="always")
def _process_edge(u, v, attractive, n_nodes, parent, head, count, seed, use_seeds,
                  keys, ent_node, ent_next, state):
    ru = find(parent, u)
    rv = find(parent, v)
    if ru == rv:
        return keys
    if count[ru] > 0 and count[rv] > 0 and set_contains(keys, pair_key(ru, rv, n_nodes)):
        return keys
    if attractive:
        if use_seeds and seed[ru] != 0 and seed[rv] != 0 and seed[ru] != seed[rv]:
            return keys
        return _join(ru, rv, n_nodes, parent, head, count, seed, use_seeds,
                     keys, ent_node, ent_next, state)
    # repulsive: a new mutex between the two clusters
    if (state[1] + 1) * 2 > keys.shape[0]:
        keys = _grow(keys)
    if set_add(keys, pair_key(ru, rv, n_nodes)):
        state[1] += 1
    for side in range(2):
        a, b = (ru, rv) if side == 0 else (rv, ru)
        s = state[0]
        state[0] = s + 1
        ent_node[s] = b
        ent_next[s] = head[a]
        head[a] = s
        count[a] += 1
    return keys


@njit(cache=True, nogil=True, inline="always")
def _join(ru, rv, n_nodes, parent, head, count, seed, use_seeds, keys, ent_node, ent_next, state):
    """Join two roots: the one with more mutexes stays root and takes the other's mutexes."""
    big, small = (ru, rv) if count[ru] >= count[rv] else (rv, ru)
    parent[small] = big
    if use_seeds and seed[big] == 0:
        seed[big] = seed[small]
    s = head[small]
    while s >= 0:
        nxt = ent_next[s]
        q = find(parent, ent_node[s])
        if (state[1] + 1) * 2 > keys.shape[0]:
            keys = _grow(keys)
        if set_add(keys, pair_key(big, q, n_nodes)):
            state[1] += 1
            ent_node[s] = q
            ent_next[s] = head[big]
            head[big] = s
            count[big] += 1
        s = nxt
    head[small] = -1
    count[small] = 0
    return keys


@njit(cache=True, nogil=True)
def premerge_seeds(seed_nodes, seed_ids, parent, seed):
    """Join all nodes of each seed id (given sorted by id) and record the id on the root."""
    for k in range(seed_nodes.shape[0]):
        i = seed_nodes[k]
        if k > 0 and seed_ids[k] == seed_ids[k - 1]:
            r = find(parent, seed_nodes[k - 1])
            parent[find(parent, i)] = r
        else:
            seed[find(parent, i)] = seed_ids[k]


@njit(cache=True, nogil=True)
def labels_from_roots(parent, seed, use_seeds, mask, use_mask, start):
    """uint64 labels: a seeded cluster gets its seed id, the others ``start, start + 1, ...``
    in raster order of their first node; masked nodes get 0."""
    n = parent.shape[0]
    out = np.zeros(n, dtype=np.uint64)
    flat_mask = mask.reshape(-1)
    next_label = np.uint64(start)
    for i in range(n):
        if use_mask and not flat_mask[i]:
            continue
        r = find(parent, i)
        if use_seeds and seed[r] != 0:
            out[i] = seed[r]
            continue
        if out[r] == 0:  # the root is reached first here or at itself (raster order)
            out[r] = next_label
            next_label += np.uint64(1)
        out[i] = out[r]
    return out
