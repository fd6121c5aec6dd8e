"""Losses on predicted affinities and other targets (torch)."""
from __future__ import annotations

import numpy as np
import torch

from ..graph.malis import malis_weights

__all__ = ["dice_loss", "malis_loss", "weighted_bce", "weighted_mse"]


def _checked(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None):
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if weights is not None and weights.shape != pred.shape:
        raise ValueError(f"weights {tuple(weights.shape)} do not match the prediction {tuple(pred.shape)}")
    return weights if weights is not None else torch.ones_like(pred)


def _mean_over_weighted(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum of ``weights * values`` over the number of elements with a positive weight (as lsd)."""
    count = torch.clamp((weights > 0).sum(), min=1)
    return (weights * values).sum() / count


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``weights * (pred - target)**2`` over the elements with a positive weight."""
    weights = _checked(pred, target, weights)
    return _mean_over_weighted((pred - target) ** 2, weights)


def weighted_bce(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                 *, eps: float = 1e-6) -> torch.Tensor:
    """Binary cross-entropy of probabilities ``pred``, weighted like :func:`weighted_mse`."""
    weights = _checked(pred, target, weights)
    p = pred.clamp(eps, 1 - eps)
    return _mean_over_weighted(-(target * torch.log(p) + (1 - target) * torch.log(1 - p)), weights)


def dice_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
              *, eps: float = 1e-6) -> torch.Tensor:
    """``1 - 2 |P T| / (|P| + |T|)`` per channel, averaged; for mask-like targets."""
    mask = _checked(pred, target, mask)
    dims = [0] + list(range(2, pred.ndim))
    inter = (pred * target * mask).sum(dims)
    total = (pred * mask).sum(dims) + (target * mask).sum(dims)
    return (1 - (2 * inter + eps) / (total + eps)).mean()


def malis_loss(affs: torch.Tensor, labels, offsets, *, mask=None, constrained: bool = True) -> torch.Tensor:
    """MALIS loss ``sum(w_pos * (1 - a)**2 + w_neg * a**2)``, averaged over the batch.

    The weights come from :func:`affseg.graph.malis.malis_weights` (constrained MALIS by
    default, each pass normalised by its pair count) and are constants for the gradient, as in
    Turaga 2009 and Funke 2018.

    Parameters
    ----------
    affs : (B, C, z, y, x) or (B, C, y, x) tensor
        Predicted affinities in [0, 1].
    labels : (B, z, y, x) or (B, y, x) int array or tensor
        Ground truth of the output region; 0 forms no pairs.
    offsets : (C, ndim) array_like of int
    mask : bool array or tensor, (B, *spatial) or (B, C, *spatial), optional
        Where the ground truth is known (see :func:`affseg.graph.malis.malis_pair_counts`).
    """
    labels = _numpy(labels)
    if labels.shape[0] != affs.shape[0] or labels.shape[1:] != tuple(affs.shape[2:]):
        raise ValueError(f"labels {labels.shape} do not match the affinities {tuple(affs.shape)} (batch, channels, ...)")
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


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
