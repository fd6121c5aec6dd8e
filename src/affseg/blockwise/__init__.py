"""The pipeline blockwise, over volumes larger than memory.

Block layout, a Dask engine, a graph store (SQLite or PostgreSQL) and the stages: threshold +
connected components, the Mutex Watershed (per block with context, stitched where neighbouring
runs agree), and MALA (fragments, region-graph statistics, agglomeration, relabel).
"""
from .components import block_components, block_face_pairs, connected_components_blockwise, merge_face_pairs
from .layout import Block, BlockLayout
from .mutex import mutex_watershed_blockwise
from .store import GraphStore, open_store, stage_identity

__all__ = ["Block", "BlockLayout", "GraphStore", "block_components", "block_face_pairs",
           "connected_components_blockwise", "merge_face_pairs", "mutex_watershed_blockwise", "open_store",
           "stage_identity"]
