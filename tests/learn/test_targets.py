"""Local shape descriptors (brute force, the lsd package where installed), boundary growth and
balancing weights."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from affseg.errors import InputError
from affseg.learn.targets import balance_weights, grow_boundary, local_shape_descriptors, lsd_channels
from affseg.synthetic import make_volume, neurite_labels


def gaussian_kernel(sigma_vox):
    radius = int(3.0 * sigma_vox + 0.5)
    x = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * x**2 / sigma_vox**2)
    return x, w / w.sum()


def brute_force_lsd(labels, sigma, voxel_size):
    """The descriptor definition evaluated voxel by voxel with the separable Gaussian weights."""
    ndim = labels.ndim
    kernels = [gaussian_kernel(s / v) for s, v in zip(sigma, voxel_size)]
    out = np.zeros((10 if ndim == 3 else 6,) + labels.shape)
    pairs = list(itertools.combinations(range(ndim), 2))
    for u in np.ndindex(labels.shape):
        if labels[u] == 0:
            continue
        total, first, second = 0.0, np.zeros(ndim), np.zeros((ndim, ndim))
        for steps in itertools.product(*[range(len(k[0])) for k in kernels]):
            v = tuple(u[d] + kernels[d][0][steps[d]] for d in range(ndim))
            if any(c < 0 or c >= n for c, n in zip(v, labels.shape)) or labels[v] != labels[u]:
                continue
            w = np.prod([kernels[d][1][steps[d]] for d in range(ndim)])
            x = np.array(v) * voxel_size
            total += w
            first += w * x
            second += w * np.outer(x, x)
        mean = first / total
        cov = second / total - np.outer(mean, mean)
        var = np.maximum(np.diag(cov), 1e-3)
        offset = (mean - np.array(u) * voxel_size) / sigma
        pearson = [cov[i, j] / np.sqrt(var[i] * var[j]) for i, j in pairs]
        values = np.concatenate([offset * 0.5 + 0.5, var / np.array(sigma) ** 2, np.array(pearson) * 0.5 + 0.5, [total]])
        out[(slice(None),) + u] = np.clip(values, 0, 1)
    return out


@pytest.mark.parametrize("ndim", [2, 3])
def test_lsds_equal_brute_force(ndim):
    rng = np.random.default_rng(ndim)
    shape = (5, 9, 10) if ndim == 3 else (12, 13)
    labels = rng.integers(0, 3, size=shape).astype(np.uint64)
    labels[..., :4] = 7  # one large object next to a speckled region
    voxel_size = np.array([2.0, 1.0, 1.0][-ndim:])
    sigma = np.array([2.5, 1.5, 2.0][-ndim:])
    ours = local_shape_descriptors(labels, sigma, voxel_size=voxel_size)
    np.testing.assert_allclose(ours, brute_force_lsd(labels, sigma, voxel_size), atol=2e-5)


def test_lsds_known_values_of_a_uniform_object():
    """Deep inside one object: centred mean, variance of the truncated Gaussian, no correlation."""
    labels = np.ones((31, 31, 31), np.uint64)
    lsd = local_shape_descriptors(labels, 2.0)
    centre = lsd[:, 15, 15, 15]
    x, w = gaussian_kernel(2.0)
    variance = float((w * x**2).sum())
    np.testing.assert_allclose(centre, [0.5] * 3 + [variance / 4] * 3 + [0.5] * 3 + [1.0], atol=1e-5)
    # near a face of the volume the centre of mass moves inwards: offset > 0.5 along that axis
    assert lsd[2, 15, 15, 0] > 0.6 and lsd[2, 15, 15, 30] < 0.4


def test_lsds_downsampling_repeats_subsampled_values():
    labels = neurite_labels((16, 32, 32), seed=3)
    full = local_shape_descriptors(labels, 4.0, downsample=1)
    half = local_shape_descriptors(labels, 4.0, downsample=2)
    assert half.shape == full.shape
    # on the subsampled grid the object masks differ, so values only roughly agree
    inside = labels != 0
    assert np.mean(np.abs(half - full)[:, inside]) < 0.05


def test_objects_missed_by_downsampling_get_full_resolution_descriptors():
    labels = np.zeros((9, 12, 12), np.uint64)
    labels[:, :, :6] = 1
    labels[3, 5, 9] = 2  # odd coordinates: not on the grid of every second voxel
    half = local_shape_descriptors(labels, 2.0, downsample=2)
    full = local_shape_descriptors(labels, 2.0, downsample=1)
    np.testing.assert_allclose(half[:, 3, 5, 9], full[:, 3, 5, 9], atol=1e-6)
    assert half[-1, 3, 5, 9] > 0  # it has a size, unlike an unvisited voxel


def test_lsds_match_the_lsd_package():
    local_shape_descriptor = pytest.importorskip(
        "lsd.train.local_shape_descriptor", reason="the lsds package does not install from wheels; "
        "install it by hand to compare")
    labels = neurite_labels((16, 48, 48), seed=1, voxel_size=(4, 1, 1))
    ref = local_shape_descriptor.get_local_shape_descriptors(labels, (8, 4, 4), voxel_size=(4, 1, 1))
    ours = local_shape_descriptors(labels, (8, 4, 4), voxel_size=(4, 1, 1))
    np.testing.assert_allclose(ours, ref, atol=2e-4)


def test_lsds_bad_input():
    with pytest.raises(ValueError, match="sigma"):
        local_shape_descriptors(np.ones((4, 4, 4), np.uint64), (1, 2))
    with pytest.raises(ValueError, match="voxel_size"):
        local_shape_descriptors(np.ones((4, 4), np.uint64), 1, voxel_size=(0, 1))
    with pytest.raises(ValueError, match="downsample"):
        local_shape_descriptors(np.ones((4, 4), np.uint64), 1, downsample=0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_lsd_channels_count_the_descriptors(ndim):
    assert lsd_channels(ndim) == local_shape_descriptors(np.ones((4,) * ndim, np.uint64), 1).shape[0]


@pytest.mark.parametrize("ndim", [1, 4, 2.0, "3"])
def test_lsd_channels_names_a_bad_ndim(ndim):
    with pytest.raises(InputError, match="ndim"):
        lsd_channels(ndim)


def test_grow_boundary_erodes_objects_where_they_touch():
    labels = np.zeros((1, 6, 8), np.uint64)
    labels[0, :, :4] = 1
    labels[0, :, 4:] = 2
    grown = grow_boundary(labels, 1)
    assert np.all(grown[0, :, 3] == 0) and np.all(grown[0, :, 4] == 0)
    assert np.all(grown[0, :, :3] == 1) and np.all(grown[0, :, 5:] == 2)  # the volume border stays
    twice = grow_boundary(labels, 2)
    assert np.all(twice[0, :, 2:6] == 0) and np.all(twice[0, :, :2] == 1)
    stack = np.concatenate([labels, labels + 2])
    xy = grow_boundary(stack, 1, in_plane=True)
    np.testing.assert_array_equal(xy[1], np.where(grown[0] > 0, grown[0] + 2, 0))


def test_balance_weights_equalize_classes():
    rng = np.random.default_rng(0)
    target = (rng.random((3, 10, 10)) < 0.2).astype(np.float32)
    mask = rng.random((3, 10, 10)) < 0.8
    w = balance_weights(target, mask)
    pos = w[(target == 1) & mask].sum()
    neg = w[(target == 0) & mask].sum()
    assert pos == pytest.approx(neg, rel=1e-5)
    assert np.all(w[~mask] == 0)
    per = balance_weights(target, mask, per_channel=True)
    for c in range(3):
        m = mask[c]
        assert per[c][(target[c] == 1) & m].sum() == pytest.approx(per[c][(target[c] == 0) & m].sum(), rel=1e-5)
    with pytest.raises(ValueError, match="binary"):
        balance_weights(np.full((2, 2), 0.5))


@pytest.mark.parametrize("shape", [(30, 40), (8, 20, 24)])
def test_oracle_seeds_one_blob_per_object_at_its_deepest_voxel(shape):
    from scipy import ndimage

    from affseg.learn.targets import oracle_seeds

    labels = make_volume((8, 20, 24) if len(shape) == 3 else (1,) + shape, seed=2).labels.reshape(shape).copy()
    labels[labels == labels.max()] = 0  # an unlabelled object gets no seed
    seeds, target = oracle_seeds(labels, radius=2)
    ids = np.unique(labels[labels > 0])
    assert target.max() == len(ids) and seeds.max() == len(ids)
    for k, obj in enumerate(ids, start=1):
        np.testing.assert_array_equal(target == k, labels == obj)
        blob = seeds == k
        assert blob.any() and np.all(labels[blob] == obj)
        assert ndimage.label(blob)[1] == 1 or blob.sum() <= 3  # one blob (thin objects may split it)
        depth = ndimage.distance_transform_edt(np.pad(labels == obj, 1))[(slice(1, -1),) * len(shape)]
        assert depth[blob].max() == depth[labels == obj].max()
    assert np.all(seeds[labels == 0] == 0) and np.all(target[labels == 0] == 0)
    single, _ = oracle_seeds(labels, radius=0)
    assert all(np.count_nonzero(single == k) == 1 for k in range(1, len(ids) + 1))
    with pytest.raises(ValueError, match="radius"):
        oracle_seeds(labels, radius=-1)
