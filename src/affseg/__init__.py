"""affseg: learned, affinity-based instance segmentation of EM volumes.

Public functions are imported lazily, so ``import affseg`` stays cheap.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "affinities_from_labels": "affseg.conventions",
    "agglomerate": "affseg.graph.mala.agglomeration",
    "agglomerate_graph": "affseg.graph.mala.agglomeration",
    "edge_statistics": "affseg.graph.mala.statistics",
    "merge_edge_statistics": "affseg.graph.mala.statistics",
    "connected_components": "affseg.graph.malis.components",
    "evaluate": "affseg.evaluation.metrics",
    "extract_fragments": "affseg.graph.mala.fragments",
    "gasp": "affseg.graph.signed.gasp",
    "gasp_graph": "affseg.graph.signed.gasp",
    "mutex_watershed": "affseg.graph.signed.mutex",
    "mutex_watershed_graph": "affseg.graph.signed.mutex",
    "napari_layers": "affseg.view",
    "distance_seeds": "affseg.graph.mala.fragments",
    "image_weights": "affseg.graph.random_walker.solver",
    "open_volume": "affseg.io.volumes",
    "random_walker": "affseg.graph.random_walker.solver",
    "read_volume": "affseg.io.volumes",
    "segment": "affseg.pipeline",
    "split_merge_curve": "affseg.evaluation.curves",
    "write_volume": "affseg.io.volumes",
}
_SUBMODULES = {"conventions", "errors", "evaluation", "graph", "io", "learn", "synthetic", "pipeline", "cli",
               "view"}  # affseg.view is also callable: affseg.view(...) serves volumes in neuroglancer

__all__ = sorted(_EXPORTS) + sorted(_SUBMODULES)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"affseg.{name}")
    raise AttributeError(f"module 'affseg' has no attribute {name!r}")


def __dir__():
    return __all__
