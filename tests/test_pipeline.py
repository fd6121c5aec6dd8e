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


@pytest.mark.parametrize("method", ["mws", "gasp"])
def test_signed_methods_warn_on_nearest_neighbour_affinities(volume, method):
    with pytest.warns(UserWarning, match="needs long-range offsets for good results.*nearest neighbours only"):
        segment(volume.affs, method=method)


# ------------------------------------------------------------------ default thresholds


def _segment_counts(affs, fragments, offsets, thresholds):
    from affseg import agglomerate

    result = agglomerate(affs, fragments, offsets, thresholds=thresholds)
    return [len(np.unique(result.segment_ids[i])) for i in range(len(thresholds))]


def test_default_thresholds_cover_the_range_where_the_segmentation_changes():
    from affseg import extract_fragments
    from affseg.pipeline import AFFINITY_THRESHOLDS, default_thresholds

    vol = make_volume((24, 96, 96), seed=1)
    fragments = extract_fragments(vol.affs, vol.offsets, min_seed_distance=8)
    thresholds = default_thresholds(vol.affs, fragments, vol.offsets)
    assert len(thresholds) == 9 and thresholds == sorted(thresholds)
    assert all(len(repr(t)) <= 5 for t in thresholds)  # short decimals, e.g. 0.064
    n_fragments = len(np.unique(fragments[fragments > 0]))
    fully_merged = _segment_counts(vol.affs, fragments, vol.offsets, [1.001])[0]
    counts = _segment_counts(vol.affs, fragments, vol.offsets, thresholds)
    # every threshold lies where the segmentation changes: it merged something, and not all
    assert counts[0] < n_fragments and counts[-1] > fully_merged
    assert counts == sorted(counts, reverse=True) and len(set(counts)) == 9
    # the fixed sweep spends several thresholds on the fully merged result on these data
    fixed = _segment_counts(vol.affs, fragments, vol.offsets, list(AFFINITY_THRESHOLDS))
    assert fixed.count(fully_merged) >= 3
    # spacing: evenly below the score of the last merge, k * last / 10
    last = 10 * thresholds[0]
    np.testing.assert_allclose(thresholds, [k * last / 10 for k in range(1, 10)], atol=2e-3)
    assert _segment_counts(vol.affs, fragments, vol.offsets, [last * 1.02])[0] == fully_merged


def test_default_thresholds_count_and_degenerate_inputs():
    from affseg.errors import InputError
    from affseg.pipeline import default_thresholds

    vol = make_volume((8, 40, 40), seed=2)
    from affseg import extract_fragments

    fragments = extract_fragments(vol.affs, vol.offsets, min_seed_distance=4)
    assert len(default_thresholds(vol.affs, fragments, vol.offsets, count=3)) == 3
    assert default_thresholds(vol.affs, fragments, vol.offsets, merge_function="mean", count=1)[0] > 0
    one = np.ones((8, 40, 40), np.uint64)
    assert default_thresholds(vol.affs, one, vol.offsets) == [0.5]  # nothing to merge
    for bad in (0, 2.5, True):
        with pytest.raises(InputError, match="count"):
            default_thresholds(vol.affs, fragments, vol.offsets, count=bad)
    with pytest.raises(InputError):
        default_thresholds(vol.affs, fragments, vol.offsets, merge_function="median")
