"""MALIS pair counts (Turaga et al. 2009) and constrained MALIS (Funke et al. 2018).

Kruskal's algorithm over the edges in decreasing affinity builds the maximum spanning tree; the
edge that joins two trees is the maximin edge of every voxel pair across them, so it receives
the number of those pairs that carry the same ground-truth label (``same``) and different labels
(``diff``). A tree that holds one label keeps it and its count at its root; one that holds
several keeps a list of (label, count) entries, and the shorter list is merged into the longer
one (counts found by scanning short lists and through a hash table for long ones), so the whole
pass costs O(E log E + n log n) instead of the O(n^2) of counting pairs directly.

Each pass is one sequence of edge ids in processing order, built by one walk over the edges:
only the edges with 0 < affinity < 1 are sorted (a radix sort, shared by the two passes of
constrained MALIS); edges at 0 or 1, or forced there by a constrained pass, keep their index
order. An edge inside an object (most edges of a volume) that joins two trees of that object's
voxels alone needs only the union-find's 4-byte parents, which hold the trees' sizes.

Ties are broken by edge index: channel-major, then raster order of ``u`` (documented in
``docs/conventions.md``). Ground-truth label 0 forms no pairs.
"""
from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import ArrayLike

from ..._checks import as_affinities, as_array, as_flag, as_labels, as_mask
from ...conventions import affinities_from_labels
from ...errors import InputError
from ..core.edges import edge_bounds, edge_ends, flat_steps
from ..core.hashtable import hash_get, hash_put
from ..core.prefetch import prefetch

__all__ = ["constrained_malis_weights", "malis_pair_counts", "malis_weights"]

_SHORT = 8  # lists up to this length are scanned; longer ones are hashed
_AHEAD = 16  # edges ahead whose voxels' parents are prefetched
_LOW = np.int64(0xFFFFFFFF)  # an entry packs its label (low 32 bits) and count (high 32 bits)
_HIGH = ~_LOW
_VALUE_BITS = 30  # float32 in [0, 1] as bits: at most 0x3F800000 < 2**30
_ONE_BITS = 0x3F800000
_DIGIT = 10  # three radix passes of 10 bits cover the 30 bits of a value key
_UNKNOWN, _WITHIN, _BETWEEN = 0, 1, 2  # edge classes, in the top 2 bits of a sort key
_KEEP = np.int64(1) << 62  # in a pass's sequence: the pass keeps this edge's count
_INSIDE = np.int64(1) << 61  # the edge joins two voxels of the same non-zero label
_ID = _INSIDE - 1
_INSIDE_BIT, _KEEP_BIT = 1 << _VALUE_BITS, 1 << (_VALUE_BITS + 1)  # the same, in a sort key


# ---------------------------------------------------------------- kernels


@njit(cache=True, nogil=True)
def _edge_count(shape, offsets):
    """Number of edges inside a ``(z, y, x)`` volume (voxels whose partner lies inside)."""
    nz, ny, nx = shape
    total = 0
    for c in range(offsets.shape[0]):
        z0, z1, y0, y1, x0, x1 = edge_bounds(nz, ny, nx, offsets[c, 0], offsets[c, 1], offsets[c, 2])
        total += max(0, z1 - z0) * max(0, y1 - y0) * max(0, x1 - x0)
    return total


@njit(cache=True, nogil=True, inline="always")
def _key(list_id, label, n_labels):
    return np.uint64(list_id) * np.uint64(n_labels + 1) + np.uint64(label) + np.uint64(1)


@njit(cache=True, nogil=True)
def _pass_sequences(affs, labels, shape, offsets, deltas, known, has_known, ids):
    """The edge sequences of the positive and the negative pass of constrained MALIS.

    ``affs`` (float32) and ``known`` (bool, read if ``has_known``) are raveled ``(C, z, y, x)``
    arrays; ``labels`` (int64) the raveled ``(z, y, x)`` ground truth. The positive pass keeps the
    count of an edge inside an object (``W``: both voxels of one non-zero label, and known), the
    negative pass that of an edge between objects (``B``: known, not ``W``); neither keeps an
    unknown edge's (``U``).

    Positive: ``W``/``U`` at 1 (index order), ``W``/``U`` in (0, 1) by affinity (descending, ties
    in index order), then ``B`` and everything at 0 (index order). Negative: ``W`` and everything
    at 1 (index order), ``B``/``U`` in (0, 1) by affinity, then ``B``/``U`` at 0 (index order).

    ``ids`` (uint32 if the ids fit, else int64; one per edge, its contents unused) carries the
    ids through the sort. Returns ``pos, neg`` (int64, one entry per edge): edge id
    ``c * n + u``, with ``_KEEP`` set where the pass keeps the edge's count and ``_INSIDE`` on ``W``
    edges.
    """
    nz, ny, nx = shape
    n = nz * ny * nx
    n_edges = _edge_count(shape, offsets)
    pos = np.empty(n_edges, np.int64)
    neg = np.empty(n_edges, np.int64)
    keys = np.empty(n_edges, np.uint32)
    counts = np.zeros((5, (1 << _DIGIT) + 1), np.int64)  # see _sort_into
    digit_mask = np.uint32((1 << _DIGIT) - 1)
    top = np.uint32(2 * _DIGIT)
    bits = affs.view(np.uint32)
    n_pos = 0  # W/U at 1, from the front
    n_pos_tail = 0  # B and everything at 0, from the back (reversed below)
    n_neg = 0  # W and everything at 1, from the front
    n_neg_tail = 0  # B/U at 0, from the back
    n_sort = 0
    for c in range(offsets.shape[0]):
        z0, z1, y0, y1, x0, x1 = edge_bounds(nz, ny, nx, offsets[c, 0], offsets[c, 1], offsets[c, 2])
        step = deltas[c]
        for z in range(z0, z1):
            for y in range(y0, y1):
                row = (z * ny + y) * nx
                for x in range(x0, x1):
                    u = row + x
                    e = c * n + u
                    lu = labels[u]
                    cls = _WITHIN if lu != 0 and lu == labels[u + step] else _BETWEEN
                    if has_known and not known[e]:
                        cls = _UNKNOWN
                    b = bits[e] & np.uint32(0x7FFFFFFF)  # -0.0 is 0
                    # the edge as the positive and the negative pass see it
                    p = e | (_KEEP | _INSIDE) if cls == _WITHIN else e
                    q = e | (_KEEP if cls == _BETWEEN else (_INSIDE if cls == _WITHIN else 0))
                    if b == _ONE_BITS:
                        if cls == _BETWEEN:
                            n_pos_tail += 1
                            pos[n_edges - n_pos_tail] = p
                        else:
                            pos[n_pos] = p
                            n_pos += 1
                        neg[n_neg] = q
                        n_neg += 1
                    elif b == 0:
                        n_pos_tail += 1
                        pos[n_edges - n_pos_tail] = p
                        if cls == _WITHIN:
                            neg[n_neg] = q
                            n_neg += 1
                        else:
                            n_neg_tail += 1
                            neg[n_edges - n_neg_tail] = q
                    else:
                        key = np.uint32(_ONE_BITS) - b  # descending affinity
                        keys[n_sort] = key | (np.uint32(cls) << np.uint32(_VALUE_BITS))
                        ids[n_sort] = e
                        n_sort += 1
                        counts[0, (key & digit_mask) + 1] += 1
                        counts[1, ((key >> np.uint32(_DIGIT)) & digit_mask) + 1] += 1
                        if cls != _BETWEEN:  # sorted into the positive pass
                            counts[3, (key >> top) + 1] += 1
                        else:
                            n_pos_tail += 1
                            pos[n_edges - n_pos_tail] = p
                        if cls != _WITHIN:  # sorted into the negative pass
                            counts[4, (key >> top) + 1] += 1
                        else:
                            neg[n_neg] = q
                            n_neg += 1
    # the tails were filled from the back: restore their index order
    pos[n_edges - n_pos_tail:] = pos[n_edges - n_pos_tail:][::-1].copy()
    neg[n_edges - n_neg_tail:] = neg[n_edges - n_neg_tail:][::-1].copy()
    _sort_into(keys[:n_sort], ids[:n_sort], counts, pos, n_pos, neg, n_neg, True)
    return pos, neg


@njit(cache=True, nogil=True)
def _malis_sequence(affs, labels, shape, offsets, deltas, known, has_known, ids):
    """The edges in decreasing affinity, ties in index order (see :func:`_pass_sequences` for
    the arguments): ``_KEEP`` on the known ones, ``_INSIDE`` on those that join two voxels of the
    same non-zero label."""
    nz, ny, nx = shape
    n = nz * ny * nx
    n_edges = _edge_count(shape, offsets)
    keys = np.empty(n_edges, np.uint32)
    counts = np.zeros((5, (1 << _DIGIT) + 1), np.int64)  # see _sort_into
    digit_mask = np.uint32((1 << _DIGIT) - 1)
    bits = affs.view(np.uint32)
    k = 0
    for c in range(offsets.shape[0]):
        z0, z1, y0, y1, x0, x1 = edge_bounds(nz, ny, nx, offsets[c, 0], offsets[c, 1], offsets[c, 2])
        step = deltas[c]
        for z in range(z0, z1):
            for y in range(y0, y1):
                row = (z * ny + y) * nx
                for x in range(x0, x1):
                    u = row + x
                    e = c * n + u
                    lu = labels[u]
                    key = np.uint32(_ONE_BITS) - (bits[e] & np.uint32(0x7FFFFFFF))  # descending
                    counts[0, (key & digit_mask) + 1] += 1
                    counts[1, ((key >> np.uint32(_DIGIT)) & digit_mask) + 1] += 1
                    counts[3, (key >> np.uint32(2 * _DIGIT)) + 1] += 1
                    if lu != 0 and lu == labels[u + step]:
                        key |= np.uint32(_INSIDE_BIT)
                    if not has_known or known[e]:
                        key |= np.uint32(_KEEP_BIT)
                    keys[k] = key
                    ids[k] = e
                    k += 1
    sequence = np.empty(n_edges, np.int64)
    _sort_into(keys, ids, counts, sequence, 0, sequence, 0, False)
    return sequence


@njit(cache=True, nogil=True)
def _sort_into(keys, ids, counts, pos, n_pos, neg, n_neg, split):
    """Stable LSD radix sort of the edge ids ``ids`` by the low 30 bits of ``keys`` (ascending),
    its last pass writing them into the pass sequences from ``pos[n_pos]`` and ``neg[n_neg]``.

    ``counts[d, digit + 1]`` are the histograms of digits 0 and 1 (``d`` 0 and 1; a pass whose
    digit is the same for all is skipped), ``counts[3]`` and ``counts[4]`` those of the last
    digit over the edges that go to ``pos`` and to ``neg`` (row 2 is unused). The top 2 bits of a key: with ``split``, the edge's class (``W``
    to ``pos`` with ``_KEEP | _INSIDE``, ``B`` to ``neg`` with ``_KEEP``, ``U`` to both, untagged,
    see :func:`_pass_sequences`); else its ``_KEEP`` and ``_INSIDE`` bits, every edge to ``pos``.
    """
    m = keys.shape[0]
    digit_mask = np.uint32((1 << _DIGIT) - 1)
    tmp_keys = np.empty_like(keys)
    tmp_ids = np.empty_like(ids)
    for d in range(2):
        count = counts[d]
        if count.max() == m:
            continue
        for b in range(count.shape[0] - 1):
            count[b + 1] += count[b]
        shift = np.uint32(d * _DIGIT)
        for i in range(m):
            b = (keys[i] >> shift) & digit_mask
            j = count[b]
            tmp_keys[j] = keys[i]
            tmp_ids[j] = ids[i]
            count[b] = j + 1
        keys, tmp_keys = tmp_keys, keys
        ids, tmp_ids = tmp_ids, ids
    to_pos = counts[3]
    to_neg = counts[4]
    to_pos[0] = n_pos
    to_neg[0] = n_neg
    for b in range(to_pos.shape[0] - 1):
        to_pos[b + 1] += to_pos[b]
        to_neg[b + 1] += to_neg[b]
    shift = np.uint32(2 * _DIGIT)
    for i in range(m):
        key = keys[i]
        b = (key >> shift) & digit_mask
        e = np.int64(ids[i])
        tag = key >> np.uint32(_VALUE_BITS)
        if not split:
            j = to_pos[b]
            pos[j] = e | (np.int64(tag) << 61)  # bit 30 -> _INSIDE, bit 31 -> _KEEP
            to_pos[b] = j + 1
            continue
        if tag != _BETWEEN:
            j = to_pos[b]
            pos[j] = e | (_KEEP | _INSIDE) if tag == _WITHIN else e
            to_pos[b] = j + 1
        if tag != _WITHIN:
            j = to_neg[b]
            neg[j] = e | _KEEP if tag == _BETWEEN else e
            to_neg[b] = j + 1


@njit(cache=True, nogil=True, inline="always")
def _root(parent, i):
    """Root of ``i`` in a forest whose roots hold minus their tree's size; halves the path."""
    p = parent[i]
    while p >= 0:
        g = parent[p]
        if g < 0:
            return p
        parent[i] = g
        i = g
        p = parent[i]
    return i


@njit(cache=True, nogil=True, inline="always")
def _scan(ent, head, label):
    e = head
    while e >= 0:
        if (ent[e, 0] & _LOW) == label:
            return e
        e = ent[e, 1]
    return -1


@njit(cache=True, nogil=True)
def _list_entry(ent, lst, list_id, label, keys, vals, n_labels):
    """The entry of ``label`` in list ``list_id``, or -1: scanned if the list is short, else hashed."""
    if lst[list_id, 1] <= _SHORT:
        return _scan(ent, lst[list_id, 0], label)
    return hash_get(keys, vals, _key(list_id, label, n_labels))


@njit(cache=True, nogil=True, inline="always")
def _join(ma, mb, ra, rb, ent, lst, made, n_made, keys, vals, n_labels):
    """Join trees ``ra`` and ``rb`` (roots) whose labels ``ma``, ``mb`` (``count << 32 | label``
    or ``~list``, see :func:`_kruskal_counts`) are two different non-zero labels or include a
    list. Returns the same-label and the different-label pairs joined, the joined tree's labels,
    the number of lists made so far and the number of hash keys added."""
    added = 0
    if ma >= 0 and mb >= 0:  # two single labels, both non-zero and different: a new list
        ent[ra, 0] = ma
        ent[ra, 1] = rb
        ent[rb, 0] = mb
        ent[rb, 1] = -1
        lst[ra, 0] = ra
        lst[ra, 1] = 2
        lst[ra, 2] = (ma >> 32) + (mb >> 32)
        made[n_made] = ra
        return 0, (ma >> 32) * (mb >> 32), ~ra, n_made + 1, 0
    if ma >= 0 or mb >= 0:  # a single label joins a list
        if ma < 0:
            ma, mb, ra, rb = mb, ma, rb, ra
        big = ~mb
        count = ma >> 32
        total = lst[big, 2]
        lst[big, 2] = total + count
        if count == 0:
            return 0, 0, mb, n_made, 0
        label = ma & _LOW
        f = _list_entry(ent, lst, big, label, keys, vals, n_labels)
        if f >= 0:
            n_same = count * (ent[f, 0] >> 32)
            ent[f, 0] += ma & _HIGH
            return n_same, count * total - n_same, mb, n_made, 0
        ent[ra, 0] = ma
        ent[ra, 1] = lst[big, 0]
        lst[big, 0] = ra
        lst[big, 1] += 1
        if lst[big, 1] > _SHORT + 1:
            hash_put(keys, vals, _key(big, label, n_labels), ra)
            added = 1
        elif lst[big, 1] == _SHORT + 1:
            added = _hash_list(ent, lst, big, keys, vals, n_labels)
        return 0, count * total, mb, n_made, added
    small, big = ~ma, ~mb
    if lst[small, 1] > lst[big, 1]:
        small, big = big, small
    was_long = lst[big, 1] > _SHORT
    n_same = 0
    x = lst[small, 0]
    while x >= 0:
        nxt = ent[x, 1]
        label = ent[x, 0] & _LOW
        f = hash_get(keys, vals, _key(big, label, n_labels)) if was_long else _scan(ent, lst[big, 0], label)
        if f >= 0:
            n_same += (ent[x, 0] >> 32) * (ent[f, 0] >> 32)
            ent[f, 0] += ent[x, 0] & _HIGH
        else:
            ent[x, 1] = lst[big, 0]
            lst[big, 0] = x
            lst[big, 1] += 1
            if was_long:
                hash_put(keys, vals, _key(big, label, n_labels), x)
                added += 1
        x = nxt
    if not was_long and lst[big, 1] > _SHORT:
        added += _hash_list(ent, lst, big, keys, vals, n_labels)
    n_diff = lst[small, 2] * lst[big, 2] - n_same
    lst[big, 2] += lst[small, 2]
    lst[small, 1] = 0  # absorbed
    return n_same, n_diff, ~big, n_made, added


@njit(cache=True, nogil=True)
def _hash_list(ent, lst, list_id, keys, vals, n_labels):
    """Put every entry of list ``list_id`` into the table; returns how many."""
    added = 0
    x = lst[list_id, 0]
    while x >= 0:
        hash_put(keys, vals, _key(list_id, ent[x, 0] & _LOW, n_labels), x)
        added += 1
        x = ent[x, 1]
    return added


@njit(cache=True, nogil=True)
def _rehash_lists(keys, vals, ent, lst, made, n_made, n_labels):
    """Rebuild the table from the long live lists; drops absorbed lists from ``made``.
    Returns the number of keys and of lists kept."""
    keys[:] = 0
    live = 0
    kept = 0
    for i in range(n_made):
        list_id = made[i]
        if lst[list_id, 1] > 0:
            made[kept] = list_id
            kept += 1
            if lst[list_id, 1] > _SHORT:
                live += _hash_list(ent, lst, list_id, keys, vals, n_labels)
    return live, kept


@njit(cache=True, nogil=True)
def _kruskal_counts(seq, labels, n_labels, deltas, same, diff, parent, mixed):
    """Kruskal over the edge sequence ``seq`` (see :func:`_pass_sequences`); a kept edge that
    joins two trees gets their same-label pairs in ``same`` and their different-label pairs in
    ``diff`` at its id (either may have length 0: not wanted).

    ``parent`` (one per voxel, all -1) is the union-find: a root holds minus its tree's size, and
    minus ``mixed`` more if the tree is mixed, i.e. not all its voxels carry one label (``mixed``
    above the number of voxels). A tree that is not mixed holds its label in ``labels[root]``
    (``labels``, int64 per voxel, is overwritten), and its size is its count: an edge inside an
    object (``_INSIDE``, most of the edges of a volume) that joins two such trees needs nothing
    but the parents. A mixed tree's ``labels[root]`` is ``count << 32 | label`` while it holds one
    label (0 if none), or ``~list`` once it holds several: a list of entries (``count << 32 |
    label``) kept in the slots of the roots whose trees brought them (each root's slot serves once).
    """
    n_nodes = labels.shape[0]
    want_same = same.shape[0] > 0
    want_diff = diff.shape[0] > 0
    last = seq.shape[0] - 1  # nothing after the last kept edge changes the result
    while last >= 0 and (seq[last] & _KEEP) == 0:
        last -= 1
    ent = np.empty((n_nodes, 2), np.int64)  # entry: count << 32 | label, next entry
    lst = np.empty((n_nodes, 3), np.int64)  # list: head, length (0 once absorbed), labelled total
    made = np.empty(n_nodes, np.int64)
    n_made = 0
    capacity = 1024
    keys = np.zeros(capacity, np.uint64)
    vals = np.zeros(capacity, np.int64)
    used = 0
    inv_n = 1.0 / n_nodes
    for k in range(last + 1):
        if k + _AHEAD <= last:
            u_ahead, v_ahead = edge_ends(seq[k + _AHEAD] & _ID, n_nodes, inv_n, deltas)
            prefetch(parent, u_ahead)
            prefetch(parent, v_ahead)
        x = seq[k]
        e = x & _ID
        u, v = edge_ends(e, n_nodes, inv_n, deltas)
        ru = _root(parent, u)
        rv = _root(parent, v)
        if ru == rv:
            continue
        pu = np.int64(parent[ru])
        pv = np.int64(parent[rv])
        if (x & _INSIDE) != 0 and pu > -mixed and pv > -mixed:  # two trees of the edge's label alone
            if want_same and (x & _KEEP) != 0:
                same[e] = np.float64(pu) * np.float64(pv)
            if pu < pv:  # rv is the larger tree
                ru, rv = rv, ru
            parent[rv] = pu + pv
            parent[ru] = rv
            continue
        size_u = -pu - mixed if pu <= -mixed else -pu
        size_v = -pv - mixed if pv <= -mixed else -pv
        ma = labels[ru] if pu <= -mixed else ((size_u << 32) | labels[ru] if labels[ru] != 0 else 0)
        mb = labels[rv] if pv <= -mixed else ((size_v << 32) | labels[rv] if labels[rv] != 0 else 0)
        if ma >= 0 and mb >= 0 and (ma == 0 or mb == 0 or ((ma ^ mb) & _LOW) == 0):
            # at most one label on both sides together (a tree of no labels has 0)
            n_same = (ma >> 32) * (mb >> 32)
            n_diff = 0
            m = ((ma | mb) & _LOW) | ((ma & _HIGH) + (mb & _HIGH))
        else:
            n_same, n_diff, m, n_made, added = _join(ma, mb, ru, rv, ent, lst, made, n_made, keys, vals, n_labels)
            used += added
        if (x & _KEEP) != 0:
            if want_same:
                same[e] = n_same
            if want_diff:
                diff[e] = n_diff
        if size_u > size_v:  # rv is the larger tree
            ru, rv = rv, ru
        size = size_u + size_v
        parent[ru] = rv
        if m == 0 or (m > 0 and (m >> 32) == size):  # one label on every voxel, or none
            parent[rv] = -size
            labels[rv] = m & _LOW
        else:
            parent[rv] = -size - mixed
            labels[rv] = m
        if 2 * used > capacity:
            live, n_made = _rehash_lists(keys, vals, ent, lst, made, n_made, n_labels)
            while 4 * live > capacity:
                capacity *= 2
            if keys.shape[0] != capacity:
                keys = np.zeros(capacity, np.uint64)
                vals = np.zeros(capacity, np.int64)
                live, n_made = _rehash_lists(keys, vals, ent, lst, made, n_made, n_labels)
            used = live


# ---------------------------------------------------------------- numpy API


def _compact_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels as int64 ids below 2**32 (consecutive if they were larger), 0 kept as 0, and the
    number of ids."""
    top = int(labels.max()) if labels.size else 0
    if top < 2**32:  # small ids fit the entry packing as they are: skip the sort of np.unique
        return labels.ravel().astype(np.int64), top + 1
    ids, inverse = np.unique(labels.ravel(), return_inverse=True)
    compact = inverse.astype(np.int64)
    if ids[0] != 0:
        compact += 1
    return compact, len(ids)


def _grid(shape, offsets) -> tuple[tuple[int, int, int], np.ndarray, np.ndarray]:
    """A 2D problem as one z-section: the ``(z, y, x)`` shape, the offsets with a z column, and
    the flat-index step of each channel."""
    shape3 = (1,) * (3 - len(shape)) + tuple(shape)
    offsets3 = np.concatenate([np.zeros((len(offsets), 3 - len(shape)), np.int64), offsets], axis=1)
    return shape3, offsets3, flat_steps(shape, offsets)


def _id_buffer(n_ids: int) -> np.ndarray:
    """Room for ``n_ids`` edge ids in the sort: 4 bytes each where they fit (less to move)."""
    return np.empty(n_ids, np.uint32 if n_ids <= 2**32 else np.int64)


def _union_find(n: int) -> tuple[np.ndarray, int]:
    """The parents of ``n`` single voxels for :func:`_kruskal_counts` and its mark of mixed
    trees: 4 bytes each below 2**30 voxels."""
    if n < 2**30:
        return np.full(n, -1, np.int32), 2**30
    return np.full(n, -1, np.int64), 2**40


def _check(affs, labels, offsets, mask):
    labels = as_array(labels, name="labels")  # no copy
    mask = None if mask is None else as_array(mask, name="mask")
    if labels.size >= 2**31:  # before the inputs are converted (copies of that size)
        raise InputError(f"MALIS counts support up to 2**31 voxels, got labels of shape {np.shape(labels)}")
    affs, offsets = as_affinities(affs, offsets)
    labels = as_labels(labels, shape=affs.shape[1:])
    mask = as_mask(mask, affs.shape, name="affinity mask") if mask is not None and np.ndim(mask) == affs.ndim \
        else as_mask(mask, labels.shape)
    return affs, labels, offsets, mask


def _split_mask(mask, labels, offsets):
    """Labels with the voxels outside a voxel mask unlabelled, and the edges whose ground truth
    is known: all, or those inside an affinity mask, or those with both voxels in a voxel mask."""
    if mask is None:
        return labels, None
    if mask.ndim == labels.ndim:
        return np.where(mask, labels, np.uint64(0)), affinities_from_labels(labels, offsets, mask=mask)[1] != 0
    return labels, mask


def malis_pair_counts(affs: ArrayLike, labels: ArrayLike, offsets: ArrayLike | None = None, *,
                      mask: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MALIS pair counts of each affinity edge on the maximum spanning tree (Turaga 2009).

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Predicted affinities in [0, 1]; float64 and float16 are cast to float32, uint8 is divided
        by 255.
    labels : (z, y, x) or (y, x) array of int
        Ground truth (non-negative ids); 0 is unlabelled and forms no pairs. At most 2**31 voxels.
    offsets : (C, ndim) array_like of int, optional
        The offsets of ``affs``; default the nearest neighbours ``-e_d``.
    mask : bool array of the shape of ``labels`` or of ``affs``, optional
        Where the ground truth is known. Edges outside it (an affinity mask, or edges touching a
        voxel outside a voxel mask) stay in the graph with their predicted affinity but get no
        counts; a voxel mask also unlabels the voxels outside it.

    Returns
    -------
    same, diff : (C, ...) float64
        For each maximum-spanning-tree edge, the number of voxel pairs with the same (``same``)
        and with different (``diff``) non-zero labels whose maximin edge it is; 0 elsewhere.

    Raises
    ------
    InputError
        If the affinities, labels, offsets or mask are invalid or their shapes disagree, or the
        labels have 2**31 voxels or more.
    """
    affs, labels, offsets, mask = _check(affs, labels, offsets, mask)
    labels, known = _split_mask(mask, labels, offsets)
    compact, n_labels = _compact_labels(labels)
    shape3, offsets3, deltas = _grid(labels.shape, offsets)
    has_known = known is not None
    known = known.ravel() if has_known else np.ones(1, bool)
    sequence = _malis_sequence(affs.ravel(), compact, shape3, offsets3, deltas, known, has_known,
                               _id_buffer(affs.size))
    same = np.zeros(affs.size, np.float64)
    diff = np.zeros(affs.size, np.float64)
    _kruskal_counts(sequence, compact, n_labels, deltas, same, diff, *_union_find(compact.size))
    return same.reshape(affs.shape), diff.reshape(affs.shape)


def constrained_malis_weights(affs: ArrayLike, labels: ArrayLike, offsets: ArrayLike | None = None, *,
                              mask: ArrayLike | None = None, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Constrained MALIS weights (Funke et al. 2018): a positive and a negative pass.

    Positive pass: affinities of edges whose ground-truth affinity is 0 (between objects or
    touching label 0) are set to 0, and each tree edge counts the same-label pairs it joins.
    Negative pass: affinities of edges whose ground-truth affinity is 1 are set to 1, and each
    tree edge counts the pairs of different labels it joins. Weights of an edge on the wrong
    side (positive weight on a ground-truth-0 edge, negative on a ground-truth-1 edge) are 0.
    Edges outside ``mask`` keep their predicted affinity in both passes and get no weight.

    The loss is ``sum(w_pos * (1 - a)**2 + w_neg * a**2)`` (see
    :func:`affseg.learn.losses.malis_loss`).

    Parameters
    ----------
    affs, labels, offsets, mask : arrays (``offsets`` and ``mask`` optional)
        Predicted affinities, ground truth, their offsets and where the ground truth is known,
        as for :func:`malis_pair_counts`.
    normalize : bool
        Divide each pass by its number of pairs, so both passes weigh the same (as in Funke's
        implementation); else return raw pair counts.

    Returns
    -------
    w_pos, w_neg : (C, z, y, x) or (C, y, x) float64
        Positive and negative weight of each edge (each summing to 1 with ``normalize``, unless
        all 0); 0 off the trees, on the wrong side of the ground truth and outside ``mask``.

    Raises
    ------
    InputError
        As for :func:`malis_pair_counts`, or if ``normalize`` is not a bool.
    """
    affs, labels, offsets, mask = _check(affs, labels, offsets, mask)
    normalize = as_flag(normalize, name="normalize")
    labels, known_edges = _split_mask(mask, labels, offsets)
    compact, n_labels = _compact_labels(labels)
    shape3, offsets3, deltas = _grid(labels.shape, offsets)
    known = np.ones(1, bool) if known_edges is None else known_edges.ravel()
    pos, neg = _pass_sequences(affs.ravel(), compact, shape3, offsets3, deltas, known, known_edges is not None,
                               _id_buffer(affs.size))
    unused = np.zeros(0, np.float64)
    w_pos = np.zeros(affs.size, np.float64)
    _kruskal_counts(pos, compact.copy(), n_labels, deltas, w_pos, unused, *_union_find(compact.size))
    del pos
    w_neg = np.zeros(affs.size, np.float64)
    _kruskal_counts(neg, compact, n_labels, deltas, unused, w_neg, *_union_find(compact.size))
    del neg, compact
    if normalize:
        for w in (w_pos, w_neg):
            total = w.sum()
            if total > 0:
                w /= total
    return w_pos.reshape(affs.shape), w_neg.reshape(affs.shape)


def malis_weights(affs: ArrayLike, labels: ArrayLike, offsets: ArrayLike | None = None, *,
                  mask: ArrayLike | None = None, constrained: bool = True,
                  normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(w_pos, w_neg)`` of the MALIS loss; constrained (Funke 2018) by default.

    Unconstrained MALIS (Turaga 2009) runs one pass on the predicted affinities and gives each
    tree edge its same-label pairs as positive and different-label pairs as negative weight.

    Parameters
    ----------
    affs, labels, offsets, mask : arrays (``offsets`` and ``mask`` optional)
        Predicted affinities, ground truth, their offsets and where the ground truth is known,
        as for :func:`malis_pair_counts`.
    constrained : bool
        Constrained MALIS (:func:`constrained_malis_weights`); else unconstrained.
    normalize : bool
        Constrained: as for :func:`constrained_malis_weights`. Unconstrained: divide both
        weights by the total number of pairs (same + different), so that together they sum to 1.

    Returns
    -------
    w_pos, w_neg : (C, z, y, x) or (C, y, x) float64
        Positive and negative weight of each edge.

    Raises
    ------
    InputError
        As for :func:`malis_pair_counts`, or if ``constrained`` or ``normalize`` is not a bool.
    """
    if as_flag(constrained, name="constrained"):
        return constrained_malis_weights(affs, labels, offsets, mask=mask, normalize=normalize)
    normalize = as_flag(normalize, name="normalize")
    same, diff = malis_pair_counts(affs, labels, offsets, mask=mask)
    if normalize:
        total = same.sum() + diff.sum()
        if total > 0:
            same, diff = same / total, diff / total
    return same, diff
