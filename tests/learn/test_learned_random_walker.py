"""The Learned Random Walker layer: forward equal to the numpy random walker, exact adjoint
gradients (gradcheck), the paper's sampled gradient against the exact one, bad input."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the learn extra (torch) is not installed")

from affseg.graph.random_walker import random_walker
from affseg.learn.random_walker import RandomWalker, random_walker_probabilities

OFFSETS_2D = [[-1, 0], [0, -1], [0, -2]]


def _seeds(batch, shape, seed, labels=3):
    rng = np.random.default_rng(seed)
    seeds = np.zeros((batch,) + shape, np.int64)
    for b in range(batch):
        flat = rng.choice(int(np.prod(shape)), size=labels, replace=False)
        seeds[b].reshape(-1)[flat] = np.arange(1, labels + 1)
    return torch.from_numpy(seeds)


def _weights(batch, channels, shape, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((batch, channels) + shape, generator=gen, dtype=torch.float64) * 0.9 + 0.1


@pytest.mark.parametrize(("shape", "offsets"), [((5, 6), None), ((5, 6), OFFSETS_2D), ((3, 4, 4), None)])
@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_gradcheck(shape, offsets, solver):
    channels = len(shape) if offsets is None else len(offsets)
    weights = _weights(2, channels, shape, 0).requires_grad_()
    seeds = _seeds(2, shape, 1)
    seeds[1][seeds[1] == 2] = 0  # label 2 missing from the second item

    def probabilities(w):
        return random_walker_probabilities(w, seeds, offsets, num_labels=3, solver=solver, tol=1e-11)

    assert torch.autograd.gradcheck(probabilities, (weights,), eps=1e-6, atol=1e-6)


def test_forward_equals_the_numpy_random_walker():
    weights = _weights(2, 3, (4, 6, 7), 2).float()
    seeds = _seeds(2, (4, 6, 7), 3, labels=4)
    probs = RandomWalker()(weights, seeds)
    assert probs.shape == (2, 4, 4, 6, 7) and probs.dtype == torch.float32
    for b in range(2):
        _, expected = random_walker(weights[b].numpy(), seeds[b].numpy(), return_probabilities=True)
        np.testing.assert_allclose(probs[b].numpy(), expected, atol=1e-6)


def test_missing_label_has_probability_zero_and_cross_entropy_trains():
    weights = _weights(1, 2, (8, 8), 4).float().requires_grad_()
    seeds = torch.zeros((1, 8, 8), dtype=torch.int64)
    seeds[0, 0, 0], seeds[0, 7, 7] = 1, 3
    probs = RandomWalker()(weights, seeds)
    assert probs.shape[1] == 3 and float(probs[0, 1].detach().abs().max()) == 0.0
    target = torch.zeros((1, 8, 8), dtype=torch.int64)
    target[0, :, 4:] = 2  # right half belongs to label 3
    loss = torch.nn.functional.nll_loss(torch.log(probs + 1e-6), target)
    loss.backward()
    assert weights.grad is not None and torch.isfinite(weights.grad).all() and weights.grad.abs().sum() > 0


def test_sampled_gradient_is_the_exact_gradient_of_its_label_on_sampled_edges():
    shape = (6, 7)
    weights = _weights(1, 3, shape, 5)
    seeds = _seeds(1, shape, 6)
    gen = torch.Generator().manual_seed(0)
    coefficients = torch.rand((1, 3) + shape, generator=gen, dtype=torch.float64)
    coefficients[:, 1:] = 0  # only label 1 carries a loss: it is every voxel's representative label

    def grad(gradient, num_samples):
        w = weights.clone().requires_grad_()
        probs = random_walker_probabilities(w, seeds, OFFSETS_2D, gradient=gradient, num_samples=num_samples, seed=0)
        (probs * coefficients).sum().backward()
        return w.grad[0].numpy()

    exact = grad("exact", 1)
    every = grad("sampled", 10**6)  # all unseeded voxels sampled
    unseeded = seeds[0].numpy() == 0
    np.testing.assert_allclose(every[:, unseeded], exact[:, unseeded], atol=1e-9)
    assert np.all(every[:, ~unseeded] == 0)  # edges are owned by their first voxel, as in the paper
    few = grad("sampled", 5)
    sampled_voxels = np.any(few != 0, axis=0)
    assert 0 < sampled_voxels.sum() <= 5
    np.testing.assert_allclose(few[:, sampled_voxels], exact[:, sampled_voxels], atol=1e-9)


@pytest.mark.parametrize(
    ("weights_shape", "seeds_shape", "kwargs", "message"),
    [
        ((1, 2, 5), (1, 5), {}, "weights must be"),
        ((1, 2, 5, 6), (1, 5, 7), {}, r"seeds must have the shape \(1, 5, 6\)"),
        ((1, 2, 5, 6), (1, 5, 6), {"gradient": "sampled-ish"}, "unknown gradient"),
        ((1, 2, 5, 6), (1, 5, 6), {"num_labels": 1}, "num_labels is 1"),
        ((1, 2, 5, 6), (1, 5, 6), {"num_samples": 0}, "num_samples"),
    ],
)
def test_bad_input(weights_shape, seeds_shape, kwargs, message):
    seeds = torch.zeros(seeds_shape, dtype=torch.int64)
    seeds.view(-1)[0], seeds.view(-1)[-1] = 1, 2
    with pytest.raises(ValueError, match=message):
        random_walker_probabilities(torch.ones(weights_shape), seeds, **kwargs)


def test_non_positive_weights_are_refused_before_solving():
    seeds = _seeds(1, (5, 6), 0)
    with pytest.raises(ValueError, match="negative"):
        RandomWalker()(-torch.ones((1, 2, 5, 6)), seeds)
    with pytest.raises(ValueError, match="NaN"):
        RandomWalker()(torch.full((1, 2, 5, 6), float("nan")), seeds)
    with pytest.raises(ValueError, match="integer"):
        RandomWalker()(torch.ones((1, 2, 5, 6)), seeds.float())
