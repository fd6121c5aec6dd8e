"""Options and steps that several methods share: MALA fragments, signed-graph biases."""
from __future__ import annotations

import numpy as np

from .._checks import as_mask, as_number
from ..errors import InputError
from . import Option


def _bias(value):
    """A bias in [0, 1], or (from Python) one per channel; the kernels check the open interval."""
    values = np.atleast_1d(np.asarray(value, dtype=object))
    if values.ndim != 1 or values.size == 0:
        raise InputError(f"bias must be a number or one number per channel, got {value!r}")
    checked = [as_number(v, name="bias" if np.ndim(value) == 0 else f"bias[{i}]", low=0, high=1)
               for i, v in enumerate(values)]
    return checked[0] if np.ndim(value) == 0 else checked


MIN_SEED_DISTANCE = Option("min_seed_distance", "int", 10, "fragments: size (voxels) of the maximum filter that "
                           "finds seeds (local maxima of the distance to the boundary)", minimum=1)
MIN_SIZE = Option("min_size", "int", 0, "segments (fragments) smaller than this many voxels merge into their "
                  "best-linked neighbour", minimum=0)
IN_PLANE = Option("in_plane", "bool", False, "fragments per z-section (2D distance, seeds and watershed), for "
                  "anisotropic data")
MERGE_FUNCTION = Option("merge_function", "str", "hist_quant_75", "agglomeration score: mean, max, min, "
                        "hist_quant_Q or hist_quant_Q_initmax (Q in 0..100), as lsd and waterz",
                        check=lambda v: _merge_function(v))
BIAS = Option("bias", "float", 0.5, "signed weight = affinity - bias (each bias in (0, 1))", check=_bias)
LONG_RANGE_BIAS = Option("long_range_bias", "float", None, "bias of the long-range (not nearest-neighbour) "
                         "channels; default: bias", minimum=0, maximum=1)
FLOOD = Option("flood", "str", "boundary", "fragments: the watershed's height: boundary (mostly the boundary "
               "map, so fragments follow faint boundaries inside objects) or distance (the MALA/lsd recipe: "
               "distance to the boundary inside objects)", choices=("boundary", "distance"))
FRAGMENT_OPTIONS = (MIN_SEED_DISTANCE, MIN_SIZE, IN_PLANE, FLOOD)


def _merge_function(value):
    from ..graph.mala.agglomeration import parse_merge_function

    parse_merge_function(value)
    return value


def fragments_of(affs, offsets, options: dict, *, mask, voxel_size, fragments):
    """The given fragments (0 outside the mask), or MALA fragments of the affinities with the
    method's options."""
    if fragments is not None:
        mask = as_mask(mask, fragments.shape)
        return fragments if mask is None else np.where(mask, fragments, np.uint64(0))
    from ..graph.mala.fragments import extract_fragments

    return extract_fragments(affs, offsets, in_plane=options["in_plane"],
                             min_seed_distance=options["min_seed_distance"], min_size=options["min_size"],
                             mask=mask, voxel_size=voxel_size, flood=options["flood"])
