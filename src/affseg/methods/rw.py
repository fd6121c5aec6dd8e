"""The seeded random walker on the affinities (every offset an edge, affinities the diffusivities).

``rw_seeds="fragments"``: at each threshold the MALA segmentation, restricted to the interior
(boundary map > 0.5), seeds the walk, which then decides the boundary voxels. ``"maxima"``: one
seed per plateau of distance-transform maxima, one segmentation.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from . import Method, Option, Segmentation
from ._shared import FRAGMENT_OPTIONS, MERGE_FUNCTION, fragments_of


def run(affs, offsets, *, thresholds, mask, voxel_size, fragments, **options) -> Segmentation:
    from ..graph.mala.agglomeration import agglomerate
    from ..graph.mala.fragments import boundary_map, distance_seeds
    from ..graph.random_walker.solver import MIN_AFFINITY_WEIGHT, random_walker

    # an affinity of exactly 0 would cut the voxel off the walk (label 0): let it through, barely
    weights = np.maximum(affs, np.float32(MIN_AFFINITY_WEIGHT))
    if options["rw_seeds"] == "maxima":
        seeds = distance_seeds(affs, offsets, min_seed_distance=options["min_seed_distance"],
                               in_plane=options["in_plane"], mask=mask, voxel_size=voxel_size)
        if not seeds.any():
            raise InputError("the affinities hold no interior (boundary map > 0.5) to place seeds in")
        return Segmentation("rw", np.array([np.nan], np.float32), None, None,
                            [random_walker(weights, seeds, offsets, mask=mask)])
    fragments = fragments_of(affs, offsets, options, mask=mask, voxel_size=voxel_size, fragments=fragments)
    result = agglomerate(affs, fragments, offsets, thresholds=thresholds, merge_function=options["merge_function"])
    interior = boundary_map(affs, offsets, in_plane=options["in_plane"]) > 0.5
    segs = []
    for i in range(len(result.thresholds)):
        seeds = np.where(interior, result.segmentation(i), np.uint64(0))
        segs.append(random_walker(weights, seeds, offsets, mask=mask) if seeds.any() else result.segmentation(i))
    return Segmentation("rw", result.thresholds, fragments, result, segs)


RW_SEEDS = Option("rw_seeds", "str", "fragments", "rw: 'fragments' seeds each threshold's MALA segmentation "
                  "inside the cells and lets the walk decide the boundaries; 'maxima' seeds one label per "
                  "distance maximum (one segmentation, one solve per seed: slow for many seeds)",
                  choices=("fragments", "maxima"))
METHOD = Method("rw", "seeded random walker (seeds: rw_seeds)", run,
                options=(RW_SEEDS, MERGE_FUNCTION, *FRAGMENT_OPTIONS),
                thresholded=lambda options: options["rw_seeds"] == "fragments",
                uses_fragments=lambda options: options["rw_seeds"] == "fragments")
