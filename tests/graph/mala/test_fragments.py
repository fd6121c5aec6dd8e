import numpy as np
import pytest
import scipy.ndimage as ndi
from skimage.segmentation import watershed as sk_watershed

from affseg import extract_fragments
from affseg.synthetic import make_volume


@pytest.fixture(scope="module")
def volume():
    return make_volume((16, 64, 64), seed=3)


def lsd_recipe(affs, min_seed_distance=10):
    """lsd's watershed_from_affinities (boundary voxels stay 0)."""
    mean = affs.mean(axis=0)
    boundary_mask = mean > 0.5
    distances = ndi.distance_transform_edt(boundary_mask)
    maxima = ndi.maximum_filter(distances, min_seed_distance) == distances
    seeds, _ = ndi.label(maxima)
    return sk_watershed(distances.max() - distances, seeds, mask=boundary_mask)


def test_distance_flood_agrees_with_the_lsd_recipe_inside_objects(volume):
    from affseg import evaluate

    ours = extract_fragments(volume.affs, flood="distance")
    ref = lsd_recipe(volume.affs)
    inside = ref != 0
    # lsd leaves boundaries at 0 and interior parts without a seed unlabelled; elsewhere the two
    # have the same seeds and differ only where equal distances are flooded in another order
    # (distances of sqrt(integer) tie a lot; a heap and a bucket queue break ties differently)
    assert len(np.unique(ours[inside])) == len(np.unique(ref[inside]))
    scores = evaluate(ours[inside], ref[inside])
    assert scores["voi"] < 0.15 and scores["arand"] < 0.02


def boundary_recipe(affs, min_seed_distance=10):
    """The documented flood="boundary" with scipy/skimage: the same seeds as the lsd recipe,
    flooded on 0.9 (1 - boundary map) + 0.1 (1 - distance / max distance)."""
    mean = affs.mean(axis=0)
    distances = ndi.distance_transform_edt(mean > 0.5)
    maxima = (ndi.maximum_filter(distances, min_seed_distance) == distances) & (distances > 0)
    seeds, _ = ndi.label(maxima)
    height = 0.9 * (1 - mean) + 0.1 * (1 - distances / distances.max())
    return sk_watershed(np.rint(height * 65535).astype(np.uint16), seeds)


def test_boundary_flood_agrees_with_a_watershed_on_the_boundary_map(volume):
    from affseg import evaluate

    ours = extract_fragments(volume.affs)  # flood="boundary" is the default
    ref = boundary_recipe(volume.affs)
    # the same seeds, every voxel assigned by both; they differ only where a heap and a bucket
    # queue flood equal heights in another order
    assert len(np.unique(ours)) == len(np.unique(ref))
    scores = evaluate(ours, ref)
    assert scores["voi"] < 0.05 and scores["arand"] < 0.01


def test_boundary_flood_follows_a_faint_boundary_that_the_distance_ignores():
    # a box pinched by a notch at x = 30 (two distance peaks, two seeds); the cells meet at a faint
    # membrane at x = 40 (affinity 0.6 across: above the 0.5 threshold, so interior to the
    # distance transform). The distance floods to the notch; the boundary map to the membrane.
    from affseg import evaluate

    labels = np.ones((24, 60), np.uint64)
    labels[:, 40:] = 2
    affs = np.ones((2, 24, 60), np.float32)
    affs[:, :, [0, -1]] = 0.0
    affs[:, [0, -1], :] = 0.0  # a real boundary all around
    affs[:, 8:16, 30] = 0.0  # the notch
    affs[1, :, 40] = 0.6  # x-edges (x, x - 1) across the membrane
    distance = extract_fragments(affs, flood="distance")
    boundary = extract_fragments(affs)
    inner = (slice(2, -2), slice(2, -2))
    assert len(np.unique(boundary[inner])) == len(np.unique(distance[inner])) == 2  # the same two seeds
    assert evaluate(boundary[inner], labels[inner])["voi"] < 0.1
    assert evaluate(distance[inner], labels[inner])["voi"] > 0.5


def test_unknown_flood_is_refused(volume):
    from affseg.errors import InputError

    with pytest.raises(InputError, match="flood must be one of"):
        extract_fragments(volume.affs, flood="height")


@pytest.mark.parametrize("ndim", [2, 3])
def test_every_voxel_ends_in_a_fragment_with_consecutive_ids(volume, ndim):
    affs = volume.affs if ndim == 3 else volume.affs[1:, 5]
    frags = extract_fragments(affs, id_offset=100)
    assert frags.dtype == np.uint64 and frags.min() == 101
    assert np.array_equal(np.unique(frags), np.arange(101, frags.max() + 1))


def test_mask_gives_zero_only_outside(volume):
    mask = np.ones(volume.labels.shape, bool)
    mask[:, :, 30:34] = False  # cuts the volume in two
    frags = extract_fragments(volume.affs, mask=mask)
    assert np.all(frags[~mask] == 0) and np.all(frags[mask] > 0)
    left, right = set(np.unique(frags[:, :, :30])), set(np.unique(frags[:, :, 34:]))
    assert not left & right


def test_in_plane_fragments_stay_in_their_section(volume):
    frags = extract_fragments(volume.affs, in_plane=True)
    for z in range(1, frags.shape[0]):
        assert not set(np.unique(frags[z])) & set(np.unique(frags[z - 1]))


def test_min_size_merges_small_fragments(volume):
    plain = extract_fragments(volume.affs, min_seed_distance=3)
    sizes = np.bincount(plain.ravel())[1:]
    assert sizes.min() < 50
    merged = extract_fragments(volume.affs, min_seed_distance=3, min_size=50)
    assert np.bincount(merged.ravel())[1:].min() >= 50
    # merging only joins whole fragments
    from conftest import same_partition

    pairs = np.unique(np.stack([plain.ravel(), merged.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]
    assert not same_partition(plain, merged)


def test_all_boundary_and_tiny_volumes():
    assert np.all(extract_fragments(np.zeros((3, 4, 5, 6), np.float32)) == 1)
    assert extract_fragments(np.ones((3, 1, 1, 1), np.float32)).tolist() == [[[1]]]


@pytest.mark.parametrize("kwargs, message", [
    ({"min_seed_distance": 0}, "min_seed_distance"),
    ({"threshold": 1.0}, "threshold"),
    ({"mask": np.ones((2, 2), bool)}, "mask has shape"),
])
def test_bad_options_are_rejected(volume, kwargs, message):
    with pytest.raises(ValueError, match=message):
        extract_fragments(volume.affs, **kwargs)


@pytest.mark.parametrize("shape", [(7,), (5, 9), (4, 6, 5)])
def test_sizes_and_centres_equal_scipy(shape):
    """The node table's sizes and centres of consecutive ids (as a block's), against
    scipy.ndimage, in 1D to 3D, with ids absent from the volume (size 0, centre 0)."""
    from scipy import ndimage

    from affseg.graph.mala.fragments import sizes_and_centres

    first, count = 2**40 + 1, 6
    rng = np.random.default_rng(len(shape))
    labels = rng.integers(0, count - 1, size=shape).astype(np.uint64)  # the last two ids absent
    fragments = np.where(labels > 0, labels + np.uint64(first - 1), np.uint64(0))
    sizes, centres = sizes_and_centres(fragments, first, count)
    ids = np.arange(1, count + 1)
    np.testing.assert_array_equal(sizes, ndimage.sum_labels(np.ones(shape), labels, ids))
    present = sizes > 0
    expected = np.array(ndimage.center_of_mass(np.ones(shape), labels, ids[present])).reshape(-1, len(shape))
    np.testing.assert_allclose(centres[present], expected, rtol=0, atol=1e-12)
    assert (centres[~present] == 0).all() and centres.shape == (count, len(shape))

    from affseg.errors import InputError

    with pytest.raises(InputError, match=f"fragment id {first + count} is outside"):
        sizes_and_centres(np.where(labels > 0, labels + np.uint64(first + 2), np.uint64(0)), first, count)
    with pytest.raises(InputError, match=f"fragment id {first - 1} is outside"):
        sizes_and_centres(np.full(shape, first - 1, np.uint64), first, count)


def test_sizes_and_centres_of_ids_without_a_voxel():
    """Known answers: an id of the range between present ones, and after them, has size 0 and
    centre 0; an empty range gives empty tables, or an InputError if a non-zero id is present."""
    from affseg.errors import InputError
    from affseg.graph.mala.fragments import sizes_and_centres

    fragments = np.array([[0, 7, 7], [9, 0, 7]], np.uint64)  # 8 and 10 absent
    sizes, centres = sizes_and_centres(fragments, 7, 4)
    np.testing.assert_array_equal(sizes, [3, 0, 1, 0])
    np.testing.assert_array_equal(centres, [[1 / 3, 5 / 3], [0, 0], [1, 0], [0, 0]])
    sizes, centres = sizes_and_centres(np.zeros((2, 3), np.uint64), 7, 0)
    assert sizes.shape == (0,) and centres.shape == (0, 2)
    with pytest.raises(InputError, match="fragment id 7 is outside"):
        sizes_and_centres(fragments, 7, 0)
