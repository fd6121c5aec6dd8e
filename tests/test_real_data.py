"""The pipeline on real EM ground truth (../shared/data): noisy GT affinities -> segmentation."""
import numpy as np

from affseg import affinities_from_labels, agglomerate, evaluate, extract_fragments
from affseg.io import open_volume
from affseg.synthetic import noisy_affinities


def test_neuroproof_noisy_affinities_segment_well(shared_data):
    with open_volume(shared_data / "neuroproof_train.h5" / "labels") as vol:
        labels = vol[:24, :128, :128]
    affs = noisy_affinities(labels, seed=0)
    fragments = extract_fragments(affs, min_seed_distance=8)
    result = agglomerate(affs, fragments, thresholds=[0.1, 0.3, 0.5, 0.7])
    scores = [evaluate(s, labels) for s in result.segmentations()]
    best = min(scores, key=lambda s: s["voi"])
    over = evaluate(fragments, labels)
    # agglomeration repairs most of the over-segmentation without merging everything
    assert best["voi"] < 0.6 * over["voi"]
    assert best["voi_merge"] < 1.0 and best["arand"] < 0.5


def test_gala_ground_truth_affinities_recover_the_labels(shared_data):
    with open_volume(shared_data / "gala_fibsem.h5" / "train" / "labels") as vol:
        labels = vol[:20, :60, :80]
    affs, _ = affinities_from_labels(labels)
    from conftest import same_partition
    from skimage.measure import label

    from affseg import connected_components

    seg = connected_components(affs, threshold=0.5, mask=labels != 0)
    # exactly the face-connected parts of each object (a few leave the crop and come back)
    expected = label(labels.astype(np.int64), background=0, connectivity=1)
    assert same_partition(seg, expected)
    assert evaluate(seg, labels)["voi_merge"] == 0
