import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.metrics import adapted_rand_error as sk_adapted_rand_error
from skimage.metrics import variation_of_information as sk_voi

from affseg import evaluate
from affseg.evaluation import adapted_rand_error, split_merge_curve, variation_of_information

labels = arrays(np.uint8, st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6)),
                elements=st.integers(0, 4))


@given(labels, labels)
def test_equal_to_scikit_image_on_the_same_voxels(seg, gt):
    if seg.shape != gt.shape:
        seg = np.resize(seg, gt.shape)
    if not gt.any():
        with pytest.raises(ValueError, match="no labelled voxel"):
            evaluate(seg, gt)
        return
    scores = evaluate(seg, gt)
    split, merge = sk_voi(gt, seg, ignore_labels=(0,))
    assert scores["voi_split"] == pytest.approx(split, abs=1e-9)
    assert scores["voi_merge"] == pytest.approx(merge, abs=1e-9)
    # scikit-image's Rand error leaves out self pairs; ours does too when asked
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.asarray(sk_adapted_rand_error(gt, seg, ignore_labels=(0,)))
    if np.all(np.isfinite(ref)):  # scikit-image gives NaN where no two voxels share a label
        np.testing.assert_allclose(adapted_rand_error(seg, gt, count_self_pairs=False), ref, atol=1e-12)


@given(labels, labels)
def test_equal_to_waterz_evaluate(seg, gt):
    waterz = pytest.importorskip("waterz")
    from conftest import quiet_stdout

    if seg.shape != gt.shape:
        seg = np.resize(seg, gt.shape)
    if not gt.any():
        return
    with quiet_stdout():
        ref = waterz.evaluate(seg.astype(np.uint64), gt.astype(np.uint64))
    scores = evaluate(seg, gt)
    for key in ("voi_split", "voi_merge", "rand_split", "rand_merge"):
        assert scores[key] == pytest.approx(ref[key], abs=1e-9), key


def test_known_answers_and_cremi_formula():
    gt = np.array([[1, 1, 2, 2]], dtype=np.uint64)
    merged = np.array([[5, 5, 5, 5]], dtype=np.uint64)
    s = evaluate(merged, gt)
    assert s["voi_split"] == 0 and s["voi_merge"] == pytest.approx(1.0)  # one bit lost
    assert s["rand_split"] == 1 and s["rand_merge"] == pytest.approx(0.5)
    assert s["arand"] == pytest.approx(1 - 2 * 0.5 / 1.5)
    assert s["cremi_score"] == pytest.approx(math.sqrt(s["voi"] * s["arand"]))
    perfect = evaluate(gt * 7, gt)
    assert perfect["voi"] == 0 and perfect["arand"] == 0 and perfect["cremi_score"] == 0


@given(labels, labels, st.integers(0, 2**63))
def test_ground_truth_zero_is_ignored_and_ids_are_64_bit(seg, gt, big):
    if seg.shape != gt.shape:
        seg = np.resize(seg, gt.shape)
    if not gt.any():
        return
    scrambled = seg.astype(np.uint64) * np.uint64(2**40) + np.uint64(big % 2**20)
    scrambled[gt == 0] = 123456789  # whatever the segmentation says on unlabelled voxels
    a, b = evaluate(seg, gt), evaluate(scrambled, gt)
    for key in ("voi_split", "voi_merge", "arand"):
        assert a[key] == pytest.approx(b[key], abs=1e-9)
    assert b["n_voxels"] == int((gt != 0).sum())


def test_voi_and_arand_helpers_and_curve():
    rng = np.random.default_rng(0)
    gt = rng.integers(1, 5, (4, 8, 8)).astype(np.uint64)
    seg = rng.integers(1, 3, (4, 8, 8)).astype(np.uint64)
    s = evaluate(seg, gt)
    assert variation_of_information(seg, gt) == pytest.approx((s["voi_split"], s["voi_merge"]))
    assert adapted_rand_error(seg, gt)[0] == pytest.approx(s["arand"])
    rows = split_merge_curve([gt, seg], gt, [0.1, 0.9])
    assert [r["threshold"] for r in rows] == [0.1, 0.9] and rows[0]["voi"] == 0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="does not match"):
        evaluate(np.ones((2, 3), np.uint64), np.ones((3, 2), np.uint64))


@pytest.mark.parametrize(
    "seg_shape,gt_shape,match",
    [
        ((1, 1, 1, 2, 3), (1, 1, 1, 2, 3), r"segmentation must be a 2D \(y, x\) or 3D \(z, y, x\) volume, or a 1D "
                                           r"set of voxels \(e.g. seg\[mask\]\), got shape \(1, 1, 1, 2, 3\)"),
        ((2, 1, 2, 3), (2, 1, 2, 3), r"segmentation .* got shape \(2, 1, 2, 3\)"),
        ((2, 3), (1, 1, 2, 3), r"ground_truth .* got shape \(1, 1, 2, 3\)"),
        ((), (), r"segmentation .* got shape \(\)"),
        ((2, 3), (6,), r"ground_truth has shape \(6,\), which does not match \(2, 3\)"),
    ],
)
@pytest.mark.parametrize("metric", [evaluate, variation_of_information, adapted_rand_error])
def test_only_volumes_and_voxel_sets_are_scored(seg_shape, gt_shape, match, metric):
    # 4D/5D (and 0D) input was scored as if flattened, although only volumes are documented;
    # the single metrics accept what evaluate accepts
    from affseg.errors import InputError

    with pytest.raises(InputError, match=match):
        metric(np.ones(seg_shape, np.uint64), np.ones(gt_shape, np.uint64))


def test_a_voxel_set_scores_like_the_volume_it_came_from():
    rng = np.random.default_rng(5)
    gt = rng.integers(0, 4, (3, 5, 6)).astype(np.uint64)
    seg = rng.integers(1, 4, (3, 5, 6)).astype(np.uint64)
    inside = gt != 0
    assert evaluate(seg[inside], gt[inside]) == evaluate(seg, gt)


def test_segmentation_zero_is_one_segment_unlike_cremi():
    # the worked example of docs/conventions.md: affseg scores segmentation 0 as one segment;
    # CREMI's rand.py would give recall (4 + 2/4) / 16 and an error of 0.561
    s = evaluate(np.array([[0, 0, 5, 5]]), np.array([[1, 1, 1, 1]]))
    assert s["rand_split"] == pytest.approx(0.5) and s["rand_merge"] == 1
    assert s["arand"] == pytest.approx(1 / 3) and s["voi_split"] == pytest.approx(1.0)
    assert evaluate(np.array([[0, 0, 5, 5]]), np.array([[1, 1, 1, 1]]))["arand"] == \
        evaluate(np.array([[7, 7, 5, 5]]), np.array([[1, 1, 1, 1]]))["arand"]
