"""GASP: merge order and result against a brute force for every linkage; MWS equivalence."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import same_partition
from hypothesis import given
from hypothesis import strategies as st

from affseg import (
    extract_fragments,
    gasp,
    gasp_graph,
    mutex_watershed,
    mutex_watershed_graph,
)
from affseg.conventions import affinities_from_labels
from affseg.errors import InputError
from affseg.graph.core.edges import edge_slices
from affseg.graph.signed import _gasp_kernels
from affseg.graph.signed._mutex_kernels import edge_hashes
from affseg.graph.signed.gasp import _SIGN_FIRST as SIGN_FIRST
from affseg.graph.signed.gasp import LINKAGES, TIE_ORDERS, graph_tie_ranks, signed_region_graph

LINKAGE_OF = {
    "mean": lambda w, s: float(np.sum(w * s) / np.sum(s)),
    "sum": lambda w, s: float(np.sum(w * s)),
    "max": lambda w, s: float(np.max(w)),
    "min": lambda w, s: float(np.min(w)),
    "abs_max": lambda w, s: float(w[np.argmax(np.abs(w))]),
}


def brute_force_gasp(n, uv, w, sizes, mergeable, linkage, cannot_link):
    """Recompute every cluster interaction from the original edges at each step."""
    cluster = list(range(n))
    constrained = set()
    merges = []
    while True:
        between = {}
        for k, (u, v) in enumerate(uv):
            a, b = cluster[u], cluster[v]
            if a != b:
                between.setdefault((min(a, b), max(a, b)), []).append(k)
        candidates = []
        for pair, edges in between.items():
            if pair in constrained:
                continue
            value = LINKAGE_OF[linkage](w[edges], sizes[edges])
            local = bool(mergeable[edges].any())
            if cannot_link and (local or value <= 0):
                candidates.append((abs(value), pair, value, local))
            elif not cannot_link and local:
                candidates.append((value, pair, value, local))
        if not candidates:
            break
        _, (a, b), value, local = max(candidates, key=lambda c: c[0])
        if value > 0 and local:
            merges.append(frozenset([frozenset(np.flatnonzero(np.array(cluster) == a)),
                                     frozenset(np.flatnonzero(np.array(cluster) == b))]))
            cluster = [a if c == b else c for c in cluster]
            constrained = {(min(a if x == b else x, a if y == b else y), max(a if x == b else x, a if y == b else y))
                           for x, y in constrained}
        elif cannot_link:
            constrained.add((a, b))
        else:
            break
    return np.array(cluster), merges


def kernel_merges_with_ranks(n, uv, w, sizes, mergeable, linkage, cannot_link, rank, sign_first):
    """The kernel's merges in order, each as the pair of node sets it joined."""
    _, merged = _gasp_kernels.gasp(n, uv[:, 0].copy(), uv[:, 1].copy(), w, sizes, mergeable,
                                   LINKAGES[linkage], cannot_link, rank, sign_first)
    members = {i: {i} for i in range(n)}
    order = []
    for keep, gone in merged:
        order.append(frozenset([frozenset(members[keep]), frozenset(members[gone])]))
        members[keep] |= members.pop(gone)
    return order


def kernel_merges(n, uv, w, sizes, mergeable, linkage, cannot_link, ties="edge-order"):
    return kernel_merges_with_ranks(n, uv, w, sizes, mergeable, linkage, cannot_link,
                                    graph_tie_ranks(ties, len(w)), SIGN_FIRST.get(ties, _gasp_kernels.SIGN_NONE))


def random_graph(rng, n):
    pairs = {tuple(sorted(rng.choice(n, 2, replace=False))) for _ in range(3 * n)}
    uv = np.array(sorted(pairs), dtype=np.int64)
    w = rng.normal(size=len(uv))
    sizes = rng.integers(1, 5, len(uv)).astype(np.float64)
    mergeable = rng.random(len(uv)) < 0.7
    return uv, w, sizes, mergeable


@pytest.mark.parametrize("linkage", sorted(LINKAGES))
@pytest.mark.parametrize("cannot_link", [False, True])
def test_merge_order_and_result_match_brute_force(linkage, cannot_link):
    rng = np.random.default_rng(len(linkage) + 10 * cannot_link)
    for _ in range(25):
        n = int(rng.integers(2, 10))
        uv, w, sizes, mergeable = random_graph(rng, n)
        expected, expected_merges = brute_force_gasp(n, uv, w, sizes, mergeable, linkage, cannot_link)
        labels = gasp_graph(n, uv, w, edge_sizes=sizes, mergeable=mergeable, linkage=linkage,
                            cannot_link=cannot_link)
        assert same_partition(labels, expected)
        assert kernel_merges(n, uv, w, sizes, mergeable, linkage, cannot_link) == expected_merges


GRAPH_TIES = [t for t in TIE_ORDERS if t != "agreement"]


@given(seed=st.integers(0, 2**32 - 1), linkage=st.sampled_from(sorted(LINKAGES)), cannot_link=st.booleans())
def test_tie_orders_agree_where_nothing_ties(seed, linkage, cannot_link):
    # continuous random weights (no equal priorities): every tie order gives the same merges
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    uv, w, sizes, mergeable = random_graph(rng, n)
    expected = kernel_merges(n, uv, w, sizes, mergeable, linkage, cannot_link)
    for ties in GRAPH_TIES:
        assert kernel_merges(n, uv, w, sizes, mergeable, linkage, cannot_link, ties) == expected
        labels = gasp_graph(n, uv, w, edge_sizes=sizes, mergeable=mergeable, linkage=linkage,
                            cannot_link=cannot_link, ties=ties)
        assert same_partition(labels, gasp_graph(n, uv, w, edge_sizes=sizes, mergeable=mergeable,
                                                 linkage=linkage, cannot_link=cannot_link, ties="edge-order"))


@given(seed=st.integers(0, 2**32 - 1), three_d=st.booleans(), cannot_link=st.booleans())
def test_grid_tie_orders_agree_where_nothing_ties(seed, three_d, cannot_link):
    rng = np.random.default_rng(seed)
    offsets = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -3, 0]] if three_d else [[-1, 0], [0, -1], [-3, 1]]
    shape = (3, 7, 8) if three_d else (9, 10)
    affs = rng.random((len(offsets),) + shape).astype(np.float32)
    expected = gasp(affs, offsets, cannot_link=cannot_link, ties="edge-order")
    for ties in TIE_ORDERS:
        np.testing.assert_array_equal(gasp(affs, offsets, cannot_link=cannot_link, ties=ties), expected)


def test_equal_priorities_leave_in_the_tie_order():
    # disjoint edges of one weight: nothing interacts, so the merges follow the tie order alone
    m = 40
    uv = np.arange(2 * m, dtype=np.int64).reshape(m, 2)
    w, sizes, mergeable = np.full(m, 0.5), np.ones(m), np.ones(m, bool)
    order = {"edge-order": np.arange(m), "hash": np.argsort(edge_hashes(m), kind="stable")}
    for ties, edges in order.items():
        expected = [frozenset([frozenset([2 * e]), frozenset([2 * e + 1])]) for e in edges]
        assert kernel_merges(2 * m, uv, w, sizes, mergeable, "mean", False, ties) == expected
    assert not np.array_equal(order["hash"], order["edge-order"])


def test_sign_first_decides_cannot_link_ties():
    # a chain 0 - 1 - 2 (attractive) and a long-range repulsion 0 - 2 of the same |weight|, max
    # linkage: taking the repulsion first keeps 0 and 2 apart, taking attraction first merges all
    uv, w, mergeable = [[0, 1], [1, 2], [0, 2]], [0.5, 0.5, -0.5], [True, True, False]
    expected = {"repulsive-first": [1, 1, 2], "attractive-first": [1, 1, 1], "edge-order": [1, 1, 1]}
    for ties, labels in expected.items():
        got = gasp_graph(3, uv, w, mergeable=mergeable, linkage="max", cannot_link=True, ties=ties)
        np.testing.assert_array_equal(got, labels)


@pytest.mark.parametrize("shape", [(8, 8), (12, 12)])
def test_agreement_leaves_a_saturated_gap_in_a_membrane_for_last(shape):
    # two objects split by a membrane of affinity 0 with one saturated (1) edge across it: by
    # agreement the gap goes after every edge of the same weight, when the mean over the whole
    # membrane keeps the objects apart; in edge order it merges first and drags a part across
    labels = np.ones(shape, np.uint64)
    labels[shape[0] // 2:] = 2
    offsets = [[-1, 0], [0, -1]]
    affs = affinities_from_labels(labels, offsets)[0].astype(np.float32)
    affs[0, shape[0] // 2, 3] = 1
    np.testing.assert_array_equal(gasp(affs, offsets, ties="agreement"), labels)
    assert not same_partition(gasp(affs, offsets, ties="edge-order"), labels)


def test_agreement_ignores_affinities_outside_the_mask():
    rng = np.random.default_rng(5)
    offsets = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -3, 0]]
    affs = rng.choice(np.array([0.0, 0.25, 1.0], np.float32), size=(4, 4, 9, 10))  # many ties
    mask = rng.random((4, 9, 10)) < 0.8
    changed = affs.copy()
    changed[:, ~mask] = 1 - changed[:, ~mask]
    np.testing.assert_array_equal(gasp(affs, offsets, mask=mask, ties="agreement"),
                                  gasp(changed, offsets, mask=mask, ties="agreement"))


def test_2_32_edges_are_refused_before_any_work():
    from affseg.graph.signed import gasp as gasp_module

    # the heap keys hold the edge index in 32 bits; a broadcast view has that length without memory
    with pytest.raises(InputError, match="fewer than 2\\*\\*32 edges, got 4294967296"):
        gasp_module._run(3, None, np.broadcast_to(0.5, (2**32,)), None, None, 0, False, "hash")


def test_method_options_offer_the_tie_orders_of_the_functions():
    from affseg.graph.signed.mutex import TIE_ORDERS as MWS_TIE_ORDERS
    from affseg.methods import get_method

    # the method modules spell the choices out (importing the kernels would load numba)
    assert get_method("gasp").option("ties").choices == TIE_ORDERS
    assert get_method("mws").option("ties").choices == tuple(MWS_TIE_ORDERS)


def test_agreement_needs_a_grid():
    with pytest.raises(InputError, match="'agreement' needs a grid's neighbourhoods"):
        gasp_graph(3, [[0, 1]], [0.5], ties="agreement")
    with pytest.raises(InputError, match="'agreement' needs a grid's neighbourhoods"):
        gasp(np.ones((2, 4, 4), np.float32), fragments=np.ones((4, 4), np.uint64), ties="agreement")


@pytest.mark.parametrize("cannot_link", [False, True])
def test_abs_max_equals_mutex_watershed_on_graphs(cannot_link):
    rng = np.random.default_rng(3)
    for _ in range(30):
        n = int(rng.integers(2, 15))
        uv, w, _, _ = random_graph(rng, n)
        assert same_partition(gasp_graph(n, uv, w, linkage="abs_max", cannot_link=cannot_link),
                              mutex_watershed_graph(n, uv, w))


@given(seed=st.integers(0, 2**32 - 1), three_d=st.booleans(), cannot_link=st.booleans())
def test_abs_max_with_long_range_merges_equals_mutex_watershed_on_grids(seed, three_d, cannot_link):
    rng = np.random.default_rng(seed)
    offsets = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -3, 0]] if three_d else [[-1, 0], [0, -1], [-3, 1]]
    shape = (3, 8, 9) if three_d else (10, 11)
    affs = rng.random((len(offsets),) + shape).astype(np.float32)
    labels = gasp(affs, offsets, linkage="abs_max", cannot_link=cannot_link, long_range_merges=True)
    assert same_partition(labels, mutex_watershed(affs, offsets))


def test_known_answers():
    # merging stops at the first edge that does not attract
    np.testing.assert_array_equal(gasp_graph(3, [[0, 1], [1, 2]], [0.5, -0.2]), [1, 1, 2])
    # a long-range (not mergeable) attraction alone does not merge
    np.testing.assert_array_equal(gasp_graph(3, [[0, 1], [0, 2]], [0.5, 0.9], mergeable=[True, False]),
                                  [1, 1, 2])
    # ... but it weighs in once a local edge links the same clusters: mean(-0.2, 0.9) > 0
    uv, w = [[0, 1], [1, 2], [0, 2]], [0.5, -0.2, 0.9]
    np.testing.assert_array_equal(gasp_graph(3, uv, w, mergeable=[True, True, False]), [1, 1, 1])
    # with min linkage the repulsion wins
    np.testing.assert_array_equal(gasp_graph(3, uv, w, mergeable=[True, True, False], linkage="min"),
                                  [1, 1, 2])


def test_signed_region_graph_by_hand():
    affs = np.array([[[0.9, 0.2], [0.9, 0.4]], [[0.0, 0.8], [0.0, 0.6]]], np.float32)  # (2, 2, 2)
    fragments = np.array([[1, 2], [1, 2]], np.uint64)
    uv, w, sizes, local, ids = signed_region_graph(affs, fragments, [[-1, 0], [0, -1]], bias=0.5)
    np.testing.assert_array_equal(ids, [1, 2])
    np.testing.assert_array_equal(uv, [[0, 1]])
    # the only contacts between 1 and 2 are the x-channel edges at x = 1: 0.8 and 0.6
    np.testing.assert_allclose(w, [0.2])
    np.testing.assert_array_equal(sizes, [2])
    assert local.tolist() == [True]


def test_signed_region_graph_offsets_default_to_nearest_neighbours():
    rng = np.random.default_rng(1)
    affs = rng.random((3, 4, 5, 6)).astype(np.float32)
    fragments = rng.integers(0, 5, (4, 5, 6)).astype(np.uint64)
    default = signed_region_graph(affs, fragments)
    explicit = signed_region_graph(affs, fragments, [[-1, 0, 0], [0, -1, 0], [0, 0, -1]])
    for a, b in zip(default, explicit):
        np.testing.assert_array_equal(a, b)
    assert len(default[0]) > 0


def test_signed_region_graph_old_argument_order_is_deprecated():
    rng = np.random.default_rng(2)
    offsets = [[-1, 0], [0, -1], [0, -3]]
    affs = rng.random((3, 7, 8)).astype(np.float32)
    fragments = rng.integers(1, 6, (7, 8)).astype(np.uint64)
    expected = signed_region_graph(affs, fragments, offsets, bias=0.4)
    with pytest.warns(DeprecationWarning, match=r"signed_region_graph\(affs, offsets, fragments\)"):
        old = signed_region_graph(affs, offsets, fragments, bias=0.4)
    with pytest.warns(DeprecationWarning):
        old_default = signed_region_graph(affs[:2], None, fragments)
    for a, b, c in zip(old, expected, signed_region_graph(affs, fragments=fragments, offsets=offsets, bias=0.4)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(c, b)
    for a, b in zip(old_default, signed_region_graph(affs[:2], fragments)):
        np.testing.assert_array_equal(a, b)


def test_grid_gasp_refuses_more_voxels_than_the_node_limit():
    from affseg.graph.signed.inputs import MAX_NODES, check_grid_nodes

    # regression: GASP on voxels made every voxel a node with no check of the kernels' limit;
    # the check, on shapes alone (no array of that size is made)
    assert check_grid_nodes((64, 256, 256), method="GASP") == 64 * 256 * 256
    assert check_grid_nodes((1, 1, MAX_NODES), method="GASP") == MAX_NODES
    with pytest.raises(InputError, match=r"spatial shape \(1024, 2048, 1024\) has 2147483648 voxels"):
        check_grid_nodes((1024, 2048, 1024), method="GASP")
    with pytest.raises(InputError, match="GASP on voxels"):
        check_grid_nodes((65536, 65536), method="GASP")
    # ... and gasp checks it before converting the affinities (float64 -> float32: a 24 GiB copy)
    huge = np.broadcast_to(np.float64(0.5), (3, 1024, 2048, 1024))
    with pytest.raises(InputError, match=r"spatial shape \(1024, 2048, 1024\) has 2147483648 voxels"):
        gasp(huge)


def numpy_signed_region_graph(affs, offsets, fragments, bias):
    """Reference: every edge between two different non-zero fragments, grouped with numpy."""
    ids = np.unique(fragments[fragments != 0])
    nodes = np.searchsorted(ids, fragments).astype(np.int64)
    nodes[fragments == 0] = -1
    n, keys, ws, local = len(ids), [], [], []
    for c, o in enumerate(np.asarray(offsets)):
        src, dst = edge_slices(o, fragments.shape)
        a, b = nodes[src], nodes[dst]
        ok = (a != b) & (a >= 0) & (b >= 0)
        keys.append(np.minimum(a, b)[ok] * n + np.maximum(a, b)[ok])
        ws.append(affs[c][src][ok].astype(np.float64) - bias)
        local.append(np.full(ok.sum(), np.abs(o).sum() == 1))
    pairs, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(pairs)).astype(np.float64)
    weights = np.bincount(inverse, weights=np.concatenate(ws), minlength=len(pairs)) / sizes
    is_local = np.bincount(inverse, weights=np.concatenate(local), minlength=len(pairs)) > 0
    return np.stack([pairs // n, pairs % n], axis=1), weights, sizes, is_local, ids.astype(np.uint64)


@pytest.mark.parametrize("ndim", [2, 3])
def test_signed_region_graph_equals_numpy_grouping(ndim):
    offsets = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -4, 3], [0, 0, -6]]
    if ndim == 2:
        offsets = [o[1:] for o in offsets if o[0] == 0]
    shape = (5, 30, 33) if ndim == 3 else (60, 66)
    rng = np.random.default_rng(ndim)
    affs = rng.random((len(offsets),) + shape).astype(np.float32)
    # blocky fragments with large ids, background 0 and ids that skip: many pairs (table growth)
    fragments = rng.integers(0, 700, size=tuple(-(-s // 3) for s in shape)).astype(np.uint64) * 10**12
    for axis in range(ndim):
        fragments = np.repeat(fragments, 3, axis=axis)
    fragments = np.ascontiguousarray(fragments[tuple(slice(0, s) for s in shape)])
    got = signed_region_graph(affs, fragments, offsets, bias=0.4)
    expected = numpy_signed_region_graph(affs, offsets, fragments, 0.4)
    assert len(got[0]) > 512
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("linkage", ["mean", "abs_max"])
def test_superpixel_gasp_is_a_union_of_fragments(linkage):
    from affseg.synthetic import make_volume

    offsets = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -5, 0], [0, 0, -5]]
    vol = make_volume((6, 48, 48), seed=2, offsets=offsets)
    fragments = extract_fragments(vol.affs, offsets)
    labels = gasp(vol.affs, offsets, linkage=linkage, fragments=fragments)
    assert labels.min() >= 1
    assert all(len(np.unique(labels[fragments == f])) == 1 for f in np.unique(fragments))
    assert len(np.unique(labels)) < len(np.unique(fragments))


def test_grid_mask():
    affs = np.ones((2, 6, 8), np.float32)
    mask = np.ones((6, 8), bool)
    mask[:, 4] = False
    labels = gasp(affs, [[-1, 0], [0, -1]], mask=mask)
    assert (labels[:, 4] == 0).all()
    np.testing.assert_array_equal(np.unique(labels), [0, 1, 2])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"linkage": "median"}, "unknown linkage"),
        ({"edge_sizes": [1.0, 0.0]}, "edge_sizes must be positive"),
        ({"edge_sizes": [1.0]}, "edge_sizes must have the shape"),
        ({"mergeable": [True]}, "mergeable must have the shape"),
    ],
)
def test_bad_graph_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gasp_graph(3, [[0, 1], [1, 2]], [0.5, -0.5], **kwargs)


def test_bad_grid_input():
    with pytest.raises(ValueError, match="fragments has shape"):
        gasp(np.ones((2, 4, 4), np.float32), fragments=np.ones((3, 3), np.uint64))
    with pytest.raises(ValueError, match=r"biases must lie in \(0, 1\)"):
        gasp(np.ones((2, 4, 4), np.float32), bias=0)


def test_masked_fragments_give_consecutive_labels():
    affs = np.ones((2, 4, 6), np.float32)
    fragments = np.repeat(np.array([[1, 1, 2, 2, 3, 3]], np.uint64), 4, axis=0)
    mask = fragments != 2  # fragment 2 is masked out entirely: 1 and 3 no longer touch
    labels = gasp(affs, [[-1, 0], [0, -1]], fragments=fragments, mask=mask)
    np.testing.assert_array_equal(np.unique(labels), [0, 1, 2])
    assert (labels[~mask] == 0).all()


def test_nan_edge_sizes_are_rejected():
    with pytest.raises(ValueError, match="edge_sizes contains NaN"):
        gasp_graph(3, [[0, 1], [1, 2]], [0.5, -0.5], edge_sizes=[1.0, np.nan])


@pytest.mark.parametrize(
    "num_nodes,w,kwargs,match",
    [
        (3, [1 + 1j], {}, "weights must be real numbers, got dtype complex128"),
        (3, np.array([0.5 + 0j]), {}, "weights must be real numbers, got dtype complex128"),
        (2**40, [0.5], {}, r"num_nodes must be at most 2\*\*31 - 1"),
        (3, [0.5], {"edge_sizes": ["1"]}, "edge_sizes must be real numbers"),
        (3, [0.5], {"edge_sizes": [1j]}, "edge_sizes must be real numbers"),
        (3, [0.5], {"mergeable": ["no"]}, "mergeable must be booleans"),
        (3, [0.5], {"linkage": ["mean"]}, "unknown linkage"),
        (3, [0.5], {"cannot_link": "no"}, "cannot_link must be True or False"),
        (3, [0.5], {"ties": "random"}, "ties must be one of"),
        (3, [0.5], {"ties": None}, "ties must be one of"),
    ],
)
def test_graph_input_of_wrong_type_or_size_is_refused(num_nodes, w, kwargs, match):
    with pytest.raises(InputError, match=match):
        gasp_graph(num_nodes, [[0, 1]], w, **kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"bias": "0.5"}, "bias must be a number"),
        ({"long_range_bias": "0.3"}, "long_range_bias must be a finite number"),
        ({"linkage": None}, "unknown linkage"),
        ({"cannot_link": "yes"}, "cannot_link must be True or False"),
        ({"long_range_merges": 2}, "long_range_merges must be True or False"),
        ({"ties": "random"}, "ties must be one of"),
    ],
)
def test_grid_options_of_wrong_type_are_refused(kwargs, match):
    with pytest.raises(InputError, match=match):
        gasp(np.full((2, 4, 5), 0.6, np.float32), **kwargs)


# ---------------------------------------------------------------------------------- tie orders
# A brute force that honours the tie order. Equal priorities go by the kernel's key: the sign
# (``repulsive-first`` / ``attractive-first``, cannot-link ties of |interaction|), then the tie
# rank of the edge that carries the interaction, then that edge's index. The carrier of a pair
# of clusters is its first (lowest-index) edge at the start; when ``keep`` absorbs ``gone``
# (the endpoint with more neighbouring clusters survives, the carrier's first endpoint on
# equal counts), the pair (keep, x) keeps its carrier and (gone, x) joins it, or (gone, x)'s
# carrier becomes (keep, x)'s when keep had no edge to x. The interactions are recomputed from
# the original edges at every step; only abs_max between +a and -a depends on the folding
# (the carrier's value stays on equal magnitude), so its sign is followed as the kernel folds.



def brute_force_gasp_with_ties(n, uv, w, sizes, mergeable, linkage, cannot_link, rank, sign_first):
    cluster = list(range(n))

    def interactions():
        between = {}
        for k, (u, v) in enumerate(uv):
            if cluster[u] != cluster[v]:
                between.setdefault(frozenset((cluster[u], cluster[v])), []).append(k)
        return between

    carrier = {pair: min(edges) for pair, edges in interactions().items()}
    signed_abs_max = {}
    for pair, edges in interactions().items():
        value = w[edges[0]]
        for f in edges[1:]:
            value = w[f] if abs(w[f]) > abs(value) else value
        signed_abs_max[pair] = value
    constrained, merges = set(), []
    while True:
        between = interactions()
        assert set(between) == set(carrier)
        degree = {}
        for pair in between:
            for c in pair:
                degree[c] = degree.get(c, 0) + 1
        best = None
        for pair, edges in between.items():
            if pair in constrained:
                continue
            value = LINKAGE_OF[linkage](w[edges], sizes[edges])
            if linkage == "abs_max":
                assert abs(signed_abs_max[pair]) == abs(value)
                value = signed_abs_max[pair]
            local = bool(mergeable[edges].any())
            if cannot_link and (local or value <= 0):
                priority = abs(value)
            elif not cannot_link and local:
                priority = value
            else:
                continue
            later = (sign_first == SIGN_FIRST["repulsive-first"] and value > 0) or \
                    (sign_first == SIGN_FIRST["attractive-first"] and value <= 0)
            key = (-priority, later, rank[carrier[pair]], carrier[pair])
            if best is None or key < best[0]:
                best = (key, pair, value, local)
        if best is None:
            break
        _, pair, value, local = best
        if value > 0 and local:
            e = carrier.pop(pair)
            signed_abs_max.pop(pair)
            a, b = cluster[uv[e, 0]], cluster[uv[e, 1]]
            keep, gone = (a, b) if degree[a] >= degree[b] else (b, a)
            merges.append(frozenset([frozenset(i for i in range(n) if cluster[i] == keep),
                                     frozenset(i for i in range(n) if cluster[i] == gone)]))
            for old in [p for p in carrier if gone in p]:
                (x,) = old - {gone}
                new = frozenset((keep, x))
                f, value_f = carrier.pop(old), signed_abs_max.pop(old)
                if new in carrier:
                    if abs(value_f) > abs(signed_abs_max[new]):
                        signed_abs_max[new] = value_f
                else:
                    carrier[new], signed_abs_max[new] = f, value_f
                if old in constrained:
                    constrained.discard(old)
                    constrained.add(new)
            cluster = [keep if c == gone else c for c in cluster]
        elif cannot_link:
            constrained.add(pair)
        else:
            break
    return np.array(cluster), merges


def tied_graph(rng, n, parallel):
    """Edges in both orientations (and parallel ones), weights of 4 values, integer sizes: the
    sums of the mean and sum linkages are exact, so equal interactions tie exactly."""
    if parallel:
        m = int(rng.integers(1, 3 * n + 1))
        u = rng.integers(0, n, m)
        v = (u + rng.integers(1, n, m)) % n
    else:
        pairs = np.array([(a, b) for a in range(n) for b in range(a + 1, n)])
        pairs = pairs[rng.random(len(pairs)) < 0.6] if len(pairs) > 1 else pairs
        flip = rng.random(len(pairs)) < 0.5
        u, v = np.where(flip, pairs[:, 1], pairs[:, 0]), np.where(flip, pairs[:, 0], pairs[:, 1])
        order = rng.permutation(len(u))
        u, v = u[order], v[order]
    uv = np.stack([u, v], axis=1).astype(np.int64)
    w = rng.choice(np.array([-1.0, -0.5, 0.5, 1.0]), len(uv))
    sizes = rng.integers(1, 4, len(uv)).astype(np.float64)
    mergeable = rng.random(len(uv)) < 0.75
    return uv, w, sizes, mergeable


@pytest.mark.parametrize("ties", GRAPH_TIES)
@pytest.mark.parametrize("linkage", sorted(LINKAGES))
@pytest.mark.parametrize("cannot_link", [False, True])
def test_merge_order_with_ties_matches_brute_force(ties, linkage, cannot_link):
    # weights from 4 values: equal priorities everywhere, so the tie order decides the merges
    rng = np.random.default_rng([GRAPH_TIES.index(ties), len(linkage), cannot_link])
    sign_first = SIGN_FIRST.get(ties, _gasp_kernels.SIGN_NONE)
    for i in range(60):
        n = int(rng.integers(2, 9))
        uv, w, sizes, mergeable = tied_graph(rng, n, parallel=i % 3 == 0)
        rank = graph_tie_ranks(ties, len(w))
        expected, expected_merges = brute_force_gasp_with_ties(n, uv, w, sizes, mergeable, linkage, cannot_link,
                                                               rank, sign_first)
        assert kernel_merges_with_ranks(n, uv, w, sizes, mergeable, linkage, cannot_link, rank,
                                        sign_first) == expected_merges
        if i % 3:  # no parallel edges: the public function too
            labels = gasp_graph(n, uv, w, edge_sizes=sizes, mergeable=mergeable, linkage=linkage,
                                cannot_link=cannot_link, ties=ties)
            assert same_partition(labels, expected)


@pytest.mark.parametrize("sign_first", [_gasp_kernels.SIGN_NONE, *SIGN_FIRST.values()])
@pytest.mark.parametrize("cannot_link", [False, True])
def test_largest_tie_ranks_keep_their_order(sign_first, cannot_link):
    # ranks up to the kernel's limit (below 2**30, shifted by 32 bits under the sign bit 62):
    # no overflow into the sign bit and no negative keys
    rng = np.random.default_rng([sign_first, cannot_link])
    for i in range(40):
        n = int(rng.integers(2, 9))
        uv, w, sizes, mergeable = tied_graph(rng, n, parallel=i % 2 == 0)
        rank = rng.integers(2**30 - 4, 2**30, len(w)) if i % 4 < 2 else rng.integers(0, 2**30, len(w))
        _, expected_merges = brute_force_gasp_with_ties(n, uv, w, sizes, mergeable, "mean", cannot_link,
                                                        rank, sign_first)
        assert kernel_merges_with_ranks(n, uv, w, sizes, mergeable, "mean", cannot_link, rank,
                                        sign_first) == expected_merges


def test_a_merged_interaction_carries_the_rank_of_its_surviving_edge():
    # 0 - 1 merges first (weight 1); then {0, 1} - 2 and 3 - 4 tie at 0.5. Node 0 has more
    # neighbours than 1, so it survives and the interaction {0, 1} - 2 keeps the rank of edge
    # 0 - 2 (edge 1 - 2 folds into it): 3 - 4 (rank 3) goes second exactly when 0 - 2's rank is
    # above 3, whatever the rank of 1 - 2
    uv = np.array([[0, 1], [0, 2], [1, 2], [3, 4], [0, 5]], np.int64)
    w, sizes, mergeable = np.array([1.0, 0.5, 0.5, 0.5, -1.0]), np.ones(5), np.ones(5, bool)
    left, right = frozenset([frozenset([0, 1]), frozenset([2])]), frozenset([frozenset([3]), frozenset([4])])
    for rank_02, rank_12, second in [(0, 5, left), (5, 0, right), (2, 9, left), (9, 2, right)]:
        rank = np.array([0, rank_02, rank_12, 3, 0], np.int64)
        merges = kernel_merges_with_ranks(6, uv, w, sizes, mergeable, "mean", False, rank, _gasp_kernels.SIGN_NONE)
        assert merges[0] == frozenset([frozenset([0]), frozenset([1])]) and merges[1] == second
        assert merges == brute_force_gasp_with_ties(6, uv, w, sizes, mergeable, "mean", False, rank,
                                                    _gasp_kernels.SIGN_NONE)[1]


def grid_edges(shape, offsets, mask):
    """The grid edges as GASP lists them: channel, then raster order of the source voxel ``u``
    (partner ``u + offset`` inside the volume, both ends inside the mask)."""
    n = int(np.prod(shape))
    flat = np.arange(n).reshape(shape)
    edges = []
    for c, o in enumerate(offsets):
        for u in np.ndindex(*shape):
            v = tuple(np.add(u, o))
            if all(0 <= a < s for a, s in zip(v, shape)) and (mask is None or (mask[u] and mask[v])):
                edges.append((c, u, flat[u], flat[v]))
    return edges


def agreement_by_definition(affs, offsets, bias, c, u, mask):
    """The mean weight of channel ``c`` over ``u`` +- 1 along the axes where its offset is 0 (both
    ends inside the volume and mask), negated for a repulsive edge."""
    shape = affs.shape[1:]
    total, count = 0.0, 0
    for d in np.ndindex(*(3 if o == 0 else 1 for o in offsets[c])):
        s = tuple(a + (b - 1 if o == 0 else 0) for a, b, o in zip(u, d, offsets[c]))
        t = tuple(np.add(s, offsets[c]))
        if all(0 <= a < n and 0 <= b < n for a, b, n in zip(s, t, shape)) and \
                (mask is None or (mask[s] and mask[t])):
            total += float(affs[(c, *s)])
            count += 1
    mean = total / count - bias[c]
    return mean if float(affs[(c, *u)]) - bias[c] > 0 else -mean


@pytest.mark.parametrize("three_d", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_grid_agreement_ranks_are_those_of_each_edge_source_voxel(monkeypatch, three_d, masked):
    # the ranks gasp hands to the kernel: per edge (in GASP's edge order) the agreement at its
    # source voxel u of the flattened (z, y, x) volume, as the Mutex Watershed computes it
    from affseg.graph.signed import _mutex_kernels
    from affseg.graph.signed import gasp as gasp_module
    from affseg.graph.signed.inputs import channel_biases

    rng = np.random.default_rng([three_d, masked])
    offsets = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -3, 1]] if three_d else [[-1, 0], [0, -1], [-3, 1]]
    shape = (3, 5, 6) if three_d else (7, 8)
    affs = rng.choice(np.array([0.0, 0.25, 0.5, 0.75, 1.0], np.float32), size=(len(offsets),) + shape)
    mask = rng.random(shape) < 0.8 if masked else None
    biases = channel_biases(np.array(offsets), 0.4, 0.6)
    seen = {}
    kernel = gasp_module.k.gasp

    def spy(*args):
        seen["args"] = args
        return kernel(*args)

    monkeypatch.setattr(gasp_module.k, "gasp", spy)
    gasp(affs, offsets, bias=0.4, long_range_bias=0.6, mask=mask, ties="agreement")
    _, eu, ev, w, _, _, _, _, rank, _ = seen["args"]
    edges, unmasked = grid_edges(shape, offsets, mask), grid_edges(shape, offsets, None)
    assert len(rank) == len(edges)
    affs3 = affs.reshape((len(offsets),) + (1,) * (3 - len(shape)) + shape)
    offsets3 = np.array([[0] * (3 - len(shape)) + o for o in offsets], np.int64)
    flat_mask = np.ones(1, bool) if mask is None else mask.reshape(-1)
    for e, (c, u, fu, fv) in enumerate(edges):
        assert (eu[e], ev[e]) == (fu, fv)
        assert w[e] == np.float64(affs[(c, *u)]) - biases[c]
        agree = agreement_by_definition(affs, offsets, biases, c, u, mask)
        assert agree == _mutex_kernels.agreement(affs3, offsets3, biases, c, fu, flat_mask, mask is not None)
        bucket = min(max(int((agree + 1.0) * (_mutex_kernels.TIE_BUCKETS // 2)), 0), _mutex_kernels.TIE_BUCKETS - 1)
        assert rank[e] >> _mutex_kernels.TIE_DIGIT == _mutex_kernels.TIE_BUCKETS - 1 - bucket
        # the hash part: of the edge's position in the list without a mask
        edge_id = unmasked.index((c, u, fu, fv))
        assert rank[e] & (_mutex_kernels.TIE_BUCKETS - 1) == \
            edge_hashes(edge_id + 1)[edge_id] & np.uint64(_mutex_kernels.TIE_BUCKETS - 1)
    gasp(affs, offsets, bias=0.4, long_range_bias=0.6, mask=mask, ties="hash")
    hashes = edge_hashes(len(unmasked)).astype(np.int64)
    np.testing.assert_array_equal(seen["args"][8], [hashes[unmasked.index(edge)] for edge in edges])


@pytest.mark.parametrize("ties", TIE_ORDERS)
@pytest.mark.parametrize("cannot_link", [False, True])
def test_grid_gasp_with_ties_matches_brute_force(ties, cannot_link):
    # saturated and quantised affinities on small grids (2D and 3D, with a mask): the partition
    # of the brute force on the same edge list with the same ranks
    from affseg.graph.signed._mutex_kernels import TIE_BUCKETS, TIE_DIGIT
    from affseg.graph.signed.inputs import channel_biases, is_long_range

    rng = np.random.default_rng([TIE_ORDERS.index(ties), cannot_link])
    for three_d in (False, True):
        offsets = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -2, 0], [0, 0, -2]] if three_d else \
            [[-1, 0], [0, -1], [-2, 0], [-1, 2]]
        shape = (2, 3, 4) if three_d else (4, 5)
        for _ in range(4):
            affs = rng.choice(np.array([0.0, 0.25, 0.75, 1.0], np.float32), size=(len(offsets),) + shape)
            mask = rng.random(shape) < 0.85
            biases = channel_biases(np.array(offsets), 0.5)
            edges = grid_edges(shape, offsets, mask)
            uv = np.array([(fu, fv) for _, _, fu, fv in edges], np.int64)
            w = np.array([np.float64(affs[(c, *u)]) - biases[c] for c, u, _, _ in edges])
            mergeable = ~is_long_range(np.array(offsets))[[c for c, _, _, _ in edges]]
            n = int(np.prod(shape))
            unmasked = grid_edges(shape, offsets, None)
            hashes = edge_hashes(len(unmasked))  # of the edges' positions in the list without a mask
            if ties == "agreement":
                rank = np.array([
                    (TIE_BUCKETS - 1 - min(max(int((agreement_by_definition(affs, offsets, biases, c, u, mask) + 1.0)
                                                   * (TIE_BUCKETS // 2)), 0), TIE_BUCKETS - 1)) << TIE_DIGIT
                    | int(hashes[unmasked.index(edge)] & np.uint64(TIE_BUCKETS - 1))
                    for edge in edges for c, u, _, _ in [edge]], np.int64)
            elif ties == "hash":
                rank = np.array([hashes[unmasked.index(edge)] for edge in edges], np.int64)
            else:
                rank = np.zeros(len(edges), np.int64)
            expected, _ = brute_force_gasp_with_ties(n, uv, w, np.ones(len(w)), mergeable, "mean",
                                                     cannot_link, rank, SIGN_FIRST.get(ties, _gasp_kernels.SIGN_NONE))
            labels = gasp(affs, offsets, cannot_link=cannot_link, mask=mask, ties=ties)
            assert same_partition(labels[mask], expected.reshape(shape)[mask])
            assert (labels[~mask] == 0).all()


@pytest.mark.parametrize("ties", TIE_ORDERS)
@pytest.mark.parametrize("cannot_link", [False, True])
def test_masking_one_part_leaves_the_segmentation_of_another_alone(ties, cannot_link):
    # regression: the hash (and the hash part of agreement) was of the edge's position in the
    # list of unmasked edges, so masking one voxel moved the tie order of every later edge and
    # changed the segmentation of parts of the volume that no edge joins to it
    rng = np.random.default_rng([TIE_ORDERS.index(ties), cannot_link])
    offsets = [[-1, 0], [0, -1], [-2, 0], [0, -2]]
    for _ in range(10):
        affs = rng.choice(np.array([0.0, 0.25, 0.75, 1.0], np.float32), size=(4, 12, 8))
        mask = np.ones((12, 8), bool)
        mask[5] = False  # rows 0 - 4 and 6 - 11: no edge between them
        less = mask.copy()
        less[0, 0] = False
        top, bottom = gasp(affs, offsets, mask=mask, cannot_link=cannot_link, ties=ties), \
            gasp(affs, offsets, mask=less, cannot_link=cannot_link, ties=ties)
        assert same_partition(top[6:], bottom[6:])
