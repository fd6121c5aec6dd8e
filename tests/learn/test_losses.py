"""Weighted losses and the MALIS loss with its gradient."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the learning tests need the 'train' extra (torch)")

from affseg.graph.malis import malis_weights
from affseg.learn.losses import dice_loss, malis_loss, weighted_bce, weighted_mse


def test_weighted_mse_and_bce_known_values():
    pred = torch.tensor([0.2, 0.9, 0.5])
    target = torch.tensor([0.0, 1.0, 1.0])
    weights = torch.tensor([1.0, 2.0, 0.0])
    assert float(weighted_mse(pred, target, weights)) == pytest.approx((0.04 + 2 * 0.01) / 2)
    expected = torch.nn.functional.binary_cross_entropy(pred[:2], target[:2], weight=weights[:2], reduction="sum") / 2
    assert float(weighted_bce(pred, target, weights)) == pytest.approx(float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="shape"):
        weighted_mse(pred, target[:2])


def test_dice_loss_is_zero_for_a_perfect_prediction():
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()
    assert float(dice_loss(target, target)) == pytest.approx(0, abs=1e-6)
    assert float(dice_loss(1 - target, target)) == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("constrained", [True, False])
def test_malis_loss_gradient_uses_the_pair_weights(ndim, constrained):
    rng = np.random.default_rng(ndim)
    spatial = (4, 6, 6) if ndim == 3 else (8, 8)
    offsets = np.array([[-1, 0, 0], [0, -1, 0], [0, 0, -1]])[:, -ndim:][-ndim:]
    labels = rng.integers(0, 3, size=(2,) + spatial).astype(np.uint64)
    affs = torch.tensor(rng.random((2, ndim) + spatial), dtype=torch.float64, requires_grad=True)
    loss = malis_loss(affs, labels, offsets, constrained=constrained)
    loss.backward()
    a = affs.detach().numpy()
    expected_grad = np.zeros_like(a)
    expected_loss = 0.0
    for b in range(2):
        w_pos, w_neg = malis_weights(a[b].astype(np.float32), labels[b], offsets, constrained=constrained)
        expected_loss += (w_pos * (1 - a[b]) ** 2 + w_neg * a[b] ** 2).sum() / 2
        expected_grad[b] = (-2 * w_pos * (1 - a[b]) + 2 * w_neg * a[b]) / 2
    assert float(loss.detach()) == pytest.approx(expected_loss, rel=1e-6)
    np.testing.assert_allclose(affs.grad.numpy(), expected_grad, rtol=1e-6, atol=1e-12)


def test_a_gradient_step_lowers_the_merge_error():
    """Two objects joined by one strong boundary edge: MALIS pushes that edge down."""
    labels = np.array([[[1, 1, 2, 2]]], np.uint64)
    affs = torch.tensor([[[[0.0, 0.9, 0.95, 0.8]]]], requires_grad=True)
    loss = malis_loss(affs, labels, [[0, -1]])
    loss.backward()
    assert affs.grad[0, 0, 0, 2] > 0  # gradient descent lowers the boundary affinity
    assert affs.grad[0, 0, 0, 1] < 0 and affs.grad[0, 0, 0, 3] < 0  # and raises the within-object ones


def test_malis_loss_bad_input():
    with pytest.raises(ValueError, match="do not match"):
        malis_loss(torch.rand(1, 3, 4, 4, 4), np.zeros((1, 4, 4, 5), np.uint64), np.eye(3) * -1)


@pytest.mark.parametrize("shape", [(24, 24), (6, 16, 16)])
def test_random_walker_loss_prefers_ground_truth_affinities(shape):
    from affseg.conventions import affinities_from_labels
    from affseg.learn.losses import random_walker_loss
    from affseg.synthetic import make_volume

    labels = make_volume((6, 16, 16) if len(shape) == 3 else (1,) + shape, seed=1).labels.reshape(shape)
    offsets = -np.eye(len(shape), dtype=int)
    gt, _ = affinities_from_labels(labels, offsets)
    good = torch.from_numpy(np.clip(gt, 0.05, 0.95)[None]).requires_grad_()
    flat = torch.full_like(good, 0.5, requires_grad=True)
    loss_good = random_walker_loss(good, labels[None], offsets)
    loss_flat = random_walker_loss(flat, labels[None], offsets)
    assert float(loss_good.detach()) < float(loss_flat.detach())
    loss_flat.backward()
    grad = flat.grad.numpy()[0]
    # raising an affinity inside an object helps (negative gradient) more often than across a boundary
    inside, across = grad[gt == 1], grad[gt == 0]
    assert np.mean(inside) < np.mean(across)


@pytest.mark.parametrize("ndim", [2, 3])
def test_random_walker_loss_of_crops_with_one_object_or_none_is_zero(ndim):
    from affseg.learn.losses import random_walker_loss

    offsets = -np.eye(ndim, dtype=int)
    shape = (8,) * ndim
    affs = torch.rand(2, ndim, *shape, generator=torch.Generator().manual_seed(0)).requires_grad_()
    labels = np.stack([np.full(shape, 7, np.uint64), np.zeros(shape, np.uint64)])  # one object; unlabelled
    loss = random_walker_loss(affs, labels, offsets)
    assert float(loss.detach()) == 0.0  # not -log(1 + eps) < 0, and no error for the crop without a seed
    loss.backward()
    assert not affs.grad.any()


def test_random_walker_loss_averages_over_the_crops_with_objects_to_tell_apart():
    from affseg.learn.losses import random_walker_loss
    from affseg.synthetic import make_volume

    labels = make_volume((1, 24, 24), seed=1).labels.reshape(24, 24)
    offsets = -np.eye(2, dtype=int)
    affs = torch.rand(1, 2, 24, 24, generator=torch.Generator().manual_seed(1))
    alone = random_walker_loss(affs, labels[None], offsets)
    with_uniform = random_walker_loss(torch.cat([affs, affs]), np.stack([labels, np.ones_like(labels)]), offsets)
    torch.testing.assert_close(with_uniform, alone)
    assert float(alone) > 0
