"""Training targets from ground-truth labels: local shape descriptors, boundary growth and
class-balancing weights (numpy and scipy only; affinities come from
:func:`affseg.affinities_from_labels`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from .._checks import as_int, as_labels, as_mask
from .._deprecation import renamed_keywords
from ..errors import InputError

__all__ = ["balance_weights", "grow_boundary", "local_shape_descriptors", "lsd_channels", "oracle_seeds"]

_TRUNCATE = 3.0  # Gaussian support in sigmas, as in the lsd package


def lsd_channels(ndim: int) -> int:
    """10 descriptor channels in 3D, 6 in 2D.

    Parameters
    ----------
    ndim : int
        Number of spatial axes, 2 or 3.

    Returns
    -------
    channels : int
        Channels of :func:`local_shape_descriptors`.

    Raises
    ------
    InputError
        If ``ndim`` is not 2 or 3.
    """
    return {2: 6, 3: 10}[as_int(ndim, name="ndim", minimum=2, maximum=3)]


def local_shape_descriptors(labels: ArrayLike, sigma: float | Sequence[float], *,
                            voxel_size: float | Sequence[float] | None = None, downsample: int = 1) -> np.ndarray:
    """Local shape descriptors (Sheridan et al. 2022) of every labelled voxel.

    For the object of each voxel, Gaussian-weighted statistics (standard deviation ``sigma`` in
    world units) of the object's voxels around it: the offset of their centre of mass, the
    variances and the Pearson coefficients of their coordinates, and their weighted count. The
    channels and their normalisation follow the ``lsds`` package (``get_local_shape_descriptors``,
    mode "gaussian"): in 3D ``[mean offset z, y, x, variance z, y, x, Pearson zy, zx, yx, size]``,
    in 2D ``[mean offset y, x, variance y, x, Pearson yx, size]``; offsets are divided by sigma and
    mapped to [0, 1] by ``0.5 * x + 0.5``, variances divided by ``sigma**2``, Pearson coefficients
    mapped like offsets, everything clipped to [0, 1], background (label 0) all 0 except the
    variances and size, which are 0 there anyway.

    Each object is processed in its bounding box grown by the Gaussian's support, with
    coordinates relative to the box, which gives the package's values up to float32 rounding
    (the package uses absolute coordinates, whose squares lose precision in large volumes).

    Parameters
    ----------
    labels : (z, y, x) or (y, x) array of int
        Object ids (non-negative); 0 is background.
    sigma : float or sequence of float
        Gaussian standard deviation in world units (per axis or isotropic), positive.
    voxel_size : float or sequence of float, optional
        World units per voxel (positive); default 1.
    downsample : int
        Compute on every ``downsample``-th voxel and repeat the result (the package's option for
        speed). Objects that the subsampling misses are computed at full resolution.

    Returns
    -------
    descriptors : (C, *labels.shape) float32
        C = 10 in 3D, 6 in 2D, values in [0, 1].

    Raises
    ------
    InputError
        If ``labels`` is not a 2D or 3D volume of non-negative integers, ``sigma`` or
        ``voxel_size`` is not one positive number or one per axis, or ``downsample`` is not a
        positive integer.
    """
    labels = as_labels(labels)
    ndim = labels.ndim
    voxel_size = _positive_vector(voxel_size if voxel_size is not None else 1.0, ndim, "voxel_size")
    sigma = _positive_vector(sigma, ndim, "sigma")
    if int(downsample) != downsample or downsample < 1:
        raise InputError(f"downsample must be a positive integer, got {downsample!r}")
    downsample = int(downsample)
    out = np.zeros((lsd_channels(ndim),) + labels.shape, np.float32)
    sub = labels[(slice(None, None, downsample),) * ndim]
    boxes = _boxes(labels)
    sub_boxes = boxes if downsample == 1 else _boxes(sub)
    for label, box in boxes.items():
        if label in sub_boxes:
            _add_object(out, labels, sub, label, sub_boxes[label], downsample, voxel_size, sigma)
        else:  # missed by the subsampling
            _add_object(out, labels, labels, label, box, 1, voxel_size, sigma)
    _normalize(out, labels, ndim)
    return out


def _positive_vector(value, ndim: int, name: str) -> np.ndarray:
    vec = np.broadcast_to(np.asarray(value, dtype=np.float64), (ndim,)) if np.ndim(value) == 0 \
        else np.asarray(value, dtype=np.float64)
    if vec.shape != (ndim,) or not np.all(np.isfinite(vec)) or np.any(vec <= 0):
        raise InputError(f"{name} must be one positive number or {ndim} of them, got {value!r}")
    return vec


def _boxes(labels: np.ndarray) -> dict:
    ids, inverse = np.unique(labels, return_inverse=True)
    slices = ndimage.find_objects(inverse.reshape(labels.shape) + 1)
    return {ids[i]: box for i, box in enumerate(slices) if box is not None and ids[i] != 0}


def _add_object(out, labels, grid, label, box, step, voxel_size, sigma) -> None:
    """Descriptors of one object on ``grid`` (labels subsampled by ``step``), written at full size."""
    ndim = labels.ndim
    sub_voxel = voxel_size * step
    sigma_vox = sigma / sub_voxel
    radius = [int(_TRUNCATE * s + 0.5) for s in sigma_vox]
    crop = tuple(slice(max(0, b.start - r), min(n, b.stop + r)) for b, r, n in zip(box, radius, grid.shape))
    mask = (grid[crop] == label).astype(np.float32)
    axes = [(np.arange(c.start, c.stop) - c.start).astype(np.float32) * np.float32(v)
            for c, v in zip(crop, sub_voxel)]
    coords = np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)
    stats = _statistics(mask, coords, sigma_vox, sigma)
    full = tuple(slice(c.start * step, min(n, c.stop * step)) for c, n in zip(crop, labels.shape))
    if step > 1:
        for axis in range(ndim):
            stats = np.repeat(stats, step, axis=axis + 1)
        stats = stats[(slice(None),) + tuple(slice(0, f.stop - f.start) for f in full)]
    inside = labels[full] == label
    out[(slice(None),) + full] += stats * inside


def _statistics(mask, coords, sigma_vox, sigma) -> np.ndarray:
    """Mean offset, variances, Pearson coefficients and size of the mask around each voxel."""
    ndim = mask.ndim

    def smooth(a):
        return ndimage.gaussian_filter(a, sigma=sigma_vox, mode="constant", cval=0.0, truncate=_TRUNCATE)

    count = smooth(mask)
    size = count.copy()
    count[count == 0] = 1
    masked = coords * mask
    mean = np.stack([smooth(masked[d]) for d in range(ndim)]) / count
    per_axis = (slice(None),) + (None,) * ndim
    mean_offset = (mean - coords) / sigma.astype(np.float32)[per_axis]
    pairs = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)] if ndim == 3 else [(0, 0), (1, 1), (0, 1)]
    cov = np.stack([smooth(masked[i] * coords[j]) / count - mean[i] * mean[j] for i, j in pairs])
    variance = cov[:ndim].copy()
    variance[variance < 1e-3] = 1e-3  # as the lsd package, for stability
    pearson = np.stack([cov[ndim + k] / np.sqrt(variance[i] * variance[j]) for k, (i, j) in enumerate(pairs[ndim:])])
    variance = variance / (sigma**2).astype(np.float32)[per_axis]
    return np.concatenate([mean_offset, variance, pearson, size[None]]).astype(np.float32)


def _normalize(out, labels, ndim) -> None:
    foreground = labels != 0
    offsets = slice(0, ndim)
    pearson = slice(2 * ndim, 2 * ndim + (3 if ndim == 3 else 1))
    out[offsets] = (out[offsets] * 0.5 + 0.5) * foreground
    out[pearson] = (out[pearson] * 0.5 + 0.5) * foreground
    np.clip(out, 0.0, 1.0, out=out)


@renamed_keywords(only_xy="in_plane")
def grow_boundary(labels: ArrayLike, steps: int = 1, *, in_plane: bool = False) -> np.ndarray:
    """Labels with every object shrunk by ``steps`` voxels where it touches another label or 0.

    As gunpowder's GrowBoundary: each object's mask is eroded with the cross-shaped structuring
    element (only within sections with ``in_plane``); the volume border does not erode.

    Parameters
    ----------
    labels : (z, y, x) or (y, x) array of int
        Object ids (non-negative); 0 is background.
    steps : int
        Voxels to erode, >= 0.
    in_plane : bool
        Erode along y and x only (3D labels); ``only_xy=`` is a deprecated alias.

    Returns
    -------
    labels : uint64, shape of ``labels``
        A copy with the boundary voxels set to 0.

    Raises
    ------
    InputError
        If ``labels`` is not a 2D or 3D volume of non-negative integers, ``steps`` is not a
        non-negative integer, or ``in_plane`` is asked for 2D labels.
    """
    labels = as_labels(labels)
    if int(steps) != steps or steps < 0:
        raise InputError(f"steps must be a non-negative integer, got {steps!r}")
    if in_plane and labels.ndim != 3:
        raise InputError(f"in_plane needs a 3D volume, got shape {labels.shape}")
    out = labels.copy()
    for _ in range(int(steps)):
        boundary = np.zeros(labels.shape, bool)
        for axis in range(labels.ndim):
            if in_plane and axis == 0:
                continue
            before = [slice(None)] * labels.ndim
            after = [slice(None)] * labels.ndim
            before[axis] = slice(0, -1)
            after[axis] = slice(1, None)
            differ = out[tuple(before)] != out[tuple(after)]
            boundary[tuple(before)] |= differ
            boundary[tuple(after)] |= differ
        out[boundary] = 0
    return out


def balance_weights(target: ArrayLike, mask: ArrayLike | None = None, *, clip: tuple[float, float] = (0.05, 0.95),
                    per_channel: bool = False) -> np.ndarray:
    """Weights that give both classes of a binary target equal total weight (gunpowder's
    BalanceLabels): ``1 / (2 * frac)`` for the positives and ``1 / (2 * (1 - frac))`` for the
    negatives, with the fraction of positives ``frac`` clipped to ``clip``; 0 outside ``mask``.

    Parameters
    ----------
    target : array of float or bool, values 0 or 1
        The binary target, any shape.
    mask : array of the shape of ``target``, optional
        Where the target counts (non-zero); default everywhere.
    clip : (low, high)
        Bounds of the fraction of positives, ``0 < low <= high < 1``.
    per_channel : bool
        Balance each channel (first axis) on its own.

    Returns
    -------
    weights : float32, shape of ``target``
        0 outside ``mask`` (and where the mask of a group is empty).

    Raises
    ------
    InputError
        If ``target`` holds values other than 0 and 1, ``mask`` does not fit it, or ``clip`` is
        out of range.
    """
    target = np.asarray(target)
    if not np.all((target == 0) | (target == 1)):
        raise InputError("balance_weights needs a binary target (values 0 and 1)")
    mask = np.ones(target.shape, bool) if mask is None else as_mask(mask, target.shape)
    lo, hi = clip
    if not 0 < lo <= hi < 1:
        raise InputError(f"clip must satisfy 0 < low <= high < 1, got {clip}")
    groups = [slice(None)] if not per_channel else [c for c in range(target.shape[0])]
    weights = np.zeros(target.shape, np.float32)
    for g in groups:
        t, m = target[g] != 0, mask[g]
        n = np.count_nonzero(m)
        if n == 0:
            continue
        frac = float(np.clip(np.count_nonzero(t & m) / n, lo, hi))
        weights[g] = np.where(t, 1 / (2 * frac), 1 / (2 * (1 - frac))) * m
    return weights


def oracle_seeds(labels: ArrayLike, radius: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """One seed blob per ground-truth object, as the Learned Random Walker trains with.

    The blob is the part of the object within ``radius`` voxels (Euclidean) of the object's
    innermost voxel (largest distance to its boundary, the first one in raster order on ties).

    Parameters
    ----------
    labels : (z, y, x) or (y, x) int
        Ground truth, 0 = unlabelled (gets no seed).
    radius : int
        Blob radius in voxels, >= 0 (0: the innermost voxel alone).

    Returns
    -------
    seeds : int64 array of the shape of ``labels``
        Object ``k`` (in increasing id order) seeded with ``k`` (1..K), 0 elsewhere.
    target : int64 array of the shape of ``labels``
        Every voxel of object ``k`` set to ``k``, 0 where unlabelled.

    Raises
    ------
    InputError
        If ``labels`` is not a 2D or 3D volume of non-negative integers, or ``radius`` < 0.
    """
    labels = as_labels(labels)
    if radius < 0:
        raise InputError(f"radius must be >= 0, got {radius}")
    ids, target = np.unique(labels, return_inverse=True)
    target = target.reshape(labels.shape).astype(np.int64)
    if ids[0] == 0:
        ids = ids[1:]
    else:
        target += 1
    seeds = np.zeros(labels.shape, np.int64)
    for k, box in enumerate(ndimage.find_objects(target), start=1):
        if box is None:
            continue
        inside = target[box] == k
        # pad so that the crop border counts as the object's boundary too
        depth = ndimage.distance_transform_edt(np.pad(inside, 1))[(slice(1, -1),) * labels.ndim]
        centre = np.unravel_index(int(np.argmax(depth)), inside.shape)
        grid = np.indices(inside.shape)
        near = sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2
        seeds[box][inside & near] = k
    return seeds, target
