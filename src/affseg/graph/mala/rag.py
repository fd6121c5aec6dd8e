"""Region adjacency graph of fragments with the affinities on every contact face, in numba.

Edges and their contacts come in waterz's order: edges sorted by (u, v) with u < v, and the
affinities of an edge in raster order of the voxel (z, y, x) then the axis (z, y, x). That order
makes float32 running statistics identical to waterz's.

Two forms: :func:`fragment_graph` keeps every contact affinity (``RegionGraph``, what the exact
``mean`` of :func:`~affseg.graph.mala.statistics.edge_statistics` with ``keep_contacts`` needs),
:func:`edge_table` only the statistics of each edge (``EdgeTable``), accumulated in one raster
pass: contacts are visited in the order above, so its float32 running mean is waterz's too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from ..core.edges import nearest_neighbour_channels
from ..core.prefetch import prefetch
from ..core.relabel import compact_fragments, dense_table_fits

__all__ = ["EdgeTable", "RegionGraph"]


class _Graph:
    """``num_nodes`` and ``num_edges`` of a graph with node ids ``ids`` (``ids[0] == 0``) and edges ``u``."""

    @property
    def num_nodes(self) -> int:
        return self.ids.shape[0] - 1

    @property
    def num_edges(self) -> int:
        return self.u.shape[0]


@dataclass(frozen=True)
class RegionGraph(_Graph):
    """Fragments as nodes ``1..n`` (0 = background), edges with their contact affinities.

    Attributes
    ----------
    ids : (n + 1,) uint64
        Fragment id of each node; ``ids[0] == 0``; increasing.
    u, v : (E,) int64
        Node indices of each edge, ``u < v``, sorted by (u, v).
    contact_ptr : (E + 1,) int64
        Contacts of edge ``e`` are ``contact_aff[contact_ptr[e]:contact_ptr[e + 1]]``.
    contact_aff : (contact_ptr[-1],) float32
        Affinity of each contact face, in raster order within an edge.
    sizes : (n + 1,) int64
        Voxels per node.
    """

    ids: np.ndarray
    u: np.ndarray
    v: np.ndarray
    contact_ptr: np.ndarray
    contact_aff: np.ndarray
    sizes: np.ndarray


@njit(cache=True, nogil=True, inline="always")
def _lower_neighbour(nodes, z, y, x, d):
    """The node at ``(z, y, x) - e_d``, or 0 (no edge) outside the volume."""
    if d == 0:
        return nodes[z - 1, y, x] if z > 0 else nodes.dtype.type(0)
    if d == 1:
        return nodes[z, y - 1, x] if y > 0 else nodes.dtype.type(0)
    return nodes[z, y, x - 1] if x > 0 else nodes.dtype.type(0)


@njit(cache=True, nogil=True, inline="always")
def _unsigned(box):
    """The bounds of ``box`` (z0, z1, y0, y1, x0, x1, all >= 0) as uint64. Loop indices then
    cannot be negative, so indexing needs no wraparound code: the loops over a box ran about
    10 % slower with int64 bounds than the loops over ``range(nz)`` they replaced."""
    return (np.uint64(box[0]), np.uint64(box[1]), np.uint64(box[2]), np.uint64(box[3]), np.uint64(box[4]),
            np.uint64(box[5]))


@njit(cache=True, nogil=True)
def _count_contacts(nodes, n_nodes, box):
    """Contacts per smaller node and voxels per node, of the voxels in ``box`` (z0, z1, y0, y1,
    x0, x1): a contact belongs to the voxel that carries its affinity (the upper one)."""
    counts = np.zeros(n_nodes + 2, dtype=np.int64)
    sizes = np.zeros(n_nodes + 1, dtype=np.int64)
    z0, z1, y0, y1, x0, x1 = _unsigned(box)
    for z in range(z0, z1):
        for y in range(y0, y1):
            for x in range(x0, x1):
                a = nodes[z, y, x]
                sizes[a] += 1
                for d in range(3):
                    b = _lower_neighbour(nodes, z, y, x, d)
                    if a != b and a != 0 and b != 0:
                        counts[min(a, b) + 1] += 1
    return counts, sizes


@njit(cache=True, nogil=True)
def _bucket_contacts(nodes, affs, starts, box):
    """Contacts of the voxels in ``box`` bucketed by their smaller node, in raster order within a bucket."""
    fill = starts.copy()
    other = np.empty(starts[-1], dtype=np.uint32)
    value = np.empty(starts[-1], dtype=np.float32)
    z0, z1, y0, y1, x0, x1 = _unsigned(box)
    for z in range(z0, z1):
        for y in range(y0, y1):
            for x in range(x0, x1):
                a = nodes[z, y, x]
                for d in range(3):
                    b = _lower_neighbour(nodes, z, y, x, d)
                    if a != b and a != 0 and b != 0:
                        lo = min(a, b)
                        k = fill[lo]
                        other[k] = max(a, b)
                        value[k] = affs[d, z, y, x]
                        fill[lo] = k + 1
    return other, value


@njit(cache=True, nogil=True)
def _group_edges(starts, other, value, n_nodes):
    """Per smaller node, order its contacts by the larger node (stably) into edges."""
    total = other.shape[0]
    contact_aff = np.empty(total, dtype=np.float32)
    eu = np.empty(total, dtype=np.int64)
    ev = np.empty(total, dtype=np.int64)
    ptr = np.empty(total + 1, dtype=np.int64)
    count = np.zeros(n_nodes + 1, dtype=np.int64)
    slot = np.zeros(n_nodes + 1, dtype=np.int64)
    n_edges = 0
    for u in range(1, n_nodes + 1):
        lo, hi = starts[u], starts[u + 1]
        if lo == hi:
            continue
        neighbours = []
        for k in range(lo, hi):
            w = other[k]
            if count[w] == 0:
                neighbours.append(w)
            count[w] += 1
        neighbours.sort()
        pos = lo
        for w in neighbours:
            eu[n_edges] = u
            ev[n_edges] = w
            ptr[n_edges] = pos
            slot[w] = pos
            pos += count[w]
            count[w] = 0
            n_edges += 1
        for k in range(lo, hi):
            w = other[k]
            contact_aff[slot[w]] = value[k]
            slot[w] += 1
    ptr[n_edges] = total
    return eu[:n_edges].copy(), ev[:n_edges].copy(), ptr[: n_edges + 1].copy(), contact_aff


def _as_3d(affs: np.ndarray, offsets: np.ndarray, fragments: np.ndarray, owned):
    """Nearest-neighbour affinities (channel ``d`` links ``u`` and ``u - e_d``), fragments and the
    owned box (z0, z1, y0, y1, x0, x1) of a 2D or 3D problem as a 3D one."""
    nn = nearest_neighbour_channels(affs, offsets)
    bounds = [] if owned is None else [b for s in owned for b in (s.start, s.stop)]
    if nn.shape[0] == 2:
        nn = np.concatenate([np.zeros((1,) + nn.shape[1:], np.float32), nn])[:, None]
        fragments = fragments[None]
        bounds = bounds and [0, 1, *bounds]
    box = np.array(bounds or [0, fragments.shape[0], 0, fragments.shape[1], 0, fragments.shape[2]], np.int64)
    return nn, fragments, box


def fragment_graph(affs: np.ndarray, offsets: np.ndarray, fragments: np.ndarray, owned=None) -> RegionGraph:
    """Region graph of 2D or 3D ``fragments`` over the nearest-neighbour channels of ``affs``.

    Package-internal (not in ``__all__``), shared by the statistics, the agglomeration and the
    fragments: ``affs``, ``offsets`` and ``fragments`` must be validated already
    (``as_affinities``, ``as_labels``); the public entry is
    :func:`affseg.graph.mala.statistics.edge_statistics`. A 2D
    problem becomes one section with an unused z channel. ``owned`` (slices, default all) keeps
    the contacts whose upper voxel (the one carrying the affinity) lies in it, and counts node
    sizes there only: blocks that own disjoint regions own disjoint contacts.
    """
    nn, fragments, box = _as_3d(affs, offsets, fragments, owned)
    return _region_adjacency_graph(nn, fragments, box)


def _region_adjacency_graph(nn_affs: np.ndarray, fragments: np.ndarray, box: np.ndarray) -> RegionGraph:
    """Build the region graph of ``fragments`` over nearest-neighbour affinities.

    Parameters
    ----------
    nn_affs : (3, z, y, x) float32
        Channel ``d`` links ``u`` and ``u - e_d`` (waterz's layout, see
        :func:`affseg.conventions.nearest_neighbour_affinities`).
    fragments : (z, y, x) uint64
        0 is background: it has no edges.
    """
    nodes, ids = compact_fragments(fragments)
    n = ids.shape[0] - 1
    counts, sizes = _count_contacts(nodes, n, box)
    starts = np.cumsum(counts)
    other, value = _bucket_contacts(nodes, nn_affs, starts, box)
    del nodes
    u, v, ptr, contact_aff = _group_edges(starts, other, value, n)
    return RegionGraph(ids=ids, u=u, v=v, contact_ptr=ptr, contact_aff=contact_aff, sizes=sizes)


@dataclass(frozen=True)
class EdgeTable(_Graph):
    """Fragments as nodes ``1..n`` and the edges between them with per-edge statistics only.

    Attributes
    ----------
    ids, sizes, u, v
        As in :class:`RegionGraph` (``sizes`` counted in the owned box).
    count : (E,) int64
        Contact faces of each edge.
    sum : (E,) float64 or None
        Sum of their affinities, in raster order.
    max, min : (E,) float32 or None
        Their largest and smallest affinity.
    mean : (E,) float32 or None
        waterz's float32 running mean of them, in raster order.
    histogram : (E, bins) uint32 or None
        Their histogram (bin ``discretize(affinity, bins)``).
    quantile : (E,) float32 or None
        A percentile of each histogram (see :func:`edge_table`).
    """

    ids: np.ndarray
    sizes: np.ndarray
    u: np.ndarray
    v: np.ndarray
    count: np.ndarray
    sum: np.ndarray | None
    max: np.ndarray | None
    min: np.ndarray | None
    mean: np.ndarray | None
    histogram: np.ndarray | None
    quantile: np.ndarray | None = None


# Contacts are appended to a chain of blocks per smaller node; block ``k`` holds ``size``
# contacts at ``k * size ...`` of three arrays: the larger node, the affinity (if a statistic
# needs it) or its histogram bin (if only the histogram does: 1 byte). The scan writes to one block
# per node it meets and probes no map from node pairs to edges (such a map, 18k edges of the
# benchmark volume, missed the cache on most probes as the volume streaming past evicted it:
# 55 ns a probe). Blocks hold 64 contacts (larger blocks, fewer jumps between them when the
# chains are read) where fragments are large, down to 4 for tiny fragments, so that half-empty
# last blocks cost at most about as much as the contacts.
# The timings in this module's comments were taken once on the 64 x 256 x 256 benchmark volume,
# one core, by scripts that were not kept; `python benchmarks/bench_segmentation.py --profile`
# gives the time of each kernel (edge_table's among them) on the same volume.
_MAX_BLOCK = 64
_MIN_BLOCK = 4


def _block_size(voxels: int, nodes: int) -> int:
    """Contacts per block: a power of two, about half the contacts of a node (as the smaller
    one) expected from a cube of ``voxels / nodes`` voxels (3 faces of ``(voxels / nodes)**(2/3)``)."""
    expected = 1.5 * (voxels / max(nodes, 1)) ** (2 / 3)
    size = _MIN_BLOCK
    while size < _MAX_BLOCK and 2 * size <= expected:
        size *= 2
    return size


@njit(cache=True, nogil=True, inline="always")
def _bin(value, bins):
    """waterz's histogram bin of an affinity in [0, 1]: ``_kernels.discretize(value, bins)`` (the
    float32 product truncated, clamped to ``[0, bins - 1]``) for a power-of-two ``bins``, where
    the product is exact; clamped before the conversion instead of by branches (the scan was
    about a tenth faster, one-off measurement)."""
    return np.uint8(min(max(np.float32(value) * np.float32(bins), np.float32(0)), np.float32(bins - 1)))


@njit(cache=True, nogil=True, inline="always")
def _append_contact(a, b, value, node_count, node_first, node_last, block_next, pool, pool_value, pool_bin,
                    n_bins, state, size):
    """Append the contact of nodes ``a != b`` with affinity ``value`` to the smaller node's chain."""
    lo, hi = min(a, b), max(a, b)
    n = node_count[lo]
    node_count[lo] = n + 1
    slot = n & (size - 1)
    if slot == 0:
        block = state[0]
        state[0] = block + 1
        block_next[block] = -1
        if n == 0:
            node_first[lo] = block
        else:
            block_next[node_last[lo]] = block
        node_last[lo] = block
    else:
        block = node_last[lo]
    i = size * block + slot
    pool[i] = pool.dtype.type(hi)
    if pool_value.shape[0]:
        pool_value[i] = value
    if pool_bin.shape[0]:
        pool_bin[i] = _bin(value, n_bins)


@njit(cache=True, nogil=True, _nrt=False)
def _scan_contacts(labels, affs, box, sizes, node_count, node_first, node_last, block_next, pool, pool_value,
                   pool_bin, n_bins, state, size):
    """Voxels per node and the contacts of every node pair, in one raster pass over ``box``.

    Each contact (larger node, and affinity or histogram bin) goes to the chain of blocks of its
    smaller node, in waterz's order: raster order of the upper voxel (the one that carries the
    affinity), then the axis z, y, x. ``state`` is (blocks used, next row): the scan stops
    (returns 1) at the start of a row whose contacts might not fit in the blocks; the caller
    grows them and calls again. Compiled without reference counting: with it, each inlined call
    of :func:`_append_contact` paid atomic reference-count updates on its arrays (40 ns a contact).
    """
    z0, z1, y0, y1, x0, x1 = _unsigned(box)
    rows_per_plane = y1 - y0
    n_rows = (z1 - z0) * rows_per_plane
    room = np.int64(3 * (x1 - x0))
    row = np.uint64(state[1])
    while row < n_rows:
        if state[0] + room > block_next.shape[0]:
            state[1] = np.int64(row)
            return 1
        z = z0 + row // rows_per_plane
        y = y0 + row % rows_per_plane
        cur = labels[z, y]
        above_z = labels[z - np.uint64(1), y] if z > 0 else cur
        above_y = labels[z, y - np.uint64(1)] if y > 0 else cur
        aff_z = affs[0, z, y]
        aff_y = affs[1, z, y]
        aff_x = affs[2, z, y]
        prev = cur[x0 - np.uint64(1)] if x0 > 0 else cur[x0]
        run = cur[x0]
        run_length = 0
        for x in range(x0, x1):
            a = cur[x]
            bz = above_z[x]
            by = above_y[x]
            bx = prev
            prev = a
            if a == run:
                run_length += 1
            else:
                sizes[run] += run_length
                run = a
                run_length = 1
            if a == 0 or (bz == a and by == a and bx == a):
                continue
            if bz != a and bz != 0:
                _append_contact(a, bz, aff_z[x], node_count, node_first, node_last, block_next, pool, pool_value,
                                pool_bin, n_bins, state, size)
            if by != a and by != 0:
                _append_contact(a, by, aff_y[x], node_count, node_first, node_last, block_next, pool, pool_value,
                                pool_bin, n_bins, state, size)
            if bx != a and bx != 0:
                _append_contact(a, bx, aff_x[x], node_count, node_first, node_last, block_next, pool, pool_value,
                                pool_bin, n_bins, state, size)
        sizes[run] += run_length
        row += np.uint64(1)
    state[1] = np.int64(row)
    return 0


@njit(cache=True, nogil=True)
def _chain_neighbours(node_count, node_first, block_next, pool, size, stamp, eu, ev):
    """The edges ``(eu, ev)`` sorted by (u, v): per node, the distinct larger nodes of its
    contacts. Returns their number; ``eu``, ``ev`` have room for one edge per contact,
    ``stamp`` (zeros, one per node) is scratch."""
    n_edges = 0
    for lo in range(1, node_count.shape[0]):
        left = node_count[lo]
        if left == 0:
            continue
        start = n_edges
        block = node_first[lo]
        while left > 0:
            base = size * block
            nxt = block_next[block] if left > size else -1
            if nxt >= 0:
                prefetch(pool, size * nxt)
            for k in range(min(left, size)):
                hi = pool[base + k]
                if stamp[hi] != lo:
                    stamp[hi] = lo
                    ev[n_edges] = hi
                    n_edges += 1
            left -= size
            block = nxt
        ev[start:n_edges].sort()
        eu[start:n_edges] = lo
    return n_edges


# a node's edges with at most this many have their histograms counted in a scratch buffer that
# stays in the L1 cache, then copied out row by row: counting straight into the (E, 256) array,
# whose lines are met for the first time, took 1.7x as long (23 against 14 ms on the benchmark
# volume, one-off measurement)
_LOCAL_EDGES = 32


@njit(cache=True, nogil=True, inline="always")
def _quantile(row, total, quantile):
    """The ``quantile``-th percentile of the histogram ``row`` of ``total`` values as the centre
    of its bin: the statistic of waterz's ``HistogramQuantileAffinity`` (and of
    :func:`affseg.graph.mala._kernels.statistic`), bit for bit."""
    bins = row.shape[0]
    pivot = quantile * total // 100 + 1
    seen = 0
    b = 0
    while b < bins:
        seen += row[b]
        if seen >= pivot:
            break
        b += 1
    return np.float32((np.float64(np.float32(b)) + 0.5) / bins)


@njit(cache=True, nogil=True, _nrt=False)
def _chain_statistics(node_count, node_first, block_next, pool, pool_value, pool_bin, size, eu, ev, edge_of, count,
                      total, top, bottom, mean, hist, scratch, quantile, quantiles):
    """Per edge of :func:`_chain_neighbours`, the statistics of its contacts, taken in chain
    (waterz's) order; arrays of length 0 are not computed. ``edge_of`` (one per node) and
    ``scratch`` (``_LOCAL_EDGES`` histograms) are scratch. With ``quantiles`` (and ``hist``),
    the ``quantile``-th percentile of each histogram, as waterz's ``HistogramQuantileAffinity``,
    taken while the histogram is in the cache."""
    n_bins = hist.shape[1]
    with_hist = hist.shape[0] > 0
    with_bins = pool_bin.shape[0] > 0
    with_total = total.shape[0] > 0
    with_top = top.shape[0] > 0
    with_bottom = bottom.shape[0] > 0
    with_mean = mean.shape[0] > 0
    first = 0
    n_edges = eu.shape[0]
    while first < n_edges:
        lo = eu[first]
        last = first
        while last < n_edges and eu[last] == lo:
            edge_of[ev[last]] = last - first
            count[last] = 0
            if with_total:
                total[last] = 0.0
            if with_top:
                top[last] = -np.inf
            if with_bottom:
                bottom[last] = np.inf
            if with_mean:
                mean[last] = 0.0
            last += 1
        local = with_hist and last - first <= _LOCAL_EDGES
        if local:
            for r in range(last - first):
                for b in range(n_bins):
                    scratch[r, b] = 0
        left = node_count[lo]
        block = node_first[lo]
        while left > 0:
            base = size * block
            nxt = block_next[block] if left > size else -1
            if nxt >= 0:
                prefetch(pool, size * nxt)
                if with_bins:
                    prefetch(pool_bin, size * nxt)
                else:
                    prefetch(pool_value, size * nxt)
            if local and with_bins:  # only histograms: no count (the rows' sums), no float
                for k in range(min(left, size)):
                    scratch[edge_of[pool[base + k]], pool_bin[base + k]] += 1
                left -= size
                block = nxt
                continue
            for k in range(min(left, size)):
                r = edge_of[pool[base + k]]
                e = first + r
                n = count[e]
                count[e] = n + 1
                if with_bins:
                    b = np.int64(pool_bin[base + k])
                else:
                    value = pool_value[base + k]
                    if with_total:
                        total[e] += np.float64(value)
                    if with_top:
                        top[e] = max(top[e], value)
                    if with_bottom:
                        bottom[e] = min(bottom[e], value)
                    if with_mean:
                        mean[e] = (value + mean[e] * np.float32(n)) / np.float32(n + 1)
                    b = np.int64(_bin(value, n_bins)) if with_hist else 0
                if local:
                    scratch[r, b] += 1
                elif with_hist:
                    hist[e, b] += 1
            left -= size
            block = nxt
        if local:
            for r in range(last - first):
                seen = 0
                for b in range(n_bins):
                    hist[first + r, b] = scratch[r, b]
                    seen += scratch[r, b]
                if with_bins:
                    count[first + r] = seen
        if quantiles.shape[0]:
            for e in range(first, last):
                quantiles[e] = _quantile(scratch[e - first] if local else hist[e], count[e], quantile)
        first = last


def edge_table(affs: np.ndarray, offsets: np.ndarray, fragments: np.ndarray, owned=None, *,
               statistics: tuple[str, ...] = (), bins: int = 256, quantile: int | None = None) -> EdgeTable:
    """The edges of the region graph of ``fragments`` with ``statistics`` (any of "sum", "max",
    "min", "mean", "histogram"; the contact count always), from one pass over the volume; with
    ``quantile`` (and "histogram") also that percentile of each histogram.

    Package-internal, as :func:`fragment_graph` (validated input, the same ``owned``), which
    gives the same nodes, edges and contacts: the statistics equal those computed from its
    contacts in their order. Fragment ids small enough for a dense table (see
    :func:`affseg.graph.core.relabel.dense_table_fits`) are used as they are; larger ones are
    compacted to node indices first. The contacts are kept meanwhile in chains of blocks per
    node (see :func:`_scan_contacts`): 3 to 8 bytes each.
    """
    if not 0 < bins <= 256 or bins & (bins - 1):
        raise ValueError(f"bins must be a power of two up to 256, got {bins}")
    nn, labels, box = _as_3d(affs, offsets, fragments, owned)
    top_id = int(labels.max()) if labels.size else 0
    if dense_table_fits(top_id, labels.size) and top_id < 2**32:
        ids = None
    else:  # ids up to 2**64 - 1: node indices first (a uint32 volume)
        labels, ids = compact_fragments(labels)
        top_id = ids.shape[0] - 1
    histogram = "histogram" in statistics
    with_values = bool({"sum", "max", "min", "mean"} & set(statistics))
    row_room = 3 * int(box[5] - box[4])
    box_voxels = int(np.prod(box[1::2] - box[::2]))
    sizes = np.zeros(top_id + 1, np.int64)
    node_count = np.zeros(top_id + 1, np.int64)
    node_first = np.empty(top_id + 1, np.int64)
    node_last = np.empty(top_id + 1, np.int64)
    size = _block_size(box_voxels, top_id)
    # room for one contact per voxel at first (the benchmark volume has 0.35): pages never
    # touched cost no memory
    blocks = box_voxels // size + row_room + 1
    block_next = np.empty(blocks, np.int64)
    pool = np.empty(size * blocks, np.uint16 if top_id < 2**16 else np.uint32)
    pool_value = np.empty(size * blocks if with_values else 0, np.float32)
    pool_bin = np.empty(size * blocks if histogram and not with_values else 0, np.uint8)
    state = np.zeros(2, np.int64)
    while _scan_contacts(labels, nn, box, sizes, node_count, node_first, node_last, block_next, pool, pool_value,
                         pool_bin, bins, state, size):
        used = int(state[0])
        block_next = _grown(block_next, used)
        pool, pool_value, pool_bin = (_grown(a, used * size) for a in (pool, pool_value, pool_bin))
    contacts = int(node_count.sum())
    lo = np.empty(contacts, np.uint32)
    hi = np.empty(contacts, np.uint32)
    n_edges = _chain_neighbours(node_count, node_first, block_next, pool, size, np.zeros(top_id + 1, np.int64), lo,
                                hi)
    lo, hi = lo[:n_edges].copy(), hi[:n_edges].copy()
    count = np.empty(n_edges, np.int64)

    def wanted(name, dtype):
        return np.empty(n_edges if name in statistics else 0, dtype)

    total, top, bottom, running = (wanted("sum", np.float64), wanted("max", np.float32),
                                   wanted("min", np.float32), wanted("mean", np.float32))
    hist = np.zeros((n_edges if histogram else 0, bins), np.uint32)
    quantiles = np.empty(n_edges if quantile is not None and histogram else 0, np.float32)
    _chain_statistics(node_count, node_first, block_next, pool, pool_value, pool_bin, size, lo, hi,
                      np.empty(top_id + 1, np.int64), count, total, top, bottom, running, hist,
                      np.empty((_LOCAL_EDGES, bins), np.uint32), -1 if quantile is None else int(quantile), quantiles)
    del pool, pool_value, pool_bin, block_next
    # nodes: fragments with voxels in the box or with an edge (seen in the context below it)
    present = sizes > 0
    present[lo] = True
    present[hi] = True
    present[0] = False
    index = np.cumsum(present)
    node_labels = np.flatnonzero(present)
    node_ids = np.zeros(node_labels.shape[0] + 1, np.uint64)
    node_ids[1:] = node_labels if ids is None else ids[node_labels]
    node_sizes = np.zeros(node_ids.shape[0], np.int64)
    node_sizes[1:] = sizes[node_labels]
    return EdgeTable(ids=node_ids, sizes=node_sizes, u=index[lo], v=index[hi], count=count,
                     sum=total if "sum" in statistics else None, max=top if "max" in statistics else None,
                     min=bottom if "min" in statistics else None, mean=running if "mean" in statistics else None,
                     histogram=hist if histogram else None, quantile=quantiles if quantiles.shape[0] else None)


def _grown(array: np.ndarray, used: int) -> np.ndarray:
    """``array`` at twice its length, its first ``used`` entries kept (empty arrays stay so)."""
    if array.shape[0] == 0:
        return array
    grown = np.empty(2 * array.shape[0], array.dtype)
    grown[:used] = array[:used]
    return grown
