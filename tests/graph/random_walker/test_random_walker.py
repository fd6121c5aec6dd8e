"""The seeded random walker: parity with scikit-image (bf and cg), a dense brute force for any
offsets and masks, known answers, invariants and bad input."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage as ndi

from affseg.graph.random_walker import RandomWalkerSystem, image_weights, random_walker

skimage_rw = pytest.importorskip("skimage.segmentation").random_walker

LONG_RANGE_2D = [[-1, 0], [0, -1], [-2, 1], [0, -3]]
LONG_RANGE_3D = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-1, -2, 0], [0, 0, -3]]


def _smooth_image(shape, seed):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 1.5)


def _random_seeds(shape, n_labels, seed, ids=None):
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.uint64)
    ids = np.arange(1, n_labels + 1) if ids is None else ids
    flat = rng.choice(seeds.size, size=2 * n_labels, replace=False)
    seeds.reshape(-1)[flat] = np.repeat(np.asarray(ids, np.uint64), 2)
    return seeds


def _brute_force(weights, seeds, offsets, mask=None):
    """Dense Laplacian over all voxels, reachability by flooding, numpy solve: (K, n) probabilities."""
    shape = seeds.shape
    n = seeds.size
    active = np.ones(n, bool) if mask is None else np.asarray(mask).reshape(-1)
    coords = list(itertools.product(*[range(s) for s in shape]))
    lap = np.zeros((n, n))
    neighbours = [[] for _ in range(n)]
    for c, off in enumerate(offsets):
        for i, u in enumerate(coords):
            v = tuple(a + b for a, b in zip(u, off))
            if not all(0 <= a < s for a, s in zip(v, shape)):
                continue
            j = np.ravel_multi_index(v, shape)
            w = weights[(c,) + u]
            if w == 0 or not (active[i] and active[j]):
                continue
            lap[i, j] -= w
            lap[j, i] -= w
            lap[i, i] += w
            lap[j, j] += w
            neighbours[i].append(j)
            neighbours[j].append(i)
    flat = seeds.reshape(-1)
    reached = np.zeros(n, bool)
    stack = list(np.flatnonzero(flat))
    reached[stack] = True
    while stack:
        i = stack.pop()
        for j in neighbours[i]:
            if not reached[j]:
                reached[j] = True
                stack.append(j)
    labels = np.unique(flat[flat > 0])
    unknown = np.flatnonzero(reached & (flat == 0))
    seeded = np.flatnonzero(flat)
    probs = np.zeros((labels.size, n))
    for k, label in enumerate(labels):
        probs[k, seeded] = flat[seeded] == label
        if unknown.size:
            rhs = -lap[np.ix_(unknown, seeded)] @ (flat[seeded] == label)
            probs[k, unknown] = np.linalg.solve(lap[np.ix_(unknown, unknown)], rhs)
    return probs.reshape((labels.size,) + shape), reached.reshape(shape)


@pytest.mark.parametrize("shape", [(40, 50), (12, 20, 24)])
@pytest.mark.parametrize("mode", ["bf", "cg"])
@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_matches_skimage(shape, mode, solver):
    image = _smooth_image(shape, 0)
    seeds = _random_seeds(shape, 4, 1).astype(np.int64)
    spacing = (2.0,) + (1.0,) * (len(shape) - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage: "cg mode may be slow because UMFPACK ..."
        expected = skimage_rw(image, seeds, beta=90, mode=mode, tol=1e-10, spacing=spacing, return_full_prob=True)
        expected_seg = skimage_rw(image, seeds, beta=90, mode=mode, tol=1e-10, spacing=spacing)
    weights = image_weights(image, beta=90, spacing=spacing)
    seg, probs = random_walker(weights, seeds, solver=solver, tol=1e-10, return_probabilities=True)
    assert probs.shape == expected.shape
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_array_equal(seg, expected_seg)


@pytest.mark.parametrize("offsets", [LONG_RANGE_2D, LONG_RANGE_3D])
@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_matches_brute_force_with_long_range_offsets_and_mask(offsets, solver):
    shape = (7, 9) if len(offsets[0]) == 2 else (4, 5, 6)
    rng = np.random.default_rng(3)
    weights = rng.uniform(0.05, 1.0, size=(len(offsets),) + shape)
    weights[rng.random(weights.shape) < 0.15] = 0  # removed edges
    mask = rng.random(shape) > 0.15
    seeds = _random_seeds(shape, 3, 4)
    seeds[~mask] = 0
    expected, reached = _brute_force(weights, seeds, offsets, mask)
    seg, probs = random_walker(weights, seeds, offsets, mask=mask, solver=solver, tol=1e-12, return_probabilities=True)
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    labels = np.unique(seeds[seeds > 0])
    want = np.where(reached & mask, labels[np.argmax(expected, axis=0)], 0)
    np.testing.assert_array_equal(seg, want)


def test_chain_is_linear_between_two_seeds():
    n = 11
    seeds = np.zeros((1, n), np.uint64)
    seeds[0, 0], seeds[0, -1] = 5, 9
    weights = np.ones((2, 1, n))
    _, probs = random_walker(weights, seeds, return_probabilities=True)
    np.testing.assert_allclose(probs[0, 0], 1 - np.arange(n) / (n - 1), atol=1e-12)
    np.testing.assert_allclose(probs[1, 0], np.arange(n) / (n - 1), atol=1e-12)


def test_conductances_in_series():
    # chain seed(1) -a- x -b- seed(2): P(reach 1 from x) = a / (a + b)
    a, b = 0.3, 0.9
    weights = np.zeros((2, 1, 3))
    weights[1, 0, 1], weights[1, 0, 2] = a, b  # channel (0, -1) at u links u and u - 1
    seeds = np.array([[1, 0, 2]])
    _, probs = random_walker(weights, seeds, return_probabilities=True)
    assert probs[0, 0, 1] == pytest.approx(a / (a + b), abs=1e-7)


def test_unreached_region_gets_zero_label_and_probability():
    weights = np.ones((2, 6, 6))
    weights[1][:, 3] = 0  # cut between columns 2 and 3: the right half holds no seed
    seeds = np.zeros((6, 6), np.uint64)
    seeds[0, 0], seeds[5, 1] = 1, 2
    seg, probs = random_walker(weights, seeds, return_probabilities=True)
    assert np.all(seg[:, 3:] == 0) and np.all(probs[:, :, 3:] == 0)
    assert np.all(seg[:, :3] > 0)
    np.testing.assert_allclose(probs[:, :, :3].sum(axis=0), 1, atol=1e-6)


def test_single_label_fills_what_it_reaches_without_solving():
    weights = np.ones((3, 3, 4, 5))
    weights[0, 2] = 0  # sections 2.. are cut off from 0..1 along z
    seeds = np.zeros((3, 4, 5), np.uint64)
    seeds[0, 0, 0] = 7
    seg, probs = random_walker(weights, seeds, return_probabilities=True)
    assert np.all(seg[:2] == 7) and np.all(seg[2] == 0)
    assert probs.shape == (1, 3, 4, 5) and np.all(probs[0, :2] == 1) and np.all(probs[0, 2] == 0)


def test_all_voxels_seeded_returns_the_seeds():
    seeds = np.arange(1, 13, dtype=np.uint64).reshape(3, 4)
    seg, probs = random_walker(np.ones((2, 3, 4)), seeds, return_probabilities=True)
    np.testing.assert_array_equal(seg, seeds)
    np.testing.assert_array_equal(probs.argmax(axis=0) + 1, seeds)


def test_large_ids_are_kept():
    image = _smooth_image((20, 20), 5)
    ids = np.array([2**40 + 3, 2**63 + 11, 17], np.uint64)
    seeds = _random_seeds((20, 20), 3, 6, ids=ids)
    small = _random_seeds((20, 20), 3, 6)
    seg = random_walker(image_weights(image), seeds)
    ref = random_walker(image_weights(image), small)
    lookup = np.concatenate([np.zeros(1, np.uint64), ids])
    np.testing.assert_array_equal(seg, lookup[ref.astype(np.int64)])


@given(
    st.integers(2, 4), st.integers(0, 2**16),
    st.sampled_from([(6, 7), (3, 4, 5)]), st.sampled_from(["direct", "cg"]),
)
def test_probabilities_are_a_distribution(n_labels, seed, shape, solver):
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.01, 1.0, size=(len(shape),) + shape)
    seeds = _random_seeds(shape, n_labels, seed)
    seg, probs = random_walker(weights, seeds, solver=solver, tol=1e-10, return_probabilities=True)
    np.testing.assert_allclose(probs.sum(axis=0), 1, atol=1e-5)
    assert probs.min() >= -1e-6 and probs.max() <= 1 + 1e-6
    np.testing.assert_array_equal(seg[seeds > 0], seeds[seeds > 0])
    # the maximum principle: each probability peaks on its own seeds
    labels = np.unique(seeds[seeds > 0])
    for k, label in enumerate(labels):
        assert probs[k][seeds == label].min() == pytest.approx(probs[k].max())


def test_system_adjoint_solves_reuse_the_same_operator():
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.1, 1.0, size=(3, 4, 5, 6))
    seeds = _random_seeds((4, 5, 6), 3, 2)
    for solver in ("direct", "cg"):
        system = RandomWalkerSystem(weights, seeds, solver=solver, tol=1e-12)
        rhs = rng.normal(size=(system.unknown.size, 2))
        x = system.solve(rhs)
        np.testing.assert_allclose(system.laplacian @ x, rhs, atol=1e-9)


def test_cg_that_misses_its_tolerance_warns(monkeypatch):
    import affseg.graph.random_walker.solver as rw

    real = rw._block_pcg
    monkeypatch.setattr(rw, "_block_pcg", lambda a, b, m, tol, **kw: real(a, b, m, tol, maxiter=1, **kw))
    image = _smooth_image((30, 30), 7)
    with pytest.warns(RuntimeWarning, match=r"did not reach tol=1e-12 for 3 of 3 labels"):
        random_walker(image_weights(image), _random_seeds((30, 30), 3, 8), solver="cg", tol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seeds": np.zeros((5, 6), np.uint64)}, "no seed"),
        ({"seeds": np.ones((5, 7), np.uint64)}, r"shape \(5, 7\)"),
        ({"seeds": -np.ones((5, 6), np.int64)}, "negative"),
        ({"weights": -np.ones((2, 5, 6))}, "negative"),
        ({"weights": np.full((2, 5, 6), np.nan)}, "NaN"),
        ({"weights": np.ones((3, 5, 6))}, "3 channels but 2 offsets"),
        ({"weights": np.ones((5, 6))}, r"got \(5, 6\)"),
        ({"solver": "lu"}, "unknown solver"),
        ({"tol": 0.0}, "tol"),
        ({"mask": np.zeros((5, 6), bool)}, "outside the mask"),
        ({"mask": np.ones((4, 6), bool)}, "mask has shape"),
    ],
)
def test_bad_input(kwargs, message):
    seeds = np.zeros((5, 6), np.uint64)
    seeds[0, 0], seeds[4, 5] = 1, 2
    args = {"weights": np.ones((2, 5, 6)), "seeds": seeds}
    args.update(kwargs)
    weights, seeds = args.pop("weights"), args.pop("seeds")
    with pytest.raises(ValueError, match=message):
        random_walker(weights, seeds, **args)


def test_image_weights_bad_input():
    with pytest.raises(ValueError, match="spacing"):
        image_weights(np.ones((4, 4)), spacing=(1.0,))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        image_weights(np.ones(4))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"tol": "x"}, "tol must be a finite number"),
        ({"tol": np.nan}, "tol must be a finite number"),
        ({"tol": None}, "tol must be a finite number"),
        ({"solver": ["cg"]}, "unknown solver"),
        ({"solver": np.array(["cg", "direct"])}, "unknown solver"),
        ({"return_probabilities": "yes"}, "return_probabilities must be True or False"),
        ({"weights": [[[1.0, 1.0], [1.0]], [[1.0, 1.0], [1.0, 1.0]]]}, "weights must be a regular array"),
    ],
)
def test_options_of_wrong_type_are_refused(kwargs, message):
    from affseg.errors import InputError

    seeds = np.zeros((2, 2), np.uint64)
    seeds[0, 0], seeds[1, 1] = 1, 2
    weights = kwargs.pop("weights", np.ones((2, 2, 2)))
    with pytest.raises(InputError, match=message):
        random_walker(weights, seeds, **kwargs)


@pytest.mark.parametrize(
    "image,kwargs,message",
    [
        (np.ones((4, 4)), {"beta": "130"}, "beta must be a finite number"),
        (np.ones((4, 4)), {"beta": np.nan}, "beta must be a finite number"),
        (np.ones((4, 4)), {"beta": -1.0}, "beta must lie in"),
        (np.ones((4, 4)), {"eps": np.inf}, "eps must be a finite number"),
        (np.ones((4, 4)), {"spacing": (np.nan, 1.0)}, "spacing must hold 2 positive numbers"),
        (np.ones((4, 4)), {"spacing": ("1", "1")}, "spacing must hold 2 positive numbers"),
        (np.ones((4, 4)), {"spacing": (1j, 1.0)}, "spacing must hold 2 positive numbers"),
        (np.ones((0, 4)), {}, "image is empty"),
        (np.array([[0.0, 1e308], [-1e308, 0.0]]), {}, "overflow float64"),
    ],
)
def test_image_weights_refuse_wrong_numbers(image, kwargs, message):
    from affseg.errors import InputError

    with np.errstate(all="raise"):  # and no numpy warning on the way
        with pytest.raises(InputError, match=message):
            image_weights(image, **kwargs)


@pytest.mark.parametrize("solver", ["direct", "cg"])
@pytest.mark.parametrize("scale", [1e300, 1e-300, 1e-320])
def test_any_weight_scale_gives_the_same_walk(solver, scale):
    # the walk sees ratios only; huge weights overflowed the sums, subnormal ones made the
    # direct factor "exactly singular" (a raw RuntimeError)
    rng = np.random.default_rng(4)
    weights = rng.random((2, 6, 7))
    seeds = np.zeros((6, 7), np.uint64)
    seeds[0, 0], seeds[5, 6], seeds[3, 3] = 1, 2, 2**64 - 1
    ref_labels, ref_probs = random_walker(weights, seeds, solver="direct", return_probabilities=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels, probs = random_walker(weights * scale, seeds, solver=solver, return_probabilities=True)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-3 if scale < 1e-310 else 1e-6)


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_weights_beyond_float64_resolution_are_an_input_error(solver):
    from affseg.errors import InputError

    # seed 1 -(1e-17)- u -(1)- v -(1e-20)- seed 2: 1 + 1e-17 == 1, so L_U is singular in
    # float64 (SuperLU's RuntimeError, or a LinAlgError in the multigrid's coarse Cholesky)
    weights = np.zeros((1, 1, 4))
    weights[0, 0, 1:] = [1e-17, 1.0, 1e-20]
    seeds = np.array([[1, 0, 0, 2]], np.uint64)
    with pytest.raises(InputError, match="singular in float64: the positive weights span 1e-20 to 1"):
        random_walker(weights, seeds, [[0, -1]], solver=solver)


@pytest.mark.parametrize("length", [6, 610])
def test_multigrid_diagonal_without_float64_inverse_is_an_input_error(length):
    from affseg.errors import InputError

    # seed 1 -(1e-310)- u -(1e-310)- seed 2 beside a chain of weight-1 edges: u's diagonal entry
    # 2e-310 has no finite float64 inverse. 6 voxels: the multigrid's only level is diagonal
    # (every unknown's neighbours are seeds) and is solved by its inverse diagonal; 610: u sits
    # on the first of several levels, in the Jacobi smoother's damped inverse diagonal. Either
    # way a LinAlgError inside the preconditioner's setup, which must reach the caller as the
    # documented InputError (the direct factor solves this system: p = 0.5 at u)
    weights = np.ones((1, 1, length))
    weights[0, 0, 0] = 0.0
    weights[0, 0, 1:3] = 1e-310
    seeds = np.zeros((1, length), np.uint64)
    seeds[0, [0, 2, 3, -1]] = [1, 2, 1, 2]
    with pytest.raises(InputError, match="singular in float64: the positive weights span 1e-310 to 1"):
        random_walker(weights, seeds, [[0, -1]], solver="cg")


@pytest.mark.parametrize("solver, tol, message", [("cg", 1e-3, "use a smaller tol or solver='direct'"),
                                                   ("cg", 1e-5, "too ill-conditioned in float64"),
                                                   ("direct", 1e-3, "too ill-conditioned in float64")])
def test_probabilities_far_outside_zero_one_name_the_remedy(monkeypatch, solver, tol, message):
    # a label's probabilities 0.5 below 0: with a loose cg tolerance the tol is to blame, else
    # the weights (the check reads the range that fold_label returns)
    import affseg.graph.random_walker.solver as rw
    from affseg.errors import InputError

    def off_range(x, label, top, best, probabilities, unknown):
        return -0.5, 1.0

    monkeypatch.setattr(rw, "fold_label", off_range)
    shape = (4, 12, 12)
    with pytest.raises(InputError, match=message):
        random_walker(image_weights(_smooth_image(shape, 60)), _random_seeds(shape, 3, 61), solver=solver, tol=tol)


def test_probabilities_without_precision_are_an_input_error():
    # weights spanning 1e-24..1 gave probabilities of -2e20 without a word
    from affseg.errors import InputError

    base = np.random.default_rng(1).random((2, 3, 3))
    weights = base * 10.0 ** -np.random.default_rng(0).uniform(0, 25, base.shape)
    seeds = np.array([[0, 0, 0], [3, 0, 4], [0, 0, 0]], np.uint64)
    with pytest.raises(InputError, match="too ill-conditioned in float64"):
        random_walker(weights, seeds, solver="direct")


# ------------------------------------------------------------------------ assembly, multigrid


def _numpy_assembly(weights, seeds, offsets, mask=None):
    """The system as assembled before the numba kernels: edge lists, connected components and
    scipy's COO to CSR conversion. Returns (unknown, laplacian, coupling)."""
    from scipy import sparse
    from scipy.sparse import csgraph

    from affseg.graph.core.edges import edge_list

    shape = seeds.shape
    n = seeds.size
    flat_seeds = seeds.reshape(-1)
    seeded = np.flatnonzero(flat_seeds)
    labels, seed_index = np.unique(flat_seeds[seeded], return_inverse=True)
    label_index = np.full(n, -1, np.int64)
    label_index[seeded] = seed_index
    u, v, e = edge_list(shape, np.asarray(offsets, np.int64))
    w = weights.reshape(-1)[e]
    keep = w > 0
    if mask is not None:
        keep &= mask.reshape(-1)[u] & mask.reshape(-1)[v]
    u, v, w = u[keep], v[keep], w[keep]
    graph = sparse.coo_array((np.ones(u.size, np.int8), (u, v)), shape=(n, n))
    _, component = csgraph.connected_components(graph, directed=False)
    seeded_components = np.zeros(int(component.max()) + 1, bool)
    seeded_components[component[seeded]] = True
    unknown = np.flatnonzero(seeded_components[component] & (label_index < 0))
    local = np.full(n, -1, np.int64)
    local[unknown] = np.arange(unknown.size)
    lu, lv = local[u], local[v]
    size = unknown.size
    diagonal = (np.bincount(lu[lu >= 0], weights=w[lu >= 0], minlength=size)
                + np.bincount(lv[lv >= 0], weights=w[lv >= 0], minlength=size))
    both = (lu >= 0) & (lv >= 0)
    rows = np.concatenate([lu[both], lv[both], np.arange(size)])
    cols = np.concatenate([lv[both], lu[both], np.arange(size)])
    vals = np.concatenate([-w[both], -w[both], diagonal])
    laplacian = sparse.csr_array((vals, (rows, cols)), shape=(size, size))
    to_seed_v = (lu >= 0) & (label_index[v] >= 0)
    to_seed_u = (lv >= 0) & (label_index[u] >= 0)
    rows = np.concatenate([lu[to_seed_v], lv[to_seed_u]])
    cols = np.concatenate([label_index[v[to_seed_v]], label_index[u[to_seed_u]]])
    vals = np.concatenate([w[to_seed_v], w[to_seed_u]])
    coupling = sparse.csr_array((vals, (rows, cols)), shape=(size, labels.size))
    return unknown, laplacian, coupling


@pytest.mark.parametrize(
    "shape,offsets",
    [
        ((9, 11), [[-1, 0], [0, -1]]),
        ((9, 11), LONG_RANGE_2D),
        ((5, 6, 7), [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]),
        ((5, 6, 7), LONG_RANGE_3D),
        ((5, 6, 7), [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [1, 0, 0], [0, 2, -1]]),  # an edge twice
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numba_assembly_equals_the_numpy_assembly_exactly(shape, offsets, seed):
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.0, 1.0, size=(len(offsets),) + shape) ** 3
    weights[rng.random(weights.shape) < 0.2] = 0
    mask = rng.random(shape) > 0.1 if seed else None
    seeds = _random_seeds(shape, 3, seed)
    seeds[rng.random(shape) < 0.08] = 2  # blobs of a label as well as single voxels
    if mask is not None:
        seeds[~mask] = 0
    unknown, laplacian, coupling = _numpy_assembly(weights, seeds, offsets, mask)
    system = RandomWalkerSystem(weights, seeds, offsets, mask=mask, solver="cg")
    np.testing.assert_array_equal(system.unknown, unknown)
    for ours, theirs in ((system.laplacian, laplacian), (system.coupling, coupling)):
        assert ours.shape == theirs.shape
        np.testing.assert_array_equal(ours.indptr, theirs.indptr)
        np.testing.assert_array_equal(ours.indices, theirs.indices)
        np.testing.assert_array_equal(ours.data, theirs.data)  # bit for bit
    assert system.laplacian.indices.dtype == np.int32


def test_a_label_that_touches_no_unknown_voxel_gets_zero_with_cg_as_with_direct():
    # label 2's seed lies inside label-1 seeds: its right-hand side is 0, so cg hands over its
    # column before any iteration (and the others at their own iterations)
    rng = np.random.default_rng(0)
    weights = rng.random((2, 20, 20)) + 0.1
    seeds = np.zeros((20, 20), np.uint64)
    seeds[0, 0], seeds[19, 19] = 1, 3
    seeds[9:12, 9:12] = 1
    seeds[10, 10] = 2
    seg_cg, p_cg = random_walker(weights, seeds, solver="cg", tol=1e-10, return_probabilities=True)
    seg_direct, p_direct = random_walker(weights, seeds, solver="direct", return_probabilities=True)
    np.testing.assert_array_equal(seg_cg, seg_direct)
    np.testing.assert_allclose(p_cg, p_direct, atol=1e-6)
    unknown = seeds == 0
    assert (p_cg[1][unknown] == 0).all() and p_cg[1][10, 10] == 1


@pytest.mark.parametrize("columns", [1, 3, 4])
def test_restriction_of_the_residual_equals_the_transpose_product_on_any_number_of_threads(columns):
    import numba
    from scipy import sparse

    from affseg.graph.random_walker._kernels import residual_restrict

    rng = np.random.default_rng(columns)
    a = sparse.random(1000, 1000, density=0.01, random_state=rng, format="csr")
    p = sparse.random(1000, 70, density=0.05, random_state=rng, format="csr")
    a.sort_indices()
    p.sort_indices()
    x, b = rng.normal(size=(2, 1000, columns))
    expected = p.T @ (b - a @ x)
    results = []
    threads = numba.get_num_threads()
    try:
        for n_threads in sorted({1, threads}):
            numba.set_num_threads(n_threads)
            for extra_parts in (0, 3):
                coarse = np.full((70, columns), np.nan)  # every entry is written
                residual_restrict(a.indptr, a.indices, a.data, x, b, p.indptr, p.indices, p.data, coarse,
                                  np.full((extra_parts, 70, columns), np.nan))
                np.testing.assert_allclose(coarse, expected, rtol=1e-12, atol=1e-12)
                if extra_parts:
                    results.append(coarse)
    finally:
        numba.set_num_threads(threads)
    for other in results[1:]:  # the same parts give the same bits on any number of threads
        np.testing.assert_array_equal(other, results[0])


def test_multigrid_hierarchy_is_galerkin():
    # every level: P = (I - omega D^-1 A) T of its aggregates, R = P^T and A_coarse = R A P
    from scipy import sparse

    from affseg.graph.random_walker.solver import _BlockMultigrid

    image = _smooth_image((10, 40, 40), 3)
    seeds = _random_seeds((10, 40, 40), 5, 4)
    system = RandomWalkerSystem(image_weights(image), seeds, solver="cg", tol=1e-10)
    multigrid = _BlockMultigrid(system.laplacian)
    assert len(multigrid.matrices) >= 3 and multigrid.matrices[-1].shape[0] <= 500

    def dense(csr):
        return sparse.csr_array(csr.arrays[::-1], shape=csr.shape).toarray()

    for level in range(len(multigrid.matrices) - 1):
        a, p = dense(multigrid.matrices[level]), dense(multigrid.prolong[level])
        r = p.T
        coarse = dense(multigrid.matrices[level + 1])
        np.testing.assert_allclose(coarse, r @ a @ p, rtol=1e-12, atol=1e-12 * np.abs(coarse).max())
        np.testing.assert_allclose(coarse, coarse.T, rtol=1e-12, atol=1e-14 * np.abs(coarse).max())
        # the constant vector's smoothed candidate is reproduced by the tentative prolongator:
        # every fine row with an aggregate has one, and every aggregate at least one row
        assert np.all((p != 0).sum(axis=0) > 0)


def test_single_voxel_seeds_match_skimage_in_3d():
    # many scattered single-voxel seeds (the case where aggregation meets many Dirichlet rows)
    shape = (10, 24, 26)
    image = _smooth_image(shape, 11)
    rng = np.random.default_rng(12)
    seeds = np.zeros(shape, np.int64)
    seeds.reshape(-1)[rng.choice(seeds.size, 60, replace=False)] = np.arange(60) % 6 + 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = skimage_rw(image, seeds, beta=130, mode="bf", return_full_prob=True)
    seg, probs = random_walker(image_weights(image, beta=130), seeds, solver="cg", tol=1e-10,
                               return_probabilities=True)
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    np.testing.assert_array_equal(seg, np.arange(1, 7)[np.argmax(expected, axis=0)])


def test_smoothed_prolongator_is_the_dense_formula():
    # P = (I - omega D^-1 A) T with T pyamg's tentative prolongator of the same aggregates and the
    # same smoothed candidate, omega = 4/3 over the Lanczos estimate of rho(D^-1 A)
    from pyamg.aggregation import fit_candidates
    from pyamg.amg_core import standard_aggregation
    from scipy import sparse

    from affseg.graph.random_walker._kernels import improve_candidate, lanczos_radius
    from affseg.graph.random_walker.solver import _BlockMultigrid

    image = _smooth_image((6, 20, 20), 7)
    system = RandomWalkerSystem(image_weights(image), _random_seeds((6, 20, 20), 4, 8), solver="cg")
    multigrid = _BlockMultigrid(system.laplacian)
    indptr, indices, data = multigrid.matrices[0].arrays
    n = system.unknown.size
    aggregate, roots = np.empty(n, indices.dtype), np.empty(n, indices.dtype)
    n_aggregates = standard_aggregation(n, indptr, indices, aggregate, roots)
    assert n_aggregates == multigrid.matrices[1].shape[0]
    candidate = np.ones(n)
    improve_candidate(indptr, indices, data, candidate, 4)
    rows = np.flatnonzero(aggregate >= 0)
    aggregation = sparse.csr_array((np.ones(rows.size), (rows, aggregate[rows])), shape=(n, n_aggregates))
    tentative, _ = fit_candidates(aggregation, candidate[:, None])
    a = system.laplacian.toarray()
    omega = (4.0 / 3.0) / lanczos_radius(indptr, indices, data, 10)
    expected = (np.eye(n) - omega * a / np.diag(a)[:, None]) @ tentative.toarray()
    ours = sparse.csr_array(multigrid.prolong[0].arrays[::-1], shape=(n, n_aggregates)).toarray()
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-14)


def test_block_cg_over_several_blocks_matches_the_direct_solver(monkeypatch):
    import affseg.graph.random_walker.solver as rw

    shape = (8, 24, 24)
    weights = image_weights(_smooth_image(shape, 13))
    seeds = _random_seeds(shape, 9, 14)
    monkeypatch.setattr(rw, "_CG_BLOCK_BYTES", 1)  # the fewest columns per block: 3 blocks for 9 labels
    system = RandomWalkerSystem(weights, seeds, solver="cg", tol=1e-12)
    assert system.block_width() == rw._CG_MIN_BLOCK == 4 and system.block_width(9) == 4  # 4, 4 and 1
    exact = RandomWalkerSystem(weights, seeds, solver="direct").unknown_probabilities()
    np.testing.assert_allclose(system.unknown_probabilities(), exact, atol=1e-9)
    _, probs = random_walker(weights, seeds, solver="cg", tol=1e-12, return_probabilities=True)
    _, probs_exact = random_walker(weights, seeds, solver="direct", return_probabilities=True)
    np.testing.assert_allclose(probs, probs_exact, atol=1e-6)


@pytest.mark.parametrize("unknowns, columns, width", [
    (300_000, 20, 4),  # budget 5 (five arrays of 64 MiB): 4
    (150_000, 20, 8),  # budget 11: 8, so 3 blocks of 8, 8, 4 (not 7, 7, 6)
    (150_000, 9, 8),   # 2 blocks: 5 columns each rounded up to 8
    (150_000, 3, 3),   # one block of 3: never wider than the columns
    (10_000, 50, 50),  # budget 167: one block
])
def test_block_width_is_a_multiple_of_four_within_the_budget(monkeypatch, unknowns, columns, width):
    import affseg.graph.random_walker.solver as rw

    system = RandomWalkerSystem.__new__(RandomWalkerSystem)
    system.solver, system.unknown = "cg", np.zeros(unknowns, np.int64)
    assert system.block_width(columns) == width
    assert system.block_width() % 4 == 0 and system.block_width() >= rw._CG_MIN_BLOCK


def _checkerboard(side, seed):
    rng = np.random.default_rng(seed)
    seeds = np.zeros((side, side), np.int64)
    black = (np.add.outer(np.arange(side), np.arange(side)) % 2) == 0
    seeds[black] = rng.integers(1, 4, int(black.sum()))
    return seeds


def test_checkerboard_seeds_give_a_diagonal_system_solved_exactly():
    # every unknown's neighbours are seeds: L_U has no off-diagonal entry, nothing to aggregate
    from affseg.graph.random_walker.solver import _BlockMultigrid

    image = _smooth_image((60, 60), 15)
    seeds = _checkerboard(60, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = skimage_rw(image, seeds, beta=130, mode="bf", return_full_prob=True)
    weights = image_weights(image, beta=130)
    for solver in ("cg", "direct"):
        _, probs = random_walker(weights, seeds, solver=solver, tol=1e-10, return_probabilities=True)
        np.testing.assert_allclose(probs, expected, atol=3e-8)
    multigrid = _BlockMultigrid(RandomWalkerSystem(weights, seeds, solver="cg").laplacian)
    assert len(multigrid.matrices) == 1 and multigrid.coarse is None


def test_a_large_coarsest_level_is_not_factorised_densely():
    # 20 000 unknowns without off-diagonal entries, and fragments of 2 unknowns cut off by
    # zero-weight edges: the coarsest level is solved by its inverse diagonal
    import affseg.graph.random_walker.solver as rw

    seeds = _checkerboard(200, 17)
    weights = image_weights(_smooth_image((200, 200), 18))
    system = RandomWalkerSystem(weights, seeds, solver="cg", tol=1e-10)
    multigrid = rw._BlockMultigrid(system.laplacian)
    assert multigrid.matrices[-1].shape[0] == system.unknown.size > rw._MAX_DENSE
    assert multigrid.coarse is None
    np.testing.assert_allclose(system.unknown_probabilities(),
                               RandomWalkerSystem(weights, seeds, solver="direct").unknown_probabilities(),
                               atol=1e-12)
    # pairs: seeds on the even columns, the odd columns cut into pairs of rows by zero weights
    shape = (400, 60)
    seeds = np.zeros(shape, np.int64)
    seeds[:, 0::2] = np.random.default_rng(19).integers(1, 4, (shape[0], shape[1] // 2))
    weights = image_weights(_smooth_image(shape, 20))
    weights[0, 2::2, 1::2] = 0  # the edge (u, u - e_y) between row pairs
    system = RandomWalkerSystem(weights, seeds, solver="cg", tol=1e-10)
    multigrid = rw._BlockMultigrid(system.laplacian)
    assert multigrid.matrices[-1].shape[0] <= rw._MAX_DENSE or multigrid.coarse is None
    np.testing.assert_allclose(system.unknown_probabilities(),
                               RandomWalkerSystem(weights, seeds, solver="direct").unknown_probabilities(),
                               atol=1e-9)


def test_tiny_weights_are_solved_or_an_input_error():
    # weights far below float32's range inside a volume of ordinary ones: a clear answer, no crash
    from affseg.errors import InputError

    shape = (6, 30, 30)
    weights = image_weights(_smooth_image(shape, 21))
    weights[:, :, 10:20, 10:20] = 1e-40
    seeds = _random_seeds(shape, 4, 22)
    exact = random_walker(weights, seeds, solver="direct", return_probabilities=True)[1]
    for tol in (1e-3, 1e-10):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                _, probs = random_walker(weights, seeds, solver="cg", tol=tol, return_probabilities=True)
        except InputError:
            continue
        assert np.all(np.isfinite(probs))
        if tol == 1e-10:
            np.testing.assert_allclose(probs, exact, atol=1e-3)


def test_sparse_product_counts_in_int64():
    # a product may hold more entries than its int32 factors count: its indptr is int64, and
    # the hierarchy narrows its arrays to int32 only where they fit
    from scipy import sparse

    from affseg.graph.random_walker._kernels import sparse_product, transpose_csr
    from affseg.graph.random_walker.solver import _index_arrays

    rng = np.random.default_rng(23)
    a = sparse.random_array((30, 20), density=0.3, random_state=rng, format="csr")
    b = sparse.random_array((20, 25), density=0.3, random_state=rng, format="csr")
    a.sort_indices()
    b.sort_indices()
    arrays = [x.astype(np.int32) for x in (a.indptr, a.indices)] + [a.data]
    barrays = [x.astype(np.int32) for x in (b.indptr, b.indices)] + [b.data]
    indptr, indices, data = sparse_product(*arrays, *barrays, 25)
    assert indptr.dtype == np.int64 and indices.dtype == np.int32
    np.testing.assert_allclose(sparse.csr_array((data, indices, indptr), shape=(30, 25)).toarray(),
                               (a @ b).toarray(), rtol=1e-14, atol=1e-15)
    t_indptr, t_indices, t_data = transpose_csr(*arrays, 20)
    assert t_indptr.dtype == np.int64
    np.testing.assert_array_equal(sparse.csr_array((t_data, t_indices, t_indptr), shape=(20, 30)).toarray(),
                                  a.toarray().T)
    narrow = _index_arrays(indptr, indices, (30, 25))
    assert narrow[0].dtype == narrow[1].dtype == np.int32
    wide = _index_arrays(np.array([0, 2**31], np.int64), np.array([0, 1], np.int32), (1, 2))
    assert wide[0].dtype == wide[1].dtype == np.int64


def test_threads_count_every_column_that_misses_its_tolerance(monkeypatch):
    import threading

    import affseg.graph.random_walker.solver as rw

    real = rw._block_pcg
    monkeypatch.setattr(rw, "_block_pcg", lambda a, b, m, tol, **kw: real(a, b, m, tol, maxiter=1, **kw))
    shape = (8, 30, 30)
    system = RandomWalkerSystem(image_weights(_smooth_image(shape, 24)), _random_seeds(shape, 6, 25), solver="cg",
                                tol=1e-12)
    rhs = [system.coupling[:, [k]].toarray() for k in range(6)]

    def work(k):
        for _ in range(20):
            system.solve(rhs[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(rhs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert system.not_converged == 6 * 20


def test_threads_solving_on_one_system_get_their_own_answers():
    import threading

    import numba

    shape = (8, 30, 30)
    weights = image_weights(_smooth_image(shape, 24))
    seeds = _random_seeds(shape, 6, 25)
    system = RandomWalkerSystem(weights, seeds, solver="cg", tol=1e-10)
    rhs = [system.coupling[:, [k]].toarray() * (k + 1) for k in range(6)]
    expected = [system.solve(r) for r in rhs]
    if numba.threading_layer() == "workqueue":
        pytest.skip("numba's workqueue threading layer does not allow concurrent parallel kernels")
    results = [None] * len(rhs)

    def work(k):
        for _ in range(3):
            results[k] = system.solve(rhs[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(rhs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ours, theirs in zip(results, expected):
        np.testing.assert_array_equal(ours, theirs)


def _residual_rows(a, x, b):
    """``b - A x`` summed as the kernels do: each row's entries in order, from 0."""
    out = np.empty_like(b)
    for i in range(b.shape[0]):
        acc = np.zeros(b.shape[1])
        for q in range(a.indptr[i], a.indptr[i + 1]):
            acc = acc + a.data[q] * x[a.indices[q]]
        out[i] = b[i] - acc
    return out


def _restriction_in_parts(p, fine, parts):
    """``P^T fine`` summed as :func:`residual_restrict` documents it: the fine rows in ``parts``
    equal parts, each summed row by row, then the parts added in order."""
    n, m = fine.shape
    sums = []
    for t in range(parts):
        into = np.zeros((p.shape[1], m))
        for i in range(t * n // parts, (t + 1) * n // parts):
            for q in range(p.indptr[i], p.indptr[i + 1]):
                into[p.indices[q]] += p.data[q] * fine[i]
        sums.append(into)
    total = sums[0]
    for other in sums[1:]:
        total = total + other
    return total


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 37])
@pytest.mark.parametrize("columns", [1, 2, 3, 4])
def test_restriction_sums_fixed_parts_in_order_for_any_size(n, columns):
    # fewer fine rows than parts, rows without entries, a coarse column no row reaches; the
    # partial sums are a slice of a larger work array holding stale values (as in the V-cycle)
    import numba
    from scipy import sparse

    from affseg.graph.random_walker._kernels import residual_restrict
    from affseg.graph.random_walker.solver import _RESTRICT_PARTS

    rng = np.random.default_rng(100 * n + columns)
    n_coarse = 4
    dense = rng.normal(size=(n, n_coarse)) * (rng.random((n, n_coarse)) < 0.5)
    dense[::3] = 0  # empty rows
    dense[:, 2] = 0
    p = sparse.csr_array(dense)
    p.sort_indices()
    a = sparse.csr_array(rng.normal(size=(n, n)) * (rng.random((n, n)) < 0.3))
    a.sort_indices()
    x, b = rng.normal(size=(2, n, columns))
    residual = _residual_rows(a, x, b)
    np.testing.assert_allclose(residual, b - a @ x, rtol=1e-13, atol=1e-13)
    expected = _restriction_in_parts(p, residual, _RESTRICT_PARTS)
    np.testing.assert_allclose(expected, dense.T @ residual, rtol=1e-13, atol=1e-13)
    threads = numba.get_num_threads()
    try:
        for n_threads in sorted({1, threads}):
            numba.set_num_threads(n_threads)
            for index in (np.int32, np.int64):
                coarse = np.full((n_coarse, columns), np.nan)
                work = np.full((_RESTRICT_PARTS - 1) * n_coarse * 4 + 5, np.nan)  # made for 4 columns
                partial = work[:(_RESTRICT_PARTS - 1) * n_coarse * columns].reshape(-1, n_coarse, columns)
                residual_restrict(a.indptr.astype(index), a.indices.astype(index), a.data, x, b,
                                  p.indptr.astype(index), p.indices.astype(index), p.data, coarse, partial)
                np.testing.assert_array_equal(coarse, expected)  # the same bits on any number of threads
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize("columns", [1, 3, 4, 5])
def test_product_with_dots_gives_the_bits_of_the_product_then_the_dots(columns):
    from scipy import sparse

    from affseg.graph.random_walker._kernels import column_dots, spmm, spmm_dots

    rng = np.random.default_rng(40 + columns)
    a = sparse.random(1500, 1500, density=0.01, random_state=rng, format="csr")  # several row chunks
    x = rng.normal(size=(1500, columns))
    out, dots = np.full_like(x, np.nan), np.full(columns, np.nan)
    spmm_dots(a.indptr, a.indices, a.data, x, out, dots)
    expected, expected_dots = np.empty_like(x), np.empty(columns)
    spmm(a.indptr, a.indices, a.data, x, expected)
    column_dots(x, expected, expected_dots)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(dots, expected_dots)
    np.testing.assert_allclose(out, a @ x, rtol=1e-12, atol=1e-12)


def test_fold_label_keeps_the_first_best_label_and_clips_the_probabilities():
    from affseg.graph.random_walker._kernels import fold_label

    rng = np.random.default_rng(41)
    columns = np.round(rng.uniform(-0.005, 1.005, size=(4, 300)), 2)  # ties between labels
    unknown = np.sort(rng.choice(1000, 300, replace=False))
    top, best = np.full(300, -np.inf), np.zeros(300, np.int64)
    rows = np.full((4, 1000), -1.0, np.float32)
    for k in (2, 0, 3, 1):  # any order of the labels
        low, high = fold_label(columns[k], k, top, best, rows[k], unknown)
        assert (low, high) == (columns[k].min(), columns[k].max())
    # ties: the smaller label index, as numpy's argmax picks the first
    np.testing.assert_array_equal(best, columns.argmax(axis=0))
    np.testing.assert_array_equal(top, columns.max(axis=0))
    np.testing.assert_array_equal(rows[:, unknown], np.clip(columns, 0, 1).astype(np.float32))
    assert (np.delete(rows, unknown, axis=1) == -1).all()
    fold_label(columns[0], 0, top, best, np.empty(0, np.float32), unknown)  # no probabilities kept


def _sweep_order(bounds, backward):
    """The rows in the order :func:`gauss_seidel` documents: the even parts, then the odd ones,
    each part's rows in increasing order; backward the exact reverse."""
    parts = [np.arange(bounds[t], bounds[t + 1]) for t in range(len(bounds) - 1)]
    order = np.concatenate(parts[0::2] + parts[1::2]) if parts else np.zeros(0, np.int64)
    return order[::-1] if backward else order


def _gauss_seidel_rows(a, inverse, x, b, order):
    """One Gauss-Seidel sweep row by row in ``order``, each row's sum as the kernels make it."""
    x = x.copy()
    for i in order:
        acc = np.zeros(b.shape[1])
        for q in range(a.indptr[i], a.indptr[i + 1]):
            acc = acc + a.data[q] * x[a.indices[q]]
        x[i] = x[i] + inverse[i] * (b[i] - acc)
    return x


@pytest.mark.parametrize("parts", [1, 2, 3, 6])
@pytest.mark.parametrize("columns", [1, 3, 4])
def test_gauss_seidel_sweeps_rows_in_the_documented_order_on_any_number_of_threads(parts, columns):
    # a banded symmetric matrix split into parts no shorter than its bandwidth: the sweep is a
    # sequential Gauss-Seidel sweep in the order of the parts, bit for bit, on 1 or all threads,
    # and the backward sweep is the exact reverse
    import numba
    from scipy import sparse

    from affseg.graph.random_walker._kernels import gauss_seidel

    rng = np.random.default_rng(10 * parts + columns)
    n, band = 61, 5
    off = sparse.random(n, n, density=0.2, random_state=rng, format="csr")
    off = sparse.triu(off, 1) - sparse.triu(off, band + 1)
    a = sparse.csr_array(off + off.T + sparse.diags(np.full(n, 3.0)))
    a.sort_indices()
    bounds = np.arange(parts + 1) * n // parts
    assert np.diff(bounds).min() >= band
    inverse = 1.0 / a.diagonal()
    x, b = rng.normal(size=(2, n, columns))
    threads = numba.get_num_threads()
    try:
        for backward in (False, True):
            expected = _gauss_seidel_rows(a, inverse, x, b, _sweep_order(bounds, backward))
            for n_threads in sorted({1, threads}):
                numba.set_num_threads(n_threads)
                out = x.copy()
                gauss_seidel(a.indptr, a.indices, a.data, inverse, out, b, bounds, backward)
                np.testing.assert_array_equal(out, expected)
    finally:
        numba.set_num_threads(threads)


def test_sweep_parts_are_no_shorter_than_the_bandwidth():
    from scipy import sparse

    from affseg.graph.random_walker.solver import _SWEEP_PARTS, _Csr, _sweep_parts

    for n, band in [(1000, 10), (1000, 300), (1000, 999), (5, 0), (1, 0)]:
        a = _Csr(sparse.diags([np.ones(n - band), np.ones(n), np.ones(n - band)], [-band, 0, band]) if band
                 else sparse.identity(n))
        bounds = _sweep_parts(a)
        assert bounds[0] == 0 and bounds[-1] == n and np.all(np.diff(bounds) >= max(1, band))
        assert len(bounds) - 1 == max(1, min(_SWEEP_PARTS, n // max(1, band)))


def _multigrid_of(shape, n_labels, seed):
    from affseg.graph.random_walker.solver import _BlockMultigrid

    system = RandomWalkerSystem(image_weights(_smooth_image(shape, seed)), _random_seeds(shape, n_labels, seed + 1),
                                solver="cg", tol=1e-10)
    return system, _BlockMultigrid(system.laplacian)


def _reference_cycle(multigrid, level, b):
    """The V-cycle of :class:`_BlockMultigrid` with scipy: ``P^T`` formed, each Gauss-Seidel sweep
    a triangular solve of the matrix permuted to the order of the parts."""
    from scipy import sparse
    from scipy.linalg import cho_solve
    from scipy.sparse.linalg import spsolve_triangular

    if level == len(multigrid.matrices) - 1:
        if multigrid.coarse is None:
            return multigrid.coarse_inverse_diagonal[:, None] * b
        return cho_solve(multigrid.coarse, b)
    a = sparse.csr_array(multigrid.matrices[level].arrays[::-1], shape=multigrid.matrices[level].shape)
    p = sparse.csr_array(multigrid.prolong[level].arrays[::-1], shape=multigrid.prolong[level].shape)
    order = _sweep_order(multigrid.parts[level], False)
    permuted = sparse.csr_array(a[order][:, order])

    def sweep(x, lower):
        triangle = sparse.tril(permuted) if lower else sparse.triu(permuted)
        step = np.zeros_like(x)
        step[order] = spsolve_triangular(sparse.csr_matrix(triangle), (b - a @ x)[order], lower=lower)
        return x + step

    x = np.zeros_like(b)
    for _ in range(multigrid.sweeps(level)):
        x = sweep(x, True)
    x = x + p @ _reference_cycle(multigrid, level + 1, p.T @ (b - a @ x))
    for _ in range(multigrid.sweeps(level)):
        x = sweep(x, False)
    return x


def test_v_cycle_is_symmetric():
    # CG needs a symmetric preconditioner: <M u, v> = <u, M v>
    system, multigrid = _multigrid_of((10, 40, 40), 4, 35)
    assert len(multigrid.matrices) >= 3 and max(len(bounds) for bounds in multigrid.parts) > 2
    rng = np.random.default_rng(36)
    u, v = rng.normal(size=(2, system.unknown.size, 1))
    mu, mv = (multigrid(np.ascontiguousarray(w), np.empty_like(w), multigrid.workspace(1)) for w in (u, v))
    assert abs(float(mu[:, 0] @ v[:, 0]) - float(u[:, 0] @ mv[:, 0])) <= 1e-10 * abs(float(mu[:, 0] @ v[:, 0]))


def test_v_cycle_with_fewer_columns_than_its_workspace():
    # block cg drops converged columns: the cycle then runs on fewer columns than its work
    # arrays were made for, and must give the bits of a workspace made for those columns
    # (the dense coarsest solve of several columns at once need not give each column's bits alone)
    system, multigrid = _multigrid_of((10, 40, 40), 4, 30)
    assert len(multigrid.matrices) >= 3 and multigrid.coarse is not None
    rng = np.random.default_rng(31)
    b = rng.normal(size=(system.unknown.size, 4))
    workspace = multigrid.workspace(4)
    for flat in workspace:
        flat[:] = np.nan  # nothing stale may be read
    for columns in (4, 2, 1, 3, 4):
        block = np.ascontiguousarray(b[:, :columns])
        out = np.full(block.shape, np.nan)
        multigrid(block, out, workspace)
        fitted = np.full(block.shape, np.nan)
        multigrid(block, fitted, multigrid.workspace(columns))
        np.testing.assert_array_equal(out, fitted)
        np.testing.assert_allclose(out, _reference_cycle(multigrid, 0, block), rtol=1e-10,
                                   atol=1e-12 * np.abs(out).max())


def _block_cg_problem(shape, n_labels, seed):
    from affseg.graph.random_walker.solver import _block_pcg

    system, multigrid = _multigrid_of(shape, n_labels, seed)
    rhs = system.coupling.toarray()
    workspace = multigrid.workspace(rhs.shape[1] + 2)
    counter = [0]

    def precondition(r, out):
        counter[0] += 1
        return multigrid(r, out, workspace)

    def solve(b, tol, maxiter=1000):
        """(solution, failed) without a callback, and the hand-overs ``(column, values, cycles)``
        with one, its return value and failures."""
        plain, failed = _block_pcg(multigrid.matrices[0], np.array(b, order="C"), precondition, tol, maxiter)
        handed = []
        counter[0] = 0
        result = _block_pcg(multigrid.matrices[0], np.array(b, order="C"), precondition, tol, maxiter,
                            on_done=lambda j, values: handed.append((j, values.copy(), counter[0])))
        return plain, failed, handed, result

    return rhs, solve


@pytest.mark.parametrize("maxiter", [1000, 3])
def test_block_cg_hands_over_each_column_once_with_the_solution_it_returns(maxiter):
    # zero right-hand sides, columns converging at different iterations, columns stopped by
    # maxiter: each one handed over once, as the bits the solver returns without a callback
    rhs, solve = _block_cg_problem((8, 30, 30), 5, 32)
    rng = np.random.default_rng(33)
    # (the constant column converges a cycle or two after the others)
    b = np.column_stack([rhs[:, 0], np.zeros(rhs.shape[0]), rhs[:, 1:], rng.normal(size=rhs.shape[0]),
                         np.ones(rhs.shape[0]), np.zeros(rhs.shape[0])])
    plain, failed, handed, result = solve(b, 1e-10, maxiter)
    assert result == (None, failed)
    assert sorted(j for j, _, _ in handed) == list(range(b.shape[1]))
    assert [(j, cycles) for j, _, cycles in handed[:2]] == [(1, 0), (b.shape[1] - 1, 0)]  # zeros, at once
    for j, values, _ in handed:
        np.testing.assert_array_equal(values, plain[:, j])
    assert (plain[:, [1, -1]] == 0).all()
    if maxiter == 3:
        assert failed == b.shape[1] - 2
    else:
        assert failed == 0
        assert len({cycles for j, _, cycles in handed if j not in (1, b.shape[1] - 1)}) > 1  # one at a time


def test_block_cg_hands_over_columns_that_converge_together_or_are_all_zero():
    # a diagonal system: the preconditioner is exact, every column converges at the first step
    from affseg.graph.random_walker.solver import _block_pcg, _BlockMultigrid

    seeds = _checkerboard(40, 34)
    system = RandomWalkerSystem(image_weights(_smooth_image((40, 40), 35)), seeds, solver="cg", tol=1e-10)
    multigrid = _BlockMultigrid(system.laplacian)
    rhs = system.coupling.toarray()
    workspace = multigrid.workspace(rhs.shape[1])

    def precondition(r, out):
        return multigrid(r, out, workspace)

    plain, failed = _block_pcg(multigrid.matrices[0], rhs.copy(), precondition, 1e-10)
    handed = []
    result = _block_pcg(multigrid.matrices[0], rhs.copy(), precondition, 1e-10,
                        on_done=lambda j, values: handed.append((j, values.copy())))
    assert result == (None, 0) and failed == 0
    assert [j for j, _ in handed] == list(range(rhs.shape[1]))
    for j, values in handed:
        np.testing.assert_array_equal(values, plain[:, j])
    handed.clear()
    result = _block_pcg(multigrid.matrices[0], np.zeros_like(rhs), precondition, 1e-10,
                        on_done=lambda j, values: handed.append((j, values.copy())))
    assert result == (None, 0) and [j for j, _ in handed] == list(range(rhs.shape[1]))
    assert all((values == 0).all() and values.shape == (rhs.shape[0],) for _, values in handed)


@pytest.mark.parametrize("solver", ["cg", "direct"])
@pytest.mark.parametrize("blocks", [1, 3])
def test_unknown_probabilities_hands_over_what_it_returns(monkeypatch, solver, blocks):
    import affseg.graph.random_walker.solver as rw

    if blocks > 1:
        monkeypatch.setattr(rw, "_CG_BLOCK_BYTES", 1)  # 3 columns a block
    shape = (8, 30, 30)
    weights = image_weights(_smooth_image(shape, 36))
    seeds = _random_seeds(shape, 7, 37)
    system = RandomWalkerSystem(weights, seeds, solver=solver, tol=1e-8)
    expected = system.unknown_probabilities([6, 0, 3, 4])
    handed = {}

    def take(j, values):
        assert j not in handed and values.shape == (system.unknown.size,)
        handed[j] = values.copy()

    assert system.unknown_probabilities([6, 0, 3, 4], on_column=take) is None
    assert sorted(handed) == [0, 1, 2, 3]
    for j, values in handed.items():
        np.testing.assert_array_equal(values, expected[:, j])
    assert system.not_converged == 0


def test_unknown_probabilities_counts_columns_that_miss_the_tolerance(monkeypatch):
    import affseg.graph.random_walker.solver as rw

    real = rw._block_pcg
    monkeypatch.setattr(rw, "_block_pcg", lambda a, b, m, tol, **kw: real(a, b, m, tol, maxiter=2, **kw))
    shape = (8, 30, 30)
    weights = image_weights(_smooth_image(shape, 38))
    seeds = _random_seeds(shape, 5, 39)
    plain = RandomWalkerSystem(weights, seeds, solver="cg", tol=1e-12)
    expected = plain.unknown_probabilities()
    handed = RandomWalkerSystem(weights, seeds, solver="cg", tol=1e-12)
    got = np.full_like(expected, np.nan)
    handed.unknown_probabilities(on_column=lambda j, values: got.__setitem__((slice(None), j), values))
    np.testing.assert_array_equal(got, expected)
    assert handed.not_converged == plain.not_converged == 5


class _CallbackError(Exception):
    pass


@pytest.mark.parametrize("solver", ["cg", "direct"])
@pytest.mark.parametrize("error", [_CallbackError, RuntimeError, np.linalg.LinAlgError])
def test_an_exception_in_the_column_callback_propagates_as_it_is(solver, error):
    # not turned into the solver's own error (a singular system) on the way out
    from affseg.graph.random_walker.solver import _block_pcg

    shape = (8, 30, 30)
    system = RandomWalkerSystem(image_weights(_smooth_image(shape, 40)), _random_seeds(shape, 5, 41),
                                solver=solver, tol=1e-8)
    calls = []

    def fail(j, values):
        calls.append(j)
        if len(calls) == 2:
            raise error("from the callback")

    with pytest.raises(error, match="from the callback") as raised:
        system.unknown_probabilities(on_column=fail)
    assert raised.type is error and raised.value.__cause__ is None and len(calls) == 2
    if solver == "cg":
        calls.clear()
        multigrid = system._amg()
        workspace = multigrid.workspace(5)
        with pytest.raises(error, match="from the callback"):
            _block_pcg(multigrid.matrices[0], system.coupling.toarray(), lambda r, out: multigrid(r, out, workspace),
                       1e-8, on_done=fail)
        assert len(calls) == 2


@pytest.mark.parametrize("solver", ["cg", "direct"])
def test_the_column_callback_runs_under_the_callers_floating_point_settings(solver):
    # the solver silences overflow inside its iterations, not in the caller's code
    shape = (8, 30, 30)
    system = RandomWalkerSystem(image_weights(_smooth_image(shape, 42)), _random_seeds(shape, 3, 43),
                                solver=solver, tol=1e-8)

    def divide(j, values):
        return np.float64(1.0) / np.float64(0.0)

    with np.errstate(divide="raise"), pytest.raises(FloatingPointError):
        system.unknown_probabilities(on_column=divide)


def _tied_walk(n, seed):
    """Weights and seeds on a (3, n) grid whose middle row is unknown, each of its voxels joined
    only to the seed above and the seed below, by the same power of two: probability exactly
    1/2 for each of the two labels (or 1 where they are the same), on either solver."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros((3, n), np.int64)
    seeds[0] = rng.integers(1, 6, n)
    seeds[2] = rng.integers(1, 6, n)
    seeds[0, :5], seeds[2, :5] = [1, 2, 3, 4, 5], [5, 4, 3, 2, 1]  # every label, both ways round
    weights = np.zeros((2, 3, n))  # no edge along a row
    weights[0, 1] = weights[0, 2] = 2.0 ** rng.integers(-3, 3, n)  # (u, u - e_y)
    return weights, seeds


@pytest.mark.parametrize("solver", ["cg", "direct"])
@pytest.mark.parametrize("order", ["solved", "reversed"])
def test_exact_ties_go_to_the_smaller_label_whatever_order_the_columns_come_in(monkeypatch, solver, order):
    import affseg.graph.random_walker.solver as rw

    arrived = []
    if order == "reversed":  # hand the columns of each block over last first
        real = rw.RandomWalkerSystem.unknown_probabilities

        def reversed_columns(self, labels=None, *, on_column=None):
            x = real(self, labels)
            for j in reversed(range(x.shape[1])):
                arrived.append(j)
                on_column(j, x[:, j])

        monkeypatch.setattr(rw.RandomWalkerSystem, "unknown_probabilities", reversed_columns)
    weights, seeds = _tied_walk(600, 44)
    seg, probs = random_walker(weights, seeds, solver=solver, tol=1e-8, return_probabilities=True)
    above, below = seeds[0] - 1, seeds[2] - 1
    columns = np.arange(seeds.shape[1])
    split = above != below
    assert (probs[above[split], 1, columns[split]] == 0.5).all()  # exact ties
    assert (probs[below[split], 1, columns[split]] == 0.5).all()
    np.testing.assert_array_equal(seg[1], np.minimum(seeds[0], seeds[2]))
    if order == "reversed":
        assert arrived[:2] == [4, 3]


def test_cg_probabilities_have_the_same_float64_bits_on_any_number_of_threads():
    # the float64 solution itself, not only its float32 rounding: every sum of the solve (the
    # dot products of CG included) is made in the same order on 1 thread and on all of them
    import numba

    rng = np.random.default_rng(1)
    shape = (12, 30, 30)
    offsets = np.array([[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -3, 0], [0, 0, -3], [-2, 0, 0], [0, 4, 1]])
    weights = rng.random((len(offsets),) + shape) + 0.05
    seeds = np.zeros(shape, np.int64)
    where = rng.choice(seeds.size, 40, replace=False)
    seeds.reshape(-1)[where] = rng.integers(1, 7, 40)
    mask = rng.random(shape) < 0.9
    mask.reshape(-1)[where] = True
    system = RandomWalkerSystem(weights, seeds, offsets, mask=mask, solver="cg", tol=1e-8)
    threads = numba.get_num_threads()
    results = []
    try:
        for n_threads in sorted({1, 2, threads}):
            numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
            results.append(system.unknown_probabilities(np.arange(4)))
    finally:
        numba.set_num_threads(threads)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_cg_gives_the_same_bits_on_any_number_of_threads():
    import numba

    shape = (10, 40, 40)
    weights = image_weights(_smooth_image(shape, 45))
    seeds = _random_seeds(shape, 6, 46)
    threads = numba.get_num_threads()
    results = []
    try:
        for n_threads in sorted({1, threads}):
            numba.set_num_threads(n_threads)
            results.append(random_walker(weights, seeds, solver="cg", tol=1e-6, return_probabilities=True))
    finally:
        numba.set_num_threads(threads)
    for seg, probs in results[1:]:
        np.testing.assert_array_equal(seg, results[0][0])
        np.testing.assert_array_equal(probs, results[0][1])
