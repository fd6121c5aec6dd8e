import numpy as np
import pytest

from affseg import connected_components, segment
from affseg.synthetic import make_volume


@pytest.fixture(scope="module")
def volume():
    return make_volume((8, 40, 40), seed=4)


def test_cc_method_equals_connected_components_per_threshold(volume):
    result = segment(volume.affs, thresholds=[0.7, 0.3], method="cc")
    assert result.fragments is None and list(result.thresholds) == [np.float32(0.3), np.float32(0.7)]
    for i, t in enumerate(result.thresholds):
        np.testing.assert_array_equal(result.segmentation(i), connected_components(volume.affs, threshold=float(t)))


def test_mala_method_merges_its_fragments(volume):
    result = segment(volume.affs, thresholds=[0.0, 0.5], min_seed_distance=5)
    np.testing.assert_array_equal(result.segmentation(0), result.fragments)
    assert len(np.unique(result.segmentation(1))) < len(np.unique(result.fragments))


def test_unknown_method(volume):
    with pytest.raises(ValueError, match="unknown method 'ws'"):
        segment(volume.affs, thresholds=[0.5], method="ws")


def test_random_walker_seeded_by_fragments_refines_mala_boundaries():
    from affseg.evaluation import evaluate
    from affseg.graph.mala.fragments import boundary_map
    from affseg.synthetic import make_volume

    vol = make_volume((12, 48, 48), seed=3)
    mala = segment(vol.affs, thresholds=[0.3], method="mala")
    rw = segment(vol.affs, thresholds=[0.3], method="rw")
    interior = boundary_map(vol.affs) > 0.5
    seg = rw.segmentation(0)
    # the interior keeps MALA's labels; the walk only decides the boundary voxels
    np.testing.assert_array_equal(seg[interior], mala.segmentation(0)[interior])
    assert set(np.unique(seg)) <= set(np.unique(mala.segmentation(0)[interior]))
    assert evaluate(seg, vol.labels)["arand"] < 0.5


def test_random_walker_seeded_by_distance_maxima():
    from affseg.graph.mala.fragments import distance_seeds
    from affseg.graph.random_walker import random_walker
    from affseg.synthetic import make_volume

    vol = make_volume((8, 32, 32), seed=4)
    result = segment(vol.affs, method="rw", rw_seeds="maxima", min_seed_distance=6)
    seeds = distance_seeds(vol.affs, min_seed_distance=6)
    np.testing.assert_array_equal(result.segmentation(0), random_walker(np.maximum(vol.affs, 1e-6), seeds))
    assert result.segmentation(0).all()  # affinities of 0 are floored: every voxel is reached
    assert len(result) == 1 and np.isnan(result.thresholds[0])
    with pytest.raises(ValueError, match="rw_seeds"):
        segment(vol.affs, thresholds=[0.5], method="rw", rw_seeds="blobs")


def test_the_old_signature_still_works_with_a_warning(volume):
    with pytest.warns(DeprecationWarning, match="thresholds="):
        old = segment(volume.affs, [0.3], method="cc")
    with pytest.warns(DeprecationWarning, match="in_plane"):
        renamed = segment(volume.affs, thresholds=[0.3], fragments_in_xy=True, min_seed_distance=5)
    np.testing.assert_array_equal(old.segmentation(0), segment(volume.affs, thresholds=[0.3], method="cc").segmentation(0))
    np.testing.assert_array_equal(renamed.segmentation(0), segment(volume.affs, thresholds=[0.3], in_plane=True,
                                                                   min_seed_distance=5).segmentation(0))


def test_options_of_other_methods_are_refused(volume):
    with pytest.raises(ValueError, match="has no option"):
        segment(volume.affs, thresholds=[0.3], method="cc", bias=0.4)


def test_signed_methods_warn_on_nearest_neighbour_affinities(volume):
    with pytest.warns(UserWarning, match="nearest neighbours only"):
        segment(volume.affs, method="mws")
