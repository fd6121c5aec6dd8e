"""Threshold + connected components blockwise: the same partition as one pass."""
import numpy as np
import pytest
from conftest import same_partition

from affseg import connected_components
from affseg.blockwise.components import connected_components_blockwise, merge_face_pairs
from affseg.synthetic import make_volume

OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, 3, 0], [0, 0, -4]]


@pytest.mark.parametrize("block_shape", [(4, 16, 16), (3, 7, 11), (12, 48, 48)])
@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_equal_to_one_pass(block_shape, threshold):
    vol = make_volume((12, 48, 48), seed=2, offsets=OFFSETS)
    mask = np.ones((12, 48, 48), bool)
    mask[:, :10, :7] = False
    whole = connected_components(vol.affs, OFFSETS, threshold=threshold, mask=mask)
    blocks = connected_components_blockwise(vol.affs, OFFSETS, threshold=threshold, block_shape=block_shape,
                                            mask=mask)
    assert same_partition(blocks, whole)
    assert ((blocks == 0) == (whole == 0)).all()


def test_2d_and_random_affinities():
    rng = np.random.default_rng(5)
    affs = rng.random((2, 30, 40)).astype(np.float32)
    whole = connected_components(affs, threshold=0.4)
    blocks = connected_components_blockwise(affs, threshold=0.4, block_shape=(7, 9))
    assert same_partition(blocks, whole)


def test_merge_face_pairs_takes_the_smallest_id():
    old, new = merge_face_pairs([np.array([[5, 9], [9, 12]], np.uint64), np.array([[30, 2**64 - 1]], np.uint64)])
    assert dict(zip(old.tolist(), new.tolist())) == {5: 5, 9: 5, 12: 5, 30: 30, 2**64 - 1: 30}
