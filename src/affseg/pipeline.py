"""Affinities -> segmentations, the steps glued together (used by the command line and demo)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .graph.agglomeration import Agglomeration, agglomerate
from .graph.components import connected_components
from .graph.fragments import extract_fragments
from ._checks import as_int, as_labels, as_number, as_thresholds
from .errors import InputError

__all__ = ["Segmentation", "segment"]

METHODS = ("mala", "cc", "mws", "gasp", "rw")
RW_SEEDS = ("fragments", "maxima")


@dataclass
class Segmentation:
    """Segmentations of one volume, one per threshold, and how they were made."""

    method: str
    thresholds: np.ndarray
    fragments: np.ndarray | None
    agglomeration: Agglomeration | None
    _segs: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.thresholds)

    def segmentation(self, index: int) -> np.ndarray:
        if self._segs is not None:
            return self._segs[index]
        return self.agglomeration.segmentation(index)


def segment(
    affs,
    thresholds: Sequence[float] = (),
    *,
    offsets=None,
    method: str = "mala",
    merge_function: str = "hist_quant_75",
    fragments_in_xy: bool = False,
    min_seed_distance: int = 10,
    min_size: int = 0,
    mask=None,
    sampling=None,
    bias=0.5,
    long_range_bias=None,
    linkage: str = "mean",
    cannot_link: bool = False,
    superpixels: bool = False,
    strides=None,
    rw_seeds: str = "fragments",
    fragments=None,
) -> Segmentation:
    """Segment affinities, at each threshold where the method has one.

    ``method="mala"``: :func:`~affseg.extract_fragments` then :func:`~affseg.agglomerate` with
    ``merge_function`` (thresholds on the merge score, 1 - affinity statistic).
    ``method="cc"``: threshold + connected components (thresholds on the affinity).
    ``method="mws"``: :func:`~affseg.mutex_watershed` (``bias``, ``long_range_bias``,
    ``strides``, ``min_size``); ``method="gasp"``: :func:`~affseg.gasp` (``linkage``,
    ``cannot_link``; on MALA fragments with ``superpixels``). These two have no threshold:
    they give one segmentation and ``thresholds`` is ignored.
    ``method="rw"``: the seeded :func:`~affseg.random_walker` on the affinities (all offsets are
    edges, affinities the diffusivities). ``rw_seeds="fragments"``: at each threshold, the MALA
    segmentation restricted to the interior (boundary map > 0.5) seeds the walk, which then
    decides the boundary voxels; ``rw_seeds="maxima"``: MALA's distance-transform maxima (one
    seed per plateau) give one segmentation and ``thresholds`` is ignored.

    ``fragments`` (a label volume of the affinities' spatial shape), where given, are used instead
    of extracting them, by the methods that use fragments (mala, rw with fragment seeds, gasp with
    ``superpixels``); a resumed run passes the fragments it wrote before.
    """
    if fragments is not None:
        fragments = as_labels(fragments, name="fragments", shape=np.shape(affs)[1:])
    check_options(method=method, merge_function=merge_function, min_seed_distance=min_seed_distance,
                  min_size=min_size, bias=bias, long_range_bias=long_range_bias, linkage=linkage,
                  strides=strides, rw_seeds=rw_seeds)
    if method in ("mws", "gasp"):
        return _signed(affs, offsets, method, bias=bias, long_range_bias=long_range_bias, linkage=linkage,
                       cannot_link=cannot_link, superpixels=superpixels, strides=strides, min_size=min_size,
                       mask=mask, fragments_in_xy=fragments_in_xy, min_seed_distance=min_seed_distance,
                       sampling=sampling, fragments=fragments)
    if method == "rw" and rw_seeds == "maxima":
        return _random_walker(affs, offsets, None, mask=mask, fragments_in_xy=fragments_in_xy,
                              min_seed_distance=min_seed_distance, sampling=sampling)
    if isinstance(thresholds, (list, tuple, np.ndarray)) and len(thresholds) == 0:
        raise InputError(f"method {method!r} needs at least one threshold")
    thresholds = as_thresholds(thresholds).astype(np.float32)
    if method == "cc":
        segs = [connected_components(affs, offsets, threshold=float(t), mask=mask) for t in thresholds]
        return Segmentation(method, thresholds, None, None, segs)
    if fragments is None:
        fragments = extract_fragments(affs, offsets, fragments_in_xy=fragments_in_xy,
                                      min_seed_distance=min_seed_distance, min_size=min_size,
                                      mask=mask, sampling=sampling)
    result = agglomerate(affs, fragments, thresholds, offsets=offsets, merge_function=merge_function)
    if method == "rw":
        return _random_walker(affs, offsets, result, mask=mask, fragments=fragments)
    return Segmentation(method, result.thresholds, fragments, result)


def check_options(*, method: str, merge_function: str, min_seed_distance: int, min_size: int, bias,
                  long_range_bias, linkage: str, strides, rw_seeds: str) -> None:
    """Check the options of :func:`segment` that do not depend on the data, before any work."""
    from .graph.agglomeration import parse_merge_function
    from .graph.gasp import LINKAGES

    for name, value, choices in (("method", method, METHODS), ("rw_seeds", rw_seeds, RW_SEEDS),
                                 ("linkage", linkage, LINKAGES)):
        if not isinstance(value, str) or value not in choices:
            raise InputError(f"unknown {name} {value!r}; choose one of {tuple(choices)}")
    parse_merge_function(merge_function)
    as_int(min_seed_distance, name="min_seed_distance", minimum=1)
    as_int(min_size, name="min_size", minimum=0)
    for i, value in enumerate(np.atleast_1d(np.asarray(bias, dtype=object))):
        as_number(value, name="bias" if np.ndim(bias) == 0 else f"bias[{i}]", low=0, high=1)
    if long_range_bias is not None:
        as_number(long_range_bias, name="long_range_bias", low=0, high=1)
    if strides is not None:
        for i, value in enumerate(np.ravel(np.asarray(strides, dtype=object))):
            as_int(value, name=f"strides[{i}]", minimum=1)


def _random_walker(affs, offsets, agglomeration, *, mask, fragments=None, fragments_in_xy=False,
                   min_seed_distance=10, sampling=None) -> Segmentation:
    from ._checks import as_affinities
    from .graph.fragments import _boundary_map, distance_seeds
    from .graph.random_walker import MIN_AFFINITY_WEIGHT, random_walker

    affs, offsets = as_affinities(affs, offsets)
    # an affinity of exactly 0 would cut the voxel off the walk (label 0): let it through, barely
    weights = np.maximum(affs, np.float32(MIN_AFFINITY_WEIGHT))
    if agglomeration is None:
        seeds = distance_seeds(affs, offsets, min_seed_distance=min_seed_distance,
                               fragments_in_xy=fragments_in_xy, mask=mask, sampling=sampling)
        if not seeds.any():
            raise InputError("the affinities hold no interior (boundary map > 0.5) to place seeds in")
        return Segmentation("rw", np.array([np.nan], np.float32), None, None,
                            [random_walker(weights, seeds, offsets, mask=mask)])
    interior = _boundary_map(affs, offsets, in_plane=False) > 0.5
    segs = []
    for i in range(len(agglomeration.thresholds)):
        seeds = np.where(interior, agglomeration.segmentation(i), np.uint64(0))
        segs.append(random_walker(weights, seeds, offsets, mask=mask) if seeds.any()
                    else agglomeration.segmentation(i))
    return Segmentation("rw", agglomeration.thresholds, fragments, agglomeration, segs)


def _signed(affs, offsets, method, *, bias, long_range_bias, linkage, cannot_link, superpixels, strides,
            min_size, mask, fragments_in_xy, min_seed_distance, sampling, fragments) -> Segmentation:
    from .graph.gasp import gasp
    from .graph.mutex import mutex_watershed

    if method == "mws":
        fragments = None
        seg = mutex_watershed(affs, offsets, bias=bias, long_range_bias=long_range_bias, strides=strides,
                              mask=mask, min_size=min_size)
    else:
        if not superpixels:
            fragments = None
        elif fragments is None:
            fragments = extract_fragments(affs, offsets, fragments_in_xy=fragments_in_xy,
                                          min_seed_distance=min_seed_distance, min_size=min_size,
                                          mask=mask, sampling=sampling)
        seg = gasp(affs, offsets, bias=bias, long_range_bias=long_range_bias, linkage=linkage,
                   cannot_link=cannot_link, mask=mask, fragments=fragments)
    return Segmentation(method, np.array([np.nan], np.float32), fragments, None, [seg])
