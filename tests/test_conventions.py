import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from affseg import affinities_from_labels
from affseg.conventions import (
    from_boundaries,
    from_mwatershed,
    from_waterz,
    invert_offsets,
    nearest_neighbour_affinities,
    reorder_channels,
    to_boundaries,
    to_mwatershed,
    to_waterz,
)


def brute_force_affinities(labels, offsets):
    affs = np.zeros((len(offsets),) + labels.shape, np.float32)
    mask = np.zeros_like(affs)
    for c, o in enumerate(offsets):
        for u in np.ndindex(labels.shape):
            w = tuple(np.add(u, o))
            if all(0 <= w[d] < labels.shape[d] for d in range(labels.ndim)):
                mask[(c,) + u] = 1
                affs[(c,) + u] = labels[u] == labels[w] and labels[u] != 0
    return affs, mask


@pytest.mark.parametrize(
    "shape, offsets",
    [
        ((4, 5, 6), [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]),
        ((4, 5, 6), [[1, 0, 0], [0, -3, 2], [-2, 0, 4]]),
        ((7, 9), [[-1, 0], [0, -1], [0, 3], [-4, -2]]),
    ],
)
def test_affinities_from_labels_match_brute_force(shape, offsets):
    labels = np.random.default_rng(0).integers(0, 3, shape).astype(np.uint64)
    affs, mask = affinities_from_labels(labels, offsets)
    ref_affs, ref_mask = brute_force_affinities(labels, offsets)
    np.testing.assert_array_equal(affs, ref_affs)
    np.testing.assert_array_equal(mask, ref_mask)
    assert affs.dtype == np.float32


def test_affinities_default_offsets_and_mask():
    labels = np.array([[[1, 1, 2], [1, 0, 2]]], dtype=np.uint64)
    mask = np.ones(labels.shape, bool)
    mask[0, 0, 0] = False
    affs, affs_mask = affinities_from_labels(labels, mask=mask)
    assert affs.shape == (3, 1, 2, 3)
    # x-channel links (y, x) with (y, x - 1)
    np.testing.assert_array_equal(affs[2, 0], [[0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(affs[1, 0], [[0, 0, 0], [1, 0, 1]])
    # voxel (0, 0, 0) is outside the mask: its edges and the ones pointing to it are masked
    assert affs_mask[2, 0, 0, 1] == 0 and affs_mask[1, 0, 1, 0] == 0 and affs_mask[2, 0, 0, 2] == 1
    assert affs_mask[0].sum() == 0  # no z partner in a single section


@given(arrays(np.uint8, st.tuples(st.integers(1, 5), st.integers(1, 6), st.integers(1, 6)),
              elements=st.integers(0, 3)))
def test_invert_offsets_twice_is_identity_inside(labels):
    offsets = np.array([[-1, 0, 0], [0, 2, 0], [0, 0, -3]])
    affs, mask = affinities_from_labels(labels, offsets)
    inv, inv_offsets = invert_offsets(affs, offsets)
    np.testing.assert_array_equal(inv_offsets, -offsets)
    # the inverted affinities are the ground truth of the negated offsets
    ref, _ = affinities_from_labels(labels, inv_offsets)
    np.testing.assert_array_equal(inv, ref)
    back, back_offsets = invert_offsets(inv, inv_offsets)
    np.testing.assert_array_equal(back * mask, affs)
    np.testing.assert_array_equal(back_offsets, offsets)


def test_nearest_neighbour_from_plus_one_offsets_equals_minus_one():
    labels = np.random.default_rng(1).integers(1, 4, (3, 6, 7)).astype(np.uint64)
    minus, _ = affinities_from_labels(labels)
    plus, _ = affinities_from_labels(labels, np.eye(3, dtype=int))
    np.testing.assert_array_equal(nearest_neighbour_affinities(plus, np.eye(3, dtype=int)), minus)
    np.testing.assert_array_equal(to_waterz(plus, np.eye(3, dtype=int)), minus)


def test_reorder_channels_xyz_order():
    labels = np.random.default_rng(2).integers(1, 4, (3, 6, 7)).astype(np.uint64)
    affs, _ = affinities_from_labels(labels)
    xyz = reorder_channels(affs, None, [[0, 0, -1], [0, -1, 0], [-1, 0, 0]])
    np.testing.assert_array_equal(xyz, affs[::-1])


def test_waterz_mwatershed_boundary_round_trips():
    affs = np.random.default_rng(3).random((3, 4, 5, 6)).astype(np.float32)
    back, offsets = from_waterz(to_waterz(affs))
    np.testing.assert_array_equal(back, affs)
    weights, mws_offsets = to_mwatershed(affs, bias=[0.5, 0.5, 0.3])
    assert weights.dtype == np.float64 and mws_offsets == offsets.tolist()
    np.testing.assert_allclose(weights[2], affs[2].astype(np.float64) - 0.3)
    again, _ = from_mwatershed(weights, mws_offsets, bias=[0.5, 0.5, 0.3])
    np.testing.assert_allclose(again, affs, atol=1e-7)
    np.testing.assert_allclose(from_boundaries(to_boundaries(affs)), affs, atol=1e-7)
    np.testing.assert_allclose(to_boundaries(affs), 1 - affs)


@pytest.mark.parametrize(
    "affs, offsets, message",
    [
        (np.full((3, 2, 2, 2), np.nan, np.float32), None, "NaN"),
        (np.full((3, 2, 2, 2), 1.5, np.float32), None, r"\[0, 1\]"),
        (np.zeros((2, 2, 2, 2), np.float32), None, "2 channels but 3 offsets"),
        (np.zeros((1, 2, 2, 2), np.float32), [[0, 0, 0]], "all zero"),
        (np.zeros((1, 2, 2, 2), np.float32), [[0, 1]], "3-vectors"),
        (np.zeros((1, 2, 2, 2), np.float32), [[0.5, 1, 0]], "integers"),
        (np.zeros((3, 2, 2, 2), np.int32), None, "dtype int32"),
        (np.zeros((3, 0, 2, 2), np.float32), None, "empty"),
        (np.zeros((2, 2), np.float32), None, "shape"),
    ],
)
def test_bad_affinities_are_rejected_with_the_value(affs, offsets, message):
    with pytest.raises(ValueError, match=message):
        nearest_neighbour_affinities(affs, offsets)


def test_documented_conversions_of_affinities():
    rng = np.random.default_rng(4)
    affs = rng.random((3, 3, 4, 5))
    ref = nearest_neighbour_affinities(affs.astype(np.float32))
    np.testing.assert_array_equal(nearest_neighbour_affinities(affs), ref)  # float64 -> float32
    np.testing.assert_array_equal(nearest_neighbour_affinities(np.asfortranarray(affs)), ref)
    as_uint8 = np.array([[[[0, 255]]]] * 3, dtype=np.uint8)
    np.testing.assert_array_equal(nearest_neighbour_affinities(as_uint8)[:, 0, 0], [[0, 1]] * 3)


def test_labels_must_be_integer_and_non_negative():
    with pytest.raises(ValueError, match="integer dtype"):
        affinities_from_labels(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="negative"):
        affinities_from_labels(-np.ones((2, 2, 2), np.int64))
    with pytest.raises(ValueError, match="does not match"):
        affinities_from_labels(np.ones((2, 2, 2), np.int64), mask=np.ones((2, 2)))


def test_mwatershed_bias_must_match_the_channels():
    affs = np.zeros((3, 2, 2, 2), np.float32)
    with pytest.raises(ValueError, match="one per channel"):
        to_mwatershed(affs, bias=[0.5, 0.5])
    with pytest.raises(ValueError, match="one per channel"):
        from_mwatershed(np.zeros((3, 2, 2, 2)), None, bias=[[0.5]])


def test_missing_nearest_neighbour_channel_is_named():
    with pytest.raises(ValueError, match="no nearest-neighbour channel along axis 1"):
        nearest_neighbour_affinities(np.zeros((2, 3, 3, 3), np.float32), [[-1, 0, 0], [0, 0, -1]])


def test_mask_and_bias_are_keyword_only_with_the_old_positional_use_deprecated():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, (3, 4, 5))
    mask = rng.random((3, 4, 5)) > 0.3
    expected = affinities_from_labels(labels, None, mask=mask)
    with pytest.warns(DeprecationWarning, match=r"passing mask to affinities_from_labels\(\) positionally"):
        old = affinities_from_labels(labels, None, mask)
    for a, b in zip(old, expected):
        np.testing.assert_array_equal(a, b)
    affs = rng.random((3, 4, 5, 6)).astype(np.float32)
    bias = [0.5, 0.4, 0.3]
    weights, offsets = to_mwatershed(affs, None, bias=bias)
    with pytest.warns(DeprecationWarning, match=r"passing bias to to_mwatershed\(\) positionally .* use bias="):
        old_weights, _ = to_mwatershed(affs, None, bias)
    np.testing.assert_array_equal(old_weights, weights)
    back, _ = from_mwatershed(weights, offsets, bias=bias)
    with pytest.warns(DeprecationWarning, match="from_mwatershed"):
        old_back, _ = from_mwatershed(weights, offsets, bias)
    np.testing.assert_array_equal(old_back, back)
    with pytest.raises(TypeError, match="multiple values for argument 'bias'"):
        to_mwatershed(affs, None, 0.5, bias=0.5)
    with pytest.raises(TypeError, match="at most 3 positional"):
        to_mwatershed(affs, None, 0.5, 0.5)


def test_keyword_only_signatures():
    import inspect

    for function, name in ((affinities_from_labels, "mask"), (to_mwatershed, "bias"), (from_mwatershed, "bias")):
        assert inspect.signature(function).parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
