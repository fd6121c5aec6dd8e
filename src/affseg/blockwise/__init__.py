"""The pipeline blockwise, over volumes larger than memory (work in progress: block layout)."""
from .layout import Block, BlockLayout

__all__ = ["Block", "BlockLayout"]
