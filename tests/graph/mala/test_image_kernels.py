"""Distance transform, maximum filter, watershed, connected components vs scipy / scikit-image."""
import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.measure import label as sk_label
from skimage.segmentation import watershed as sk_watershed

from affseg import affinities_from_labels, connected_components
from affseg.graph.mala.distance import distance_transform
from affseg.graph.mala.filters import maximum_filter
from affseg.graph.mala.watershed import seeded_watershed

SHAPES = [(7, 23, 31), (40, 33)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sampling", [None, "aniso"])
def test_distance_transform_equals_scipy(shape, sampling):
    inside = np.random.default_rng(0).random(shape) > 0.2
    s = None if sampling is None else (4.0, 1.0, 1.5)[-len(shape):]
    np.testing.assert_allclose(distance_transform(inside, voxel_size=s), ndi.distance_transform_edt(inside, sampling=s),
                               rtol=1e-6, atol=1e-5)


def test_distance_transform_in_plane_equals_scipy_per_section():
    inside = np.random.default_rng(1).random((5, 20, 30)) > 0.1
    ours = distance_transform(inside, in_plane=True)
    for z in range(5):
        np.testing.assert_allclose(ours[z], ndi.distance_transform_edt(inside[z]), rtol=1e-6)


def test_distance_transform_without_outside_is_infinite():
    assert np.all(np.isinf(distance_transform(np.ones((3, 4), bool))))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [1, 2, 3, 10, (1, 4, 5)])
def test_maximum_filter_equals_scipy(shape, size):
    if isinstance(size, tuple) and len(size) != len(shape):
        size = size[-len(shape):]
    x = np.random.default_rng(2).random(shape).astype(np.float32)
    np.testing.assert_array_equal(maximum_filter(x, size), ndi.maximum_filter(x, size))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("use_mask", [False, True])
def test_seeded_watershed_equals_skimage(shape, use_mask):
    rng = np.random.default_rng(3)
    heights = rng.random(shape).astype(np.float32)
    seeds = np.zeros(shape, np.int64)
    seeds.flat[rng.choice(heights.size, 25, replace=False)] = np.arange(1, 26)
    mask = rng.random(shape) > 0.15 if use_mask else None
    ours = seeded_watershed(heights, seeds, mask=mask)
    ref = sk_watershed(heights, seeds * (mask if mask is not None else 1), mask=mask)
    np.testing.assert_array_equal(ours, ref)
    assert ours.dtype == np.uint64


def test_seeded_watershed_rejects_nan_heights():
    with pytest.raises(ValueError, match="NaN"):
        seeded_watershed(np.full((3, 3), np.nan), np.ones((3, 3), int))


@pytest.mark.parametrize("shape", SHAPES)
def test_connected_components_of_gt_affinities_equal_skimage_label(shape):
    labels = np.random.default_rng(4).integers(1, 4, shape).astype(np.uint64)
    affs, _ = affinities_from_labels(labels)
    ours = connected_components(affs, threshold=0.5)
    # voxels of one label that touch along faces form a component
    ref = sk_label(labels.astype(np.int64), background=-1, connectivity=1)
    np.testing.assert_array_equal(ours, ref)


def brute_force_components(affs, offsets, threshold):
    shape = affs.shape[1:]
    parent = {u: u for u in np.ndindex(shape)}

    def find(u):
        while parent[u] != u:
            u = parent[u]
        return u

    for c, o in enumerate(offsets):
        for u in np.ndindex(shape):
            w = tuple(np.add(u, o))
            if all(0 <= w[d] < shape[d] for d in range(len(shape))) and affs[(c,) + u] > threshold:
                parent[find(u)] = find(w)
    return np.array([hash(find(u)) for u in np.ndindex(shape)]).reshape(shape)


@given(arrays(np.float32, st.tuples(st.just(3), st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
              elements=st.floats(0, 1, width=32)))
def test_connected_components_long_range_match_brute_force(affs):
    from conftest import same_partition

    offsets = [[-1, 0, 0], [0, 0, -1], [0, -2, 1]]
    ours = connected_components(affs, offsets, threshold=0.5)
    assert same_partition(ours, brute_force_components(affs, offsets, 0.5))
    assert ours.min() >= 1 and ours.max() == len(np.unique(ours))  # consecutive


def test_connected_components_mask_gives_zero():
    affs = np.ones((2, 4, 4), np.float32)
    mask = np.ones((4, 4), bool)
    mask[:, 2] = False
    seg = connected_components(affs, mask=mask)
    assert np.all(seg[:, 2] == 0) and len(np.unique(seg[:, :2])) == 1 and seg[0, 0] != seg[0, 3]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n_levels", [7, 300, 2**16])
def test_bucket_flood_equals_heap_flood_on_integer_levels(shape, n_levels):
    from affseg.graph.mala.watershed import flood_levels

    rng = np.random.default_rng(5)
    levels = rng.integers(0, n_levels, shape).astype(np.uint16 if n_levels <= 2**16 else np.int64)
    n_seeds = min(20, n_levels)
    seeds = np.zeros(shape, np.uint64)
    where = rng.choice(levels.size, n_seeds, replace=False)
    seeds.flat[where] = np.arange(1, n_seeds + 1)
    # seeds on distinct levels (the heap breaks ties among seeds its own way); elsewhere ties
    # are frequent and arrival order decides, as in the heap
    levels.flat[where] = rng.permutation(n_levels)[:n_seeds]
    seeds_at = seeds != 0
    mask = rng.random(shape) > 0.1
    mask[seeds_at] = True
    expected = seeded_watershed(levels.astype(np.float32), seeds, mask=mask)
    ours = flood_levels(levels, seeds, mask, n_levels=n_levels)
    np.testing.assert_array_equal(ours, expected)


def test_flood_queue_index_type_widens_from_2_31_voxels(monkeypatch):
    from affseg.graph.mala import watershed

    # regression: the queue held int32 voxel indices whatever the volume's size; a padded volume
    # of 2**31 voxels or more now gets int64 indices (checked on the function that decides, and
    # by running a small volume with the wide queue)
    assert watershed.queue_index_type(2**31) is np.int32  # indices 0 .. 2**31 - 1
    assert watershed.queue_index_type(2**31 + 1) is np.int64
    assert watershed.queue_index_type(1291 * 1291 * 1291) is np.int64
    rng = np.random.default_rng(3)
    levels = rng.integers(0, 50, (6, 9, 11)).astype(np.uint16)
    seeds = np.zeros(levels.shape, np.uint64)
    seeds.flat[rng.choice(levels.size, 12, replace=False)] = np.arange(1, 13)
    narrow = watershed.flood_levels(levels, seeds, None, n_levels=50)
    monkeypatch.setattr(watershed, "queue_index_type", lambda n: np.int64)
    np.testing.assert_array_equal(watershed.flood_levels(levels, seeds, None, n_levels=50), narrow)


def test_seeded_watershed_refuses_more_than_2_32_voxels_before_any_copy():
    from affseg.errors import InputError
    from affseg.graph.mala import watershed

    # the heap orders voxels by height << 32 | arrival: past 2**32 voxels the arrival count
    # would overflow into the height bits (a wrong flooding order without a word); the check is
    # on the shape alone (broadcast views: no memory behind them)
    shape = (2**12 + 1, 2**10, 2**10)
    heights = np.broadcast_to(np.float32(0), shape)
    seeds = np.broadcast_to(np.uint64(0), shape)
    with pytest.raises(InputError, match=r"heights has 4296015872 voxels \(shape \(4097, 1024, 1024\)\), more "
                                         r"than the watershed's limit of 2\*\*32"):
        watershed.seeded_watershed(heights, seeds)

def test_kernel_options_are_checked():
    from affseg.graph.mala.watershed import MASKED, flood_levels

    with pytest.raises(ValueError, match="voxel_size"):
        distance_transform(np.ones((3, 3), bool), voxel_size=(1.0, 0.0))
    with pytest.raises(ValueError, match="filter size must be >= 1"):
        maximum_filter(np.ones((3, 3)), 0)
    with pytest.raises(ValueError, match="filter size must be an integer"):
        maximum_filter(np.ones((3, 3)), 2.5)
    with pytest.raises(ValueError, match="2D or 3D numeric"):
        maximum_filter(np.ones(3), 2)
    seeds = np.full((2, 2), MASKED, np.uint64)
    with pytest.raises(ValueError, match="below"):
        flood_levels(np.zeros((2, 2), np.uint16), seeds, None, n_levels=4)
    with pytest.raises(ValueError, match=r"levels must lie in \[0, 4\)"):
        flood_levels(np.full((2, 2), 4, np.uint16), np.zeros((2, 2), np.uint64), None, n_levels=4)
    with pytest.raises(ValueError, match="mask has shape"):
        flood_levels(np.zeros((2, 2), np.uint16), np.zeros((2, 2), np.uint64), np.ones((3, 3)), n_levels=4)
    # a non-boolean mask is a mask (non-zero = inside), not inverted bitwise
    flooded = flood_levels(np.zeros((1, 3), np.uint16), np.array([[1, 0, 0]], np.uint64),
                           np.array([[1, 1, 0]], np.uint8), n_levels=4)
    np.testing.assert_array_equal(flooded, [[1, 1, 0]])


def test_relabel_consecutive_keeps_zero_and_the_order_of_ids():
    from affseg.graph.core.relabel import relabel_consecutive

    labels = np.array([[0, 2**40, 7], [7, 0, 3]], dtype=np.uint64)
    out, n = relabel_consecutive(labels, start=10)
    np.testing.assert_array_equal(out, [[0, 12, 11], [11, 0, 10]])
    assert n == 3
