"""Synthetic EM-like volumes, deterministic from a seed: neurites, raw, noisy affinities.

Labels are the Voronoi cells of smooth random curves (neurites running mostly along z, with a
few branches sideways), measured in world units so that anisotropic voxels give flat cells.
Raw has textured cytoplasm, dark membranes, blur, noise and optional defects; predicted
affinities are ground-truth affinities made hard: blurred, correlated and white noise, gaps in
membranes (false merges) and spurious membranes inside cells (false splits).

:func:`worley_region` makes another kind of volume, for volumes larger than memory: every voxel
is a function of the seed and its global position only, so any region of it (a block) can be
computed on its own, and the blocks of a volume fit together bit for bit
(:func:`affseg.blockwise.synth.synthetic_to_zarr` writes one block by block).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage as ndi

from ._checks import as_labels, as_offsets
from .conventions import affinities_from_labels
from .errors import InputError

__all__ = ["WORLEY_CELL", "SyntheticVolume", "make_volume", "neurite_labels", "noisy_affinities", "raw_from_labels",
           "worley_region"]

WORLEY_CELL = (48, 20, 20)  # the unit cell of worley_region, voxels (z, y, x): one object per cell


def _check_shape(shape) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise InputError(f"shape must be 2 or 3 positive sizes, got {shape}")
    return shape


def neurite_labels(shape: Sequence[int], *, seed: int = 0, voxel_size: Sequence[float] | None = None,
                   n_neurites: int | None = None, mean_radius: float = 8.0) -> np.ndarray:
    """Space-filling neurite-like labels 1..n (uint64), the Voronoi cells of random curves.

    Parameters
    ----------
    shape : (z, y, x) or (y, x) sequence of int
        Volume shape, positive sizes.
    seed : int
        Seed of the random generator: the same seed gives the same labels.
    voxel_size : sequence of float, optional
        World size of a voxel (e.g. (4, 1, 1) for anisotropic ssTEM-like data); default 1.
    n_neurites : int, optional
        Number of curves; default from the volume size and ``mean_radius``.
    mean_radius : float
        Typical neurite radius in voxels of the finest axis, for the default ``n_neurites``
        (at least 2 curves).

    Returns
    -------
    labels : (z, y, x) or (y, x) uint64
        Consecutive ids from 1, every voxel labelled (fewer than ``n_neurites`` ids where
        curves were overwritten or left the volume at once).

    Raises
    ------
    InputError
        If ``shape`` is not 2 or 3 positive sizes.
    """
    shape = _check_shape(shape)
    rng = np.random.default_rng(seed)
    ndim = len(shape)
    vs = np.ones(ndim) if voxel_size is None else np.asarray(voxel_size, dtype=float)
    extent = np.array(shape) * vs
    if n_neurites is None:
        cross = float(np.prod(extent[-2:]))
        n_neurites = max(2, int(cross / (np.pi * (mean_radius * vs.min()) ** 2)))
    seeds = np.zeros(shape, dtype=np.uint64)
    step = 0.5 * vs.min()
    for label in range(1, n_neurites + 1):
        position = rng.random(ndim) * extent
        # most neurites run along z (or y in 2D), some branch sideways
        direction = rng.normal(size=ndim)
        if rng.random() < 0.75:
            direction[0] = abs(direction[0]) + 2.0
        direction /= np.linalg.norm(direction)
        n_steps = int(2 * extent.max() / step)
        for sign in (1.0, -1.0):
            p, d = position.copy(), direction * sign
            for _ in range(n_steps):
                index = np.floor(p / vs).astype(int)
                if np.any(index < 0) or np.any(index >= shape):
                    break
                seeds[tuple(index)] = label
                d = d + rng.normal(scale=0.08, size=ndim)
                d /= np.linalg.norm(d)
                p = p + d * step
    if not seeds.any():
        seeds[tuple(np.array(shape) // 2)] = 1
    _, nearest = ndi.distance_transform_edt(seeds == 0, sampling=vs, return_indices=True)
    labels = seeds[tuple(nearest)]
    from .graph.core.relabel import relabel_consecutive

    return relabel_consecutive(labels)[0]


def _membranes(labels: np.ndarray) -> np.ndarray:
    """Voxels that touch another label along any axis."""
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in range(labels.ndim):
        diff = np.diff(labels, axis=axis) != 0
        lo = [slice(None)] * labels.ndim
        hi = [slice(None)] * labels.ndim
        lo[axis] = slice(None, -1)
        hi[axis] = slice(1, None)
        edge[tuple(lo)] |= diff
        edge[tuple(hi)] |= diff
    return edge


def raw_from_labels(labels: ArrayLike, *, seed: int = 0, voxel_size: Sequence[float] | None = None,
                    noise: float = 0.08, blur: float = 1.0, missing_sections: Sequence[int] = (),
                    low_contrast_sections: Sequence[int] = ()) -> np.ndarray:
    """EM-like raw (uint8): textured cells, dark membranes, blur, noise and section defects.

    ``missing_sections`` become black (0), ``low_contrast_sections`` keep 20 % of their contrast.

    Parameters
    ----------
    labels : (z, y, x) or (y, x) int array
        Cell ids (non-negative); each id gets its own grey tone.
    seed : int
        Seed of the random generator.
    voxel_size : sequence of float, optional
        World size of a voxel; blur and texture are isotropic in world units. Default 1.
    noise : float
        Standard deviation of the white noise (grey values in [0, 1]).
    blur : float
        Gaussian sigma in voxels of the finest axis.
    missing_sections : sequence of int
        Indices along the first axis set to 0 (applied last).
    low_contrast_sections : sequence of int
        Indices along the first axis whose contrast drops to 20 %.

    Returns
    -------
    raw : uint8, shape of ``labels``
        Grey values, membranes dark.

    Raises
    ------
    InputError
        If ``labels`` is not a 2D or 3D volume of non-negative integers.
    """
    labels = as_labels(labels)
    rng = np.random.default_rng(seed)
    vs = np.ones(labels.ndim) if voxel_size is None else np.asarray(voxel_size, dtype=float)
    sigma = blur / vs * vs.min()
    tone = rng.uniform(0.55, 0.8, size=int(labels.max()) + 1)
    raw = tone[labels].astype(np.float32)
    texture = ndi.gaussian_filter(rng.normal(size=labels.shape).astype(np.float32), 1.5 * sigma)
    raw += 0.03 * texture / (texture.std() + 1e-6)
    membrane = ndi.gaussian_filter(_membranes(labels).astype(np.float32), 0.5 * sigma)
    raw *= 1.0 - 0.8 * np.clip(membrane * 2.0, 0.0, 1.0)
    raw = ndi.gaussian_filter(raw, sigma)
    raw += rng.normal(scale=noise, size=labels.shape).astype(np.float32)
    mean = float(raw.mean())
    for z in low_contrast_sections:
        raw[z] = mean + 0.2 * (raw[z] - mean)
    for z in missing_sections:
        raw[z] = 0.0
    return (np.clip(raw, 0.0, 1.0) * 255).astype(np.uint8)


def noisy_affinities(labels: ArrayLike, offsets: ArrayLike | None = None, *, seed: int = 0,
                     voxel_size: Sequence[float] | None = None, blur: float = 0.7,
                     correlated_noise: float = 0.2, white_noise: float = 0.1, gaps: float = 0.3,
                     spurious: float = 0.15) -> np.ndarray:
    """Predicted-looking affinities (float32 in [0, 1]) for any offsets.

    Parameters
    ----------
    labels : (z, y, x) or (y, x) int
        Ground-truth ids (non-negative); 0 is background (affinity 0).
    offsets : (C, ndim) array_like of int, optional
        Default the nearest neighbours ``-e_d``.
    seed : int
        Seed of the random generator.
    voxel_size : sequence of float, optional
        World size of a voxel; blur and noise are isotropic in world units. Default 1.
    blur : float
        Gaussian sigma (voxels of the finest axis) softening the boundaries.
    correlated_noise, white_noise : float
        Amplitudes of smooth (sigma 3) and voxel-wise Gaussian noise.
    gaps : float
        Strength of blobs that raise boundary affinities (gaps in membranes, false merges).
    spurious : float
        Strength of blobs that lower affinities inside cells (false splits).

    Returns
    -------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities in [0, 1], channel ``c`` for ``offsets[c]``.

    Raises
    ------
    InputError
        If ``labels`` is not a 2D or 3D volume of non-negative integers, or the offsets do not
        fit it.
    """
    labels = as_labels(labels)
    offsets = as_offsets(offsets, labels.ndim)
    rng = np.random.default_rng(seed)
    vs = np.ones(labels.ndim) if voxel_size is None else np.asarray(voxel_size, dtype=float)
    sigma = blur / vs * vs.min()
    gt, _ = affinities_from_labels(labels, offsets)
    # predictions fall off over a couple of voxels next to membranes, not in one voxel
    depth = ndi.distance_transform_edt(~_membranes(labels), sampling=vs / vs.min())
    ramp = np.clip((depth + 1.0) / 3.0, 0.0, 1.0).astype(np.float32)
    blob_sigma = 4.0 / vs * vs.min()

    def smooth_noise(scale):
        field = ndi.gaussian_filter(rng.normal(size=labels.shape).astype(np.float32), scale)
        return field / (field.std() + 1e-6)

    gap_field = np.clip(smooth_noise(blob_sigma) - 1.0, 0.0, None)  # sparse positive blobs
    split_field = np.clip(smooth_noise(blob_sigma) - 1.5, 0.0, None)
    affs = np.empty_like(gt)
    for c in range(len(offsets)):
        a = gt[c] * ramp
        a = ndi.gaussian_filter(a, sigma) if blur > 0 else a
        a = a + gaps * gap_field * (1.0 - a) - spurious * split_field * a
        a = a + correlated_noise * smooth_noise(3.0 / vs * vs.min()) * 0.5
        a = a + white_noise * rng.normal(size=labels.shape).astype(np.float32)
        affs[c] = np.clip(a, 0.0, 1.0)
    return affs


@dataclass
class SyntheticVolume:
    """A synthetic dataset: raw (uint8), labels (uint64), affinities (float32) and metadata."""

    raw: np.ndarray
    labels: np.ndarray
    affs: np.ndarray
    offsets: np.ndarray
    voxel_size: tuple[float, ...]


def make_volume(shape: Sequence[int] = (32, 128, 128), *, seed: int = 0, anisotropic: bool = False,
                offsets: ArrayLike | None = None, defects: bool = False,
                **affinity_options: float) -> SyntheticVolume:
    """Labels, raw and noisy affinities of one synthetic volume.

    ``anisotropic`` uses voxels of (4, 1, 1) (ssTEM-like sections); ``defects`` adds one missing
    and one low-contrast section to raw.

    Parameters
    ----------
    shape : (z, y, x) or (y, x) sequence of int
        Volume shape, positive sizes.
    seed : int
        Seed of every random step: the same seed gives the same volume.
    anisotropic : bool
        Voxels of (4, 1, 1) world units (3D only).
    offsets : (C, ndim) array_like of int, optional
        Offsets of the affinities; default the nearest neighbours ``-e_d``.
    defects : bool
        Add a missing and a low-contrast section to raw (3D volumes of more than 2 sections
        only; otherwise ignored).
    **affinity_options
        ``blur``, ``correlated_noise``, ``white_noise``, ``gaps``, ``spurious`` of
        :func:`noisy_affinities`.

    Returns
    -------
    volume : SyntheticVolume
        ``raw`` (uint8), ``labels`` (uint64), ``affs`` ((C, *shape) float32), ``offsets``
        ((C, ndim) int64) and ``voxel_size`` (tuple of float).

    Raises
    ------
    InputError
        If ``shape`` is not 2 or 3 positive sizes, ``anisotropic`` is asked for a 2D shape, or
        the offsets do not fit.
    TypeError
        If ``affinity_options`` holds a name :func:`noisy_affinities` does not take.
    """
    shape = _check_shape(shape)
    if anisotropic and len(shape) != 3:
        raise InputError(f"anisotropic volumes are 3D, got shape {shape}")
    voxel_size = (4.0, 1.0, 1.0) if anisotropic else (1.0,) * len(shape)
    labels = neurite_labels(shape, seed=seed, voxel_size=voxel_size)
    missing, low = ((), ())
    if defects and len(shape) == 3 and shape[0] > 2:
        rng = np.random.default_rng(seed + 1)
        low = (shape[0] // 2,)
        missing = (int(rng.choice([z for z in range(shape[0]) if z != low[0]])),)  # two different sections
    raw = raw_from_labels(labels, seed=seed, voxel_size=voxel_size, missing_sections=missing,
                          low_contrast_sections=low)
    offsets = as_offsets(offsets, len(shape))
    affs = noisy_affinities(labels, offsets, seed=seed, voxel_size=voxel_size, **affinity_options)
    return SyntheticVolume(raw=raw, labels=labels, affs=affs, offsets=offsets, voxel_size=voxel_size)


def worley_options(shape, *, seed, offsets, noise, affs_dtype) -> tuple:
    """The options of :func:`worley_region`, checked (InputError naming the value): ``(shape, seed,
    offsets, noise, affs_dtype)`` as tuple of int, int, (C, 3) int64 array, bool, str."""
    from ._checks import as_flag, as_int, describe

    try:
        shape = _check_shape(shape)
    except (TypeError, ValueError):
        raise InputError(f"shape must be 3 positive sizes, got {describe(shape)}") from None
    if len(shape) != 3:
        raise InputError(f"worley volumes are 3D, got shape {shape}")
    seed = as_int(seed, name="seed", minimum=0, maximum=2**63 - 1)
    offsets = as_offsets(offsets, 3)
    noise = as_flag(noise, name="noise")
    if affs_dtype not in ("float32", "uint8"):
        raise InputError(f"affs_dtype must be 'float32' or 'uint8', got {affs_dtype!r}")
    return shape, seed, offsets, noise, affs_dtype


def _as_region(region, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if region is None:
        return (0,) * len(shape), shape
    try:
        bounds = [(int(r.start or 0), int(shape[i] if r.stop is None else r.stop), r.step)
                  for i, r in enumerate(region)]
    except (AttributeError, TypeError):
        bounds = None
    if (bounds is None or len(bounds) != len(shape) or any(step not in (None, 1) for *_, step in bounds)
            or any(not 0 <= a < b <= n for (a, b, _), n in zip(bounds, shape))):
        raise InputError(f"region must be {len(shape)} slices with steps of 1 inside the volume {shape}, got {region!r}")
    return tuple(a for a, _, _ in bounds), tuple(b - a for a, b, _ in bounds)


def worley_region(shape: Sequence[int], region: Sequence[slice] | None = None, *, seed: int = 0,
                  offsets: ArrayLike | None = None, noise: bool = True,
                  affs_dtype: str = "float32") -> SyntheticVolume:
    """Labels, raw and affinities of a region of a large synthetic volume, computed on their own.

    The volume: objects are the cells of a warped power diagram of random points, one point per
    unit cell of :data:`WORLEY_CELL` voxels (48 x 20 x 20: objects about 20 voxels across in y and
    x, elongated along z like neurites), the coordinates warped by smooth noise (wiggly
    boundaries) and the points weighted (cells of different sizes). Raw has a grey tone per
    object, texture, dark membranes about two voxels thick and white noise. Affinities are 1 where
    a voxel and its partner (inside the volume) carry the same label, else 0 (as
    :func:`affseg.affinities_from_labels`); with ``noise`` they are made hard: soft over a voxel or
    two next to boundaries, smooth blobs that open gaps in boundaries (false merges) and
    spurious boundaries inside objects (false splits), smooth and white noise.

    Every value is a function of ``seed`` and the voxel's global position only (random numbers
    come from a hash of the seed and integer coordinates), so a region equals the same part of
    the whole volume bit for bit, whatever the region.

    Parameters
    ----------
    shape : (z, y, x) sequence of int
        Shape of the whole volume (affinities whose partner lies outside it are 0; ids depend
        on it).
    region : sequence of 3 slices, optional
        The part of the volume to compute (steps of 1, inside the volume); default all of it.
    seed : int
        Seed of every random field, >= 0.
    offsets : (C, 3) array_like of int, optional
        Offsets of the affinities; default the nearest neighbours ``-e_d``.
    noise : bool
        Make the affinities hard (else they are exactly the labels' affinities).
    affs_dtype : {"float32", "uint8"}
        Affinities in [0, 1], or scaled to 0..255 (rounded).

    Returns
    -------
    volume : SyntheticVolume
        ``labels`` (uint64, ids > 0, not consecutive), ``raw`` (uint8), ``affs`` ((C, *region
        shape)), ``offsets`` ((C, 3) int64), ``voxel_size`` (1, 1, 1).

    Raises
    ------
    InputError
        If ``shape`` is not 3 positive sizes, ``region`` does not lie in it, ``seed`` is not an
        integer >= 0, the offsets are not 3D, or ``affs_dtype`` is neither.
    """
    from ._worley import affinity_region, raw_region, worley_labels

    shape, seed, offsets, noise, affs_dtype = worley_options(shape, seed=seed, offsets=offsets, noise=noise,
                                                             affs_dtype=affs_dtype)
    start, size = _as_region(region, shape)
    # labels and boundary distances around the region: every partner of its voxels inside the volume
    halo = np.abs(offsets).max(axis=0)
    lo = np.maximum(0, np.array(start) - halo)
    hi = np.minimum(shape, np.array(start) + size + halo)
    cell = np.array(WORLEY_CELL, dtype=np.float64)
    grid = np.ceil(np.array(shape) / cell).astype(np.int64) + 4
    labels, dist = worley_labels(lo.astype(np.int64), tuple(int(n) for n in hi - lo), seed, cell, 0.3, 0.3, grid)
    inner = tuple(slice(int(s - a), int(s - a + n)) for s, a, n in zip(start, lo, size))
    affs = np.empty((len(offsets), *size), dtype=affs_dtype)
    affinity_region(labels, dist, np.array([s.start for s in inner], np.int64), lo.astype(np.int64),
                    np.array(shape, np.int64), offsets, seed, noise, 255.0 if affs_dtype == "uint8" else 1.0, affs)
    labels, dist = np.ascontiguousarray(labels[inner]), np.ascontiguousarray(dist[inner])
    raw = raw_region(labels, dist, np.array(start, np.int64), seed)
    return SyntheticVolume(raw=raw, labels=labels, affs=affs, offsets=offsets, voxel_size=(1.0, 1.0, 1.0))
