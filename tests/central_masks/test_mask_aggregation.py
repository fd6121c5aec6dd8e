"""Affinities from central-instance masks: exact on ground truth, MaskAggr against a brute-force
double loop, tiling-invariant, clear errors."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import affseg
from affseg.central_masks import (
    affinities_from_latents,
    affinities_from_masks,
    branch_for_offsets,
    central_mask_targets,
    downscale_labels,
)
from affseg.errors import InputError

CASES = {
    2: dict(shape=(12, 14), window=(5, 7), factor=(2, 1), offsets=[[-2, 0], [0, -1], [0, -3], [4, 2], [-2, 3]]),
    3: dict(shape=(4, 12, 10), window=(3, 5, 5), factor=(1, 2, 2), offsets=[[-1, 0, 0], [0, -2, 0], [0, 0, -4],
                                                                              [1, 2, -2], [0, 4, 4]]),
}


def all_window_offsets(window, factor):
    """Every non-zero full-resolution offset a branch can serve."""
    ranges = [range(-(w // 2), w // 2 + 1) for w in window]
    return [list(np.multiply(o, factor)) for o in itertools.product(*ranges) if any(o)]


def ground_truth_masks(labels, window, factor):
    grid = downscale_labels(labels, factor)
    centres = np.argwhere(np.ones(grid.shape, bool))
    masks, _ = central_mask_targets(labels, centres, window=window, factor=factor, boundary_margin=0)
    return masks.reshape(grid.shape + tuple(window))


def upsampled(values, factor):
    for axis, f in enumerate(factor):
        values = np.repeat(values, f, axis=axis + 1)
    return values


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("readout", ["aggregate", "centre"])
@pytest.mark.parametrize("with_factor", [False, True])
def test_ground_truth_masks_give_affinities_from_labels_for_every_offset(ndim, readout, with_factor):
    case = CASES[ndim]
    factor = case["factor"] if with_factor else (1,) * ndim
    labels = np.random.default_rng(ndim).integers(0, 4, case["shape"]).astype(np.uint64)
    masks = ground_truth_masks(labels, case["window"], factor)
    offsets = all_window_offsets(case["window"], factor)
    affs, variance = affinities_from_masks(masks, offsets, factor=factor, readout=readout)
    grid_offsets = np.array(offsets) // np.array(factor)
    expected, _ = affseg.affinities_from_labels(downscale_labels(labels, factor), grid_offsets)
    np.testing.assert_array_equal(affs, upsampled(expected, factor))
    if with_factor is False:
        np.testing.assert_array_equal(affs, affseg.affinities_from_labels(labels, offsets)[0])
    assert not variance.any()


def brute_force(masks, grid_offsets, readout):
    """The definition, edge by edge and mask by mask, on the grid (two-pass mean and variance)."""
    ndim = masks.ndim // 2
    grid, window = masks.shape[:ndim], np.array(masks.shape[ndim:])
    radius = window // 2
    affs = np.zeros((len(grid_offsets),) + grid)
    variance = np.zeros_like(affs)
    for c, o in enumerate(grid_offsets):
        for u in itertools.product(*map(range, grid)):
            v = np.add(u, o)
            if np.any(v < 0) or np.any(v >= grid):
                continue
            if readout == "centre":
                affs[(c,) + u] = masks[u][tuple(radius + o)]
                continue
            votes, weights = [], []
            for centre in itertools.product(*map(range, grid)):
                ku, kv = np.subtract(u, centre) + radius, v - centre + radius
                if np.any(np.abs(ku - radius) > radius) or np.any(np.abs(kv - radius) > radius):
                    continue
                p, q = masks[centre][tuple(ku)], masks[centre][tuple(kv)]
                votes.append(p * q)
                weights.append(p + q - p * q)
            w = np.array(weights)
            if w.sum() > 0:
                mean = np.sum(w * votes) / w.sum()
                affs[(c,) + u] = mean
                variance[(c,) + u] = np.sum(w * (np.array(votes) - mean) ** 2) / w.sum()
    return affs, variance


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("readout", ["aggregate", "centre"])
def test_mask_aggregation_equals_brute_force_on_random_soft_masks(ndim, readout):
    case = CASES[ndim]
    factor = case["factor"]
    grid = tuple(n // f for n, f in zip(case["shape"], factor))
    rng = np.random.default_rng(10 + ndim)
    masks = rng.random(grid + case["window"]).astype(np.float32)
    masks[rng.random(masks.shape) < 0.2] = 0  # exact zeros: masks that give no evidence
    offsets = case["offsets"]
    affs, variance = affinities_from_masks(masks, offsets, factor=factor, readout=readout)
    expected_affs, expected_var = brute_force(masks.astype(np.float64), np.array(offsets) // np.array(factor),
                                              readout)
    np.testing.assert_allclose(affs, upsampled(expected_affs, factor), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance, upsampled(expected_var, factor), rtol=1e-4, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), ndim=st.sampled_from([2, 3]), zeros=st.floats(0, 1))
def test_mask_aggregation_matches_brute_force_and_stays_a_probability(seed, ndim, zeros):
    rng = np.random.default_rng(seed)
    grid = tuple(int(n) for n in rng.integers(1, 6, ndim))
    window = tuple(int(w) for w in rng.choice([1, 3, 5], ndim))
    offsets = [o for o in all_window_offsets(window, (1,) * ndim)]
    if not offsets:
        return
    masks = rng.random(grid + window)
    masks[rng.random(masks.shape) < zeros] = 0
    masks[rng.random(masks.shape) < zeros / 2] = 1
    affs, variance = affinities_from_masks(masks, offsets)
    expected_affs, expected_var = brute_force(masks, np.array(offsets), "aggregate")
    np.testing.assert_allclose(affs, expected_affs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(variance, expected_var, rtol=1e-4, atol=1e-6)
    assert affs.min() >= 0 and affs.max() <= 1 and variance.min() >= 0 and variance.max() <= 0.25 + 1e-6


def code_decoder(table):
    """A decoder that looks the mask up by the first latent channel (elementwise: exact in any batch)."""
    return lambda codes: table[codes[:, 0].astype(np.int64)]


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("readout", ["aggregate", "centre"])
@pytest.mark.parametrize("tile", ["one", "small", "uneven"])
def test_decoding_tile_by_tile_equals_the_whole_volume(ndim, readout, tile):
    case = CASES[ndim]
    factor, window = case["factor"], case["window"]
    grid = tuple(n // f for n, f in zip(case["shape"], factor))
    rng = np.random.default_rng(3)
    table = rng.random((int(np.prod(grid)),) + window).astype(np.float32)
    latents = np.stack([np.arange(int(np.prod(grid)), dtype=np.float32).reshape(grid), rng.random(grid)])
    tile_shape = {"one": grid, "small": (1,) * ndim, "uneven": tuple(max(1, g // 2 + 1) for g in grid)}[tile]
    calls = []

    def decode(codes):
        calls.append(len(codes))
        return code_decoder(table)(codes)

    tiled = affinities_from_latents(latents, decode, case["offsets"], window=window, factor=factor,
                                    readout=readout, tile_shape=tile_shape)
    whole = affinities_from_masks(table.reshape(grid + window), case["offsets"], factor=factor, readout=readout)
    np.testing.assert_array_equal(tiled[0], whole[0])
    np.testing.assert_array_equal(tiled[1], whole[1])
    halo = np.array(window) // 2 if readout == "aggregate" else 0
    assert max(calls) <= np.prod(np.minimum(np.add(tile_shape, 2 * halo), grid))


def test_a_decoder_with_arithmetic_gives_the_same_affinities_per_tile():
    rng = np.random.default_rng(5)
    grid, window, q = (3, 9, 8), (3, 5, 5), 6
    weight = rng.normal(size=(q, int(np.prod(window))))

    def decode(codes):
        return (1 / (1 + np.exp(-codes.astype(np.float64) @ weight))).reshape((-1,) + window)

    latents = rng.normal(size=(q,) + grid).astype(np.float32)
    offsets = [[-1, 0, 0], [0, -2, 1], [0, 0, -2]]
    whole = affinities_from_latents(latents, decode, offsets, window=window, tile_shape=grid)
    tiled = affinities_from_latents(latents, decode, offsets, window=window, tile_shape=(1, 4, 3))
    np.testing.assert_allclose(tiled[0], whole[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(tiled[1], whole[1], rtol=0, atol=1e-6)


def test_output_shape_that_the_factor_does_not_divide_and_border_edges():
    labels = np.ones((6, 8), np.uint64)
    labels[:, 4:] = 2
    masks = ground_truth_masks(labels, (3, 3), (2, 2))
    affs, _ = affinities_from_masks(masks, [[0, -2], [2, 0]], factor=(2, 2), shape=(7, 8))
    assert affs.shape == (2, 7, 8)  # row 6 lies past the grid and takes its last row
    expected_left = np.array([0, 0, 1, 1, 0, 0, 1, 1], np.float32)  # the partner two columns left
    np.testing.assert_array_equal(affs[0], np.tile(expected_left, (7, 1)))
    np.testing.assert_array_equal(affs[1, :4], 1)  # the partner's grid row (u // 2 + 1) exists up to row 3;
    np.testing.assert_array_equal(affs[1, 4:], 0)  # from row 4 on it lies past the grid: no mask speaks for it


def test_branch_for_offsets_takes_the_finest_branch_that_fits():
    branches = [((3, 5, 5), (1, 4, 4)), ((3, 7, 7), (1, 1, 1)), ((1, 5, 5), (1, 8, 8))]
    offsets = [[-1, 0, 0], [0, -3, 0], [0, -8, 0], [0, -16, 16], [0, 0, -4]]
    assert branch_for_offsets(offsets, branches) == [1, 1, 0, 2, 0]
    with pytest.raises(InputError, match=r"offset \[0, 0, -12\] fits no branch"):
        branch_for_offsets([[0, 0, -12]], branches)


@pytest.mark.parametrize("kwargs, message", [
    (dict(window=(3, 4, 5)), "odd"),
    (dict(offsets=[[0, -3, 0]]), r"offset \[0, -3, 0\] does not fit"),
    (dict(offsets=[[0, -1, 0]], factor=(1, 2, 2)), "multiple of the factor"),
    (dict(readout="mean"), "readout"),
    (dict(tile_shape=(1, 2)), "tile_shape"),
    (dict(shape=(3, 40, 4)), "does not match the grid"),
])
def test_bad_input_is_refused_before_any_decoding(kwargs, message):
    latents = np.zeros((2, 3, 4, 4), np.float32)
    args = dict(window=(3, 5, 5), offsets=[[-1, 0, 0]])
    args.update(kwargs)
    offsets = args.pop("offsets")
    decoded = []
    with pytest.raises(InputError, match=message):
        affinities_from_latents(latents, lambda c: decoded.append(c), offsets, **args)
    assert not decoded


def test_decoder_output_is_checked():
    latents = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(InputError, match=r"decode returned masks of shape \(48, 3, 3, 3\)"):
        affinities_from_latents(latents, lambda c: np.zeros((len(c), 3, 3, 3)), [[-1, 0, 0]], window=(3, 5, 5))
    with pytest.raises(InputError, match=r"decoded masks must lie in \[0, 1\]"):
        affinities_from_latents(latents, lambda c: np.full((len(c), 3, 5, 5), 2.0), [[-1, 0, 0]], window=(3, 5, 5))
    with pytest.raises(InputError, match="latents must be"):
        affinities_from_latents(np.zeros((4, 4)), lambda c: c, [[-1, 0]], window=(3, 3))
    with pytest.raises(InputError, match="masks must be"):
        affinities_from_masks(np.zeros((4, 4, 3)), [[-1, 0]])
