"""MALA: watershed fragments, then hierarchical agglomeration (waterz's), one segmentation per threshold."""
from __future__ import annotations

from . import Method, Segmentation
from ._shared import FRAGMENT_OPTIONS, MERGE_FUNCTION, fragments_of


def run(affs, offsets, *, thresholds, mask, voxel_size, fragments, **options) -> Segmentation:
    from ..graph.mala.agglomeration import agglomerate

    fragments = fragments_of(affs, offsets, options, mask=mask, voxel_size=voxel_size, fragments=fragments)
    result = agglomerate(affs, fragments, offsets, thresholds=thresholds, merge_function=options["merge_function"])
    return Segmentation("mala", result.thresholds, fragments, result)


METHOD = Method(
    "mala", "watershed fragments + hierarchical agglomeration (thresholds on the merge score, 1 - affinity "
    "statistic)", run, options=(MERGE_FUNCTION, *FRAGMENT_OPTIONS), uses_fragments=lambda options: True)
