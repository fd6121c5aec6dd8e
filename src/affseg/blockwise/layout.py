"""A grid of blocks over a volume: write regions that tile it, read regions with context.

Block ids are row-major over the grid. Write regions are aligned to the grid, so blocks whose
shape is a multiple of the output chunks never share a chunk (concurrent writers cannot corrupt
each other); at the far borders they are shrunk to the volume, and so is every read region.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .._checks import as_int, describe
from ..errors import InputError

__all__ = ["Block", "BlockLayout"]


@dataclass(frozen=True)
class Block:
    """One block: its id, grid index, and write / read regions as (start, stop) voxel ranges."""

    id: int
    index: tuple[int, ...]
    write: tuple[slice, ...]
    read: tuple[slice, ...]

    @property
    def write_in_read(self) -> tuple[slice, ...]:
        """The write region in the coordinates of the read region (to crop a result)."""
        return tuple(slice(w.start - r.start, w.stop - r.start) for w, r in zip(self.write, self.read))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.write)


def _as_shape(values, ndim: int | None, *, name: str, minimum: int) -> tuple[int, ...]:
    items = list(values) if isinstance(values, (Sequence, np.ndarray)) and not isinstance(values, str) else None
    if items is None or (ndim is not None and len(items) != ndim) or not items:
        raise InputError(f"{name} must hold {ndim or 'one or more'} integers, got {describe(values)}")
    return tuple(as_int(v, name=f"{name}[{i}]", minimum=minimum) for i, v in enumerate(items))


class BlockLayout:
    """Blocks of ``block_shape`` voxels over a volume of ``shape``, each read with ``context``.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape of the volume (z, y, x) or (y, x).
    block_shape : sequence of int
        Write shape of a block; the last blocks along an axis are shrunk to the volume.
    context : int or sequence of int
        Voxels read beyond the write region on each side (clipped at the volume border); must
        not exceed the block shape.
    chunks : sequence of int, optional
        Chunk (or shard) shape of the outputs: the block shape must be a multiple of it, so that
        no two blocks write one chunk.

    Raises
    ------
    InputError
        For shapes that are not positive integers, a context larger than the block, or a block
        shape that is not a multiple of ``chunks``.
    """

    def __init__(self, shape: Sequence[int], block_shape: Sequence[int], *, context: int | Sequence[int] = 0,
                 chunks: Sequence[int] | None = None):
        self.shape = _as_shape(shape, None, name="shape", minimum=1)
        ndim = len(self.shape)
        if ndim not in (2, 3):
            raise InputError(f"volumes must be 2D or 3D, got shape {self.shape}")
        self.block_shape = _as_shape(block_shape, ndim, name="block_shape", minimum=1)
        if isinstance(context, (int, np.integer)) and not isinstance(context, bool):
            context = (int(context),) * ndim
        self.context = _as_shape(context, ndim, name="context", minimum=0)
        too_wide = [i for i in range(ndim) if self.context[i] > self.block_shape[i]]
        if too_wide:
            raise InputError(f"context {self.context} is larger than the block shape {self.block_shape} "
                             f"along axis {too_wide[0]}: use larger blocks or less context")
        if chunks is not None:
            chunks = _as_shape(chunks, ndim, name="chunks", minimum=1)
            bad = [i for i in range(ndim) if self.block_shape[i] % chunks[i] and self.block_shape[i] < self.shape[i]]
            if bad:
                raise InputError(f"block shape {self.block_shape} is not a multiple of the output chunks {chunks} "
                                 f"along axis {bad[0]}: blocks would share chunks")
        self.grid = tuple(-(-s // b) for s, b in zip(self.shape, self.block_shape))
        self.num_blocks = math.prod(self.grid)

    def __len__(self) -> int:
        return self.num_blocks

    def __iter__(self) -> Iterator[Block]:
        return (self.block(i) for i in range(self.num_blocks))

    def block(self, block_id: int) -> Block:
        """The block with this row-major id."""
        block_id = as_int(block_id, name="block_id", minimum=0, maximum=self.num_blocks - 1)
        index = tuple(int(i) for i in np.unravel_index(block_id, self.grid))
        write, read = [], []
        for i, b, c, n in zip(index, self.block_shape, self.context, self.shape):
            start, stop = i * b, min((i + 1) * b, n)
            write.append(slice(start, stop))
            read.append(slice(max(0, start - c), min(n, stop + c)))
        return Block(block_id, index, tuple(write), tuple(read))

    @property
    def voxels_per_block(self) -> int:
        return math.prod(self.block_shape)

    def id_offset(self, block_id: int) -> int:
        """The first id of a block's local labels: ``block_id * voxels_per_block``, so that ids of
        different blocks never collide (a block has at most one label per voxel)."""
        return int(block_id) * self.voxels_per_block

    def check_ids_fit(self) -> None:
        """Refuse a layout whose largest possible id does not fit in uint64."""
        top = self.num_blocks * self.voxels_per_block
        if top > 2**64 - 1:
            raise InputError(f"{self.num_blocks} blocks of {self.voxels_per_block} voxels give ids up to {top}, "
                             "beyond uint64: use fewer, smaller blocks")

    def describe(self) -> dict:
        """The layout as plain data (stored with outputs, compared on resume)."""
        return {"shape": list(self.shape), "block_shape": list(self.block_shape), "context": list(self.context)}

    def digest(self) -> str:
        """A hash of :meth:`describe`."""
        return hashlib.blake2b(json.dumps(self.describe(), sort_keys=True).encode(), digest_size=16).hexdigest()
