import numpy as np
import pytest

from affseg import affinities_from_labels
from affseg.synthetic import make_volume, neurite_labels, noisy_affinities, raw_from_labels


def test_deterministic_from_seed():
    a = make_volume((8, 32, 32), seed=5)
    b = make_volume((8, 32, 32), seed=5)
    c = make_volume((8, 32, 32), seed=6)
    for name in ("raw", "labels", "affs"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.labels, c.labels)


@pytest.mark.parametrize("shape", [(8, 40, 40), (50, 60)])
def test_types_ranges_and_space_filling_labels(shape):
    vol = make_volume(shape, seed=1)
    assert vol.raw.dtype == np.uint8 and vol.labels.dtype == np.uint64 and vol.affs.dtype == np.float32
    assert vol.affs.shape == (len(shape),) + shape
    assert vol.labels.min() == 1 and np.array_equal(np.unique(vol.labels), np.arange(1, vol.labels.max() + 1))
    assert 0 <= vol.affs.min() and vol.affs.max() <= 1


def test_membranes_are_dark_and_affinities_informative():
    vol = make_volume((8, 64, 64), seed=2)
    gt, _ = affinities_from_labels(vol.labels)
    boundary = gt[1] == 0
    assert vol.affs[1][boundary].mean() < 0.4 < vol.affs[1][~boundary].mean()
    z, y, x = np.nonzero(boundary)
    assert vol.raw[z, y, x].mean() < vol.raw.mean()


def test_anisotropic_cells_are_flat_and_neurites_run_along_z():
    labels = neurite_labels((24, 64, 64), seed=0, voxel_size=(4, 1, 1))
    # a label persists over several sections (neurites), but cells change across them
    same_z = (labels[1:] == labels[:-1]).mean()
    same_x = (labels[:, :, 1:] == labels[:, :, :-1]).mean()
    assert 0.3 < same_z < same_x


def test_defects_and_noisy_affinities_for_long_range_offsets():
    labels = neurite_labels((10, 32, 32), seed=3)
    raw = raw_from_labels(labels, seed=3, missing_sections=[2], low_contrast_sections=[5])
    assert raw[2].max() == 0 and raw[5].std() < 0.5 * raw[4].std()
    offsets = [[-1, 0, 0], [0, -9, 0], [0, 0, -9]]
    affs = noisy_affinities(labels, offsets, seed=3)
    gt, mask = affinities_from_labels(labels, offsets)
    assert affs.shape == (3,) + labels.shape
    assert np.mean(np.abs(affs - gt)[mask > 0]) < 0.35


def test_bad_shape():
    with pytest.raises(ValueError, match="shape"):
        make_volume((0, 4, 4))
    with pytest.raises(ValueError, match="anisotropic volumes are 3D"):
        make_volume((16, 16), anisotropic=True)


@pytest.mark.parametrize("seed", range(6))
def test_defects_are_two_different_sections(seed):
    vol = make_volume((5, 32, 32), seed=seed, defects=True)
    flat = [z for z in range(5) if vol.raw[z].std() < 1]  # the missing section is constant
    low = [z for z in range(5) if 1 <= vol.raw[z].std() < 0.5 * np.median([vol.raw[k].std() for k in range(5)])]
    assert len(flat) == 1 and len(low) == 1 and flat != low
