"""Threshold + connected components blockwise, equal to one pass over the whole volume.

Three steps, each per block and independent of the others (any engine can run them):

1. :func:`block_components`: components of the edges inside a block's write region, with ids
   made unique by the block's id range;
2. :func:`block_face_pairs`: the label pairs of the edges above the threshold that leave the
   write region (each edge belongs to the block of the voxel that carries its affinity);
3. :func:`merge_face_pairs` joins the pairs of all blocks with a union-find into one lookup
   table (fragment -> component, the smallest id of each component), and each block is relabelled
   with it (:func:`affseg.graph.core.relabel.relabel`).

:func:`connected_components_blockwise` runs them in this process over arrays that may live on disk
(zarr or HDF5 datasets: only one block and its context are read at a time).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._checks import as_number, as_offsets
from ..errors import InputError
from ..graph.core.relabel import relabel
from ..graph.malis.components import connected_components
from .layout import Block, BlockLayout

__all__ = ["block_components", "block_face_pairs", "connected_components_blockwise", "merge_face_pairs"]


def _region(block_slices, channels: bool = True):
    return ((slice(None),) if channels else ()) + tuple(block_slices)


def block_components(affs, offsets, layout: BlockLayout, block: Block, *, threshold: float,
                     mask=None) -> np.ndarray:
    """Components of the edges inside ``block``'s write region (uint64, ids from the block's
    range ``layout.id_offset(block.id) + 1``; 0 where masked).

    ``affs`` and ``mask`` are the whole volume's (arrays or lazily read datasets).
    """
    local_affs = np.asarray(affs[_region(block.write)])
    local_mask = None if mask is None else np.asarray(mask[block.write])
    labels = connected_components(local_affs, offsets, threshold=threshold, mask=local_mask)
    return np.where(labels != 0, labels + np.uint64(layout.id_offset(block.id)), np.uint64(0))


def _context(offsets: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in np.abs(offsets).max(axis=0))


def block_face_pairs(affs, labels, offsets, layout: BlockLayout, block: Block, *, threshold: float,
                     mask=None) -> np.ndarray:
    """``(N, 2)`` uint64 label pairs of the edges above ``threshold`` from ``block``'s write
    region to voxels outside it (both ends unmasked and labelled).

    ``labels`` is the whole volume of :func:`block_components` (every block done).
    """
    offsets = np.asarray(offsets)
    reach = _context(offsets)
    shape = layout.shape
    read = tuple(slice(max(0, w.start - r), min(n, w.stop + r)) for w, r, n in zip(block.write, reach, shape))
    local_labels = np.asarray(labels[read])
    local_mask = None if mask is None else np.asarray(mask[read]) != 0
    inner = tuple(slice(w.start - r.start, w.stop - r.start) for w, r in zip(block.write, read))
    own_affs = np.asarray(affs[_region(block.write)])
    grid_u = np.meshgrid(*[np.arange(s.start, s.stop) for s in inner], indexing="ij")
    pairs = []
    for c, offset in enumerate(offsets):
        # u in the write region, v = u + offset inside the (clipped) read region but not the write region
        grid_v = [g + o for g, o in zip(grid_u, offset)]
        inside = np.ones(grid_u[0].shape, bool)
        beyond = np.zeros(grid_u[0].shape, bool)
        for axis, (g, sl) in enumerate(zip(grid_v, inner)):
            inside &= (g >= 0) & (g < local_labels.shape[axis])
            beyond |= (g < sl.start) | (g >= sl.stop)
        select = inside & beyond & (own_affs[c] > np.float32(threshold))
        if not select.any():
            continue
        at_u = tuple(g[select] for g in grid_u)
        at_v = tuple(g[select] for g in grid_v)
        u_lab, v_lab = local_labels[at_u], local_labels[at_v]
        ok = (u_lab != 0) & (v_lab != 0)
        if local_mask is not None:
            ok &= local_mask[at_u] & local_mask[at_v]
        pairs.append(np.stack([u_lab[ok], v_lab[ok]], axis=1))
    if not pairs:
        return np.zeros((0, 2), np.uint64)
    return np.unique(np.concatenate(pairs).astype(np.uint64), axis=0)


def merge_face_pairs(pairs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The lookup table ``(old_ids, new_ids)`` that joins every pair: each component takes the
    smallest id in it. Ids not in any pair keep theirs (not listed)."""
    pairs = [np.asarray(p, dtype=np.uint64).reshape(-1, 2) for p in pairs]
    every = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.uint64)
    if not every.size:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    ids, index = np.unique(every, return_inverse=True)
    index = index.reshape(-1, 2)
    return ids, smallest_in_components(ids, index[:, 0], index[:, 1])


def smallest_in_components(ids: np.ndarray, iu: np.ndarray, iv: np.ndarray) -> np.ndarray:
    """For each of the sorted ``ids``, the smallest id of its component when ``ids[iu[k]]`` and
    ``ids[iv[k]]`` are joined for every ``k``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as graph_components

    n = ids.shape[0]
    if n == 0:
        return ids.copy()
    graph = coo_matrix((np.ones(len(iu), np.int8), (iu, iv)), shape=(n, n))
    _, component = graph_components(graph, directed=False)
    smallest = np.full(component.max() + 1, np.iinfo(np.uint64).max, np.uint64)
    np.minimum.at(smallest, component, ids)  # ids are sorted: the first of each component
    return smallest[component]


def connected_components_blockwise(affs, offsets=None, *, threshold: float = 0.5, block_shape: Sequence[int],
                                   mask=None) -> np.ndarray:
    """:func:`affseg.connected_components`, computed block by block (this process, in memory
    for the labels), with the same partition as one pass; ids are the smallest block-unique id
    of each component, not consecutive.

    Parameters
    ----------
    affs : (C, z, y, x) or (C, y, x) array or dataset
        Affinities, float32 in [0, 1]; read one block at a time.
    offsets : (C, ndim) array_like of int, optional
        Default: nearest neighbours.
    threshold : float
        Edges with ``affinity > threshold`` join their voxels.
    block_shape : sequence of int
        Write shape of a block.
    mask : bool array or dataset, spatial shape, optional
        Voxels outside get 0.

    Returns
    -------
    labels : uint64 array, spatial shape
    """
    shape = tuple(affs.shape[1:])
    offsets = as_offsets(offsets, len(shape), channels=affs.shape[0])
    threshold = as_number(threshold, name="threshold")
    if mask is not None and tuple(mask.shape) != shape:
        raise InputError(f"mask has shape {tuple(mask.shape)}, which does not match {shape}")
    layout = BlockLayout(shape, block_shape)
    layout.check_ids_fit()
    labels = np.zeros(shape, np.uint64)
    for block in layout:
        labels[block.write] = block_components(affs, offsets, layout, block, threshold=threshold, mask=mask)
    pairs = [block_face_pairs(affs, labels, offsets, layout, block, threshold=threshold, mask=mask)
             for block in layout]
    old, new = merge_face_pairs(pairs)
    return relabel(labels, old, new)
