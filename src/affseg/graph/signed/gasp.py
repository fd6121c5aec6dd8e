"""GASP: generalized agglomeration of signed graphs (Bailoni et al. 2022), on grids and graphs."""
from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

from ..._checks import as_affinities, as_array, as_flag, as_labels, as_mask, describe
from ...errors import InputError
from ..core.edges import as_3d, edge_slices
from ..core.relabel import compact_fragments, relabel, relabel_consecutive
from . import _gasp_kernels as k
from ._mutex_kernels import edge_hashes, hash_keys, labels_from_roots
from .inputs import as_edges, as_num_nodes, channel_biases, check_grid_nodes, is_long_range

__all__ = ["LINKAGES", "TIE_ORDERS", "gasp", "gasp_graph", "signed_region_graph"]

LINKAGES = {"mean": k.MEAN, "sum": k.SUM, "max": k.MAX, "min": k.MIN, "abs_max": k.ABS_MAX}

#: Orders of equal priorities (``docs/methods.md``, "GASP and the agglomeration queue: ties"):
#: "agreement" (grids) the edges whose neighbourhood agrees most with their sign first (as the
#: Mutex Watershed's), then a hash of the edge; "hash" (the default) a fixed pseudo-random
#: order; "repulsive-first" / "attractive-first" one sign first (cannot-link ties of
#: ``|interaction|``), then the edge order; "edge-order" the edge order alone (channel then
#: raster on grids, the list order of graphs: affseg 0.1's rule). A merged interaction keeps
#: the rank of its surviving edge.
TIE_ORDERS = ("agreement", "hash", "repulsive-first", "attractive-first", "edge-order")
_SIGN_FIRST = {"repulsive-first": k.SIGN_REPULSIVE, "attractive-first": k.SIGN_ATTRACTIVE}


def _tie_order(ties, *, graph: bool) -> str:
    allowed = [t for t in TIE_ORDERS if not (graph and t == "agreement")]
    if not isinstance(ties, str) or ties not in allowed:
        raise InputError(f"ties must be one of {allowed}, got {describe(ties)}"
                         + (" ('agreement' needs a grid's neighbourhoods: not with fragments or graphs)"
                            if ties == "agreement" else ""))
    return ties


def _linkage_code(linkage: str) -> int:
    if not isinstance(linkage, str) or linkage not in LINKAGES:
        raise InputError(f"unknown linkage {describe(linkage)}; choose one of {sorted(LINKAGES)}")
    return LINKAGES[linkage]


def gasp_graph(
    num_nodes: int,
    uv_ids: ArrayLike,
    weights: ArrayLike,
    *,
    edge_sizes: ArrayLike | None = None,
    mergeable: ArrayLike | None = None,
    linkage: str = "mean",
    cannot_link: bool = False,
    ties: str = "hash",
) -> np.ndarray:
    """GASP on an explicit signed graph.

    Parameters
    ----------
    num_nodes : int
        Nodes are ``0 .. num_nodes - 1``, as for :func:`~affseg.graph.signed.mutex.mutex_watershed_graph`.
    uv_ids : (E, 2) array_like of int
        Edges, as for :func:`~affseg.graph.signed.mutex.mutex_watershed_graph`.
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
        ``abs_max`` is the Mutex Watershed where no two weights tie in magnitude.
    cannot_link : bool
        Visit edges by ``|interaction|``: a repulsive one forbids its two clusters to merge
        later (as the Mutex Watershed does); otherwise stop at the first edge that is not
        attractive.
    ties : {"hash", "repulsive-first", "attractive-first", "edge-order"}
        Order of equal priorities (:data:`TIE_ORDERS`; the edge order is the list order).

    Returns
    -------
    labels : (num_nodes,) uint64
        Cluster of each node, ``1 .. k`` in order of the cluster's first node.

    Raises
    ------
    InputError
        If the graph is invalid (as for :func:`~affseg.graph.signed.mutex.mutex_watershed_graph`),
        ``edge_sizes`` are not positive finite numbers or ``mergeable`` not booleans (one per
        edge), ``linkage``, ``cannot_link`` or ``ties`` are invalid, or there are 2**32 edges or more.
    """
    num_nodes = as_num_nodes(num_nodes)
    code = _linkage_code(linkage)
    ties = _tie_order(ties, graph=True)
    uv, w = as_edges(num_nodes, uv_ids, weights, name="uv_ids")
    sizes = _as_per_edge(edge_sizes, len(w), "edge_sizes", 1.0)
    if (sizes <= 0).any():
        raise InputError(f"edge_sizes must be positive, found {sizes.min()}")
    merge = _as_per_edge(mergeable, len(w), "mergeable", True).astype(bool)
    return _run(num_nodes, uv, w, sizes, merge, code, as_flag(cannot_link, name="cannot_link"), ties)


def _as_per_edge(values, n: int, name: str, default) -> np.ndarray:
    if values is None:
        return np.full(n, default, dtype=np.float64 if isinstance(default, float) else bool)
    arr = as_array(values, name=name)
    if arr.dtype.kind not in ("iuf" if isinstance(default, float) else "biuf"):  # complex, strings, objects
        raise InputError(f"{name} must be {'real numbers' if isinstance(default, float) else 'booleans'}, "
                         f"got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise InputError(f"{name} must have the shape ({n},), got {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return arr.astype(np.float64) if isinstance(default, float) else arr != 0


def graph_tie_ranks(ties: str, m: int) -> np.ndarray:
    """The kernel's tie ranks (int64) of ``m`` edges in list order: their hash for "hash", else 0
    (the sign orders and the edge order need no rank)."""
    return edge_hashes(m).astype(np.int64) if ties == "hash" else np.zeros(m, np.int64)


def _run(num_nodes, uv, w, sizes, merge, code, cannot_link, ties, ranks=None):
    """GASP on validated edges; ``ranks``: the tie ranks of grid edges (hash or agreement)."""
    if len(w) >= 2**32:  # the heap keys hold the edge index in 32 bits
        raise InputError(f"GASP takes fewer than 2**32 edges, got {len(w)}")
    if ranks is None:
        ranks = graph_tie_ranks(ties, len(w))
    parent, _ = k.gasp(num_nodes, np.ascontiguousarray(uv[:, 0]), np.ascontiguousarray(uv[:, 1]),
                       w, sizes, merge, code, bool(cannot_link), ranks, _SIGN_FIRST.get(ties, k.SIGN_NONE))
    return labels_from_roots(parent, np.zeros(1, np.uint64), False, np.ones(1, bool), False, 1)


def gasp(
    affs: ArrayLike,
    offsets: ArrayLike | None = None,
    *,
    bias: ArrayLike = 0.5,
    long_range_bias: float | None = None,
    linkage: str = "mean",
    cannot_link: bool = False,
    long_range_merges: bool = False,
    mask: ArrayLike | None = None,
    fragments: ArrayLike | None = None,
    ties: str = "hash",
) -> np.ndarray:
    """GASP on the voxel grid graph of affinities, or on the region graph of ``fragments``.

    Edge weights are ``affinity - bias`` (see :func:`~affseg.mutex_watershed` for ``bias`` and
    ``long_range_bias``). Nearest-neighbour edges may merge; long-range edges only weigh in
    and constrain, unless ``long_range_merges`` (then ``linkage="abs_max"`` equals the Mutex
    Watershed where no two weights tie in magnitude). With ``fragments`` the nodes are fragments: see :func:`signed_region_graph`.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities in [0, 1]; float64 and float16 are cast to float32, uint8 is divided by 255.
    offsets : (C, ndim) array_like of int, optional
        Short- and long-range offsets; default the nearest neighbours ``-e_d``.
    bias : float or (C,) array_like of float
        Edge weight is ``affinity - bias``; each bias in (0, 1).
    long_range_bias : float, optional
        Bias of the long-range channels; ``bias`` then applies to the nearest-neighbour ones.
    linkage : {"mean", "sum", "max", "min", "abs_max"}
        As for :func:`gasp_graph`.
    cannot_link : bool
        As for :func:`gasp_graph`.
    long_range_merges : bool
        Let long-range edges merge too (with fragments: let fragment pairs without a
        nearest-neighbour contact merge).
    mask : bool array, spatial shape, optional
        Voxels outside (zero) take part in no edge and get 0.
    fragments : (z, y, x) or (y, x) int array, optional
        Over-segmentation (0 = background, not a node) whose fragments are the nodes.
    ties : {"hash", "agreement", "repulsive-first", "attractive-first", "edge-order"}
        Order of equal priorities (saturated or uint8 affinities tie exactly; :data:`TIE_ORDERS`).
        ``agreement`` is for voxels only (fragments have no neighbourhoods).

    Returns
    -------
    labels : uint64 array, spatial shape
        ``1 .. k`` in raster order of each segment's first voxel (with ``fragments``: in order
        of each segment's smallest fragment id); 0 only where masked or ``fragments`` is 0.

    Raises
    ------
    InputError
        If ``affs``, ``offsets``, the biases, ``mask``, ``fragments`` or an option are invalid, or
        (without ``fragments``) the volume has more than 2**31 - 1 voxels or 2**32 edges or more.
    """
    if fragments is None and isinstance(affs, np.ndarray) and affs.ndim > 1:
        check_grid_nodes(affs.shape[1:], method="GASP")  # before the affinities are converted (copied)
    affs, offsets = as_affinities(affs, offsets)
    shape = affs.shape[1:]
    code = _linkage_code(linkage)
    cannot_link = as_flag(cannot_link, name="cannot_link")
    long_range_merges = as_flag(long_range_merges, name="long_range_merges")
    mask = as_mask(mask, shape)
    biases = channel_biases(offsets, bias, long_range_bias)
    on_graph = fragments is not None
    ties = _tie_order(ties, graph=on_graph)
    if on_graph:
        fragments = as_labels(fragments, name="fragments", shape=shape)
        if mask is not None:
            fragments = np.where(mask, fragments, 0)
        uv, w, sizes, local, ids = _signed_region_graph(affs, offsets, fragments, biases)
        node_labels = _run(len(ids), uv, w, sizes, local | bool(long_range_merges), code, cannot_link, ties)
        return relabel(fragments, ids, node_labels)
    n = check_grid_nodes(shape, method="GASP")
    index = np.arange(n, dtype=np.int64).reshape(shape)
    keep = np.ones(shape, bool) if mask is None else mask
    mergeable = ~is_long_range(offsets) | bool(long_range_merges)
    us, vs, ws, local, ids = [], [], [], [], []
    first_id = 0
    for c, o in enumerate(offsets):
        src, dst = edge_slices(o, shape)
        ok = keep[src] & keep[dst]
        if ties in ("hash", "agreement"):  # the edge's position in the list without a mask
            box = index[src].shape
            ids.append(np.arange(first_id, first_id + ok.size, dtype=np.int64).reshape(box)[ok])
            first_id += ok.size
        us.append(index[src][ok])
        vs.append(index[dst][ok])
        ws.append(affs[c][src][ok].astype(np.float64) - biases[c])
        local.append(np.full(int(ok.sum()), mergeable[c]))
    uv = np.stack([np.concatenate(us), np.concatenate(vs)], axis=1)
    ranks = _grid_ranks(affs, offsets, biases, us, ids, mask, ties)
    labels = _run(n, uv, np.concatenate(ws), np.ones(len(uv)), np.concatenate(local), code, cannot_link, ties,
                  ranks)
    labels = labels.reshape(shape)
    if mask is not None:
        labels, _ = relabel_consecutive(np.where(mask, labels, 0))
    return labels


def _grid_ranks(affs, offsets, biases, voxels_per_channel, ids_per_channel, mask, ties):
    """The tie ranks of the grid edges at ``voxels_per_channel`` (flat indices) for "hash" and
    "agreement" (None for the other orders). Their hash is of each edge's position in the edge
    list of the volume without a mask (``ids_per_channel``): a mask then leaves the order of the
    edges it keeps alone, and a 2D volume orders its edges as one section of 3D."""
    if ties not in ("hash", "agreement"):
        return None
    ids = np.concatenate(ids_per_channel)
    if ties == "hash":
        return hash_keys(ids).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum([len(v) for v in voxels_per_channel])]).astype(np.int64)
    affs3, offsets3 = as_3d(affs, offsets)
    flat_mask = np.ones(1, bool) if mask is None else np.ascontiguousarray(mask).reshape(-1)
    return k.agreement_ranks(np.ascontiguousarray(affs3), offsets3, np.asarray(biases, np.float64), starts,
                             np.concatenate(voxels_per_channel), ids, flat_mask, mask is not None)


def signed_region_graph(
    affs: ArrayLike,
    fragments: ArrayLike,
    offsets: ArrayLike | None = None,
    *,
    bias: ArrayLike = 0.5,
    long_range_bias: float | None = None,
    mask: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The signed graph of fragments over all offsets (GASP's and the Mutex Watershed's input).

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities in [0, 1]; float64 and float16 are cast to float32, uint8 is divided by 255.
    fragments : uint64 array, spatial shape
        Fragment ids (any non-negative integers); 0 is background: not a node.
    offsets : (C, ndim) array_like of int, optional
        The offsets of ``affs``; default the nearest neighbours ``-e_d``. The old order
        ``(affs, offsets, fragments)`` is still accepted, with a DeprecationWarning.
    bias : float or (C,) array_like of float
        As for :func:`~affseg.mutex_watershed`.
    long_range_bias : float, optional
        As for :func:`~affseg.mutex_watershed`.
    mask : bool array, spatial shape, optional
        Voxels outside take part in no edge.

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
        Fragment id of each node, increasing.

    Raises
    ------
    InputError
        If ``affs``, ``offsets``, ``fragments``, ``mask`` or the biases are invalid.
    """
    affs = as_array(affs, name="affs")
    if _old_argument_order(affs, fragments, offsets):
        warnings.warn("signed_region_graph(affs, offsets, fragments) is deprecated: pass "
                      "signed_region_graph(affs, fragments, offsets)", DeprecationWarning, stacklevel=2)
        fragments, offsets = offsets, fragments
    affs, offsets = as_affinities(affs, offsets)
    shape = affs.shape[1:]
    fragments = as_labels(fragments, name="fragments", shape=shape)
    mask = as_mask(mask, shape)
    if mask is not None:
        fragments = np.where(mask, fragments, 0)
    return _signed_region_graph(affs, offsets, fragments, channel_biases(offsets, bias, long_range_bias))


def _old_argument_order(affs: np.ndarray, fragments, offsets) -> bool:
    """Whether ``(fragments, offsets)`` were passed in the old order ``(offsets, fragments)``:
    the volume in the offsets' place and something else (offsets or None) in the fragments'."""
    spatial = affs.shape[1:]
    try:
        return np.shape(offsets) == spatial and (fragments is None or np.shape(fragments) != spatial)
    except ValueError:  # ragged nesting: as_affinities / as_labels will say what is wrong
        return False


def _signed_region_graph(affs, offsets, fragments, biases):
    """:func:`signed_region_graph` of validated input (masked fragments already 0)."""
    index, ids = compact_fragments(fragments)  # index k + 1 is node k, 0 is background
    ids = ids[1:]
    n = len(ids)
    nodes3 = index.reshape((1,) * (3 - index.ndim) + index.shape)
    affs3, offsets3 = as_3d(affs, offsets)
    keys, totals, counts, local = k.pair_sums(nodes3, affs3, offsets3, np.asarray(biases, np.float64),
                                              ~is_long_range(offsets), n)
    order = np.argsort(keys)  # by (smaller node, larger node)
    keys, sizes, local = keys[order], counts[order].astype(np.float64), local[order]
    weights = totals[order] / sizes
    lo = (keys - np.uint64(1)) // np.uint64(n + 1)  # pair_key = lo * (n + 1) + hi + 1
    uv = np.stack([lo, keys - np.uint64(1) - lo * np.uint64(n + 1)], axis=1).astype(np.int64)
    return uv, weights, sizes, local, ids
