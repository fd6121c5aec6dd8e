"""Region adjacency graph of fragments with the affinities on every contact face, in numba.

Edges and their contacts come in waterz's order: edges sorted by (u, v) with u < v, and the
affinities of an edge in raster order of the voxel (z, y, x) then the axis (z, y, x). That order
makes float32 running statistics identical to waterz's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from ..core.edges import nearest_neighbour_channels
from ..core.relabel import compact_fragments

__all__ = ["RegionGraph"]


@dataclass(frozen=True)
class RegionGraph:
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

    @property
    def num_nodes(self) -> int:
        return self.ids.shape[0] - 1

    @property
    def num_edges(self) -> int:
        return self.u.shape[0]


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
    nn = nearest_neighbour_channels(affs, offsets)
    bounds = [] if owned is None else [b for s in owned for b in (s.start, s.stop)]
    if nn.shape[0] == 2:
        nn = np.concatenate([np.zeros((1,) + nn.shape[1:], np.float32), nn])[:, None]
        fragments = fragments[None]
        bounds = bounds and [0, 1, *bounds]
    box = np.array(bounds or [0, fragments.shape[0], 0, fragments.shape[1], 0, fragments.shape[2]], np.int64)
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
