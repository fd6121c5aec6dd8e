"""Ground-truth central-instance masks on a branch grid (Bailoni et al. 2020), numpy only.

A *branch* is a window (odd sizes, in voxels of its grid) and a downscale factor ``f``. Its grid
samples the full-resolution volume at ``g * f + f // 2`` (the labels ``labels[f//2::f]``, as the
authors' code downscales its target patches), so a branch grid voxel ``g`` stands for the
full-resolution voxel ``g * f + f // 2``, and voxel ``k`` of the mask centred at ``g`` is the grid
voxel ``g + k - window // 2``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from .._checks import as_array, as_labels, describe
from ..errors import InputError

__all__ = ["central_mask_targets", "downscale_labels"]


def as_window(window, ndim: int) -> tuple[int, ...]:
    """A mask window as ``ndim`` odd positive sizes, or an InputError that shows it."""
    sizes = _int_tuple(window, ndim, name="window")
    if any(s < 1 or s % 2 == 0 for s in sizes):
        raise InputError(f"window sizes must be odd and positive (the centre voxel is in the middle), got {sizes}")
    return sizes


def as_factor(factor, ndim: int) -> tuple[int, ...]:
    """A branch downscale factor as ``ndim`` positive integers (``None``: no downscaling)."""
    if factor is None:
        return (1,) * ndim
    sizes = _int_tuple(factor, ndim, name="factor")
    if any(s < 1 for s in sizes):
        raise InputError(f"factor must be positive integers, got {sizes}")
    return sizes


def _int_tuple(value, ndim: int, *, name: str) -> tuple[int, ...]:
    arr = as_array(value, name=name)
    if arr.ndim == 0:
        arr = np.full(ndim, arr)
    if arr.shape != (ndim,) or arr.dtype.kind not in "iu":
        raise InputError(f"{name} must be {ndim} integers for a {ndim}D volume, got {describe(value)}")
    return tuple(int(v) for v in arr)


def check_divisible(shape: tuple[int, ...], factor: tuple[int, ...], *, name: str = "labels") -> tuple[int, ...]:
    """The branch grid shape ``shape // factor``; an InputError unless ``factor`` divides ``shape``."""
    if any(n % f for n, f in zip(shape, factor)):
        raise InputError(f"the branch factor {factor} does not divide the shape {tuple(shape)} of {name}")
    return tuple(n // f for n, f in zip(shape, factor))


def downscale_labels(labels: ArrayLike, factor: int | Sequence[int]) -> np.ndarray:
    """Labels on a branch grid: the label at ``g * f + f // 2`` for every grid voxel ``g``.

    Parameters
    ----------
    labels : (z, y, x) or (y, x) array_like of int
        Full-resolution labels; ``factor`` must divide the shape.
    factor : int or sequence of int
        Downscale factor per axis.

    Returns
    -------
    grid_labels : (z // fz, y // fy, x // fx) or (y // fy, x // fx) uint64

    Raises
    ------
    InputError
        If the labels are not a 2D/3D integer volume or ``factor`` does not divide their shape.
    """
    labels = as_labels(labels)
    factor = as_factor(factor, labels.ndim)
    check_divisible(labels.shape, factor)
    return np.ascontiguousarray(labels[tuple(slice(f // 2, None, f) for f in factor)])


def central_mask_targets(labels: ArrayLike, centres: ArrayLike, *, window: Sequence[int],
                         factor: int | Sequence[int] | None = None,
                         boundary_margin: int | Sequence[int] = 2) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth central-instance masks of sampled centres, and where they are defined.

    Parameters
    ----------
    labels : (z, y, x) or (y, x) array_like of int
        Full-resolution labels of the crop; 0 is unlabelled. ``factor`` must divide the shape.
    centres : (R, ndim) array_like of int
        Centre positions on the branch grid (``labels.shape // factor``).
    window : sequence of int, keyword-only
        Odd mask sizes per axis, in grid voxels (e.g. ``(5, 7, 7)``).
    factor : int or sequence of int, optional, keyword-only
        The branch's downscale factor; default 1 on every axis.
    boundary_margin : int or sequence of int, keyword-only
        Centres whose full-resolution voxel lies within this many voxels (per axis, a box) of a
        transition between two non-zero labels get an empty mask except the centre voxel (the
        paper's rule against noisy targets at boundaries). 0 switches the rule off; for
        anisotropic data a per-axis margin such as ``(0, 2, 2)`` keeps it in-plane.

    Returns
    -------
    masks : (R, *window) float32
        1 where the grid voxel carries the centre's label, else 0.
    weights : (R, *window) float32
        1 where the target is defined; 0 for window voxels outside the crop or on label 0, and
        for the whole mask of a centre on label 0.

    Raises
    ------
    InputError
        If the window is not odd, the factor does not divide the shape, or a centre is not an
        integer position on the grid.
    """
    labels = as_labels(labels)
    ndim = labels.ndim
    window = as_window(window, ndim)
    factor = as_factor(factor, ndim)
    margin = _int_tuple(boundary_margin, ndim, name="boundary_margin")
    if any(m < 0 for m in margin):
        raise InputError(f"boundary_margin must not be negative, got {margin}")
    grid_labels = downscale_labels(labels, factor)
    centres = _as_centres(centres, grid_labels.shape)

    radius = np.array(window) // 2
    steps = np.stack(np.meshgrid(*[np.arange(w) for w in window], indexing="ij"), -1).reshape(-1, ndim)
    positions = centres[:, None, :] + (steps - radius)[None]  # (R, W, ndim)
    inside = np.all((positions >= 0) & (positions < np.array(grid_labels.shape)), axis=-1)
    clipped = np.clip(positions, 0, np.array(grid_labels.shape) - 1)
    values = grid_labels[tuple(clipped[..., d] for d in range(ndim))]
    centre_labels = grid_labels[tuple(centres[:, d] for d in range(ndim))][:, None]

    labelled = centre_labels != 0
    masks = (values == centre_labels) & inside & labelled
    weights = inside & (values != 0) & labelled
    if any(margin):
        full = centres * np.array(factor) + np.array(factor) // 2
        near = _near_transition(labels, full, margin)
        masks[near] = False
        masks[near, int(np.ravel_multi_index(tuple(radius), window))] = labelled[near, 0]
    shape = (len(centres),) + window
    return masks.reshape(shape).astype(np.float32), weights.reshape(shape).astype(np.float32)


def _as_centres(centres, grid_shape: tuple[int, ...]) -> np.ndarray:
    arr = as_array(centres, name="centres")
    ndim = len(grid_shape)
    if arr.ndim != 2 or arr.shape[1] != ndim or arr.dtype.kind not in "iu":
        raise InputError(f"centres must be an (R, {ndim}) array of integer grid positions, got "
                         f"{describe(centres)}" + (f" (shape {arr.shape}, dtype {arr.dtype})" if arr.size else ""))
    arr = arr.astype(np.int64)
    outside = np.any((arr < 0) | (arr >= np.array(grid_shape)), axis=1)
    if outside.any():
        raise InputError(f"centre {arr[outside][0].tolist()} lies outside the branch grid of shape {grid_shape}")
    return arr


def _near_transition(labels: np.ndarray, points: np.ndarray, margin: tuple[int, ...]) -> np.ndarray:
    """Per point, whether the box ``point +- margin`` (clipped) holds two different non-zero labels."""
    ndim = labels.ndim
    box = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in margin], indexing="ij"), -1).reshape(-1, ndim)
    positions = np.clip(points[:, None, :] + box[None], 0, np.array(labels.shape) - 1)
    values = labels[tuple(positions[..., d] for d in range(ndim))]
    largest = values.max(axis=1)
    smallest = np.where(values != 0, values, np.iinfo(np.uint64).max).min(axis=1)
    return (largest != 0) & (largest != smallest)
