"""MALIS pair counts (Turaga et al. 2009) and constrained MALIS (Funke et al. 2018).

Kruskal's algorithm over the edges in decreasing affinity builds the maximum spanning tree; the
edge that joins two trees is the maximin edge of every voxel pair across them, so it receives
the number of those pairs that carry the same ground-truth label (``same``) and different labels
(``diff``). Each tree keeps its label counts in a list; the shorter list is merged into the
longer one (counts found by scanning short lists and through a hash table for long ones), so
the whole pass costs O(E log E + n log n) instead of the O(n^2) of counting pairs directly.

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
from ..core.unionfind import find

__all__ = ["constrained_malis_weights", "malis_pair_counts", "malis_weights"]

_SHORT = 8  # lists up to this length are scanned; longer ones are hashed
_AHEAD = 16  # edges ahead whose voxel records are prefetched
_LOW = np.int64(0xFFFFFFFF)  # an entry packs its label (low 32 bits) and count (high 32 bits)
_HIGH = ~_LOW
_ONE_COUNT = np.int64(1) << 32
LEAN_OPENING = 0.125  # share of the edges below which the lean union-find is skipped


# ---------------------------------------------------------------- kernels


@njit(cache=True, nogil=True)
def _radix_descending(bits, index_order):
    """Stable order of ``bits`` (uint32), largest first; ties keep ``index_order`` (LSD radix)."""
    n = index_order.shape[0]
    keys = np.empty(n, np.uint32)
    for i in range(n):
        keys[i] = ~bits[index_order[i]]
    order = index_order.copy()
    tmp_order = np.empty_like(order)
    tmp_keys = np.empty_like(keys)
    for shift in (0, 11, 22):
        counts = np.zeros(2049, np.int64)
        for i in range(n):
            counts[((keys[i] >> shift) & 2047) + 1] += 1
        for b in range(2048):
            counts[b + 1] += counts[b]
        for i in range(n):
            b = (keys[i] >> shift) & 2047
            tmp_order[counts[b]] = order[i]
            tmp_keys[counts[b]] = keys[i]
            counts[b] += 1
        order, tmp_order = tmp_order, order
        keys, tmp_keys = tmp_keys, keys
    return order


# One record (a row of 8 int64, 64 bytes) per node keeps a merge within a few cache lines. Entries (a
# label and its count in a tree's list) are indexed by node id: node i holds its own label at first.


@njit(cache=True, nogil=True, inline="always")
def _key(list_id, label, n_labels):
    return np.uint64(list_id) * np.uint64(n_labels + 1) + np.uint64(label) + np.uint64(1)


@njit(cache=True, nogil=True, inline="always")
def _find_entry(rec, list_id, label, hashed, keys, vals, n_labels):
    if not hashed:
        e = rec[list_id, 3]
        while e >= 0:
            if (rec[e, 6] & _LOW) == label:
                return e
            e = rec[e, 7]
        return -1
    return hash_get(keys, vals, _key(list_id, label, n_labels))


@njit(cache=True, nogil=True)
def _rehash(keys, vals, rec, n_labels):
    """Rebuild the table from the long lists of the live trees (drops keys of dead lists)."""
    keys[:] = 0
    live = 0
    for r in range(rec.shape[0]):
        if rec[r, 0] == r:
            lst = rec[r, 2]
            if rec[lst, 4] > _SHORT:
                e = rec[lst, 3]
                while e >= 0:
                    hash_put(keys, vals, _key(lst, rec[e, 6] & _LOW, n_labels), e)
                    live += 1
                    e = rec[e, 7]
    return live


@njit(cache=True, nogil=True)
def _edge_ids(shape, offsets):
    """Ids ``c * n + u`` of the edges inside a ``(z, y, x)`` volume, channel-major then raster
    order of ``u`` (the index of the edge's affinity in the raveled ``(C, z, y, x)`` array)."""
    nz, ny, nx = shape
    n = nz * ny * nx
    total = 0
    for c in range(offsets.shape[0]):
        z0, z1, y0, y1, x0, x1 = edge_bounds(nz, ny, nx, offsets[c, 0], offsets[c, 1], offsets[c, 2])
        total += max(0, z1 - z0) * max(0, y1 - y0) * max(0, x1 - x0)
    ids = np.empty(total, np.int64)
    k = 0
    for c in range(offsets.shape[0]):
        z0, z1, y0, y1, x0, x1 = edge_bounds(nz, ny, nx, offsets[c, 0], offsets[c, 1], offsets[c, 2])
        for z in range(z0, z1):
            for y in range(y0, y1):
                for x in range(x0, x1):
                    ids[k] = c * n + (z * ny + y) * nx + x
                    k += 1
    return ids


@njit(cache=True, nogil=True)
def _same_label(ids, labels, n, deltas):
    """Per edge: whether both voxels carry the same non-zero label (ground-truth affinity 1)."""
    out = np.empty(ids.shape[0], np.bool_)
    inv_n = 1.0 / n
    for k in range(ids.shape[0]):
        u, v = edge_ends(ids[k], n, inv_n, deltas)
        out[k] = labels[u] != 0 and labels[u] == labels[v]
    return out


@njit(cache=True, nogil=True)
def _single_label_trees(node_label, edge_ids, deltas, same):
    """Kruskal over edges that each join two voxels of the same non-zero label (so every tree
    holds one label and an edge's same-label pairs are the product of the trees' sizes, its
    different-label pairs 0): a plain union-find on 4-byte parents and sizes, which stays in
    cache where the 64-byte records of :func:`_kruskal_pair_counts` do not.

    Returns the parents (roots are their own) and each root's size, for :func:`_records_of`.
    """
    n_nodes = node_label.shape[0]
    parent = np.arange(n_nodes).astype(np.int32)
    size = np.ones(n_nodes, np.int32)
    n_edges = edge_ids.shape[0]
    inv_n = 1.0 / n_nodes
    for k in range(n_edges):
        if k + _AHEAD < n_edges:
            u_ahead, v_ahead = edge_ends(edge_ids[k + _AHEAD], n_nodes, inv_n, deltas)
            prefetch(parent, u_ahead)
            prefetch(parent, v_ahead)
        u, v = edge_ends(edge_ids[k], n_nodes, inv_n, deltas)
        ru = find(parent, u)
        rv = find(parent, v)
        if ru == rv:
            continue
        same[edge_ids[k]] = np.float64(size[ru]) * np.float64(size[rv])
        if size[ru] < size[rv]:
            ru, rv = rv, ru
        parent[rv] = ru
        size[ru] += size[rv]
    return parent, size


@njit(cache=True, nogil=True)
def _records_of(node_label, parent, size):
    """Node records (see :func:`_kruskal_pair_counts`) of a forest of single-label trees: each
    root's list holds one entry, its own, with the tree's label and size (0 entries if unlabelled)."""
    n_nodes = node_label.shape[0]
    rec = np.empty((n_nodes, 8), np.int64)
    for i in range(n_nodes):
        root = find(parent, i)
        labelled = node_label[i] != 0
        rec[i, 0] = root
        rec[i, 1] = size[i] if root == i else 1
        rec[i, 2] = i
        rec[i, 3] = i if labelled else -1
        rec[i, 4] = 1 if labelled else 0
        rec[i, 5] = (size[i] if root == i else 1) if labelled else 0
        rec[i, 6] = ((np.int64(size[i]) << 32) if root == i else _ONE_COUNT) | node_label[i]
        rec[i, 7] = -1
    return rec


@njit(cache=True, nogil=True)
def _kruskal_pair_counts(rec, n_labels, edge_ids, deltas, same, diff):
    """Process the edges (ids ``c * n + u``, see :func:`_edge_ids`) in the given order, from
    the forest in ``rec``; the edge joining two trees gets their pair counts, written at its id
    in ``same`` and ``diff``.

    Record columns: 0 parent, 1 size, 2 list id (roots), 3 head, 4 length, 5 total labelled
    (list ids), 6 count << 32 | label, 7 next (entries): 64 bytes.
    """
    n_nodes = rec.shape[0]
    capacity = 1024
    keys = np.zeros(capacity, np.uint64)
    vals = np.zeros(capacity, np.int64)
    used = 0
    rec_flat = rec.reshape(-1)
    n_edges = edge_ids.shape[0]
    inv_n = 1.0 / n_nodes
    for k in range(n_edges):
        if k + _AHEAD < n_edges:  # the records of an edge ahead: random voxels, not in cache
            u_ahead, v_ahead = edge_ends(edge_ids[k + _AHEAD], n_nodes, inv_n, deltas)
            prefetch(rec_flat, u_ahead * 8)
            prefetch(rec_flat, v_ahead * 8)
        u, v = edge_ends(edge_ids[k], n_nodes, inv_n, deltas)
        ru = find(rec, u)
        rv = find(rec, v)
        if ru == rv:
            continue
        small, large = rec[ru, 2], rec[rv, 2]
        if rec[small, 4] > rec[large, 4]:
            small, large = large, small
        was_long = rec[large, 4] > _SHORT
        n_same = 0
        x = rec[small, 3]
        while x >= 0:
            nxt = rec[x, 7]
            label = rec[x, 6] & _LOW
            f = _find_entry(rec, large, label, was_long, keys, vals, n_labels)
            if f >= 0:
                n_same += (rec[x, 6] >> 32) * (rec[f, 6] >> 32)
                rec[f, 6] += rec[x, 6] & _HIGH
            else:
                rec[x, 7] = rec[large, 3]
                rec[large, 3] = x
                rec[large, 4] += 1
                if was_long:
                    hash_put(keys, vals, _key(large, label, n_labels), x)
                    used += 1
            x = nxt
        if not was_long and rec[large, 4] > _SHORT:
            x = rec[large, 3]
            while x >= 0:
                hash_put(keys, vals, _key(large, rec[x, 6] & _LOW, n_labels), x)
                used += 1
                x = rec[x, 7]
        same[edge_ids[k]] = n_same
        diff[edge_ids[k]] = rec[small, 5] * rec[large, 5] - n_same
        rec[large, 5] += rec[small, 5]
        if rec[ru, 1] < rec[rv, 1]:
            ru, rv = rv, ru
        rec[rv, 0] = ru
        rec[ru, 1] += rec[rv, 1]
        rec[ru, 2] = large
        if 2 * used > capacity:
            live = _rehash(keys, vals, rec, n_labels)
            while 4 * live > capacity:
                capacity *= 2
            if keys.shape[0] != capacity:
                keys = np.zeros(capacity, np.uint64)
                vals = np.zeros(capacity, np.int64)
                live = _rehash(keys, vals, rec, n_labels)
            used = live


# ---------------------------------------------------------------- numpy API


def _descending_order(values: np.ndarray, index_order: np.ndarray) -> np.ndarray:
    """Stable order of float32 ``values`` >= 0, largest first; ties keep ``index_order``.

    The bit patterns of non-negative floats sort like the floats (+ 0 turns -0.0 into 0.0).
    """
    bits = (np.asarray(values, np.float32) + np.float32(0)).view(np.uint32)
    return _radix_descending(bits, index_order)


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


def _edges(shape, offsets) -> tuple[np.ndarray, np.ndarray, int]:
    """Edge ids (see :func:`_edge_ids`), the flat-index step of each channel, and the voxel count."""
    shape3 = (1,) * (3 - len(shape)) + tuple(shape)
    offsets3 = np.concatenate([np.zeros((len(offsets), 3 - len(shape)), np.int64), offsets], axis=1)
    return _edge_ids(shape3, offsets3), flat_steps(shape, offsets), int(np.prod(shape))


def _counts_in_order(compact: np.ndarray, n_labels: int, edge_ids, deltas, n_edges_total: int,
                     single_label: int = 0):
    """Pair counts ``(same, diff)`` of every edge id (0 off the tree), edges in the given order.

    The first ``single_label`` edges must each join two voxels of the same non-zero label: they
    run on a lean union-find (same result, less memory traffic)."""
    same = np.zeros(n_edges_total, np.float64)
    diff = np.zeros(n_edges_total, np.float64)
    if single_label < LEAN_OPENING * len(edge_ids):  # a short opening does not repay the records' rebuild
        single_label = 0
    parent, size = _single_label_trees(compact, edge_ids[:single_label], deltas, same)
    rec = _records_of(compact, parent, size)
    del parent, size
    _kruskal_pair_counts(rec, n_labels, edge_ids[single_label:], deltas, same, diff)
    return same, diff


def _single_label_prefix(edges_in_order: np.ndarray, within: np.ndarray) -> int:
    """How many of the first edges (indices into ``within``) join voxels of one non-zero label."""
    outside = np.flatnonzero(~within[edges_in_order])
    return int(outside[0]) if outside.size else len(edges_in_order)


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
    ids, deltas, _ = _edges(labels.shape, offsets)
    order = _descending_order(affs.ravel()[ids], np.arange(len(ids), dtype=np.int64))
    # edges of different objects come early in affinity order: no lean opening worth its set-up
    same, diff = _counts_in_order(*_compact_labels(labels), ids[order], deltas, affs.size)
    same, diff = same.reshape(affs.shape), diff.reshape(affs.shape)
    if known is not None:
        same, diff = same * known, diff * known
    return same, diff


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
    ids, deltas, n = _edges(labels.shape, offsets)
    values = affs.ravel()[ids]
    same_label = _same_label(ids, compact, n, deltas)
    known = np.ones(len(ids), bool) if known_edges is None else known_edges.ravel()[ids]
    within = same_label & known
    between = ~same_label & known
    base = _descending_order(values, np.arange(len(ids), dtype=np.int64))
    # positive pass: within-object edges by affinity, then every edge at 0 in index order
    at_zero = between | (values == 0)
    pos_order = np.concatenate([base[~at_zero[base]], np.flatnonzero(at_zero)])
    # negative pass: every edge at 1 in index order, then the rest by affinity
    at_one = within | (values == 1)
    neg_order = np.concatenate([np.flatnonzero(at_one), base[~at_one[base]]])
    del base
    # both passes open with edges inside objects (most edges of a volume): single-label trees
    w_pos, _ = _counts_in_order(compact, n_labels, ids[pos_order], deltas, affs.size,
                                _single_label_prefix(pos_order, same_label))
    _, w_neg = _counts_in_order(compact, n_labels, ids[neg_order], deltas, affs.size,
                                _single_label_prefix(neg_order, same_label))
    w_pos[ids[~within]] = 0  # weights on the wrong side of the ground truth
    w_neg[ids[~between]] = 0
    if normalize:
        for w in (w_pos, w_neg):
            if w.sum() > 0:
                w /= w.sum()
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
