"""Losses on predicted affinities and other targets (torch)."""
from __future__ import annotations

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors import InputError
from ..graph.malis.weights import malis_weights

__all__ = ["dice_loss", "malis_loss", "mask_dice_loss", "random_walker_loss", "weighted_bce", "weighted_mse"]


def _checked(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None):
    if pred.shape != target.shape:
        raise InputError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if weights is not None and weights.shape != pred.shape:
        raise InputError(f"weights {tuple(weights.shape)} do not match the prediction {tuple(pred.shape)}")
    return weights if weights is not None else torch.ones_like(pred)


def _mean_over_weighted(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum of ``weights * values`` over the number of elements with a positive weight (as lsd)."""
    count = torch.clamp((weights > 0).sum(), min=1)
    return (weights * values).sum() / count


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``weights * (pred - target)**2`` over the elements with a positive weight.

    Parameters
    ----------
    pred : tensor
        Predictions, any shape (e.g. ``(B, C, z, y, x)``).
    target : tensor, shape of ``pred``
        Targets.
    weights : tensor, shape of ``pred``, optional
        Per-element weights; default 1.

    Returns
    -------
    loss : scalar tensor
        ``sum(weights * (pred - target)**2) / max(1, count(weights > 0))``.

    Raises
    ------
    InputError
        If the shapes differ.
    """
    weights = _checked(pred, target, weights)
    return _mean_over_weighted((pred - target) ** 2, weights)


def weighted_bce(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                 *, eps: float = 1e-6) -> torch.Tensor:
    """Binary cross-entropy of probabilities ``pred``, weighted like :func:`weighted_mse`.

    Parameters
    ----------
    pred : tensor
        Probabilities in [0, 1], any shape.
    target : tensor, shape of ``pred``
        Targets in [0, 1].
    weights : tensor, shape of ``pred``, optional
        Per-element weights; default 1.
    eps : float
        ``pred`` is clamped to ``[eps, 1 - eps]`` before the logarithms.

    Returns
    -------
    loss : scalar tensor
        Weighted cross-entropy over the number of elements with a positive weight.

    Raises
    ------
    InputError
        If the shapes differ.
    """
    weights = _checked(pred, target, weights)
    p = pred.clamp(eps, 1 - eps)
    return _mean_over_weighted(-(target * torch.log(p) + (1 - target) * torch.log(1 - p)), weights)


def dice_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
              *, eps: float = 1e-6) -> torch.Tensor:
    """``1 - 2 |P T| / (|P| + |T|)`` per channel, averaged; for mask-like targets.

    Parameters
    ----------
    pred : (B, C, ...) tensor
        Predictions in [0, 1].
    target : (B, C, ...) tensor
        Targets in [0, 1].
    mask : (B, C, ...) tensor, optional
        Per-element weights of the sums (0 = ignored); default 1.
    eps : float
        Added to numerator and denominator (an empty channel scores 0).

    Returns
    -------
    loss : scalar tensor
        The mean over channels of the dice loss summed over batch and space.

    Raises
    ------
    InputError
        If the shapes differ.
    """
    mask = _checked(pred, target, mask)
    dims = [0] + list(range(2, pred.ndim))
    inter = (pred * target * mask).sum(dims)
    total = (pred * mask).sum(dims) + (target * mask).sum(dims)
    return (1 - (2 * inter + eps) / (total + eps)).mean()


def mask_dice_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None, *,
                   inverted: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """Soft Dice loss of decoded central-instance masks against their targets (Bailoni et al. 2020).

    All masks of the batch form one channel of :func:`dice_loss` (as the authors' channel-wise
    Dice over the batch), so a mask that lies in one object needs no special case.

    Parameters
    ----------
    pred : (N, *window) tensor
        Decoded masks in [0, 1] (1 = the centre's object).
    target : (N, *window) tensor
        Target masks in [0, 1].
    weights : (N, *window) tensor, optional
        0 where the target is not defined (outside the crop, unlabelled, centres on label 0);
        default 1.
    inverted : bool
        Score the inverted masks (1 = another object), as the paper: the Dice then rewards the
        voxels of other objects (the boundaries that matter for a segmentation), which a window
        inside one object mostly lacks; False scores the masks as they are.
    eps : float
        As :func:`dice_loss` (a batch without foreground scores 0 when nothing is predicted).

    Returns
    -------
    loss : scalar tensor
        ``1 - 2 sum(w p t) / (sum(w p) + sum(w t))`` in [0, 1], differentiable in ``pred``.

    Raises
    ------
    InputError
        If the shapes differ.
    """
    _checked(pred, target, weights)
    if inverted:
        pred, target = 1 - pred, 1 - target
    return dice_loss(pred[:, None], target[:, None], None if weights is None else weights[:, None], eps=eps)


def malis_loss(affs: torch.Tensor, labels: ArrayLike | torch.Tensor, offsets: ArrayLike, *,
               mask: ArrayLike | torch.Tensor | None = None, constrained: bool = True) -> torch.Tensor:
    """MALIS loss ``sum(w_pos * (1 - a)**2 + w_neg * a**2)``, averaged over the batch.

    The weights come from :func:`affseg.graph.malis.weights.malis_weights` (constrained MALIS by
    default, each pass normalised by its pair count) and are constants for the gradient, as in
    Turaga 2009 and Funke 2018.

    Parameters
    ----------
    affs : (B, C, z, y, x) or (B, C, y, x) tensor
        Predicted affinities in [0, 1].
    labels : (B, z, y, x) or (B, y, x) int array or tensor
        Ground truth of the output region; 0 forms no pairs.
    offsets : (C, ndim) array_like of int
        The offsets of the affinity channels.
    mask : bool array or tensor, (B, *spatial) or (B, C, *spatial), optional
        Where the ground truth is known (see :func:`affseg.graph.malis.weights.malis_pair_counts`).
    constrained : bool
        Constrained MALIS (Funke 2018); else Turaga's (see ``malis_weights``).

    Returns
    -------
    loss : scalar tensor
        Of the dtype and device of ``affs``, differentiable with respect to ``affs``.

    Raises
    ------
    InputError
        If ``labels`` do not match the batch and spatial shape of ``affs``, or the weights
        refuse the input (see :func:`affseg.graph.malis.weights.malis_pair_counts`).
    """
    labels = _numpy(labels)
    if labels.shape[0] != affs.shape[0] or labels.shape[1:] != tuple(affs.shape[2:]):
        raise InputError(f"labels {labels.shape} do not match the affinities {tuple(affs.shape)} (batch, channels, ...)")
    masks = _numpy(mask) if mask is not None else [None] * affs.shape[0]
    predicted = affs.detach().float().cpu().numpy()
    w_pos = np.zeros(predicted.shape)
    w_neg = np.zeros(predicted.shape)
    for b in range(affs.shape[0]):
        w_pos[b], w_neg[b] = malis_weights(np.clip(predicted[b], 0, 1), labels[b], offsets, mask=masks[b],
                                           constrained=constrained)
    w_pos_t = torch.from_numpy(w_pos).to(affs.device, affs.dtype)
    w_neg_t = torch.from_numpy(w_neg).to(affs.device, affs.dtype)
    return (w_pos_t * (1 - affs) ** 2 + w_neg_t * affs**2).sum() / affs.shape[0]


def random_walker_loss(affs: torch.Tensor, labels: ArrayLike | torch.Tensor, offsets: ArrayLike, *,
                       seed_radius: int = 2, gradient: str = "exact", num_samples: int = 1000,
                       eps: float = 1e-6) -> torch.Tensor:
    """The Learned Random Walker loss: the affinities are the diffusivities of a random walker
    seeded with one blob per ground-truth object (:func:`affseg.learn.targets.oracle_seeds`),
    and the loss is the cross-entropy ``-log p[object]`` of its probabilities, averaged over the
    labelled unseeded voxels of the batch items that hold two objects or more (a crop with one
    object or none contributes nothing; the loss is 0 if no crop has two).

    Parameters
    ----------
    affs : (B, C, z, y, x) or (B, C, y, x) tensor
        Predicted affinities in [0, 1]; floored at 1e-6 so that every voxel is reached.
    labels : (B, z, y, x) or (B, y, x) int array or tensor
        Ground truth of the output region, 0 = unlabelled (no loss there).
    offsets : (C, ndim) array_like of int
        The offsets of the affinity channels.
    seed_radius : int
        Radius of the seed blobs (see :func:`affseg.learn.targets.oracle_seeds`).
    gradient : {"exact", "sampled"}
        See :class:`affseg.learn.random_walker.RandomWalker`.
    num_samples : int
        See :class:`affseg.learn.random_walker.RandomWalker`.
    eps : float
        Added inside the logarithm (and the result divided by ``1 + eps``, so the loss is >= 0).

    Returns
    -------
    loss : scalar tensor
        Differentiable with respect to ``affs``.

    Raises
    ------
    InputError
        If ``labels`` do not match the batch and spatial shape of ``affs``, or the random
        walker refuses the input.
    """
    from ..graph.random_walker.solver import MIN_AFFINITY_WEIGHT
    from .random_walker import random_walker_probabilities
    from .targets import oracle_seeds

    labels = _numpy(labels)
    if labels.shape[0] != affs.shape[0] or labels.shape[1:] != tuple(affs.shape[2:]):
        raise InputError(f"labels {labels.shape} do not match the affinities {tuple(affs.shape)} (batch, channels, ...)")
    seeds, targets = zip(*(oracle_seeds(item, seed_radius) for item in labels))
    seeds_t = torch.from_numpy(np.stack(seeds))
    target_t = torch.from_numpy(np.stack(targets)).to(affs.device)
    # a crop with fewer than two objects teaches nothing (and one without a label has no seed)
    useful = [i for i, s in enumerate(seeds) if s.max() > 1]
    if not useful:
        return affs.sum() * 0
    seeds_t, target_t, affs = seeds_t[useful], target_t[useful], affs[useful]
    num_labels = int(seeds_t.max())
    probs = random_walker_probabilities(affs.clamp_min(MIN_AFFINITY_WEIGHT), seeds_t, offsets, num_labels=num_labels,
                                        gradient=gradient, num_samples=num_samples)
    where = (target_t > 0) & (seeds_t.to(affs.device) == 0)
    if not where.any():
        return affs.sum() * 0
    index = (target_t - 1).clamp_min(0).unsqueeze(1)
    picked = torch.gather(probs, 1, index).squeeze(1)
    # divided by 1 + eps: a certain right answer costs exactly 0 (not -log(1 + eps) < 0)
    return -torch.log((picked[where] + eps) / (1 + eps)).mean()


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
