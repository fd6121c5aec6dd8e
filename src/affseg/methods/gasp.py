"""GASP on the signed graph of voxels, or of MALA fragments: one segmentation."""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from . import Method, Option, Segmentation
from ._shared import BIAS, FRAGMENT_OPTIONS, LONG_RANGE_BIAS, fragments_of


def run(affs, offsets, *, thresholds, mask, voxel_size, fragments, **options) -> Segmentation:
    from ..graph.signed.gasp import gasp

    if options["superpixels"] and options["ties"] == "agreement":  # before the fragments are made
        raise InputError("ties 'agreement' needs a grid's neighbourhoods: not with superpixels (use hash)")
    if options["superpixels"]:
        fragments = fragments_of(affs, offsets, options, mask=mask, voxel_size=voxel_size, fragments=fragments)
    else:
        fragments = None
    seg = gasp(affs, offsets, bias=options["bias"], long_range_bias=options["long_range_bias"],
               linkage=options["linkage"], cannot_link=options["cannot_link"], mask=mask, fragments=fragments,
               ties=options["ties"])
    return Segmentation("gasp", np.array([np.nan], np.float32), fragments, None, [seg])


LINKAGE = Option("linkage", "str", "mean", "gasp: how the interaction of two clusters is computed from the "
                 "edge weights between them: mean (size-weighted), sum, max, min, or abs_max (the weight of "
                 "largest magnitude)", choices=("mean", "sum", "max", "min", "abs_max"))
CANNOT_LINK = Option("cannot_link", "bool", False, "gasp: visit interactions by magnitude, a repulsive one "
                     "forbidding its two clusters to merge later (as the Mutex Watershed); without it merging "
                     "stops at the first interaction that is not attractive")
SUPERPIXELS = Option("superpixels", "bool", False, "gasp: cluster MALA fragments (made with the fragment "
                     "options) instead of voxels; faster on large volumes")
TIES = Option("ties", "str", "hash", "gasp: order of equal priorities (saturated or uint8 affinities): hash (a "
              "fixed pseudo-random order), agreement (voxels only: edges whose neighbours agree most with their "
              "sign first), repulsive-first, attractive-first or edge-order; see docs/methods.md",
              choices=("agreement", "hash", "repulsive-first", "attractive-first", "edge-order"))
METHOD = Method("gasp", "GASP (needs long-range offsets; no thresholds)", run,
                options=(BIAS, LONG_RANGE_BIAS, LINKAGE, CANNOT_LINK, TIES, SUPERPIXELS, *FRAGMENT_OPTIONS),
                thresholded=lambda options: False, uses_fragments=lambda options: options["superpixels"],
                needs_long_range=True)
