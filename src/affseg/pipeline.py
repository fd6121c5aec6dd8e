"""Affinities -> segmentations, the steps glued together (used by the command line and demo)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .graph.agglomeration import Agglomeration, agglomerate
from .graph.components import connected_components
from .graph.fragments import extract_fragments

__all__ = ["Segmentation", "segment"]

METHODS = ("mala", "cc")


@dataclass
class Segmentation:
    """Segmentations of one volume, one per threshold, and how they were made."""

    method: str
    thresholds: np.ndarray
    fragments: np.ndarray | None
    agglomeration: Agglomeration | None
    _cc: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.thresholds)

    def segmentation(self, index: int) -> np.ndarray:
        if self._cc is not None:
            return self._cc[index]
        return self.agglomeration.segmentation(index)


def segment(
    affs,
    thresholds: Sequence[float],
    *,
    offsets=None,
    method: str = "mala",
    merge_function: str = "hist_quant_75",
    fragments_in_xy: bool = False,
    min_seed_distance: int = 10,
    min_size: int = 0,
    mask=None,
    sampling=None,
) -> Segmentation:
    """Segment affinities at each threshold.

    ``method="mala"``: :func:`~affseg.extract_fragments` then :func:`~affseg.agglomerate` with
    ``merge_function`` (thresholds on the merge score, 1 - affinity statistic).
    ``method="cc"``: threshold + connected components (thresholds on the affinity).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    thresholds = np.sort(np.asarray(thresholds, dtype=np.float32).reshape(-1))
    if method == "cc":
        segs = [connected_components(affs, offsets, threshold=float(t), mask=mask) for t in thresholds]
        return Segmentation(method, thresholds, None, None, segs)
    fragments = extract_fragments(affs, offsets, fragments_in_xy=fragments_in_xy,
                                  min_seed_distance=min_seed_distance, min_size=min_size,
                                  mask=mask, sampling=sampling)
    result = agglomerate(affs, fragments, thresholds, offsets=offsets, merge_function=merge_function)
    return Segmentation(method, result.thresholds, fragments, result)
