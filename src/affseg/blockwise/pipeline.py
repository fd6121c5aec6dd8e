"""Blockwise stages over zarr volumes, run on an :class:`~affseg.blockwise.engine.Engine`."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._checks import as_number, as_offsets
from ..errors import InputError
from .engine import Engine
from .layout import BlockLayout

__all__ = ["connected_components_to_zarr"]


def _open(address):
    from ..io import open_volume

    return open_volume(address).data if address is not None else None


def _components_task(block_id, affs_address, labels_address, layout, offsets, threshold, mask_address):
    from ..io.volumes import open_staged
    from .components import block_components

    affs = _open(affs_address)
    block = layout.block(block_id)
    labels = block_components(affs, offsets, layout, block, threshold=threshold, mask=_open(mask_address))
    open_staged(labels_address)[block.write] = labels  # whole chunks of this block only: idempotent


def _pairs_task(block_id, affs_address, labels_address, layout, offsets, threshold, mask_address):
    from ..io.volumes import open_staged
    from .components import block_face_pairs

    return block_face_pairs(_open(affs_address), open_staged(labels_address), offsets, layout,
                            layout.block(block_id), threshold=threshold, mask=_open(mask_address))


def _relabel_task(block_id, labels_address, out_address, layout, old_ids, new_ids):
    from ..graph.core.relabel import relabel
    from ..io.volumes import open_staged

    block = layout.block(block_id)
    local = np.asarray(open_staged(labels_address)[block.write])
    open_staged(out_address)[block.write] = relabel(local, old_ids, new_ids)


def connected_components_to_zarr(affs_address: str, out_address: str, offsets=None, *, threshold: float = 0.5,
                                 block_shape: Sequence[int], engine: Engine, mask_address: str | None = None,
                                 overwrite: bool = False) -> str:
    """Threshold + connected components of a zarr/HDF5 affinity volume into a zarr dataset,
    block by block on ``engine`` (the same partition as :func:`affseg.connected_components`).

    Parameters
    ----------
    affs_address : str
        ``container/dataset`` of the affinities, (C, [z,] y, x).
    out_address : str
        Zarr dataset to write, chunked by ``block_shape``; a hidden ``<name>.blocks`` dataset holds
        the per-block components until the end.
    offsets : (C, ndim) array_like of int, optional
        Default: the dataset's ``offsets`` attribute, else nearest neighbours.
    threshold : float
        Edges with ``affinity > threshold`` join their voxels.
    block_shape : sequence of int
        Write shape of a block (also the output chunks).
    engine : Engine
        Where the blocks run (entered already).
    mask_address : str, optional
        Mask dataset (non-zero = segment); voxels outside get 0.
    overwrite : bool
        Replace an existing output that affseg wrote.

    Returns
    -------
    str
        ``out_address``.
    """
    from ..io import check_output_writable, open_volume, parse_address
    from ..io.volumes import check_replaceable, discard_staged, publish_volume, stage_volume

    with open_volume(affs_address) as vol:
        shape, channels = vol.shape[1:], vol.shape[0]
        stored = vol.data.attrs.get("offsets")
        meta = dict(voxel_size=vol.voxel_size, offset=vol.offset)
    offsets = as_offsets(offsets if offsets is not None else stored, len(shape), channels=channels)
    threshold = as_number(threshold, name="threshold")
    if mask_address is not None:
        with open_volume(mask_address) as mask:
            if mask.shape != shape:
                raise InputError(f"mask {mask_address} has shape {mask.shape}, which does not match {shape}")
    layout = BlockLayout(shape, block_shape)
    layout.check_ids_fit()
    check_replaceable(out_address, overwrite=overwrite)
    check_output_writable(parse_address(out_address)[0])
    blocks_address = f"{out_address}.blocks"
    stage_volume(blocks_address, shape=shape, dtype=np.uint64, chunks=layout.block_shape, **meta)
    stage_volume(out_address, shape=shape, dtype=np.uint64, chunks=layout.block_shape, **meta,
                 attrs={"method": "cc", "threshold": threshold, "block_shape": list(layout.block_shape)})
    ids = range(len(layout))
    args = (affs_address, blocks_address, layout, offsets, threshold, mask_address)
    engine.map(_components_task, ids, *args, desc="components")
    pairs = []
    engine.map(_pairs_task, ids, *args, desc="faces", on_result=lambda block_id, p: pairs.append(p))
    from .components import merge_face_pairs

    old_ids, new_ids = merge_face_pairs(pairs)
    engine.map(_relabel_task, ids, blocks_address, out_address, layout, old_ids, new_ids, desc="relabel")
    publish_volume(out_address, overwrite=overwrite)
    discard_staged(blocks_address)
    return out_address
