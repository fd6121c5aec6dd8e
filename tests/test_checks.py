"""Input validation before any work: offsets, thresholds, integer options, id ranges."""
import numpy as np
import pytest

import affseg
from affseg.errors import InputError
from affseg.graph.core.relabel import relabel_consecutive


@pytest.fixture
def affs():
    return np.random.default_rng(0).random((3, 4, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("offsets", [
    np.array([[2**63, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.uint64),  # became -2**63 silently
    [[-1, 0, 0], [0, -1], [0, 0, -1]],  # ragged
    [["a", 0, 0], [0, -1, 0], [0, 0, -1]],
    [[1e300, 0, 0], [0, -1, 0], [0, 0, -1]],
])
def test_bad_offsets_are_refused(affs, offsets):
    with pytest.raises(InputError, match="offsets"):
        affseg.connected_components(affs, offsets)


def test_offsets_beyond_the_volume_link_nothing_in_every_method(affs):
    far = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-9, 0, 0]]  # z has 4 voxels
    wide = np.concatenate([affs, np.zeros((1,) + affs.shape[1:], np.float32)])
    nearest = affs
    np.testing.assert_array_equal(affseg.connected_components(wide, far), affseg.connected_components(nearest))
    np.testing.assert_array_equal(affseg.extract_fragments(wide, far), affseg.extract_fragments(nearest))
    np.testing.assert_array_equal(affseg.mutex_watershed(wide, far), affseg.mutex_watershed(nearest))
    fragments = affseg.extract_fragments(nearest)
    a = affseg.agglomerate(wide, fragments, far, thresholds=[0.5])
    b = affseg.agglomerate(nearest, fragments, thresholds=[0.5])
    np.testing.assert_array_equal(a.segment_ids, b.segment_ids)


@pytest.mark.parametrize("threshold", [float("nan"), None, "0.5", True, float("inf"), [0.5]])
def test_connected_components_threshold_must_be_a_number(affs, threshold):
    with pytest.raises(InputError, match="threshold must be a finite number"):
        affseg.connected_components(affs, threshold=threshold)


@pytest.mark.parametrize("thresholds,match", [
    (["0.5"], "finite number"), ([float("nan")], "finite number"), ([None], "finite number"),
    ([0.5, 0.5], "same threshold"), ([0.3, 0.30000000001], "same threshold"), ([], "non-empty"),
    ("0.5", "non-empty list"), (0.5, "non-empty list"),
])
def test_agglomerate_and_segment_thresholds(affs, thresholds, match):
    fragments = np.ones(affs.shape[1:], np.uint64)
    with pytest.raises(InputError, match=match):
        affseg.agglomerate(affs, fragments, thresholds=thresholds)
    for method in ("mala", "cc"):
        with pytest.raises(InputError, match=match if thresholds != [] else "at least one threshold"):
            affseg.segment(affs, thresholds=thresholds, method=method)


def test_close_but_distinct_thresholds_are_kept(affs):
    result = affseg.agglomerate(affs, affseg.extract_fragments(affs), thresholds=[0.30004, 0.30001])
    assert result.thresholds.tolist() == np.float32([0.30001, 0.30004]).tolist()


@pytest.mark.parametrize("option,value,match", [
    ("min_seed_distance", "3", "must be an integer"), ("min_seed_distance", 2.0, "must be an integer"),
    ("min_seed_distance", 0, ">= 1"), ("min_size", 1.5, "must be an integer"), ("min_size", -1, ">= 0"),
    ("id_offset", True, "must be an integer"), ("id_offset", 2**64, "do not fit in uint64"),
    ("id_offset", 2**64 - 3, "do not fit in uint64"), ("threshold", "0.5", "finite number"),
    ("threshold", 1.0, r"\[0, 1\)"), ("voxel_size", ["a", 1, 1], "voxel_size"), ("voxel_size", [1, 1], "voxel_size"),
    ("voxel_size", [1, 0, 1], "voxel_size"),
])
def test_fragment_options_are_checked_before_work(affs, option, value, match):
    with pytest.raises(InputError, match=match):
        affseg.extract_fragments(affs, **{option: value})


def test_fragment_ids_up_to_the_uint64_limit(affs):
    fragments = affseg.extract_fragments(affs)
    n_voxels = affs[0].size
    top = 2**64 - 1 - n_voxels  # the largest id_offset that always fits (one fragment per voxel)
    shifted = affseg.extract_fragments(affs, id_offset=top)
    expected = fragments.astype(object) + top
    np.testing.assert_array_equal(shifted.astype(object), expected)
    assert shifted.dtype == np.uint64 and shifted.min() == np.uint64(top + 1)


def test_relabel_consecutive_start_must_fit(affs):
    labels = np.arange(8, dtype=np.uint64).reshape(2, 4)  # 7 labels and 0
    out, n = relabel_consecutive(labels, start=2**64 - 7)
    assert n == 7 and out.max() == np.uint64(2**64 - 1) and out[0, 0] == 0
    with pytest.raises(InputError, match="do not fit in uint64"):
        relabel_consecutive(labels, start=2**64 - 6)
    with pytest.raises(InputError, match="integer"):
        relabel_consecutive(labels, start=1.5)
