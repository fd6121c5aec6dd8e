"""Training crops: alignment of raw, labels and targets through every augmentation; sampling rules."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the learning tests need the 'train' extra (torch)")

from affseg.conventions import affinities_from_labels
from affseg.io import write_volume
from affseg.learn.augment import Augment
from affseg.learn.data import CropDataset, CropSampler, Source
from affseg.synthetic import neurite_labels

OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -4, 0]]


def coded_volume(shape=(24, 64, 64), seed=0):
    """Labels and a raw whose value encodes the label, so alignment can be read off raw."""
    labels = neurite_labels(shape, seed=seed)
    raw = ((labels % 50) * 5).astype(np.uint8)
    return raw, labels


@pytest.mark.parametrize("augment", [
    Augment.off(),
    Augment(elastic_sigma=0, rotation=False, intensity_scale=0, intensity_shift=0),  # mirror + transpose
    Augment(intensity_scale=0, intensity_shift=0),                                  # + elastic + rotation
], ids=["none", "mirror-transpose", "elastic-rotation"])
def test_raw_labels_and_targets_stay_aligned(augment):
    raw, labels = coded_volume()
    sampler = CropSampler([Source(raw, labels)], (12, 40, 40), (8, 24, 24), OFFSETS, augment=augment,
                          min_labelled=0.3)
    rng = np.random.default_rng(1)
    for _ in range(4):
        s = sampler.sample(rng)
        region = (slice(2, 10), slice(8, 32), slice(8, 32))
        raw_out = np.rint(s["raw"][0][region] * 255 / 5).astype(np.int64)
        lab = s["labels"].astype(np.int64)
        interior = lab != 0
        # away from object borders (where linear interpolation mixes codes) raw encodes the label
        from scipy import ndimage
        interior &= ndimage.binary_erosion(lab == ndimage.maximum_filter(lab, 3), iterations=1)
        agree = np.mean(raw_out[interior] == lab[interior] % 50)
        assert agree > 0.97, agree
        # targets are the affinities of the returned labels
        affs, _ = affinities_from_labels(s["labels"], OFFSETS)
        inner = (slice(None), slice(1, None), slice(4, None), slice(1, None))
        np.testing.assert_array_equal(s["affs"][inner], affs[inner])
        assert s["affs_weights"].shape == s["affs"].shape


def test_no_augmentation_reads_the_exact_crop():
    raw, labels = coded_volume((10, 30, 30))
    sampler = CropSampler([Source(raw, labels)], (10, 30, 30), (10, 30, 30), OFFSETS[:3], augment=Augment.off(),
                          min_labelled=0)
    s = sampler.sample(np.random.default_rng(0))
    np.testing.assert_array_equal(s["labels"], labels)
    np.testing.assert_allclose(s["raw"][0], raw / 255, atol=1e-7)


def test_padding_outside_the_volume_is_masked():
    raw, labels = coded_volume((6, 20, 20))
    sampler = CropSampler([Source(raw, labels)], (8, 28, 28), (8, 28, 28), OFFSETS[:3], augment=Augment.off(),
                          min_labelled=0)
    s = sampler.sample(np.random.default_rng(0))
    assert s["affs_mask"].sum() < s["affs_mask"].size
    assert np.all(s["labels"][0] == 0)  # the padded first section is unlabelled


def test_roi_restricts_sampling_and_mismatched_volumes_fail(tmp_path):
    raw, labels = coded_volume((20, 40, 40))
    write_volume(tmp_path / "d.h5" / "raw", raw)
    write_volume(tmp_path / "d.h5" / "labels", labels)
    write_volume(tmp_path / "d.h5" / "small", labels[:5])
    source = Source(str(tmp_path / "d.h5" / "raw"), str(tmp_path / "d.h5" / "labels"), roi=((0, 0, 0), (10, 40, 40)))
    sampler = CropSampler([source], (4, 20, 20), (4, 20, 20), OFFSETS[:3], augment=Augment.off(), min_labelled=0)
    rng = np.random.default_rng(0)
    for _ in range(10):
        s = sampler.sample(rng)
        assert (s["labels"] != 0).any()
    with pytest.raises(ValueError, match="same voxels"):
        CropSampler([Source(str(tmp_path / "d.h5" / "raw"), str(tmp_path / "d.h5" / "small"))], (4, 20, 20),
                    (4, 20, 20), OFFSETS[:3]).sample(rng)
    with pytest.raises(ValueError, match="roi"):
        CropSampler([Source(raw, labels, roi=((0, 0, 0), (30, 40, 40)))], (4, 20, 20), (4, 20, 20),
                    OFFSETS[:3]).sample(rng)


def test_raw_of_an_unsupported_dtype_is_refused_on_open():
    raw, labels = coded_volume((8, 20, 20))
    with pytest.raises(ValueError, match=r"uint8 or float.*int16"):
        Source(raw.astype(np.int16), labels).open()


def test_a_mask_unlabels_and_masks_affinities():
    raw, labels = coded_volume((8, 24, 24))
    mask = np.ones(labels.shape, bool)
    mask[:, :, :12] = False
    sampler = CropSampler([Source(raw, labels, mask=mask)], (8, 24, 24), (8, 24, 24), OFFSETS[:3],
                          augment=Augment.off(), min_labelled=0)
    s = sampler.sample(np.random.default_rng(0))
    assert np.all(s["labels"][:, :, :12] == 0) and np.array_equal(s["labels"][:, :, 12:], labels[:, :, 12:])
    assert np.all(s["affs_mask"][:, :, :, :12] == 0) and np.all(s["affs_weights"][:, :, :, :12] == 0)


def test_empty_crops_give_a_clear_error():
    raw, labels = coded_volume((8, 20, 20))
    sampler = CropSampler([Source(raw, np.zeros_like(labels))], (4, 16, 16), (4, 16, 16), OFFSETS[:3], max_tries=5)
    with pytest.raises(ValueError, match="labelled voxels"):
        sampler.sample(np.random.default_rng(0))


def test_defects_and_intensity_change_raw_only():
    raw, labels = coded_volume((12, 32, 32))
    aug = Augment(mirror=False, transpose=False, elastic_sigma=0, rotation=False, missing_section=1.0)
    s = CropSampler([Source(raw, labels)], (12, 32, 32), (12, 32, 32), OFFSETS[:3], augment=aug,
                    min_labelled=0).sample(np.random.default_rng(0))
    assert np.all(s["raw"] == 0)
    np.testing.assert_array_equal(s["labels"], labels)


def test_lsds_and_workers():
    raw, labels = coded_volume((12, 40, 40))
    sampler = CropSampler([Source(raw, labels)], (8, 24, 24), (4, 16, 16), OFFSETS[:3], lsd_sigma=3.0,
                          augment=Augment.off(), min_labelled=0.1)
    dataset = CropDataset(sampler, seed=3, batch_size=2)
    loader = iter(torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2))
    batch = next(loader)
    second = next(loader)  # made by the other worker, for iteration 2
    torch.testing.assert_close(second["raw"], dataset.batch(2)["raw"])
    assert tuple(batch["raw"].shape) == (2, 1, 8, 24, 24)
    assert tuple(batch["lsds"].shape) == (2, 10, 4, 16, 16)
    assert tuple(batch["affs"].shape) == (2, 3, 4, 16, 16)
    assert not torch.equal(batch["raw"][0], batch["raw"][1])  # random locations


@pytest.mark.parametrize("spacing,shape", [(0.5, (4, 20, 20)), (10.0, (4, 1, 30)), (3.0, (16, 16))])
def test_elastic_transform_for_fine_spacing_and_flat_planes(spacing, shape):
    from affseg.learn.augment import Augment, sample_transform

    coords = sample_transform(shape, np.random.default_rng(0), Augment(elastic_spacing=spacing, elastic_sigma=1.0))
    assert coords.shape == (len(shape), *shape) and np.isfinite(coords).all()


def test_a_2d_network_samples_single_sections_of_a_stack():
    raw, labels = coded_volume((6, 40, 40))
    sampler = CropSampler([Source(raw, labels, roi=((2, 0, 0), (4, 40, 40)))], (40, 40), (40, 40),
                          [[-1, 0], [0, -1]], augment=Augment.off(), min_labelled=0)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(12):
        s = sampler.sample(rng)
        assert s["raw"].shape == (1, 40, 40) and s["labels"].shape == (40, 40)
        # the crop is one whole section of the roi, raw and labels from the same one
        match = [z for z in range(6) if np.array_equal(s["labels"], labels[z])]
        assert len(match) == 1 and match[0] in (2, 3)
        np.testing.assert_allclose(s["raw"][0], raw[match[0]] / 255, atol=1e-7)
        seen.add(match[0])
    assert seen == {2, 3}


def test_a_volume_of_the_wrong_dimensionality_names_its_shape():
    raw, labels = coded_volume((6, 40, 40))
    sampler = CropSampler([Source(raw[0], labels[0])], (4, 20, 20), (4, 20, 20), OFFSETS[:3], min_labelled=0)
    with pytest.raises(ValueError, match=r"shape \(40, 40\): a 3D network"):
        sampler.sample(np.random.default_rng(0))
