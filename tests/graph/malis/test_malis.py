"""MALIS and constrained MALIS pair counts against a brute-force O(n^2) count on small grids."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from affseg.conventions import affinities_from_labels
from affseg.graph.malis import (
    constrained_malis_weights,
    malis_pair_counts,
    malis_weights,
)

OFFSETS = {2: [[-1, 0], [0, -1], [0, -3]], 3: [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -2, -2]]}


def grid_edge_list(shape, offsets):
    """(u, v, flat affinity index) in edge-index order: channel-major, then raster order of u."""
    n = int(np.prod(shape))
    coords = np.indices(shape).reshape(len(shape), -1).T
    us, vs, fs = [], [], []
    for c, off in enumerate(offsets):
        for i, p in enumerate(coords):
            q = p + off
            if np.all(q >= 0) and np.all(q < shape):
                us.append(i)
                vs.append(int(np.ravel_multi_index(tuple(q), shape)))
                fs.append(c * n + i)
    return np.array(us), np.array(vs), np.array(fs)


def brute_force_counts(values, labels, u, v):
    """For every pair of labelled voxels, the first edge (value desc, index asc) that connects them."""
    n = labels.size
    lab = labels.ravel()
    order = np.lexsort((np.arange(len(values)), -values))
    same = np.zeros(len(values))
    diff = np.zeros(len(values))
    comp_before = np.arange(n)
    labelled = lab != 0
    for k in range(len(order)):
        chosen = order[: k + 1]
        graph = coo_matrix((np.ones(k + 1), (u[chosen], v[chosen])), shape=(n, n))
        _, comp = connected_components(graph, directed=False)
        newly = (comp[:, None] == comp[None, :]) & (comp_before[:, None] != comp_before[None, :])
        newly &= labelled[:, None] & labelled[None, :]
        newly = np.triu(newly, 1)
        equal = lab[:, None] == lab[None, :]
        same[order[k]] = np.count_nonzero(newly & equal)
        diff[order[k]] = np.count_nonzero(newly & ~equal)
        comp_before = comp
    return same, diff


def small_problem(seed, ndim, ties):
    rng = np.random.default_rng(seed)
    shape = (3, 4, 5) if ndim == 3 else (6, 7)
    labels = rng.integers(0, 4, size=shape).astype(np.uint64)
    offsets = np.array(OFFSETS[ndim])
    affs = rng.random((len(offsets),) + shape).astype(np.float32)
    if ties:
        affs = np.round(affs * 3) / 3  # many equal values, exact 0 and 1
    return affs.astype(np.float32), labels, offsets


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_pair_counts_equal_brute_force(ndim, ties, seed):
    affs, labels, offsets = small_problem(seed, ndim, ties)
    u, v, flat = grid_edge_list(labels.shape, offsets)
    want_same, want_diff = brute_force_counts(affs.ravel()[flat], labels, u, v)
    same, diff = malis_pair_counts(affs, labels, offsets)
    np.testing.assert_array_equal(same.ravel()[flat], want_same)
    np.testing.assert_array_equal(diff.ravel()[flat], want_diff)
    # off-grid entries (partner outside the volume) carry nothing
    assert same.sum() == want_same.sum() and diff.sum() == want_diff.sum()


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_constrained_passes_equal_brute_force(ndim, ties, seed):
    affs, labels, offsets = small_problem(seed + 10, ndim, ties)
    _assert_constrained_passes_equal_brute_force(affs, labels, offsets)


def _assert_constrained_passes_equal_brute_force(affs, labels, offsets):
    """Unnormalised constrained MALIS weights equal the brute-force counts of both passes."""
    u, v, flat = grid_edge_list(labels.shape, offsets)
    gt = affinities_from_labels(labels, offsets)[0].ravel()[flat] == 1
    a = affs.ravel()[flat]
    pos_same, _ = brute_force_counts(np.where(gt, a, 0), labels, u, v)
    _, neg_diff = brute_force_counts(np.where(gt, 1, a), labels, u, v)
    w_pos, w_neg = constrained_malis_weights(affs, labels, offsets, normalize=False)
    np.testing.assert_array_equal(w_pos.ravel()[flat], np.where(gt, pos_same, 0))
    np.testing.assert_array_equal(w_neg.ravel()[flat], np.where(gt, 0, neg_diff))


def test_long_label_lists_use_the_hash_table():
    """Many labels per tree exercise the hashed lists and the table's growth."""
    rng = np.random.default_rng(5)
    shape = (4, 9, 9)
    labels = rng.integers(0, 40, size=shape).astype(np.uint64)
    offsets = np.array(OFFSETS[3])
    affs = rng.random((len(offsets),) + shape).astype(np.float32)
    u, v, flat = grid_edge_list(shape, offsets)
    want_same, want_diff = brute_force_counts(affs.ravel()[flat], labels, u, v)
    same, diff = malis_pair_counts(affs, labels, offsets)
    np.testing.assert_array_equal(same.ravel()[flat], want_same)
    np.testing.assert_array_equal(diff.ravel()[flat], want_diff)


@given(seed=st.integers(0, 2**31), n_labels=st.integers(1, 6))
def test_every_labelled_pair_counted_once(seed, n_labels):
    """The tree joins all voxels, so the counts add up to all same- and different-label pairs."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_labels + 1, size=(3, 5, 6)).astype(np.uint64)
    affs = rng.random((3, 3, 5, 6)).astype(np.float32)
    same, diff = malis_pair_counts(affs, labels)
    sizes = np.bincount(labels.ravel().astype(np.int64))[1:]
    n = sizes.sum()
    assert same.sum() == (sizes * (sizes - 1) // 2).sum()
    assert same.sum() + diff.sum() == n * (n - 1) // 2
    assert np.all(same >= 0) and np.all(diff >= 0)


def test_known_answer_two_objects():
    """A 1x4 line: objects {0,1} and {2,3}; the weakest link of each pair takes the counts."""
    labels = np.array([[1, 1, 2, 2]], np.uint64)
    affs = np.zeros((2, 1, 4), np.float32)
    affs[1, 0, 1:] = [0.9, 0.2, 0.8]  # x-edges (u, u-1): (1,0)=0.9, (2,1)=0.2, (3,2)=0.8
    same, diff = malis_pair_counts(affs, labels)
    np.testing.assert_array_equal(same[1, 0], [0, 1, 0, 1])
    np.testing.assert_array_equal(diff[1, 0], [0, 0, 4, 0])
    # constrained: the pair (1,2) is wrongly merged only if the boundary edge is high
    affs[1, 0, 2] = 0.95
    w_pos, w_neg = constrained_malis_weights(affs, labels, normalize=False)
    np.testing.assert_array_equal(w_pos[1, 0], [0, 1, 0, 1])
    np.testing.assert_array_equal(w_neg[1, 0], [0, 0, 4, 0])


@pytest.mark.parametrize("kind", ["voxel", "affinity"])
def test_masks_equal_brute_force(kind):
    """Edges outside the mask keep their predicted affinity in both passes and get no weight; a
    voxel mask also unlabels the voxels outside it."""
    affs, labels, offsets = small_problem(7, 3, True)
    rng = np.random.default_rng(8)
    u, v, flat = grid_edge_list(labels.shape, offsets)
    if kind == "voxel":
        mask = rng.random(labels.shape) < 0.7
        ref_labels = np.where(mask, labels, 0)
        known = mask.ravel()[u] & mask.ravel()[v]
    else:
        mask = rng.random(affs.shape) < 0.7
        ref_labels = labels
        known = mask.ravel()[flat]
    gt = affinities_from_labels(ref_labels, offsets)[0].ravel()[flat] == 1
    a = affs.ravel()[flat]
    within, between = gt & known, ~gt & known
    pos_same, _ = brute_force_counts(np.where(between, 0, a), ref_labels, u, v)
    _, neg_diff = brute_force_counts(np.where(within, 1, a), ref_labels, u, v)
    w_pos, w_neg = constrained_malis_weights(affs, labels, offsets, mask=mask, normalize=False)
    np.testing.assert_array_equal(w_pos.ravel()[flat], np.where(within, pos_same, 0))
    np.testing.assert_array_equal(w_neg.ravel()[flat], np.where(between, neg_diff, 0))
    same, diff = brute_force_counts(a, ref_labels, u, v)
    got_same, got_diff = malis_pair_counts(affs, labels, offsets, mask=mask)
    np.testing.assert_array_equal(got_same.ravel()[flat], np.where(known, same, 0))
    np.testing.assert_array_equal(got_diff.ravel()[flat], np.where(known, diff, 0))


def test_ids_above_2_32_count_like_small_ones():
    affs, labels, offsets = small_problem(3, 3, False)
    big = np.where(labels > 0, labels + np.uint64(2**40), 0).astype(np.uint64)
    for small, large in zip(constrained_malis_weights(affs, labels, offsets), constrained_malis_weights(affs, big, offsets)):
        np.testing.assert_array_equal(small, large)


def test_normalized_passes_sum_to_one():
    affs, labels, offsets = small_problem(1, 3, False)
    w_pos, w_neg = malis_weights(affs, labels, offsets)
    assert w_pos.sum() == pytest.approx(1) and w_neg.sum() == pytest.approx(1)
    same, diff = malis_weights(affs, labels, offsets, constrained=False)
    assert same.sum() + diff.sum() == pytest.approx(1)


def test_bad_input():
    with pytest.raises(ValueError, match="shape"):
        malis_pair_counts(np.zeros((3, 4, 4, 4), np.float32), np.zeros((4, 4, 5), np.uint64))
    with pytest.raises(ValueError, match="channels"):
        malis_pair_counts(np.zeros((2, 4, 4, 4), np.float32), np.zeros((4, 4, 4), np.uint64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        constrained_malis_weights(np.full((3, 4, 4, 4), 2, np.float32), np.zeros((4, 4, 4), np.uint64))


def test_volumes_over_2_31_voxels_are_refused_before_any_copy():
    shape = (2**11, 2**10, 2**10)  # 2**31 voxels; broadcast views: no memory behind them
    affs = np.broadcast_to(np.float32(0.5), (3,) + shape)
    labels = np.broadcast_to(np.uint64(1), shape)
    with pytest.raises(ValueError, match=r"2\*\*31 voxels.*\(2048, 1024, 1024\)"):
        malis_pair_counts(affs, labels)
    with pytest.raises(ValueError, match=r"2\*\*31 voxels"):
        constrained_malis_weights(affs, labels)


@pytest.mark.parametrize("kwargs", [{"normalize": "no"}, {"constrained": "no"},
                                    {"constrained": False, "normalize": None}])
def test_flags_of_wrong_type_are_refused(kwargs):
    from affseg.errors import InputError

    affs = np.full((2, 4, 5), 0.5, np.float32)
    labels = np.ones((4, 5), np.uint64)
    with pytest.raises(InputError, match="must be True or False"):
        malis_weights(affs, labels, **kwargs)


@pytest.mark.parametrize("saturated", [False, True])
def test_single_label_opening_gives_the_counts_of_the_full_kernel(saturated):
    """An edge inside an object that joins two trees of that object's voxels alone runs on the
    parents only (sizes are counts); on a volume with many objects and long lists, in the
    sequences of both constrained passes and of the pair counts, that equals running every edge
    through the trees' labels (the same sequences without the ``_INSIDE`` marks)."""
    from affseg.graph.malis.weights import (
        _INSIDE,
        _KEEP,
        _compact_labels,
        _grid,
        _id_buffer,
        _kruskal_counts,
        _malis_sequence,
        _pass_sequences,
        _union_find,
    )
    from affseg.synthetic import make_volume

    vol = make_volume((12, 48, 48), seed=3)
    affs = np.round(vol.affs * 4) / 4 if saturated else vol.affs  # exact 0s and 1s: between edges at 1
    offsets = np.array([[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -3, 0]])
    full = np.ascontiguousarray(np.concatenate([affs, affs[1:2]]), dtype=np.float32).ravel()
    compact, n_labels = _compact_labels(vol.labels)
    shape3, offsets3, deltas = _grid(vol.labels.shape, offsets)
    no_mask = np.ones(1, bool)
    pos, neg = _pass_sequences(full, compact, shape3, offsets3, deltas, no_mask, False, _id_buffer(full.size))
    plain = _malis_sequence(full, compact, shape3, offsets3, deltas, no_mask, False, _id_buffer(full.size))
    opening = []
    for seq in (pos, neg, plain):
        inside = (seq & _INSIDE) != 0
        opening.append(np.argmin(inside) if not inside.all() else len(seq))
        counts = []
        for s in (seq, seq & ~_INSIDE):
            same, diff = np.zeros(full.size), np.zeros(full.size)
            _kruskal_counts(s, compact.copy(), n_labels, deltas, same, diff, *_union_find(compact.size))
            counts.append((same, diff))
        np.testing.assert_array_equal(counts[0][0], counts[1][0])
        np.testing.assert_array_equal(counts[0][1], counts[1][1])
        assert np.count_nonzero(seq & _KEEP) > 0
    assert opening[0] > len(pos) // 2  # the positive pass opens with most of the edges


@st.composite
def malis_problems(draw):
    """Small 2D or 3D problems: few labels (0 included), affinities with ties and exact 0s and
    1s (or all distinct), optional voxel or affinity mask."""
    ndim = draw(st.sampled_from([2, 3]))
    shape = tuple(draw(st.integers(1, 5)) for _ in range(ndim - 1)) + (draw(st.integers(2, 6)),)
    offsets = np.array(OFFSETS[ndim])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    labels = rng.integers(0, draw(st.integers(1, 5)), size=shape).astype(np.uint64)
    affs = rng.random((len(offsets),) + shape).astype(np.float32)
    levels = draw(st.sampled_from([0, 1, 2, 4]))
    if levels:
        affs = (np.round(affs * levels) / levels).astype(np.float32)
    kind = draw(st.sampled_from([None, "voxel", "affinity"]))
    mask = None if kind is None else rng.random(shape if kind == "voxel" else affs.shape) < 0.7
    return affs, labels, offsets, mask


@settings(max_examples=60, deadline=None)
@given(malis_problems())
def test_random_problems_equal_brute_force(problem):
    """Both kernels (pair counts and the two constrained passes) against the brute-force count,
    on random small problems with ties, exact 0s and 1s, label 0 and masks."""
    affs, labels, offsets, mask = problem
    u, v, flat = grid_edge_list(labels.shape, offsets)
    if mask is None:
        ref_labels, known = labels, np.ones(len(flat), bool)
    elif mask.ndim == labels.ndim:
        ref_labels, known = np.where(mask, labels, 0), mask.ravel()[u] & mask.ravel()[v]
    else:
        ref_labels, known = labels, mask.ravel()[flat]
    gt = affinities_from_labels(ref_labels, offsets)[0].ravel()[flat] == 1
    a = affs.ravel()[flat]
    within, between = gt & known, ~gt & known
    same, diff = brute_force_counts(a, ref_labels, u, v)
    got_same, got_diff = malis_pair_counts(affs, labels, offsets, mask=mask)
    np.testing.assert_array_equal(got_same.ravel()[flat], np.where(known, same, 0))
    np.testing.assert_array_equal(got_diff.ravel()[flat], np.where(known, diff, 0))
    assert got_same.sum() == np.where(known, same, 0).sum()  # nothing off the grid
    pos_same, _ = brute_force_counts(np.where(between, 0, a), ref_labels, u, v)
    _, neg_diff = brute_force_counts(np.where(within, 1, a), ref_labels, u, v)
    w_pos, w_neg = constrained_malis_weights(affs, labels, offsets, mask=mask, normalize=False)
    np.testing.assert_array_equal(w_pos.ravel()[flat], np.where(within, pos_same, 0))
    np.testing.assert_array_equal(w_neg.ravel()[flat], np.where(between, neg_diff, 0))
    assert w_pos.sum() == np.where(within, pos_same, 0).sum()
    assert w_neg.sum() == np.where(between, neg_diff, 0).sum()


def test_constrained_long_label_lists_use_the_hash_table():
    """Trees of many labels in both constrained passes (hashed lists, the table's growth)."""
    rng = np.random.default_rng(6)
    shape = (4, 9, 9)
    labels = rng.integers(0, 40, size=shape).astype(np.uint64)
    offsets = np.array(OFFSETS[3])
    affs = (np.round(rng.random((len(offsets),) + shape) * 8) / 8).astype(np.float32)
    _assert_constrained_passes_equal_brute_force(affs, labels, offsets)
