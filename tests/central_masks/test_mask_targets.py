"""Ground-truth central-instance masks: known answers, the boundary rule, ignored voxels."""
import numpy as np
import pytest

from affseg.central_masks import central_mask_targets, downscale_labels
from affseg.errors import InputError


def test_downscale_takes_the_voxel_at_the_middle_of_each_block():
    labels = np.arange(4 * 8 * 12, dtype=np.uint64).reshape(4, 8, 12)
    grid = downscale_labels(labels, (1, 4, 3))
    assert grid.shape == (4, 2, 4) and grid.dtype == np.uint64
    np.testing.assert_array_equal(grid, labels[:, 2::4, 1::3])
    with pytest.raises(InputError, match=r"factor \(1, 3, 3\) does not divide the shape \(4, 8, 12\)"):
        downscale_labels(labels, (1, 3, 3))


def test_masks_mark_the_centres_object_and_ignore_label_zero_and_the_outside():
    labels = np.array([[1, 1, 2, 2, 0],
                       [1, 1, 2, 2, 0],
                       [3, 3, 3, 2, 2]], np.uint64)
    masks, weights = central_mask_targets(labels, [[0, 0], [1, 2], [0, 4]], window=(3, 3), boundary_margin=0)
    np.testing.assert_array_equal(masks[0], [[0, 0, 0], [0, 1, 1], [0, 1, 1]])
    np.testing.assert_array_equal(weights[0], [[0, 0, 0], [0, 1, 1], [0, 1, 1]])
    np.testing.assert_array_equal(masks[1], [[0, 1, 1], [0, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(weights[1], np.ones((3, 3)))
    np.testing.assert_array_equal(masks[2], 0)  # a centre on label 0 is ignored as a whole
    np.testing.assert_array_equal(weights[2], 0)
    assert masks.dtype == weights.dtype == np.float32


def test_centres_near_a_transition_keep_only_the_centre():
    labels = np.ones((1, 9, 9), np.uint64)
    labels[:, :, 6:] = 2
    labels[:, 0, :] = 0  # label 0 beside an object is no transition
    centres = [[0, 4, 1], [0, 4, 3], [0, 4, 4], [0, 1, 2]]
    masks, weights = central_mask_targets(labels, centres, window=(1, 3, 3), boundary_margin=2)
    far, near_a, near_b, beside_zero = masks
    np.testing.assert_array_equal(far, 1)
    expected_near = np.zeros((1, 3, 3))
    expected_near[0, 1, 1] = 1
    np.testing.assert_array_equal(near_a, 1)  # x = 3 is three voxels from the transition at 5|6
    np.testing.assert_array_equal(near_b, expected_near)
    np.testing.assert_array_equal(beside_zero[0], [[0, 0, 0], [1, 1, 1], [1, 1, 1]])
    np.testing.assert_array_equal(weights[2], 1)  # near the boundary the empty mask is a target
    in_plane, _ = central_mask_targets(labels, [[0, 4, 4]], window=(1, 3, 3), boundary_margin=(0, 0, 1))
    np.testing.assert_array_equal(in_plane[0], 1)


def test_branch_factor_reads_the_downscaled_grid_and_the_full_resolution_boundary():
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 3, (2, 8, 12)).astype(np.uint64)
    factor = (1, 2, 4)
    grid = downscale_labels(labels, factor)
    centres = np.argwhere(np.ones(grid.shape, bool))
    masks, weights = central_mask_targets(labels, centres, window=(1, 3, 3), factor=factor, boundary_margin=0)
    plain, plain_weights = central_mask_targets(grid, centres, window=(1, 3, 3), boundary_margin=0)
    np.testing.assert_array_equal(masks, plain)
    np.testing.assert_array_equal(weights, plain_weights)


@pytest.mark.parametrize("kwargs, message", [
    (dict(window=(3, 4)), "odd"),
    (dict(window=(3, 3, 3)), "window must be 2 integers"),
    (dict(centres=[[0, 9]]), r"centre \[0, 9\] lies outside the branch grid"),
    (dict(centres=[[0.5, 1]]), "integer grid positions"),
    (dict(factor=(2, 2)), "does not divide"),
    (dict(boundary_margin=-1), "must not be negative"),
])
def test_bad_input_names_the_value(kwargs, message):
    args = dict(labels=np.ones((3, 6), np.uint64), centres=[[0, 0]], window=(3, 3))
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        central_mask_targets(args.pop("labels"), args.pop("centres"), **args)
