"""The Mutex Watershed on short- and long-range affinities: one segmentation."""
from __future__ import annotations

import numpy as np

from . import Method, Option, Segmentation
from ._shared import BIAS, LONG_RANGE_BIAS, MIN_SIZE


def run(affs, offsets, *, thresholds, mask, voxel_size, fragments, **options) -> Segmentation:
    from ..graph.signed.mutex import mutex_watershed

    seg = mutex_watershed(affs, offsets, bias=options["bias"], long_range_bias=options["long_range_bias"],
                          strides=options["strides"], mask=mask, min_size=options["min_size"],
                          ties=options["ties"])
    return Segmentation("mws", np.array([np.nan], np.float32), None, None, [seg])


STRIDES = Option("strides", "ints", None, "mws: keep the long-range edges on a grid with this step (z y x)",
                 minimum=1)
TIES = Option("ties", "str", "agreement", "mws: order of edges whose weights tie in magnitude (saturated or uint8 "
              "affinities): agreement (those whose neighbours agree most with their sign first), hash, "
              "repulsive-first or attractive-first; see docs/methods.md",
              choices=("agreement", "hash", "repulsive-first", "attractive-first"))
METHOD = Method("mws", "Mutex Watershed (needs long-range offsets; no thresholds)", run,
                options=(BIAS, LONG_RANGE_BIAS, STRIDES, MIN_SIZE, TIES), thresholded=lambda options: False,
                needs_long_range=True)
