"""Encoded central-instance masks (Bailoni et al., GCPR 2020), the torch-free part.

Ground-truth masks for training (:func:`central_mask_targets`) and affinities for any offsets
from predicted masks, read at the centre or aggregated over all overlapping masks with a
variance (MaskAggr): :func:`affinities_from_masks`, :func:`affinities_from_latents` (decoding
tile by tile). The network side is :mod:`affseg.learn.central_masks`.
"""
from .aggregate import affinities_from_latents, affinities_from_masks, branch_for_offsets
from .targets import central_mask_targets, downscale_labels

__all__ = [
    "affinities_from_latents",
    "affinities_from_masks",
    "branch_for_offsets",
    "central_mask_targets",
    "downscale_labels",
]
