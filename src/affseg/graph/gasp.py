"""GASP: generalized agglomeration of signed graphs (Bailoni et al. 2022), on grids and graphs."""
from __future__ import annotations

import numpy as np

from .._checks import as_affinities, as_labels, as_mask
from ..conventions import _edge_slices
from . import _gasp_kernels as k
from ._mutex_kernels import labels_from_roots
from .mutex import _as_edges, _as_num_nodes, channel_biases

__all__ = ["LINKAGES", "gasp", "gasp_graph", "signed_region_graph"]

LINKAGES = {"mean": k.MEAN, "sum": k.SUM, "max": k.MAX, "min": k.MIN, "abs_max": k.ABS_MAX}


def _linkage_code(linkage: str) -> int:
    if linkage not in LINKAGES:
        raise ValueError(f"unknown linkage {linkage!r}; choose one of {sorted(LINKAGES)}")
    return LINKAGES[linkage]


def gasp_graph(
    num_nodes: int,
    uv_ids,
    weights,
    *,
    edge_sizes=None,
    mergeable=None,
    linkage: str = "mean",
    cannot_link: bool = False,
) -> np.ndarray:
    """GASP on an explicit signed graph.

    Parameters
    ----------
    num_nodes : int
        Nodes are ``0 .. num_nodes - 1``.
    uv_ids : (E, 2) array_like of int
        Edges; no self-loops, no edge twice.
    weights : (E,) array_like of float
        Signed weights: positive attracts, negative repels.
    edge_sizes : (E,) array_like of float, optional
        Positive sizes (e.g. contact areas) for ``mean`` (size-weighted) and ``sum``
        (``weight x size``); default 1.
    mergeable : (E,) array_like of bool, optional
        Edges allowed to merge their clusters (default all); the others (e.g. long-range
        edges) only contribute to the linkage and to constraints.
    linkage : {"mean", "sum", "max", "min", "abs_max"}
        How the interaction of two clusters is computed from the edges between them.
        ``abs_max`` is the Mutex Watershed.
    cannot_link : bool
        Visit edges by ``|interaction|``: a repulsive one forbids its two clusters to merge
        later (as the Mutex Watershed does); otherwise stop at the first edge that is not
        attractive.

    Returns
    -------
    labels : (num_nodes,) uint64
        Cluster of each node, ``1 .. k`` in order of the cluster's first node.
    """
    num_nodes = _as_num_nodes(num_nodes)
    code = _linkage_code(linkage)
    uv, w = _as_edges(num_nodes, uv_ids, weights, name="uv_ids")
    sizes = _as_per_edge(edge_sizes, len(w), "edge_sizes", 1.0)
    if (sizes <= 0).any():
        raise ValueError(f"edge_sizes must be positive, found {sizes.min()}")
    merge = _as_per_edge(mergeable, len(w), "mergeable", True).astype(bool)
    return _run(num_nodes, uv, w, sizes, merge, code, cannot_link)


def _as_per_edge(values, n: int, name: str, default) -> np.ndarray:
    if values is None:
        return np.full(n, default, dtype=np.float64 if isinstance(default, float) else bool)
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have the shape ({n},), got {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr.astype(np.float64) if isinstance(default, float) else arr != 0


def _run(num_nodes, uv, w, sizes, merge, code, cannot_link):
    parent, _ = k.gasp(num_nodes, np.ascontiguousarray(uv[:, 0]), np.ascontiguousarray(uv[:, 1]),
                    w, sizes, merge, code, bool(cannot_link))
    return labels_from_roots(parent, np.zeros(1, np.uint64), False, np.ones(1, bool), False, 1)


def gasp(
    affs,
    offsets=None,
    *,
    bias=0.5,
    long_range_bias=None,
    linkage: str = "mean",
    cannot_link: bool = False,
    long_range_merges: bool = False,
    mask=None,
    fragments=None,
) -> np.ndarray:
    """GASP on the voxel grid graph of affinities, or on the region graph of ``fragments``.

    Edge weights are ``affinity - bias`` (see :func:`~affseg.mutex_watershed` for ``bias`` and
    ``long_range_bias``). Nearest-neighbour edges may merge; long-range edges only weigh in
    and constrain, unless ``long_range_merges`` (then ``linkage="abs_max"`` equals the Mutex
    Watershed). With ``fragments`` the nodes are fragments: an edge joins two touching
    fragments with the mean weight and the number of voxel pairs of all offsets between them,
    mergeable if any nearest-neighbour pair touches.

    Returns
    -------
    labels : uint64 array, spatial shape; ``1 .. k`` in raster order of each segment's first
        voxel (or fragment), 0 only where masked (or where ``fragments`` is 0).
    """
    affs, offsets = as_affinities(affs, offsets)
    shape = affs.shape[1:]
    code = _linkage_code(linkage)
    mask = as_mask(mask, shape)
    if fragments is not None:
        fragments = as_labels(fragments, name="fragments", shape=shape)
        graph = signed_region_graph(affs, offsets, fragments, bias=bias, long_range_bias=long_range_bias,
                                    mask=mask)
        uv, w, sizes, local, ids = graph
        merge = local | bool(long_range_merges)
        node_labels = _run(len(ids), uv, w, sizes, merge, code, cannot_link)
        from .agglomeration import relabel

        out = relabel(fragments if mask is None else np.where(mask, fragments, 0), ids, node_labels)
        return out
    biases = channel_biases(offsets, bias, long_range_bias)
    n = int(np.prod(shape))
    index = np.arange(n, dtype=np.int64).reshape(shape)
    keep = np.ones(shape, bool) if mask is None else mask
    us, vs, ws, local = [], [], [], []
    for c, o in enumerate(offsets):
        src, dst = _edge_slices(o, shape)
        ok = keep[src] & keep[dst]
        us.append(index[src][ok])
        vs.append(index[dst][ok])
        ws.append(affs[c][src][ok].astype(np.float64) - biases[c])
        local.append(np.full(int(ok.sum()), long_range_merges or np.abs(o).sum() == 1))
    uv = np.stack([np.concatenate(us), np.concatenate(vs)], axis=1)
    labels = _run(n, uv, np.concatenate(ws), np.ones(len(uv)), np.concatenate(local), code, cannot_link)
    labels = labels.reshape(shape)
    if mask is not None:
        labels, _ = _relabel_masked(labels, mask)
    return labels


def _relabel_masked(labels, mask):
    from .components import relabel_consecutive

    return relabel_consecutive(np.where(mask, labels, 0))


def signed_region_graph(affs, offsets, fragments, *, bias=0.5, long_range_bias=None, mask=None):
    """The signed graph of fragments over all offsets.

    Returns
    -------
    uv_ids : (E, 2) int64
        Node indices (into ``ids``) of touching fragments, ``u < v``.
    weights : (E,) float64
        Mean ``affinity - bias`` over the voxel pairs of every offset between the two.
    sizes : (E,) float64
        Number of those voxel pairs.
    local : (E,) bool
        Whether a nearest-neighbour pair is among them.
    ids : (n,) uint64
        Fragment id of each node (background 0 is not a node).
    """
    affs, offsets = as_affinities(affs, offsets)
    shape = affs.shape[1:]
    fragments = as_labels(fragments, name="fragments", shape=shape)
    mask = as_mask(mask, shape)
    biases = channel_biases(offsets, bias, long_range_bias)
    ids, nodes = np.unique(fragments, return_inverse=True)
    nodes = nodes.reshape(shape).astype(np.int64)
    if ids[0] == 0:
        ids, nodes = ids[1:], nodes - 1  # background becomes -1
    if mask is not None:
        nodes = np.where(mask, nodes, -1)
    keys, ws, locals_ = [], [], []
    n = len(ids)
    for c, o in enumerate(offsets):
        src, dst = _edge_slices(o, shape)
        a, b = nodes[src], nodes[dst]
        ok = (a != b) & (a >= 0) & (b >= 0)
        a, b = a[ok], b[ok]
        keys.append(np.minimum(a, b) * n + np.maximum(a, b))
        ws.append(affs[c][src][ok].astype(np.float64) - biases[c])
        locals_.append(np.full(a.size, np.abs(o).sum() == 1))
    key = np.concatenate(keys)
    pairs, inverse = np.unique(key, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(pairs)).astype(np.float64)
    weights = np.bincount(inverse, weights=np.concatenate(ws), minlength=len(pairs)) / np.maximum(sizes, 1)
    local = np.bincount(inverse, weights=np.concatenate(locals_).astype(np.float64), minlength=len(pairs)) > 0
    uv = np.stack([pairs // n, pairs % n], axis=1).astype(np.int64)
    return uv, weights, sizes, local, ids
