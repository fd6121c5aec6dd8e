"""The Learned Random Walker (Cerrone, Zeilmann and Hamprecht, CVPR 2019) as a torch layer.

Forward: for each batch item, the seeded random walker (:class:`affseg.graph.random_walker.solver.
RandomWalkerSystem`) on the predicted edge weights. Backward, exact by the adjoint method: with
``g = dLoss/dx`` on the unseeded voxels, one more solve per label ``L_U l_k = g_k`` reuses the
forward factorisation (or multigrid hierarchy), and for the edge ``e = (u, v)``

    dLoss/dw_e = -sum_k (l_k[u] - l_k[v]) (x_k[u] - x_k[v])

with ``l = 0`` on seeds and ``x`` the seed indicator there. The paper instead samples ``n``
unseeded pixels, takes one representative label each (the largest ``|g|``) and solves one
system per edge of a sampled pixel; ``gradient="sampled"`` reproduces that for comparison:
its values equal the exact gradient of that label on the sampled edges and 0 elsewhere.

The solves run on the CPU in float64 (scipy); inputs on a GPU are copied there and back.
"""
from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors import InputError
from ..graph.random_walker.solver import RandomWalkerSystem

__all__ = ["RandomWalker", "random_walker_probabilities"]

GRADIENTS = ("exact", "sampled")


class _RandomWalkerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weights, seeds, offsets, num_labels, solver, tol, gradient, num_samples, generator):
        batch, spatial = weights.shape[0], tuple(weights.shape[2:])
        n = int(np.prod(spatial))
        out = np.zeros((batch, num_labels, n))
        systems, xs = [], []
        seeds_np = seeds.detach().cpu().numpy()
        weights_np = weights.detach().cpu().numpy().astype(np.float64)
        for b in range(batch):
            system = RandomWalkerSystem(weights_np[b], seeds_np[b], offsets, solver=solver, tol=tol)
            x_full = system.full(system.unknown_probabilities(), seed_values=True)
            channels = system.labels.astype(np.int64) - 1
            out[b, channels] = x_full
            systems.append(system)
            xs.append(x_full)
        ctx.systems, ctx.xs = systems, xs
        ctx.gradient, ctx.num_samples, ctx.generator = gradient, num_samples, generator
        ctx.weights_meta = (weights.dtype, weights.device)
        return torch.from_numpy(out.reshape((batch, num_labels) + spatial)).to(weights.dtype).to(weights.device)

    @staticmethod
    def backward(ctx, grad_output):
        dtype, device = ctx.weights_meta
        g_all = grad_output.detach().cpu().numpy().astype(np.float64)
        grads = []
        for b, (system, x_full) in enumerate(zip(ctx.systems, ctx.xs)):
            channels = system.labels.astype(np.int64) - 1
            g = g_all[b, channels].reshape(len(channels), -1)  # (K, n)
            if ctx.gradient == "exact":
                grads.append(_exact_gradient(system, x_full, g))
            else:
                grads.append(_sampled_gradient(system, x_full, g, ctx.num_samples, ctx.generator))
        grad = torch.from_numpy(np.stack(grads)).to(dtype).to(device)
        return grad, None, None, None, None, None, None, None, None


def _exact_gradient(system: RandomWalkerSystem, x_full: np.ndarray, g: np.ndarray) -> np.ndarray:
    adjoint = system.solve(g[:, system.unknown].T)  # L_U is symmetric: the same operator
    return system.edge_gradient(x_full, system.full(adjoint.reshape(system.unknown.size, -1), seed_values=False))


def _sampled_gradient(system: RandomWalkerSystem, x_full: np.ndarray, g: np.ndarray, num_samples: int,
                      generator: np.random.Generator) -> np.ndarray:
    """The paper's estimate: one solve per edge of ``num_samples`` sampled unseeded voxels, for the
    label with the largest ``|dLoss/dx|`` at that voxel."""
    shape, offsets = system.shape, system.offsets
    grad = np.zeros((len(offsets),) + shape)
    if system.unknown.size == 0:
        return grad
    local = np.full(system.label_index.size, -1, np.int64)
    local[system.unknown] = np.arange(system.unknown.size)
    mask = None if system.mask is None else system.mask.reshape(-1)
    picked = generator.choice(system.unknown, size=min(num_samples, system.unknown.size), replace=False)
    g_unknown = g[:, system.unknown]
    for u in picked:
        label = int(np.argmax(np.abs(g[:, u])))
        coord = np.array(np.unravel_index(u, shape))
        for c, offset in enumerate(offsets):
            target = coord + offset
            if np.any(target < 0) or np.any(target >= shape):
                continue
            v = int(np.ravel_multi_index(target, shape))
            if mask is not None and not (mask[u] and mask[v]):
                continue
            diff = x_full[label, u] - x_full[label, v]
            rhs = np.zeros(system.unknown.size)
            rhs[local[u]] = -diff  # d(L x)/dw_e, moved to the right-hand side
            if local[v] >= 0:
                rhs[local[v]] = diff
            grad[(c,) + tuple(coord)] = g_unknown[label] @ system.solve(rhs)
    return grad


def random_walker_probabilities(weights: torch.Tensor, seeds: torch.Tensor, offsets: ArrayLike | None = None, *,
                                num_labels: int | None = None, solver: str = "auto", tol: float = 1e-8,
                                gradient: str = "exact", num_samples: int = 1000,
                                seed: int | None = None) -> torch.Tensor:
    """Differentiable random-walker probabilities; see :class:`RandomWalker`.

    Parameters
    ----------
    weights : (B, C, z, y, x) or (B, C, y, x) float tensor
        Positive edge weights (diffusivities) of each batch item.
    seeds : (B, z, y, x) or (B, y, x) int tensor
        Labels 1..K (0 = unseeded); every item needs at least one seed.
    offsets : (C, ndim) array_like of int, optional
        The edges of the weight channels (default: nearest neighbours ``-e_d``).
    num_labels : int, optional
        K (default: the largest seed label).
    solver : {"auto", "direct", "cg"}
        See :class:`~affseg.graph.random_walker.solver.RandomWalkerSystem`.
    tol : float
        Relative residual for cg.
    gradient : {"exact", "sampled"}
        ``sampled``: the paper's estimate from ``num_samples`` voxels (for comparison).
    num_samples : int
        Voxels sampled per item by the ``sampled`` gradient (>= 1).
    seed : int, optional
        Seed of the sampling.

    Returns
    -------
    probabilities : (B, K, z, y, x) or (B, K, y, x) tensor of the dtype and device of ``weights``
        Channel ``k - 1`` for seed label ``k``; 1/0 on seeds, 0 where no seed is reached.

    Raises
    ------
    InputError
        If the shapes or dtypes do not fit, ``gradient`` or ``num_samples`` is invalid, a seed
        exceeds ``num_labels``, or the random walker refuses an item (no seed, bad weights).
    """
    if weights.ndim not in (4, 5):
        raise InputError(f"weights must be (batch, C, y, x) or (batch, C, z, y, x), got shape {tuple(weights.shape)}")
    if tuple(seeds.shape) != (weights.shape[0],) + tuple(weights.shape[2:]):
        raise InputError(f"seeds must have the shape {(weights.shape[0],) + tuple(weights.shape[2:])} "
                         f"(batch + spatial shape of the weights), got {tuple(seeds.shape)}")
    if seeds.dtype.is_floating_point or seeds.dtype == torch.bool:
        raise InputError(f"seeds must be an integer tensor, got {seeds.dtype}")
    if gradient not in GRADIENTS:
        raise InputError(f"unknown gradient {gradient!r}; choose one of {GRADIENTS}")
    if num_samples < 1:
        raise InputError(f"num_samples must be >= 1, got {num_samples}")
    top = int(seeds.max()) if seeds.numel() else 0
    num_labels = top if num_labels is None else num_labels
    if top > num_labels:
        raise InputError(f"seeds hold label {top} but num_labels is {num_labels}")
    generator = np.random.default_rng(seed)
    return _RandomWalkerFunction.apply(weights, seeds, offsets, num_labels, solver, tol, gradient,
                                       num_samples, generator)


class RandomWalker(torch.nn.Module):
    """Seeded random walker on predicted edge weights, with an exact (adjoint) backward pass.

    Parameters
    ----------
    offsets : (C, ndim) array_like of int, optional
        The edges of the weight channels (default: nearest neighbours ``-e_d``).
    solver : {"auto", "direct", "cg"}
    tol : float
        Relative residual for cg.
    gradient : {"exact", "sampled"}
        ``sampled``: the paper's estimate from ``num_samples`` voxels (for comparison).
    num_samples : int
    seed : int, optional
        Seed of the sampling.

    Forward
    -------
    weights : (B, C, z, y, x) or (B, C, y, x) float tensor, positive
    seeds : (B, z, y, x) or (B, y, x) int tensor
        Labels 1..K (0 = unseeded); a label missing from an item gets probability 0 there.
    num_labels : int, optional
        K (default: the largest seed label).

    Returns
    -------
    probabilities : (B, K, z, y, x) or (B, K, y, x) tensor of the dtype of ``weights``
        Channel ``k - 1`` for seed label ``k``; 1/0 on seeds, 0 where no seed is reached.
    """

    def __init__(self, offsets=None, *, solver: str = "auto", tol: float = 1e-8, gradient: str = "exact",
                 num_samples: int = 1000, seed: int | None = None):
        super().__init__()
        self.offsets = offsets
        self.solver, self.tol, self.gradient, self.num_samples = solver, tol, gradient, num_samples
        self.generator_seed = seed

    def forward(self, weights: torch.Tensor, seeds: torch.Tensor, num_labels: int | None = None) -> torch.Tensor:
        return random_walker_probabilities(weights, seeds, self.offsets, num_labels=num_labels, solver=self.solver,
                                           tol=self.tol, gradient=self.gradient, num_samples=self.num_samples,
                                           seed=self.generator_seed)
