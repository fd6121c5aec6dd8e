"""Mutex Watershed: parity with mwatershed 0.5.4, invariants, seeds, masks, strides, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import same_partition
from hypothesis import given
from hypothesis import strategies as st

from affseg import mutex_watershed, mutex_watershed_graph
from affseg.conventions import affinities_from_labels
from affseg.errors import InputError
from affseg.graph.core.edges import edge_slices, flat_steps
from affseg.graph.signed.mutex import signed_weights

OFFSETS_2D = [[-1, 0], [0, -1], [-3, 0], [0, -3], [-2, 2]]
OFFSETS_3D = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -4, 0], [0, 0, -4]]


def mwatershed_partition(weights: np.ndarray, offsets, strides=None, seeds=None) -> np.ndarray:
    """mwatershed.agglom's partition: it labels voxels without any (kept) attractive edge 0
    (each is a segment of its own), so those get unique negative ids here."""
    import mwatershed

    offsets = [list(map(int, o)) for o in offsets]
    out = mwatershed.agglom(weights, offsets, seeds=seeds, strides=strides).astype(np.int64)
    has_attractive = np.zeros(out.shape, bool)
    for c, o in enumerate(offsets):
        step = strides[c] if strides is not None else [1] * len(o)
        src, dst = edge_slices(np.array(o), out.shape)
        src = tuple(slice(s.start, s.stop, k) for s, k in zip(src, step))
        dst = tuple(slice(s.start, s.stop, k) for s, k in zip(dst, step))
        positive = weights[c][src] > 0
        has_attractive[src] |= positive
        has_attractive[dst] |= positive
    single = (out == 0) & ~has_attractive
    out[single] = -1 - np.arange(int(single.sum()))
    return out


def brute_force_mws(num_nodes, edges):
    """Textbook Mutex Watershed: sets of nodes and sets of mutex pairs, strongest edge first."""
    cluster = list(range(num_nodes))
    mutex = set()
    for w, u, v in sorted(edges, key=lambda e: -abs(e[0])):
        a, b = cluster[u], cluster[v]
        if a == b or (min(a, b), max(a, b)) in mutex:
            continue
        if w > 0:
            cluster = [a if c == b else c for c in cluster]
            mutex = {(min(a if x == b else x, a if y == b else y), max(a if x == b else x, a if y == b else y))
                     for x, y in mutex}
        else:
            mutex.add((min(a, b), max(a, b)))
    return np.array(cluster)


@pytest.mark.parametrize("shape,offsets", [((24, 31), OFFSETS_2D), ((7, 18, 21), OFFSETS_3D)])
@pytest.mark.parametrize("seed", range(4))
def test_same_partition_as_mwatershed(shape, offsets, seed):
    rng = np.random.default_rng(seed)
    affs = rng.random((len(offsets),) + shape).astype(np.float32)
    ours = mutex_watershed(affs, offsets, bias=0.5)
    reference = mwatershed_partition(signed_weights(affs, offsets, bias=0.5), offsets)
    assert same_partition(ours, reference)


def test_parity_with_separate_long_range_bias_on_synthetic_data():
    from affseg.synthetic import make_volume

    vol = make_volume((8, 40, 40), seed=3, offsets=OFFSETS_3D)
    # break exact ties of clipped affinities, which mwatershed orders arbitrarily
    jitter = np.random.default_rng(0).uniform(0, 1e-3, vol.affs.shape)
    affs = (vol.affs * 0.998 + jitter).astype(np.float32)
    ours = mutex_watershed(affs, OFFSETS_3D, bias=0.4, long_range_bias=0.7)
    weights = signed_weights(affs, OFFSETS_3D, bias=0.4, long_range_bias=0.7)
    assert same_partition(ours, mwatershed_partition(weights, OFFSETS_3D))


def test_matches_brute_force_on_graphs():
    rng = np.random.default_rng(5)
    for _ in range(30):
        n = int(rng.integers(2, 12))
        pairs = {tuple(sorted(rng.choice(n, 2, replace=False))) for _ in range(3 * n)}
        uv = np.array(sorted(pairs))
        w = rng.normal(size=len(uv))
        ours = mutex_watershed_graph(n, uv, w)
        assert same_partition(ours, brute_force_mws(n, list(zip(w, uv[:, 0], uv[:, 1]))))


def grid_as_graph(affs: np.ndarray, offsets, bias: float):
    """The grid's edges listed in channel then raster order (the grid's tie order), with their
    float64 signed weights."""
    shape = affs.shape[1:]
    index = np.arange(int(np.prod(shape))).reshape(shape)
    uv, w = [], []
    for c, o in enumerate(offsets):
        src, dst = edge_slices(np.array(o), shape)
        uv.append(np.stack([index[src].ravel(), index[dst].ravel()], axis=1))
        w.append(affs[c][src].astype(np.float64).ravel() - bias)
    return np.concatenate(uv), np.concatenate(w)


@pytest.mark.parametrize("ties", ["attractive-first", "repulsive-first"])  # "mixed": see the next test
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape", [(4, 5), (13, 14)])  # tie runs under and over 32 edges
def test_grid_orders_float32_ties_exactly_as_the_graph(seed, shape, ties):
    # |w| of all these round to 0.5 in float32 but differ in float64: stronger, exactly 0.5 and
    # weaker, attractive and repulsive, so the grid's float32 sort must be refined exactly
    bias = 0.5 + 2.0**-40
    pool = np.array([0.0, 2.0**-40, 2.0**-41, 2.0**-39, 2.0**-30, 1.0, 1 - 2.0**-24, 0.3, 0.8], np.float32)
    rng = np.random.default_rng(seed)
    offsets = OFFSETS_2D
    affs = rng.choice(pool, size=(len(offsets),) + shape).astype(np.float32)
    uv, w = grid_as_graph(affs, offsets, bias)
    assert len(np.unique(np.float32(np.abs(w[np.abs(np.abs(w) - 0.5) < 1e-8])))) == 1
    grid = mutex_watershed(affs, offsets, bias=bias, ties=ties)
    graph = mutex_watershed_graph(affs[0].size, uv, w, ties=ties).reshape(grid.shape)
    np.testing.assert_array_equal(grid, graph)


def edge_hash(edge: np.ndarray) -> np.ndarray:
    """The low 11 bits of splitmix64 of the edge id (numpy, wrapping)."""
    x = edge.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (x ^ (x >> np.uint64(31))) & np.uint64(2047)


def hash_key(edge: np.ndarray) -> np.ndarray:
    """The "hash" tie key: two 11-bit edge hashes."""
    return edge_hash(edge.astype(np.uint64) ^ np.uint64(0x5BD1E995)) << np.uint64(11) | edge_hash(edge)


def agreement_key(affs: np.ndarray, offsets: np.ndarray, bias: float, edge: np.ndarray) -> np.ndarray:
    """The "agreement" tie key by brute force: the mean weight of the channel's edges (both ends
    inside) at +-1 along the axes where the offset is 0, signed by the edge, in 2048 levels
    (stronger first), above the edge hash."""
    _, nz, ny, nx = affs.shape
    n = nz * ny * nx
    keys = []
    for e in edge.tolist():
        c, i = divmod(e, n)
        z, y, x = np.unravel_index(i, (nz, ny, nx))
        values = []
        for zz, yy, xx in np.ndindex(3, 3, 3):
            q = np.array([z + zz - 1, y + yy - 1, x + xx - 1])
            beside = ((q == (z, y, x)) | (offsets[c] == 0)).all()  # moves only along the axes the offset is 0 on
            if beside and ((q >= 0) & (q < (nz, ny, nx)) & (q + offsets[c] >= 0) & (q + offsets[c] < (nz, ny, nx))).all():
                values.append(float(affs[(c, *q)]))
        mean = np.mean(values) - bias
        agree = mean if float(affs[c, z, y, x]) - bias > 0 else -mean
        keys.append(2047 - min(max(int((agree + 1.0) * 1024), 0), 2047))
    return np.array(keys, np.uint64) << np.uint64(11) | edge_hash(edge)


@pytest.mark.parametrize("ties", ["agreement", "hash", "repulsive-first", "attractive-first"])
@pytest.mark.parametrize("size", [4, 40, 400])  # tie runs under and over 32 edges, and long ones
def test_grid_edge_order_is_exact_strength_then_tie_order_then_channel_and_voxel(size, ties):
    from affseg.graph.signed import _mutex_kernels as kernels
    from affseg.graph.signed.mutex import TIE_ORDERS

    bias = 0.5 + 2.0**-40
    rng = np.random.default_rng(size)
    # 0.5: |w| = 2**-40, below the key's smallest binade (key 0, inexact)
    pool = np.array([0.0, 2.0**-40, 2.0**-41, 2.0**-39, 2.0**-30, 1.0, 0.3, 0.8, 0.5], np.float32)
    affs = rng.choice(pool, size=(2, 1, size, 3)).astype(np.float32)
    affs[:, :, ::2] = rng.random((2, 1, (size + 1) // 2, 3))  # many distinct values too
    offsets = np.array([[0, 0, -1], [0, -1, 0]])
    packed, _, n_repulsive = kernels.grid_edges(affs, offsets, np.full(2, bias), np.ones((2, 3), np.int64),
                                                np.ones(2), 0, np.ones((1, 1, 1), bool), False, TIE_ORDERS[ties])
    # runs of equal sort keys, by edge id: the agreement orders only runs of more than 32 edges
    key = packed >> np.uint64(kernels.KEY_SHIFT + 1)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    run_length = dict(zip((packed & np.uint64(0x7FFFFFFF)).astype(np.int64).tolist(), counts[inverse].tolist()))
    kernels.exact_order(packed, affs, np.full(2, bias), offsets=offsets,
                        ties=TIE_ORDERS[ties])
    entries = kernels.compact(packed).copy()
    edge = (entries & np.uint32(0x7FFFFFFF)).astype(np.int64)
    w = affs.reshape(-1)[edge].astype(np.float64) - bias
    if ties == "agreement":  # runs of more than 32 tied edges; shorter ones by the hash
        long_run = np.array([run_length[e] > 32 for e in edge.tolist()])
        tie = np.where(long_run, agreement_key(affs, offsets, bias, edge), hash_key(edge))
    else:
        tie = {"hash": hash_key(edge), "repulsive-first": w > 0, "attractive-first": w <= 0}[ties]
    expected = np.lexsort((edge, tie, -np.abs(w)))  # strongest, the tie order, then c * n + i
    np.testing.assert_array_equal(edge, edge[expected])
    assert n_repulsive == np.count_nonzero(w <= 0)
    np.testing.assert_array_equal(entries >> np.uint32(31), w <= 0)


@pytest.mark.parametrize("shape", [(5, 6, 7), (1, 8, 9), (3, 1, 6), (2, 2, 2)])
@pytest.mark.parametrize("masked", [False, True])
def test_channel_agreement_levels_equal_each_edges_agreement(shape, masked):
    # the raster-order levels of the agreement tie order (row by row where the window is inside)
    # against agreement() of each edge: the same bits, borders, long-range and diagonal offsets
    from affseg.graph.core.edges import edge_bounds
    from affseg.graph.signed import _mutex_kernels as kernels

    rng = np.random.default_rng(sum(shape) + masked)
    offsets = np.array([[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -3, 0], [0, 0, -4], [0, -1, -1],
                        [-1, 1, -1], [1, 0, 0]], np.int64)
    affs = rng.choice(np.array([0.0, 1.0, 0.25, 0.5], np.float32), size=(len(offsets), *shape))
    affs[:, ::2] = rng.random((len(offsets), (shape[0] + 1) // 2, *shape[1:]))
    bias = rng.random(len(offsets))
    mask = rng.random(shape) < 0.8 if masked else np.ones((1, 1, 1), bool)
    flat_mask = mask.reshape(-1)
    n = int(np.prod(shape))
    for c, offset in enumerate(offsets):
        level = np.full(n, 9999, np.uint16)
        kernels.channel_agreement_levels(affs, offsets, bias, c, flat_mask, masked, level)
        z0, z1, y0, y1, x0, x1 = (max(b, 0) for b in edge_bounds(*shape, *offset.tolist()))  # (no wrap-around)
        inside = np.zeros(shape, bool)
        inside[z0:z1, y0:y1, x0:x1] = True
        for i in np.flatnonzero(inside):
            agree = kernels.agreement(affs, offsets, bias, c, i, flat_mask, masked)
            assert level[i] == kernels.agreement_key(agree, 0) >> np.uint64(11), (c, i)
        assert (level[~inside.reshape(-1)] == 9999).all()  # voxels without the edge are left alone


@pytest.mark.parametrize("lengths", [[1, 33, 32, 1, 34, 65, 2, 33], [33], [32], [40, 1, 1, 1, 100], [5] * 30 + [33]])
def test_agreement_tie_keys_go_to_exactly_the_runs_over_32(lengths):
    # the long runs are found by probing the sorted keys: every run of 33 or more entries, at any
    # place, gets its entries' agreement keys; shorter runs are left alone
    from affseg.graph.signed import _mutex_kernels as kernels

    n = sum(lengths)
    rng = np.random.default_rng(n)
    affs = rng.random((2, 1, 1, n)).astype(np.float32)
    offsets = np.array([[0, 0, -1], [0, 0, -2]], np.int64)
    bias = np.array([0.5, 0.4])
    run = np.repeat(np.arange(len(lengths)), lengths)
    # edges of both channels (x >= 2: both exist), in edge order within a run as the sort leaves them
    edge = rng.integers(0, 2, n) * n + rng.integers(2, n, n)
    edge = np.concatenate([np.sort(edge[run == r]) for r in range(len(lengths))])
    packed = (run.astype(np.uint64) << np.uint64(kernels.KEY_SHIFT + 1)) | edge.astype(np.uint64)
    packed |= (rng.random(n) < 0.5).astype(np.uint64) << np.uint64(31)  # repulsive bits do not split runs
    other = np.full(n, 2**64 - 1, np.uint64)
    kernels._agreement_tie_keys(packed, other, affs, offsets, bias, np.ones(1, bool), False)
    long_run = np.repeat(np.array(lengths) > 32, lengths)
    assert (other[~long_run] == 2**64 - 1).all()
    for j in np.flatnonzero(long_run):
        c, i = divmod(int(edge[j]), n)
        agree = kernels.agreement(affs, offsets, bias, c, i, np.ones(1, bool), False)
        assert other[j] == kernels.agreement_key(agree, int(edge[j]))


def test_agreement_ties_refuse_runs_out_of_edge_order():
    # entries sorted with attractive-first ties hold, within one key, the attractive edges of every
    # channel before the repulsive ones: the agreement's pass per channel would misread them
    from affseg.graph.signed import _mutex_kernels as kernels

    affs = np.zeros((2, 1, 8, 8), np.float32)
    affs[:, :, :, ::2] = 1.0  # |w| = 0.5 everywhere, both signs in both channels
    offsets = np.array([[0, 0, -1], [0, -1, 0]])
    bias = np.full(2, 0.5)
    packed, _, _ = kernels.grid_edges(affs, offsets, bias, np.ones((2, 3), np.int64), np.ones(2), 0,
                                      np.ones((1, 1, 1), bool), False, kernels.TIES_ATTRACTIVE)
    with pytest.raises(ValueError, match="edge id order"):
        kernels.exact_order(packed, affs, bias, offsets=offsets, ties=kernels.TIES_AGREEMENT)


@given(st.floats(0, 1, exclude_max=True), st.floats(0, 1, exclude_max=True))
def test_sort_key_is_monotone_and_exact_where_not_flagged(a, b):
    from affseg.graph.signed import _mutex_kernels as kernels

    def key_value_inexact(strength):
        entry = int(kernels._entry(-strength, 0, kernels.TIES_ATTRACTIVE))  # repulsive: w <= 0 for every strength
        rank = entry >> (kernels.KEY_SHIFT + 1)
        return rank, kernels._key_value(np.uint64(entry)), bool(entry >> 32 & 1)

    (rank_a, value_a, inexact_a), (rank_b, value_b, _) = key_value_inexact(a), key_value_inexact(b)
    assert value_a <= a and (value_a == a) != inexact_a
    if a < b:
        assert rank_a >= rank_b  # weaker: later or tied
    if value_a < value_b:
        assert a < b and rank_a > rank_b


def test_graph_with_separate_mutex_edges_equals_signed_weights():
    rng = np.random.default_rng(2)
    uv = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [0, 4], [1, 3]])
    w = rng.normal(size=len(uv))
    signed = mutex_watershed_graph(5, uv, w)
    split = mutex_watershed_graph(5, uv[w > 0], w[w > 0], mutex_uv_ids=uv[w <= 0], mutex_weights=-w[w <= 0])
    np.testing.assert_array_equal(signed, split)


def test_known_answer_mutex_blocks_a_weaker_merge():
    # 0-1 attract strongly, 1-2 attract, 0-2 repel more strongly than 1-2 attracts: {0, 1}, {2}
    labels = mutex_watershed_graph(3, [[0, 1], [1, 2], [0, 2]], [0.9, 0.3, -0.6])
    np.testing.assert_array_equal(labels, [1, 1, 2])


def test_labels_are_consecutive_in_raster_order():
    affs = np.random.default_rng(0).random((5, 15, 16)).astype(np.float32)
    labels = mutex_watershed(affs, OFFSETS_2D)
    _, first = np.unique(labels, return_index=True)
    np.testing.assert_array_equal(labels.ravel()[np.sort(first)], np.arange(1, labels.max() + 1))
    assert labels.dtype == np.uint64 and labels.min() == 1


def attractive_components(labels, affs, offsets, bias):
    """Connected components of each segment through attractive edges inside it."""
    from affseg.graph.malis.components import connected_components

    inside = np.stack([np.zeros(labels.shape, bool)] * len(offsets))
    for c, o in enumerate(np.asarray(offsets)):
        src, dst = edge_slices(o, labels.shape)
        inside[c][src] = (labels[src] == labels[dst]) & (affs[c][src] > bias)
    return connected_components(inside.astype(np.float32), offsets, threshold=0.5)


@given(seed=st.integers(0, 2**32 - 1), three_d=st.booleans())
def test_segments_connected_through_attractive_edges_and_order_free(seed, three_d):
    rng = np.random.default_rng(seed)
    offsets = OFFSETS_3D if three_d else OFFSETS_2D
    shape = (4, 9, 10) if three_d else (11, 12)
    affs = rng.random((len(offsets),) + shape).astype(np.float32)
    labels = mutex_watershed(affs, offsets)
    assert same_partition(labels, attractive_components(labels, affs, offsets, 0.5))
    fortran = np.asfortranarray(affs)
    np.testing.assert_array_equal(mutex_watershed(fortran, offsets), labels)
    np.testing.assert_array_equal(mutex_watershed(affs.astype(np.float64), offsets), labels)


@given(seed=st.integers(0, 2**32 - 1), n_seeds=st.integers(2, 6))
def test_seeds_never_join_and_keep_their_ids(seed, n_seeds):
    rng = np.random.default_rng(seed)
    affs = rng.uniform(0.3, 1.0, (5, 14, 15)).astype(np.float32)  # mostly attractive
    seeds = np.zeros((14, 15), np.uint32)
    spots = rng.choice(14 * 15, n_seeds, replace=False)
    ids = rng.choice(np.arange(1, 1000), n_seeds, replace=False)
    seeds.ravel()[spots] = ids
    labels = mutex_watershed(affs, OFFSETS_2D, seeds=seeds)
    np.testing.assert_array_equal(labels.ravel()[spots], ids)
    unseeded = labels[~np.isin(labels, ids)]
    assert unseeded.size == 0 or unseeded.min() == ids.max() + 1


def test_seeds_match_mwatershed():
    import mwatershed

    rng = np.random.default_rng(4)
    affs = rng.random((5, 20, 22)).astype(np.float32)
    seeds = np.zeros((20, 22), np.uint64)
    seeds[2, 3] = seeds[15, 18] = 7  # one seed id in two places: one segment
    seeds[10, 10] = 3
    ours = mutex_watershed(affs, OFFSETS_2D, seeds=seeds)
    ref = mwatershed.agglom(signed_weights(affs, OFFSETS_2D), OFFSETS_2D, seeds=seeds)
    assert ours[2, 3] == ours[15, 18] == 7 and ours[10, 10] == 3
    for seed_id in (3, 7):
        np.testing.assert_array_equal(ours == seed_id, ref == seed_id)


def test_mask_gives_zero_and_cuts_edges():
    affs = np.ones((2, 10, 12), np.float32)
    mask = np.ones((10, 12), bool)
    mask[:, 6] = False  # a masked column splits the image in two
    labels = mutex_watershed(affs, OFFSETS_2D[:2], mask=mask)
    assert (labels[:, 6] == 0).all() and labels[mask].min() == 1
    np.testing.assert_array_equal(np.unique(labels), [0, 1, 2])


def test_strides_follow_mwatershed():
    rng = np.random.default_rng(6)
    affs = rng.random((5, 16, 17)).astype(np.float32)
    strides = [[1, 1], [1, 1], [2, 2], [2, 2], [3, 1]]
    ours = mutex_watershed(affs, OFFSETS_2D, strides=strides)
    reference = mwatershed_partition(signed_weights(affs, OFFSETS_2D), OFFSETS_2D, strides=strides)
    assert same_partition(ours, reference)
    assert not same_partition(ours, mutex_watershed(affs, OFFSETS_2D))


def test_long_range_strides_shorthand_and_randomized_are_deterministic():
    affs = np.random.default_rng(7).random((5, 16, 17)).astype(np.float32)
    full = [[1, 1], [1, 1], [2, 2], [2, 2], [2, 2]]
    np.testing.assert_array_equal(mutex_watershed(affs, OFFSETS_2D, strides=[2, 2]),
                                  mutex_watershed(affs, OFFSETS_2D, strides=full))
    a = mutex_watershed(affs, OFFSETS_2D, strides=[2, 2], randomized_strides=True, rng_seed=1)
    b = mutex_watershed(affs, OFFSETS_2D, strides=[2, 2], randomized_strides=True, rng_seed=1)
    c = mutex_watershed(affs, OFFSETS_2D, strides=[2, 2], randomized_strides=True, rng_seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("three_d", [False, True])
def test_min_size_merges_small_segments(three_d):
    rng = np.random.default_rng(8)
    offsets = OFFSETS_3D if three_d else OFFSETS_2D
    shape = (5, 16, 16) if three_d else (30, 30)
    affs = rng.random((len(offsets),) + shape).astype(np.float32)
    plain = mutex_watershed(affs, offsets)
    cleaned = mutex_watershed(affs, offsets, min_size=4)
    assert np.bincount(cleaned.ravel())[1:].min() >= 4
    # every cleaned segment is a union of plain segments
    assert all(len(np.unique(cleaned[plain == s])) == 1 for s in np.unique(plain))
    assert cleaned.max() == len(np.unique(cleaned))


def test_min_size_keeps_seeds_apart():
    affs = np.full((2, 6, 6), 0.2, np.float32)  # everything repels: singletons
    seeds = np.zeros((6, 6), np.uint64)
    seeds[0, 0], seeds[0, 1] = 5, 9
    labels = mutex_watershed(affs, None, seeds=seeds, min_size=40)
    assert labels[0, 0] == 5 and labels[0, 1] == 9
    assert set(np.unique(labels)) <= {5, 9}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"offsets": [[-1, 0, 0], [0, -1, 0]]}, "offsets must be a list of 2-vectors"),
        ({"offsets": [[-1, 0], [0, 0]]}, "all zero"),
        ({"offsets": [[-1, 0]]}, "2 channels but 1 offsets"),
        ({"bias": 1.0}, r"biases must lie in \(0, 1\)"),
        ({"bias": [0.5, 0.5, 0.5]}, "one per channel"),
        ({"long_range_bias": 0.0}, r"biases must lie in \(0, 1\)"),
        ({"seeds": np.zeros((3, 3), np.uint64)}, "seeds has shape"),
        ({"seeds": np.zeros((6, 7), np.float32)}, "seeds must have an integer dtype"),
        ({"strides": [0, 1]}, "strides must be 2 positive integers"),
        ({"min_size": -1}, "min_size must be >= 0"),
    ],
)
def test_bad_input_is_rejected(kwargs, match):
    affs = np.full((2, 6, 7), 0.6, np.float32)
    offsets = kwargs.pop("offsets", [[-1, 0], [0, -1]])
    with pytest.raises(ValueError, match=match):
        mutex_watershed(affs, offsets, **kwargs)


def test_nan_affinities_are_rejected():
    affs = np.full((2, 6, 7), 0.6, np.float32)
    affs[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        mutex_watershed(affs, [[-1, 0], [0, -1]])


@pytest.mark.parametrize(
    "uv,w,match",
    [
        ([[0, 0], [0, 1]], [1.0, 1.0], "self-loop"),
        ([[0, 1], [1, 0]], [1.0, -1.0], "more than once"),
        ([[0, 5]], [1.0], "outside"),
        ([[0, -1]], [1.0], "outside"),
        ([[0, 1]], [np.nan], "NaN"),
        ([[0, 1]], [1.0, 2.0], "shape"),
        ([0, 1], [1.0], r"\(E, 2\)"),
    ],
)
def test_bad_graphs_are_rejected(uv, w, match):
    with pytest.raises(ValueError, match=match):
        mutex_watershed_graph(3, uv, w)


@pytest.mark.parametrize(
    "num_nodes,uv,w,kwargs,match",
    [
        (0, [[0, 1]], [1.0], {}, "num_nodes must be a positive integer"),
        (True, [[0, 1]], [1.0], {}, "num_nodes must be a positive integer"),
        (3, [[0.0, 1.0]], [1.0], {}, "must be integers"),
        (3, [[0, 1]], [1.0], {"mutex_uv_ids": [[1, 2]]}, "give both or neither"),
        (3, [[0, 1]], [1.0], {"mutex_uv_ids": [[1, 2]], "mutex_weights": [-0.5]}, "strengths"),
        (3, [[0, 1]], [-1.0], {"mutex_uv_ids": [[1, 2]], "mutex_weights": [0.5]}, "strengths"),
    ],
)
def test_bad_graph_options_are_rejected(num_nodes, uv, w, kwargs, match):
    with pytest.raises(ValueError, match=match):
        mutex_watershed_graph(num_nodes, uv, w, **kwargs)


def test_randomized_strides_keep_the_expected_share_of_edges():
    from affseg.graph.signed import _mutex_kernels as kernels
    from affseg.graph.signed.mutex import _channel_strides

    affs = np.random.default_rng(9).random((5, 1, 200, 200)).astype(np.float32)
    offsets = np.array([[0, -1, 0], [0, 0, -1], [0, -3, 0], [0, 0, -3], [0, -2, 2]])
    keep = 1.0 / _channel_strides([1, 2, 2], offsets).prod(axis=1)
    packed, _, _ = kernels.grid_edges(affs, offsets, np.full(5, 0.5), np.ones((5, 3), np.int64), keep, 3,
                                   np.ones((1, 1, 1), bool), False)
    channel = (packed & np.uint64(0x7FFFFFFF)) // np.uint64(200 * 200)
    counts = np.bincount(channel.astype(np.int64), minlength=5)
    full = np.array([199 * 200, 200 * 199, 197 * 200, 200 * 197, 198 * 198])
    np.testing.assert_array_equal(counts[:2], full[:2])  # nearest neighbours: all kept
    np.testing.assert_allclose(counts[2:] / full[2:], 0.25, atol=0.01)


def test_sign_first_tie_orders_on_graphs_and_grids():
    # |weight| 0.5 everywhere: 1-2 and 0-2 attract, 0-1 repels; listed repulsive first
    uv, w = [[0, 1], [1, 2], [0, 2]], [-0.5, 0.5, 0.5]
    np.testing.assert_array_equal(mutex_watershed_graph(3, uv, w, ties="attractive-first"), [1, 1, 1])
    np.testing.assert_array_equal(mutex_watershed_graph(3, uv, w, ties="repulsive-first"), [1, 2, 2])
    affs = np.zeros((2, 1, 3), np.float32)  # channel 0: (2, 0) repels; it comes first by channel
    affs[1, 0, 1:] = 1.0  # channel 1: (x, x - 1) attract with the same |weight|
    offsets = [[0, -2], [0, -1]]
    np.testing.assert_array_equal(mutex_watershed(affs, offsets, ties="attractive-first"), [[1, 1, 1]])
    np.testing.assert_array_equal(mutex_watershed(affs, offsets, ties="repulsive-first"), [[1, 1, 2]])


def test_hash_ties_follow_the_edge_hash_on_graphs():
    # equal |weight| everywhere: the graph processes edges by hash_key of their list position
    rng = np.random.default_rng(4)
    n = 12
    uv = np.array(sorted({tuple(sorted(rng.choice(n, 2, replace=False))) for _ in range(30)}))
    w = np.where(rng.random(len(uv)) < 0.5, -0.5, 0.5)
    order = np.argsort(hash_key(np.arange(len(uv))), kind="stable")
    # strictly decreasing strengths in that order: no ties left to break
    ranked = np.sign(w[order]) * (1.0 - 1e-6 * np.arange(len(uv)))
    expected = mutex_watershed_graph(n, uv[order], ranked)
    ours = mutex_watershed_graph(n, uv, w, ties="hash")
    assert same_partition(ours, expected)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("leak_rate", [0.05, 0.2])
def test_agreement_ties_keep_saturated_boundaries_that_attractive_first_merges(seed, leak_rate):
    # two objects side by side, affinities saturated (1 inside, 0 across) with attractive leaks
    # through the membrane: at |weight| 0.5 the leaks disagree with their neighbourhood and go
    # after the repulsive edges, whose mutexes keep the objects apart
    labels = np.zeros((24, 24), np.uint64)
    labels[:, :12], labels[:, 12:] = 1, 2
    offsets = np.array([[-1, 0], [0, -1], [0, -6], [-6, 0]])
    affs = affinities_from_labels(labels, offsets)[0].astype(np.float32)
    leaks = np.random.default_rng(seed).random(affs.shape) < leak_rate
    leaks[2:] = False  # nearest-neighbour channels only
    affs[leaks] = 1.0
    assert len(np.unique(mutex_watershed(affs, offsets, ties="attractive-first"))) == 1
    assert same_partition(mutex_watershed(affs, offsets), labels)


@pytest.mark.parametrize("ties", ["agreement", "hash", "repulsive-first", "attractive-first"])
def test_affinities_outside_the_mask_do_not_change_the_result(ties):
    # the agreement reads the edges beside a tied edge: only those inside the mask count
    rng = np.random.default_rng(0)
    offsets = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -3, 0], [0, 0, -3]]
    affs = (rng.random((5, 4, 24, 24)) > 0.3).astype(np.float32)  # saturated: every weight ties
    mask = np.zeros((4, 24, 24), bool)
    mask[:, :, :12] = True
    flipped = affs.copy()
    flipped[:, ~mask] = 1 - flipped[:, ~mask]
    np.testing.assert_array_equal(mutex_watershed(affs, offsets, mask=mask, ties=ties),
                                  mutex_watershed(flipped, offsets, mask=mask, ties=ties))


def test_unknown_tie_order_is_refused():
    with pytest.raises(InputError, match="ties must be one of"):
        mutex_watershed(np.ones((2, 3, 3), np.float32), ties="random")
    with pytest.raises(InputError, match="ties must be one of"):
        mutex_watershed_graph(2, [[0, 1]], [1.0], ties=None)
    with pytest.raises(InputError, match="needs a grid"):
        mutex_watershed_graph(2, [[0, 1]], [1.0], ties="agreement")


@pytest.mark.parametrize("graph", [False, True])
def test_results_do_not_depend_on_the_initial_pair_set_and_block_pool(graph):
    # start the kernels with a 16-slot pair set and a one-block pool: they stop for room and
    # resume many times, and must end where a run with room to spare ends
    from affseg.graph.signed import _mutex_kernels as kernels
    from affseg.graph.signed.mutex import channel_biases

    affs = np.random.default_rng(11).random((5, 30, 31)).astype(np.float32)
    offsets = np.array([[0, -1, 0], [0, 0, -1], [0, -3, 0], [0, 0, -3], [0, -2, 2]])
    biases = channel_biases(offsets, 0.5)
    packed, _, n_repulsive = kernels.grid_edges(affs[:, None], offsets, biases, np.ones((5, 3), np.int64),
                                             np.ones(5), 0, np.ones((1, 1, 1), bool), False)
    kernels.exact_order(packed, affs[:, None], biases)
    entries = kernels.compact(packed).copy()
    n = affs[0].size
    if graph:
        deltas = flat_steps((1,) + affs.shape[1:], offsets)
        e = (entries & np.uint32(0x7FFFFFFF)).astype(np.int64)
        us = e % n
        edges = (us, us + deltas[e // n], entries >> np.uint32(31) == 0, n)
        process = kernels.process_sorted
    else:
        edges = (flat_steps((1,) + affs.shape[1:], offsets), n, entries)
        process = kernels.process_grid
    labels = []
    for tiny in (False, True):
        node, seed, keys, blocks, state = kernels.new_state(n, False, int(n_repulsive))
        if tiny:
            keys, blocks = np.zeros(16, np.uint64), blocks[:1]
        keys, blocks = kernels.run(process, edges, node, seed, False, keys, blocks, state)
        if tiny:
            assert len(keys) > 16 and len(blocks) > 1
        labels.append(kernels.labels_from_roots(node[:, kernels.PARENT], seed, False, np.ones(1, bool), False, 1))
    np.testing.assert_array_equal(labels[0], labels[1])
    np.testing.assert_array_equal(labels[0].reshape(affs.shape[1:]), mutex_watershed(affs, offsets[:, 1:]))


def test_over_2_31_edges_are_refused_before_any_copy():
    affs = np.broadcast_to(np.float32(0.5), (2, 2**15, 2**15))  # 2**31 edges, no memory behind it
    with pytest.raises(ValueError, match=r"\(2, 32768, 32768\) have too many edges"):
        mutex_watershed(affs, [[-1, 0], [0, -1]])


# ---------------------------------------------------------------- ids near 2**64, option types (issue 13)

MAX_ID = 2**64 - 1


@pytest.mark.parametrize("top", [MAX_ID - 1, MAX_ID])
def test_seed_ids_that_leave_no_room_for_new_ids_are_refused(top):
    # 2**64 - 2 gave two objects the same label (the new ids wrapped), 2**64 - 1 a TypingError
    affs = np.full((2, 3, 4), 0.2, np.float32)  # all repel: every unseeded voxel is a segment
    seeds = np.zeros((3, 4), np.uint64)
    seeds[0, 0] = top
    with pytest.raises(InputError, match=r"seeds: ids from .* do not fit in uint64"):
        mutex_watershed(affs, seeds=seeds)


def test_the_largest_seed_id_works_when_every_voxel_is_seeded():
    affs = np.full((2, 3, 4), 0.9, np.float32)
    seeds = np.full((3, 4), MAX_ID, np.uint64)
    seeds[0, 0] = 5
    for min_size in (0, 4):
        labels = mutex_watershed(affs, seeds=seeds, min_size=min_size)
        np.testing.assert_array_equal(labels, seeds)
    # masked voxels need no id either; their seeds are ignored
    mask = np.ones((3, 4), bool)
    mask[2] = False
    seeds[2] = 0
    labels = mutex_watershed(affs, seeds=seeds, mask=mask)
    np.testing.assert_array_equal(labels, np.where(mask, seeds, 0))


@pytest.mark.parametrize("min_size", [0, 3])
def test_large_seed_ids_that_fit_give_the_partition_of_small_ones(min_size):
    rng = np.random.default_rng(3)
    shape = (9, 10)
    affs = rng.random((len(OFFSETS_2D),) + shape).astype(np.float32)
    small = np.zeros(shape, np.uint64)
    small[1, 1], small[7, 8], small[4, 2] = 1, 2, 3
    n_free = int((small == 0).sum())
    big = small.copy()
    top = MAX_ID - n_free  # the unseeded segments end at 2**64 - 1 at most
    big[small != 0] = top - 3 + small[small != 0]
    a = mutex_watershed(affs, OFFSETS_2D, seeds=small, min_size=min_size)
    b = mutex_watershed(affs, OFFSETS_2D, seeds=big, min_size=min_size)
    assert same_partition(a, b)
    np.testing.assert_array_equal(b[small != 0], big[small != 0])
    new = np.unique(b[small == 0])
    new = new[new > top]
    np.testing.assert_array_equal(new, top + 1 + np.arange(new.size, dtype=np.uint64))
    # one id more and the largest possible new id would not fit
    with pytest.raises(InputError, match="do not fit in uint64"):
        mutex_watershed(affs, OFFSETS_2D, seeds=np.where(big == top, np.uint64(top + 1), big))


def test_masked_seeds_do_not_reserve_ids():
    affs = np.full((2, 3, 4), 0.2, np.float32)
    seeds = np.zeros((3, 4), np.uint64)
    seeds[0, 0], seeds[2, 3] = 7, MAX_ID
    mask = np.ones((3, 4), bool)
    mask[2, 3] = False
    labels = mutex_watershed(affs, seeds=seeds, mask=mask)
    assert labels[0, 0] == 7 and labels[2, 3] == 0
    assert sorted(labels[mask].tolist()) == [7] + list(range(8, 8 + 10))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"min_size": 1.5}, "min_size must be an integer"),
        ({"min_size": "3"}, "min_size must be an integer"),
        ({"min_size": True}, "min_size must be an integer"),
        ({"rng_seed": "x"}, "rng_seed must be an integer"),
        ({"rng_seed": 1.5}, "rng_seed must be an integer"),
        ({"randomized_strides": "no"}, "randomized_strides must be True or False"),
        ({"bias": "0.5"}, "bias must be a number"),
        ({"bias": None}, "bias must be a number"),
        ({"bias": 0.5 + 0j}, "bias must be a number"),
        ({"bias": [0.5, [0.5]]}, "bias must be a number"),
        ({"bias": np.nan}, r"biases must lie in \(0, 1\)"),
        ({"long_range_bias": "0.5"}, "long_range_bias must be a finite number"),
        ({"long_range_bias": np.nan}, "long_range_bias must be a finite number"),
        ({"strides": [[1, 2], [1]]}, "strides must be 2 positive integers"),
        ({"strides": [2**40, 1]}, "strides must be 2 positive integers"),
    ],
)
def test_wrongly_typed_options_are_refused(kwargs, match):
    affs = np.full((2, 6, 7), 0.6, np.float32)
    with pytest.raises(InputError, match=match):
        mutex_watershed(affs, [[-1, 0], [0, -1]], **kwargs)


@pytest.mark.parametrize(
    "num_nodes,uv,w,kwargs,match",
    [
        (3, [[0, 1]], [1 + 1j], {}, "weights must be real numbers, got dtype complex128"),
        (3, [[0, 1]], np.array([0.5 + 0j]), {}, "weights must be real numbers, got dtype complex128"),
        (3, [[0, 1]], ["0.5"], {}, "weights must be real numbers, got dtype <U3"),
        (3, [[0, 1]], [None], {}, "weights must be real numbers, got dtype object"),
        (3, [[0, 1]], [0.5], {"mutex_uv_ids": [[1, 2]], "mutex_weights": [1j]},
         "mutex_weights must be real numbers"),
        (3, [[0, 1], [1]], [0.5, 0.5], {}, "uv_ids must be a regular array"),
        (3, np.array([[0, 2**64 - 1]], np.uint64), [0.5], {}, "node id 18446744073709551615 outside"),
        (2**40, [[0, 1]], [0.5], {}, r"num_nodes must be at most 2\*\*31 - 1"),
        (2**31, [[0, 1]], [0.5], {}, r"num_nodes must be at most 2\*\*31 - 1"),
        (3.0, [[0, 1]], [0.5], {}, "num_nodes must be a positive integer"),
        ("3", [[0, 1]], [0.5], {}, "num_nodes must be a positive integer"),
    ],
)
def test_graph_input_of_wrong_type_or_size_is_refused(num_nodes, uv, w, kwargs, match):
    with pytest.raises(InputError, match=match):
        mutex_watershed_graph(num_nodes, uv, w, **kwargs)


def test_boolean_graph_weights_are_signed_weights():
    labels = mutex_watershed_graph(3, [[0, 1], [1, 2]], np.array([True, False]))
    np.testing.assert_array_equal(labels, [1, 1, 2])


def test_a_nan_bias_is_refused_even_where_long_range_bias_replaces_it():
    affs = np.full((1, 1, 1, 1), 0.6, np.float32)
    with pytest.raises(InputError, match=r"biases must lie in \(0, 1\), got \[nan\]"):
        mutex_watershed(affs, [[0, 0, 2]], bias=np.nan, long_range_bias=0.2)
