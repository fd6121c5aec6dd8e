"""Threshold + connected components (MALIS's inference), one segmentation per threshold."""
from __future__ import annotations

from . import Method, Segmentation


def run(affs, offsets, *, thresholds, mask, voxel_size, fragments) -> Segmentation:
    from ..graph.malis.components import connected_components

    segs = [connected_components(affs, offsets, threshold=float(t), mask=mask) for t in thresholds]
    return Segmentation("cc", thresholds, None, None, segs)


METHOD = Method("cc", "threshold + connected components (thresholds on the affinity)", run)
