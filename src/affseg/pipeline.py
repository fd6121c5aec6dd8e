"""Affinities -> segmentations with any registered method (:mod:`affseg.methods`)."""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._checks import as_affinities, as_int, as_labels, as_spacing, as_thresholds
from .errors import InputError
from .methods import Segmentation, get_method, method_names

__all__ = ["AFFINITY_THRESHOLDS", "Segmentation", "check_options", "default_thresholds", "segment"]

AFFINITY_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""The default thresholds of ``method="cc"`` (on the affinity itself), and of agglomerations
whose data are not at hand (``affseg segment --blockwise``)."""

# spellings of earlier versions, accepted with a DeprecationWarning for one release
_RENAMED = {"fragments_in_xy": "in_plane", "sampling": "voxel_size"}


def segment(
    affs: ArrayLike,
    offsets: ArrayLike | None = None,
    *,
    method: str = "mala",
    thresholds: Sequence[float] | None = None,
    mask: ArrayLike | None = None,
    voxel_size: Sequence[float] | None = None,
    fragments: ArrayLike | None = None,
    **options: Any,
) -> Segmentation:
    """Segment affinities with a registered method, at each threshold where it has them.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32, float64, float16 or uint8
        Affinities in affseg's convention (``docs/conventions.md``).
    offsets : (C, ndim) array_like of int, optional
        Default: nearest neighbours.
    method : str
        One of :func:`affseg.methods.method_names` (``docs/methods.md`` lists them and their
        options): ``mala``, ``cc``, ``mws``, ``gasp``, ``rw``.
    thresholds : sequence of float, optional
        For the methods that give one segmentation per threshold (``mala``: on the merge score;
        ``cc``: on the affinity; ``rw`` with fragment seeds), which need at least one; ignored
        by the others. A sequence of numbers passed as the second positional argument is taken
        as thresholds, with a DeprecationWarning.
    mask : bool array, spatial shape, optional
        Voxels outside get label 0.
    voxel_size : sequence of float, optional
        World units per voxel (zyx or yx), for the distance transform of the fragments.
    fragments : uint64 array, spatial shape, optional
        Fragments to use instead of extracting them, for the methods that use fragments (a
        resumed run passes the fragments it wrote before).
    **options
        The method's options (see ``docs/methods.md``); an option the method does not have is
        an error.

    Returns
    -------
    result : Segmentation
        ``len(result)`` segmentations, ``result.segmentation(i)`` for ``result.thresholds[i]``
        (NaN for methods without thresholds), and the fragments where the method made them.

    Raises
    ------
    InputError
        If the method is unknown, an option is unknown or invalid, a thresholded method gets no
        thresholds, or the affinities, offsets, mask, voxel size or fragments are invalid.

    Warns
    -----
    UserWarning
        If a method made for long-range affinities gets nearest-neighbour offsets only.
    DeprecationWarning
        For thresholds as the second positional argument, and the old option names
        ``fragments_in_xy`` (now ``in_plane``) and ``sampling`` (now ``voxel_size``).
    """
    if offsets is not None and _looks_like_thresholds(offsets):
        warnings.warn("segment(affs, thresholds) is deprecated: pass thresholds=... (the second argument is "
                      "now offsets)", DeprecationWarning, stacklevel=2)
        offsets, thresholds = options.pop("offsets", None), offsets
    for old, new in _RENAMED.items():
        if old in options:
            warnings.warn(f"segment({old}=...) is deprecated: use {new}=...", DeprecationWarning, stacklevel=2)
            value = options.pop(old)
            if new == "voxel_size":
                voxel_size = value
            else:
                options[new] = value
    chosen = get_method(method)
    resolved = chosen.resolve(options)
    affs, offsets = as_affinities(affs, offsets)
    spatial = affs.shape[1:]
    voxel_size = as_spacing(voxel_size, len(spatial), name="voxel_size")
    if fragments is not None:
        fragments = as_labels(fragments, name="fragments", shape=spatial)
    if chosen.thresholded(resolved):
        if thresholds is None or (isinstance(thresholds, (list, tuple, np.ndarray)) and len(thresholds) == 0):
            raise InputError(f"method {method!r} needs at least one threshold")
        thresholds = as_thresholds(thresholds).astype(np.float32)
    else:
        thresholds = np.zeros(0, np.float32)
    if chosen.needs_long_range and not (np.abs(offsets).sum(axis=1) > 1).any():
        warnings.warn(f"method {method!r} needs long-range offsets for good results, but the offsets "
                      f"{offsets.tolist()} are nearest neighbours only: expect a much worse segmentation "
                      "(predict affinities with long-range offsets too, or use method 'mala')",
                      UserWarning, stacklevel=2)
    return chosen.run(affs, offsets, thresholds=thresholds, mask=mask, voxel_size=voxel_size,
                      fragments=fragments, **resolved)


def default_thresholds(
    affs: ArrayLike,
    fragments: ArrayLike,
    offsets: ArrayLike | None = None,
    *,
    merge_function: str = "hist_quant_75",
    count: int = 9,
) -> list[float]:
    """Agglomeration thresholds that cover the range where the segmentation changes.

    The fragments are agglomerated once to the end (a threshold above every score), which gives
    the score of the last merge: above it every fragment has merged with all it touches, and no
    larger threshold changes anything. The thresholds are ``count`` values evenly spaced below
    that score, ``k * last / (count + 1)`` for ``k = 1 .. count``, rounded to short decimals
    (two significant digits of the spacing), so that none is spent on the fully merged result.
    The sweep of ``affseg segment`` for ``--method mala`` and ``rw`` without ``--thresholds``.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) float32, float64, float16 or uint8
        Affinities in affseg's convention; the nearest-neighbour channels are used, as by
        :func:`~affseg.agglomerate`.
    fragments : (z, y, x) or (y, x) int
        The fragments to agglomerate (0 = background), e.g. from :func:`~affseg.extract_fragments`.
    offsets : (C, ndim) array_like of int, optional
        The offsets of ``affs``; default nearest neighbours.
    merge_function : str
        The merge function of the agglomeration the thresholds are for (see
        :func:`~affseg.agglomerate`).
    count : int
        How many thresholds (at least 1).

    Returns
    -------
    thresholds : list of float
        Increasing thresholds on the merge score, at most ``count`` (equal ones after rounding
        are given once). ``[0.5]`` if nothing merges at a positive score (one fragment, no
        contacts, or every merge at score 0): then every positive threshold gives the same result.

    Raises
    ------
    InputError
        If ``count`` is not a positive integer, or the affinities, fragments, offsets or merge
        function are invalid.
    """
    from .graph.mala.agglomeration import agglomerate

    count = as_int(count, name="count", minimum=1)
    result = agglomerate(affs, fragments, offsets, thresholds=[1.001], merge_function=merge_function)
    scores = result.merge_history["score"]
    last = float(scores.max()) if scores.size else 0.0
    if not last > 0:
        return [0.5]
    step = last / (count + 1)
    decimals = max(2, 1 - math.floor(math.log10(step)))
    values = sorted({round(k * step, decimals) for k in range(1, count + 1)} - {0.0})
    return values or [0.5]


def check_options(method: str, **options: Any) -> dict:
    """The options of ``method`` with defaults filled in, checked before any work.

    Parameters
    ----------
    method : str
        A registered method name (see :func:`affseg.methods.method_names`).
    **options
        Option values given; the others take their defaults.

    Returns
    -------
    options : dict
        Every option of the method by name, checked.

    Raises
    ------
    InputError
        If the method or an option is unknown, or a value is invalid.
    """
    return get_method(method).resolve(options)


def _looks_like_thresholds(value) -> bool:
    """A 1-D list of numbers (the thresholds of the old signature), not ``(C, ndim)`` offsets."""
    try:
        return np.ndim(value) == 1 and all(isinstance(v, (int, float, np.number)) for v in value)
    except (TypeError, ValueError):  # ragged nesting: not thresholds either
        return False


METHODS = method_names()
