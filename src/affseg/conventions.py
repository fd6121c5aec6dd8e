"""affseg's affinity convention and converters to the other conventions in use.

affseg: ``affs[c][u]`` is the affinity between voxel ``u`` and ``u + offsets[c]``, 1 = same
object, float32 in [0, 1], channel-first, spatial axes ``zyx`` (or ``yx``). The default
neighbourhood is ``[[-1, 0, 0], [0, -1, 0], [0, 0, -1]]``. See ``docs/conventions.md``.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._checks import as_affinities, as_labels, as_mask, as_offsets, as_unit_float32, default_offsets
from ._deprecation import keyword_only
from .errors import InputError
from .graph.core.edges import edge_slices, nearest_neighbour_channels, shift_channel

__all__ = [
    "DEFAULT_OFFSETS",
    "affinities_from_labels",
    "default_offsets",
    "from_boundaries",
    "from_mwatershed",
    "from_waterz",
    "invert_offsets",
    "nearest_neighbour_affinities",
    "reorder_channels",
    "to_boundaries",
    "to_mwatershed",
    "to_waterz",
]

DEFAULT_OFFSETS = ((-1, 0, 0), (0, -1, 0), (0, 0, -1))


@keyword_only(2, "mask")
def affinities_from_labels(labels: ArrayLike, offsets: ArrayLike | None = None, *,
                           mask: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth affinities of a label volume, and where they are defined.

    Parameters
    ----------
    labels : (z, y, x) or (y, x) array_like of int
        Object ids (non-negative, any integer or bool dtype); 0 is background (or unlabelled)
        and has affinity 0 to every voxel.
    offsets : (C, ndim) array_like of int, optional
        Neighbourhood; defaults to the nearest neighbours ``-e_d``.
    mask : array_like of bool, shape of ``labels``, optional, keyword-only
        Voxels whose labels are known (non-zero = known); an affinity touching a voxel outside
        it is masked. Passing it positionally (third) is deprecated.

    Returns
    -------
    affs : (C, *labels.shape) float32
        1 where ``u`` and ``u + offsets[c]`` carry the same non-zero label, else 0.
    affs_mask : (C, *labels.shape) float32
        1 where ``u + offsets[c]`` lies in the volume and both voxels lie in ``mask``.

    Raises
    ------
    InputError
        If ``labels`` is not a 2D or 3D volume of non-negative integers, or the offsets or the
        mask do not fit it.
    """
    labels = as_labels(labels)
    offsets = as_offsets(offsets, labels.ndim)
    mask = as_mask(mask, labels.shape)
    affs = np.zeros((len(offsets),) + labels.shape, dtype=np.float32)
    affs_mask = np.zeros_like(affs)
    for c, offset in enumerate(offsets):
        src, dst = edge_slices(offset, labels.shape)
        a, b = labels[src], labels[dst]
        affs[c][src] = (a == b) & (a != 0)
        affs_mask[c][src] = 1 if mask is None else mask[src] & mask[dst]
    return affs, affs_mask


def nearest_neighbour_affinities(affs: ArrayLike, offsets: ArrayLike | None = None) -> np.ndarray:
    """The ``ndim`` nearest-neighbour channels in the ``-e_d`` convention, in axis order.

    A ``-e_d`` channel is taken as it is; a ``+e_d`` channel is shifted onto its partner voxel
    (the edge ``(u, u + e_d)`` is stored at ``u + e_d``), with 0 where the partner is outside.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities in [0, 1]; float64 and float16 are cast to float32, uint8 is divided by 255.
    offsets : (C, ndim) array_like of int, optional
        The offsets of ``affs``, with ``-e_d`` or ``+e_d`` among them for every axis; default
        the nearest neighbours ``-e_d``.

    Returns
    -------
    nn_affs : (ndim, z, y, x) or (ndim, y, x) float32
        Channel ``d`` links ``u`` and ``u - e_d``. When the first ``ndim`` channels already are
        ``-e_d`` in axis order this is a view of (the float32 conversion of) ``affs``.

    Raises
    ------
    InputError
        If ``affs`` or ``offsets`` are invalid, or an axis has neither a ``-e_d`` nor a ``+e_d``
        channel.
    """
    return nearest_neighbour_channels(*as_affinities(affs, offsets))


def invert_offsets(affs: ArrayLike, offsets: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    """Express the same edges with negated offsets (the ``+1`` vs ``-1`` conventions).

    The edge ``(u, u + o)`` stored at ``u`` moves to ``w = u + o`` as the edge ``(w, w - o)``.
    Edges whose partner falls outside the volume get affinity 0.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities in [0, 1]; float64 and float16 are cast to float32, uint8 is divided by 255.
    offsets : (C, ndim) array_like of int or None
        The offsets of ``affs`` (to be negated); None means the nearest neighbours ``-e_d``.

    Returns
    -------
    affs : (C, z, y, x) or (C, y, x) float32
        The same edges, each stored at its partner voxel.
    offsets : (C, ndim) int64
        The negated offsets.

    Raises
    ------
    InputError
        If ``affs`` or ``offsets`` are invalid.
    """
    affs, offsets = as_affinities(affs, offsets)
    out = np.stack([shift_channel(affs[c], offsets[c]) for c in range(len(offsets))])
    return out, -offsets


def reorder_channels(affs: ArrayLike, offsets: ArrayLike | None, new_offsets: ArrayLike) -> np.ndarray:
    """Pick the channels of ``affs`` in the order of ``new_offsets`` (e.g. ``xyz`` channel order).

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities in [0, 1]; float64 and float16 are cast to float32, uint8 is divided by 255.
    offsets : (C, ndim) array_like of int or None
        The offsets of ``affs``; None means the nearest neighbours ``-e_d``.
    new_offsets : (K, ndim) array_like of int
        The offsets wanted, in the order wanted; each must be one of ``offsets``.

    Returns
    -------
    affs : (K, z, y, x) or (K, y, x) float32
        A C-contiguous copy of the channels of ``new_offsets``.

    Raises
    ------
    InputError
        If the inputs are invalid, or an offset of ``new_offsets`` is not among ``offsets``.
    """
    affs, offsets = as_affinities(affs, offsets)
    new = as_offsets(new_offsets, affs.ndim - 1)
    index = []
    for o in new:
        match = np.flatnonzero((offsets == o).all(axis=1))
        if not match.size:
            raise InputError(f"offset {o.tolist()} is not among the offsets {offsets.tolist()}")
        index.append(int(match[0]))
    return np.ascontiguousarray(affs[index])


def to_waterz(affs: ArrayLike, offsets: ArrayLike | None = None) -> np.ndarray:
    """waterz's input: ``(3, z, y, x)`` float32, channel ``d`` linking ``u`` and ``u - e_d``.

    Parameters
    ----------
    affs : (C, z, y, x) float32
        3D affinities in [0, 1]; float64 and float16 are cast to float32, uint8 is divided by 255.
    offsets : (C, ndim) array_like of int, optional
        The offsets of ``affs``; default the nearest neighbours ``-e_d``.

    Returns
    -------
    affs : (3, z, y, x) float32
        The nearest-neighbour channels, as :func:`nearest_neighbour_affinities` gives them.

    Raises
    ------
    InputError
        If the inputs are invalid or 2D, or lack a nearest-neighbour channel along some axis.
    """
    out = nearest_neighbour_affinities(affs, offsets)
    if out.shape[0] != 3:
        raise InputError(f"waterz needs 3D affinities, got spatial shape {out.shape[1:]}")
    return out


def from_waterz(affs: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """waterz affinities in affseg's convention: the same array and the default offsets.

    Parameters
    ----------
    affs : (3, z, y, x) float32
        Affinities of waterz in [0, 1] (channel ``d`` links ``u`` and ``u - e_d``); float64 and
        float16 are cast to float32, uint8 is divided by 255.

    Returns
    -------
    affs : (3, z, y, x) float32
        The affinities, C-contiguous.
    offsets : (3, 3) int64
        The default offsets ``-e_d``.

    Raises
    ------
    InputError
        If ``affs`` is not a valid ``(3, z, y, x)`` affinity array.
    """
    affs, offsets = as_affinities(affs, default_offsets(3), name="waterz affs")
    return affs, offsets


@keyword_only(2, "bias")
def to_mwatershed(affs: ArrayLike, offsets: ArrayLike | None = None, *,
                  bias: ArrayLike = 0.5) -> tuple[np.ndarray, list[list[int]]]:
    """mwatershed's input: float64 signed weights ``affinity - bias`` and offsets as lists.

    ``bias`` is a scalar or one value per channel; positive weights attract, negative repel.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32
        Affinities in [0, 1]; float64 and float16 are cast to float32, uint8 is divided by 255.
    offsets : (C, ndim) array_like of int, optional
        The offsets of ``affs``; default the nearest neighbours ``-e_d``.
    bias : float or (C,) array_like of float, keyword-only
        Subtracted from the affinities (per channel if an array); passing it positionally (third)
        is deprecated.

    Returns
    -------
    weights : (C, z, y, x) or (C, y, x) float64
        ``affs - bias``, C-contiguous.
    offsets : list of list of int
        The offsets, ``C`` lists of ``ndim`` ints.

    Raises
    ------
    InputError
        If ``affs`` or ``offsets`` are invalid, or ``bias`` is neither a scalar nor one value per
        channel.
    """
    affs, offsets = as_affinities(affs, offsets)
    weights = affs.astype(np.float64) - _per_channel(bias, affs.shape)
    return np.ascontiguousarray(weights), offsets.tolist()


@keyword_only(2, "bias")
def from_mwatershed(weights: ArrayLike, offsets: ArrayLike | None, *,
                    bias: ArrayLike = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`to_mwatershed`: affinities ``weights + bias``, clipped to [0, 1].

    Parameters
    ----------
    weights : (C, z, y, x) or (C, y, x) array_like of float
        Signed weights (positive attract, negative repel), read as float64.
    offsets : (C, ndim) array_like of int or None
        The offsets of ``weights``; None means the nearest neighbours ``-e_d``.
    bias : float or (C,) array_like of float, keyword-only
        Added to the weights (per channel if an array); passing it positionally (third) is
        deprecated.

    Returns
    -------
    affs : (C, z, y, x) or (C, y, x) float32
        ``clip(weights + bias, 0, 1)``.
    offsets : (C, ndim) int64
        The offsets.

    Raises
    ------
    InputError
        If the weights are not finite or not 3D/4D, the offsets do not fit them, or ``bias`` is
        neither a scalar nor one value per channel.
    """
    weights = np.asarray(weights, dtype=np.float64)
    affs = np.clip(weights + _per_channel(bias, weights.shape), 0.0, 1.0).astype(np.float32)
    return as_affinities(affs, offsets)


def _per_channel(bias, shape: tuple[int, ...]) -> np.ndarray:
    """A scalar bias, or one per channel shaped to broadcast over ``(C, *spatial)``."""
    bias = np.asarray(bias, dtype=np.float64)
    if bias.ndim == 0:
        return bias
    if bias.ndim > 1 or bias.shape[0] != shape[0]:
        raise InputError(f"bias must be a scalar or {shape[0]} values (one per channel), got shape {bias.shape}")
    return bias.reshape((-1,) + (1,) * (len(shape) - 1))


def to_boundaries(affs: ArrayLike) -> np.ndarray:
    """Boundary maps (1 = boundary) from affinities, any layout: ``1 - affs`` as float32.

    Parameters
    ----------
    affs : array_like of float32, any shape
        Affinities in [0, 1]; float64 and float16 are cast to float32, uint8 is divided by 255.

    Returns
    -------
    boundaries : float32, shape of ``affs``
        ``1 - affs``.

    Raises
    ------
    InputError
        If ``affs`` is empty, not numeric as above, or has values outside [0, 1] (or NaN).
    """
    return np.float32(1) - as_unit_float32(affs, name="affs")


def from_boundaries(boundaries: ArrayLike) -> np.ndarray:
    """Affinities from boundary maps, any layout: ``1 - boundaries`` as float32, the inverse of
    :func:`to_boundaries` (and the same operation).

    Parameters
    ----------
    boundaries : array_like of float32, any shape
        Boundary maps in [0, 1] (1 = boundary), converted as :func:`to_boundaries` converts
        affinities.

    Returns
    -------
    affs : float32, shape of ``boundaries``
        The affinities.

    Raises
    ------
    InputError
        As :func:`to_boundaries` does, for ``boundaries``.
    """
    return np.float32(1) - as_unit_float32(boundaries, name="boundaries")
