import numpy as np
import pytest

from affseg import connected_components, segment
from affseg.synthetic import make_volume


@pytest.fixture(scope="module")
def volume():
    return make_volume((8, 40, 40), seed=4)


def test_cc_method_equals_connected_components_per_threshold(volume):
    result = segment(volume.affs, [0.7, 0.3], method="cc")
    assert result.fragments is None and list(result.thresholds) == [np.float32(0.3), np.float32(0.7)]
    for i, t in enumerate(result.thresholds):
        np.testing.assert_array_equal(result.segmentation(i), connected_components(volume.affs, threshold=float(t)))


def test_mala_method_merges_its_fragments(volume):
    result = segment(volume.affs, [0.0, 0.5], min_seed_distance=5)
    np.testing.assert_array_equal(result.segmentation(0), result.fragments)
    assert len(np.unique(result.segmentation(1))) < len(np.unique(result.fragments))


def test_unknown_method(volume):
    with pytest.raises(ValueError, match="unknown method 'rw'"):
        segment(volume.affs, [0.5], method="rw")
