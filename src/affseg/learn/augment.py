"""EM-aware augmentation of (raw, labels) crops; numpy and scipy only.

Geometric augmentations map the output crop's voxel grid to source coordinates, so raw (linear
interpolation) and labels (nearest) are sampled through the same transform and stay aligned.
Anisotropic data (a z voxel larger than the in-plane one) is only deformed, rotated and
transposed in-plane.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError

__all__ = ["Augment", "apply_intensity", "mirror_transpose", "sample_transform"]


@dataclass
class Augment:
    """Augmentation settings (all optional; the defaults are those of the MALA recipe).

    mirror, transpose : flip any axis / permute the in-plane axes (all axes if isotropic) that
        have the same extent in the crop.
    elastic_spacing, elastic_sigma : control-point spacing and displacement sigma (voxels) of
        the in-plane elastic deformation; sigma 0 turns it off.
    rotation : rotate in-plane by a uniform random angle.
    intensity_scale, intensity_shift : per-section ``raw * a + b`` with ``a`` in
        ``1 +- intensity_scale`` and ``b`` in ``+- intensity_shift``.
    missing_section, low_contrast : probability per section of being blanked (0) or having its
        contrast cut to ``contrast_factor``.
    """

    mirror: bool = True
    transpose: bool = True
    elastic_spacing: float = 10.0
    elastic_sigma: float = 1.0
    rotation: bool = True
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    missing_section: float = 0.0
    low_contrast: float = 0.0
    contrast_factor: float = 0.1

    def __post_init__(self):
        for name in ("elastic_spacing", "elastic_sigma", "intensity_scale", "intensity_shift",
                     "missing_section", "low_contrast", "contrast_factor"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise InputError(f"augment.{name} must be a non-negative number, got {value!r}")
        for name in ("missing_section", "low_contrast"):
            if getattr(self, name) > 1:
                raise InputError(f"augment.{name} is a probability, got {getattr(self, name)}")
        if self.elastic_spacing <= 0:
            raise InputError(f"augment.elastic_spacing must be positive, got {self.elastic_spacing}")

    @classmethod
    def off(cls) -> Augment:
        return cls(mirror=False, transpose=False, elastic_sigma=0.0, rotation=False, intensity_scale=0.0,
                   intensity_shift=0.0)


def _in_plane_axes(ndim: int, anisotropic: bool) -> tuple[int, ...]:
    return (ndim - 2, ndim - 1) if anisotropic or ndim == 2 else tuple(range(ndim))


def sample_transform(shape: Sequence[int], rng: np.random.Generator, augment: Augment) -> np.ndarray | None:
    """Source coordinates ``(ndim, *shape)`` of each voxel of a crop, relative to the crop's
    corner, for elastic deformation and in-plane rotation; None if neither applies.

    Parameters
    ----------
    shape : (z, y, x) or (y, x) sequence of int
        The crop's spatial shape.
    rng : numpy.random.Generator
        Source of the random angle and displacements.
    augment : Augment
        ``rotation``, ``elastic_sigma`` and ``elastic_spacing`` are used.

    Returns
    -------
    coords : (ndim, *shape) float32 or None
        Source coordinate of each voxel along each axis (only the last two axes are moved),
        for :func:`scipy.ndimage.map_coordinates`; None if ``elastic_sigma`` is 0 and
        ``rotation`` is off.
    """
    ndim = len(shape)
    if augment.elastic_sigma == 0 and not augment.rotation:
        return None
    coords = np.indices(shape, dtype=np.float32)
    y, x = ndim - 2, ndim - 1
    centre = [(s - 1) / 2 for s in shape]
    if augment.rotation:
        angle = rng.uniform(0, 2 * np.pi)
        cy, cx = coords[y] - centre[y], coords[x] - centre[x]
        c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        coords[y], coords[x] = centre[y] + c * cy - s * cx, centre[x] + s * cy + c * cx
    if augment.elastic_sigma > 0:
        plane = (shape[y], shape[x])
        control = tuple(max(2, int(np.ceil(s / augment.elastic_spacing)) + 1) for s in plane)
        # the control grid spans the plane whatever the spacing (also finer than a voxel, or a plane of 1)
        fine = np.meshgrid(*[np.linspace(0, c - 1, p, dtype=np.float32) for p, c in zip(plane, control)],
                           indexing="ij")
        for axis in (y, x):
            coarse = rng.normal(0, augment.elastic_sigma, size=control).astype(np.float32)
            coords[axis] += ndimage.map_coordinates(coarse, fine, order=3, mode="nearest")
    return coords


def warp(array: np.ndarray, coords: np.ndarray, *, order: int) -> np.ndarray:
    """Sample ``array`` at ``coords`` (outside: 0); ``order`` 0 for labels, 1 for raw."""
    return ndimage.map_coordinates(array, coords, order=order, mode="constant", cval=0, prefilter=False)


def mirror_transpose(arrays: list[np.ndarray], rng: np.random.Generator, augment: Augment, *,
                     anisotropic: bool) -> list[np.ndarray]:
    """The same random flips and in-plane transpose applied to each spatial array.

    Parameters
    ----------
    arrays : list of ndarray
        Spatial arrays of one shape (e.g. raw and labels of a crop).
    rng : numpy.random.Generator
        Source of the flips (each axis with probability 1/2) and permutations.
    augment : Augment
        ``mirror`` and ``transpose`` are used.
    anisotropic : bool
        Transpose the last two axes only (else any axes); only axes of equal extent swap.

    Returns
    -------
    arrays : list of ndarray
        The flipped and transposed arrays, C-contiguous (copies where flipped or transposed), in
        the given order.
    """
    ndim = arrays[0].ndim
    flips = [a for a in range(ndim) if augment.mirror and rng.random() < 0.5]
    axes = list(range(ndim))
    if augment.transpose:
        # only axes of equal extent can swap without changing the crop's shape
        eligible = _in_plane_axes(ndim, anisotropic)
        for size in sorted({arrays[0].shape[a] for a in eligible}):
            group = [a for a in eligible if arrays[0].shape[a] == size]
            for a, b in zip(group, rng.permutation(group)):
                axes[a] = int(b)
    out = []
    for arr in arrays:
        if flips:
            arr = np.flip(arr, axis=flips)
        out.append(np.ascontiguousarray(np.transpose(arr, axes)))
    return out


def apply_intensity(raw: np.ndarray, rng: np.random.Generator, augment: Augment) -> np.ndarray:
    """Per-section scale and shift, missing and low-contrast sections (3D), on float32 raw.

    Parameters
    ----------
    raw : (z, y, x) or (y, x) ndarray
        Grey values (float, in [0, 1] for the defaults to make sense).
    rng : numpy.random.Generator
        Source of the per-section draws.
    augment : Augment
        ``intensity_scale``, ``intensity_shift``, ``missing_section``, ``low_contrast`` and
        ``contrast_factor`` are used (the last three for 3D raw only).

    Returns
    -------
    raw : float32, shape of ``raw``
        A new array; not clipped.
    """
    raw = raw.astype(np.float32, copy=True)
    sections = raw if raw.ndim == 3 else raw[None]
    for z in range(sections.shape[0]):
        a = 1 + rng.uniform(-augment.intensity_scale, augment.intensity_scale)
        b = rng.uniform(-augment.intensity_shift, augment.intensity_shift)
        sections[z] = sections[z] * a + b
        if raw.ndim == 3 and rng.random() < augment.missing_section:
            sections[z] = 0
        elif raw.ndim == 3 and rng.random() < augment.low_contrast:
            mean = sections[z].mean()
            sections[z] = mean + (sections[z] - mean) * augment.contrast_factor
    return raw
