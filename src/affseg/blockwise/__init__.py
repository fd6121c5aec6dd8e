"""The pipeline blockwise, over volumes larger than memory.

So far: the block layout, and threshold + connected components by blocks (per-block steps any
engine can run, and an in-process driver). The Dask engine, the graph store and the other stages
are the next steps (see the blockwise issue).
"""
from .components import block_components, block_face_pairs, connected_components_blockwise, merge_face_pairs
from .layout import Block, BlockLayout

__all__ = ["Block", "BlockLayout", "block_components", "block_face_pairs", "connected_components_blockwise",
           "merge_face_pairs"]
