"""The Mutex Watershed blockwise: per block with context, stitched by agreement in the overlaps.

Three steps, each per block and independent of the others (any engine, any block order):

1. :func:`block_mutex_watershed`: :func:`affseg.mutex_watershed` on the block's read region
   (the write region plus ``context`` on each side). The block's *segments* are the labels of
   that run present in its write region, named ``layout.id_offset(block) + 1, ...``; the block
   keeps the whole read region with those ids (0 on the segments that lie wholly in the context).
2. :func:`stitch_pairs`: for a block ``A`` and each neighbour ``B`` after it (faces, edges and
   corners of the grid), the two runs overlap on ``(A.read & B.write) | (B.read & A.write)``: the
   slab of ``context`` voxels on either side of their shared face. There ``A``'s run has labelled
   voxels that ``B`` owns and ``B``'s run voxels that ``A`` owns (only these slabs are read).
   Segment ``a`` of ``A`` and ``b`` of ``B`` are merged when the two runs *agree*: more than
   ``overlap`` (default one half) of ``b``'s voxels in ``A``'s context carry ``a`` in
   ``A``'s run, and more than ``overlap`` of ``a``'s voxels in ``B``'s context carry ``b`` in
   ``B``'s run.
3. :func:`~affseg.blockwise.components.merge_face_pairs` joins the agreed pairs of all blocks
   (union-find; each object takes its smallest segment id), and each block's segments are
   relabelled through that table.

:func:`mutex_watershed_blockwise` runs them in this process over arrays that may live on disk.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from .._checks import as_number, as_offsets
from ..errors import InputError
from ..graph.core.relabel import relabel_by_tables, sorted_lookup
from .components import merge_face_pairs
from .layout import Block, BlockLayout

__all__ = ["block_mutex_watershed", "mutex_watershed_blockwise", "neighbours", "stitch_pairs"]

MWS_OPTIONS = ("bias", "long_range_bias", "strides", "randomized_strides", "rng_seed", "min_size", "ties")


def block_mutex_watershed(affs, offsets, layout: BlockLayout, block: Block, *, mask=None, **options) -> np.ndarray:
    """:func:`affseg.mutex_watershed` of ``block``'s read region, labelled with the block's
    segment ids.

    The block's segments are the labels of the run present in its write region, named
    ``layout.id_offset(block.id) + 1, ...`` in increasing order of the run's labels (raster order
    of their first voxel).

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) array or dataset
        The whole volume's affinities (only the read region is read).
    offsets : (C, ndim) int array
        Their offsets.
    layout : BlockLayout
        The block layout (its id ranges).
    block : Block
        The block.
    mask : array or dataset, spatial shape, optional
        The whole volume's mask (non-zero = segment).
    **options
        Of :func:`affseg.mutex_watershed` (``bias``, ``long_range_bias``, ``strides``, ...).

    Returns
    -------
    labels : uint64 array, the read region's shape
        The block's segment ids; 0 where masked and on the segments that lie wholly in the
        context (no block keeps them).
    """
    from ..graph.signed.mutex import mutex_watershed

    local_affs = np.asarray(affs[(slice(None),) + block.read])
    local_mask = None if mask is None else np.asarray(mask[block.read]) != 0
    local = mutex_watershed(local_affs, offsets, mask=local_mask, **options)
    present = np.unique(local[block.write_in_read])
    present = present[present != 0]
    ids = np.zeros(int(local.max()) + 1, np.uint64)
    ids[present] = np.uint64(layout.id_offset(block.id) + 1) + np.arange(present.shape[0], dtype=np.uint64)
    return ids[local]


def neighbours(layout: BlockLayout, block: Block) -> list[int]:
    """The blocks after ``block`` that touch it by a face, an edge or a corner.

    Parameters
    ----------
    layout : BlockLayout
        The block layout.
    block : Block
        One of its blocks.

    Returns
    -------
    ids : list of int
        Their ids (larger than ``block.id``), increasing: each pair of neighbours is listed once.
    """
    found = []
    for step in itertools.product((-1, 0, 1), repeat=len(layout.grid)):
        index = tuple(i + s for i, s in zip(block.index, step))
        if any(s for s in step) and all(0 <= i < g for i, g in zip(index, layout.grid)):
            other = int(np.ravel_multi_index(index, layout.grid))
            if other > block.id:
                found.append(other)
    return sorted(found)


def _intersect(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...] | None:
    box = tuple(slice(max(x.start, y.start), min(x.stop, y.stop)) for x, y in zip(a, b))
    return box if all(s.stop > s.start for s in box) else None


def _within(box: tuple[slice, ...], region: tuple[slice, ...]) -> tuple[slice, ...]:
    return tuple(slice(s.start - r.start, s.stop - r.start) for s, r in zip(box, region))


def _votes(claimed: np.ndarray, owned: np.ndarray, overlap: float) -> set[tuple[int, int]]:
    """Pairs ``(claim, owner)``: the owner segments (non-zero) more than ``overlap`` of whose
    voxels carry one claimed segment (non-zero) in the other run."""
    keep = owned != 0
    claimed, owned = claimed[keep], owned[keep]
    both = claimed != 0
    if not both.any():
        return set()
    owners, sizes = np.unique(owned, return_counts=True)
    pairs, counts = np.unique(np.stack([owned[both], claimed[both]]), axis=1, return_counts=True)
    size = sizes[np.searchsorted(owners, pairs[0])]
    win = counts > overlap * size
    return set(zip(pairs[1, win].tolist(), pairs[0, win].tolist()))


def stitch_pairs(labels_a, block_a: Block, labels_b, block_b: Block, *, overlap: float = 0.5) -> np.ndarray:
    """The pairs of segments of two neighbouring blocks whose runs agree (see the module's
    docstring).

    Parameters
    ----------
    labels_a, labels_b : uint64 array or array-like
        The blocks' read regions as :func:`block_mutex_watershed` returns them (arrays, or
        anything that numpy-style slices relative to the read region read: only the overlap is
        read).
    block_a, block_b : Block
        The two blocks.
    overlap : float
        The fraction of a segment's voxels in the overlap that the other run must give one
        segment, in [0.5, 1).

    Returns
    -------
    pairs : (N, 2) uint64 array
        ``(a, b)``: segment ``a`` of ``block_a`` and ``b`` of ``block_b``, sorted.
    """
    votes = []
    for claimer, owner in (((labels_a, block_a), (labels_b, block_b)), ((labels_b, block_b), (labels_a, block_a))):
        box = _intersect(claimer[1].read, owner[1].write)  # the owner's voxels the claimer's run saw
        if box is None:
            return np.zeros((0, 2), np.uint64)
        claim = np.asarray(claimer[0][_within(box, claimer[1].read)]).ravel()
        own = np.asarray(owner[0][_within(box, owner[1].read)]).ravel()
        votes.append(_votes(claim, own, overlap))
    agreed = sorted(votes[0] & {(a, b) for b, a in votes[1]})
    return np.array(agreed, np.uint64).reshape(-1, 2)


def mutex_watershed_blockwise(affs, offsets=None, *, block_shape: Sequence[int], context: int | Sequence[int],
                              mask=None, overlap: float = 0.5, **options) -> np.ndarray:
    """:func:`affseg.mutex_watershed` computed block by block with ``context`` and stitched
    where the runs of neighbouring blocks agree (this process; the labels in memory).

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) array or dataset
        Affinities, float32 in [0, 1]; read one block (with its context) at a time.
    offsets : (C, ndim) array_like of int, optional
        Short- and long-range offsets; default: nearest neighbours.
    block_shape : sequence of int
        Write shape of a block.
    context : int or sequence of int
        Voxels read beyond the write region on each side: at most the block shape, at least 1
        along every axis with more than one block (the blocks are stitched in it).
    mask : bool array or dataset, spatial shape, optional
        Voxels outside get 0.
    overlap : float
        Fraction of a segment's voxels in the overlap that the other block's run must give one
        segment for the two to merge, in [0.5, 1): the default one half is a majority;
        higher merges less (docs/blockwise.md measures 0.5, 0.75 and 0.9).
    **options
        Of :func:`affseg.mutex_watershed` (``bias``, ``long_range_bias``, ``strides``,
        ``randomized_strides``, ``rng_seed``, ``min_size``, ``ties``), applied per block.

    Returns
    -------
    labels : uint64 array, spatial shape
        Each object named by its smallest block segment id (not consecutive); 0 where masked.
    """
    shape = tuple(affs.shape[1:])
    offsets = as_offsets(offsets, len(shape), channels=affs.shape[0])
    overlap = check_overlap(overlap)
    check_options(options)
    if mask is not None and tuple(mask.shape) != shape:
        raise InputError(f"mask has shape {tuple(mask.shape)}, which does not match {shape}")
    layout = BlockLayout(shape, block_shape, context=context)
    layout.check_ids_fit()
    check_context(layout)
    runs = {block.id: block_mutex_watershed(affs, offsets, layout, block, mask=mask, **options) for block in layout}
    pairs = [stitch_pairs(runs[block.id], block, runs[other], layout.block(other), overlap=overlap)
             for block in layout for other in neighbours(layout, block)]
    old, new = merge_face_pairs(pairs)
    old, tables = sorted_lookup(old, [new])
    labels = np.zeros(shape, np.uint64)
    for block in layout:
        labels[block.write] = next(relabel_by_tables(runs[block.id][block.write_in_read], old, tables))
    return labels


def check_overlap(overlap) -> float:
    """``overlap`` as a float in [0.5, 1), or an InputError naming it."""
    overlap = as_number(overlap, name="overlap")
    if not 0.5 <= overlap < 1:
        raise InputError(f"overlap must be in [0.5, 1) (a majority of a segment's voxels), got {overlap}")
    return overlap


def check_options(options: dict) -> None:
    """Refuse options that :func:`affseg.mutex_watershed` blockwise does not take (InputError)."""
    unknown = sorted(set(options) - set(MWS_OPTIONS))
    if unknown:
        raise InputError(f"unknown Mutex Watershed option(s) {', '.join(map(repr, unknown))}; blockwise takes "
                         f"{', '.join(MWS_OPTIONS)}")


def check_context(layout: BlockLayout) -> None:
    """Refuse a layout without context along an axis that has more than one block (InputError):
    the blocks are stitched in their context."""
    flat = [i for i, (c, g) in enumerate(zip(layout.context, layout.grid)) if c < 1 and g > 1]
    if flat:
        raise InputError(f"context {layout.context} is 0 along axis {flat[0]}, where the blocks must be stitched: "
                         "the Mutex Watershed blockwise needs at least 1 voxel of context (more is better)")
