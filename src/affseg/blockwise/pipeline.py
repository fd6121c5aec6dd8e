"""Blockwise stages over zarr volumes, run on an :class:`~affseg.blockwise.engine.Engine`."""
from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from .._checks import as_number, as_offsets
from ..errors import InputError
from .engine import Engine
from .layout import BlockLayout

__all__ = ["connected_components_to_zarr", "mala_to_zarr"]


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


def _fragments_task(block_id, affs_address, fragments_address, layout, offsets, options, mask_address):
    from ..graph.core.relabel import relabel_consecutive
    from ..graph.mala.fragments import extract_fragments
    from ..io.volumes import open_staged

    block = layout.block(block_id)
    affs = np.asarray(_open(affs_address)[(slice(None),) + block.read])
    mask = _open(mask_address)
    mask = None if mask is None else np.asarray(mask[block.read]) != 0
    fragments = extract_fragments(affs, offsets, mask=mask, **options)[block.write_in_read]
    fragments, count = relabel_consecutive(fragments, start=layout.id_offset(block_id) + 1)
    open_staged(fragments_address)[block.write] = fragments
    return count


def _statistics_task(block_id, affs_address, fragments_address, layout, offsets, histogram):
    from ..graph.mala.statistics import edge_statistics
    from ..io.volumes import open_staged

    block = layout.block(block_id)
    # one voxel below the write region: the contacts of its lowest voxels (see edge_statistics(owned=))
    read = tuple(slice(max(0, w.start - 1), w.stop) for w in block.write)
    owned = tuple(slice(w.start - r.start, w.stop - r.start) for w, r in zip(block.write, read))
    affs = np.asarray(_open(affs_address)[(slice(None),) + read])
    fragments = np.asarray(open_staged(fragments_address)[read])
    return edge_statistics(affs, fragments, offsets, owned=owned, histogram=histogram)


def _lookup_task(block_id, fragments_address, out_addresses, layout, fragment_ids, segment_ids):
    from ..graph.core.relabel import relabel
    from ..io.volumes import open_staged

    block = layout.block(block_id)
    fragments = np.asarray(open_staged(fragments_address)[block.write])
    for address, segments in zip(out_addresses, segment_ids):
        open_staged(address)[block.write] = relabel(fragments, fragment_ids, segments)


def _input_identity(address: str) -> dict:
    """What identifies an input cheaply: address, shape, dtype, chunks and its metadata file's
    size and time (a rewrite of the dataset changes them; chunk contents are not hashed)."""
    from ..io import open_volume, parse_address

    with open_volume(address) as vol:
        identity = {"address": str(address), "shape": list(vol.shape), "dtype": str(vol.dtype),
                    "chunks": list(getattr(vol.data, "chunks", None) or [])}
    container, dataset, kind = parse_address(address)
    meta = container / dataset / "zarr.json" if kind == "zarr" else container
    stat = meta.stat()
    identity["metadata"] = [stat.st_size, stat.st_mtime_ns]
    return identity


def _pending(store, stage: str, identity: dict, blocks: int, overwrite: bool) -> list[int]:
    done = store.begin_stage(stage, identity, overwrite=overwrite)
    return [i for i in range(blocks) if i not in done]


def mala_to_zarr(affs_address: str, out_group: str, offsets=None, *, thresholds: Sequence[float],
                 block_shape: Sequence[int], context: int | Sequence[int], engine: Engine,
                 merge_function: str = "hist_quant_75", fragment_options: dict | None = None,
                 mask_address: str | None = None, store=None, overwrite: bool = False) -> dict:
    """MALA blockwise: fragments per block (with ``context``), region-graph statistics per block
    (each contact counted once), one agglomeration of the merged graph, relabelled per block.

    The agglomeration equals :func:`affseg.agglomerate` on the same fragments for ``hist_quant_*``,
    ``max`` and ``min`` (``mean``: see :mod:`affseg.graph.mala.statistics`). Writes
    ``out_group/fragments`` and ``out_group/threshold_<t>`` (zarr, chunked by ``block_shape``).

    Resumable: every stage records its finished blocks in the graph ``store`` (a URL or path;
    default a SQLite file beside the output container) with the layout, the options and the
    input's identity; a rerun after a crash or a kill redoes only the blocks that were not
    finished. A rerun with other options or another input is refused unless ``overwrite``.

    Returns
    -------
    dict
        ``fragments`` (the number), ``edges``, ``blocks``, the written ``datasets`` and, per stage,
        the number of blocks ``computed`` by this call.
    """
    from .._checks import as_thresholds
    from ..graph.mala.agglomeration import agglomerate_graph, parse_merge_function
    from ..io import check_output_writable, open_volume, parse_address
    from ..io.volumes import check_replaceable, publish_volume, stage_volume
    from ..methods import get_method
    from .store import default_store_path, open_store, stage_identity

    with open_volume(affs_address) as vol:
        shape, channels = vol.shape[1:], vol.shape[0]
        stored = vol.data.attrs.get("offsets")
        meta = dict(voxel_size=vol.voxel_size, offset=vol.offset)
    offsets = as_offsets(offsets if offsets is not None else stored, len(shape), channels=channels)
    thresholds = as_thresholds(thresholds)
    function = parse_merge_function(merge_function)
    options = {k: v for k, v in get_method("mala").resolve({"merge_function": merge_function,
                                                            **(fragment_options or {})}).items()
               if k != "merge_function"}
    layout = BlockLayout(shape, block_shape, context=context)
    layout.check_ids_fit()
    out_group = out_group.rstrip("/")
    names = ["fragments"] + [f"threshold_{float(t)!r}" for t in thresholds]
    container = parse_address(f"{out_group}/fragments")[0]
    check_output_writable(container)
    inputs = {"affs": _input_identity(affs_address), "offsets": offsets.tolist(),
              "mask": None if mask_address is None else _input_identity(mask_address)}
    final_identity = stage_identity(layout, **inputs, fragments=options, merge_function=merge_function,
                                    thresholds=thresholds.tolist())
    store = open_store(store if store is not None else default_store_path(container), create=True)
    # outputs published by an interrupted run of this same job are its own: a rerun may finish them
    ours = store.identity("relabel") == json.loads(json.dumps(final_identity))
    for name in names:
        check_replaceable(f"{out_group}/{name}", overwrite=overwrite or ours)
    computed = {}
    n = len(layout)
    chunks = layout.block_shape
    with store:
        fragments_address = f"{out_group}/fragments"
        identity = stage_identity(layout, **inputs, fragments=options)
        todo = _pending(store, "fragments", identity, n, overwrite)
        stage_volume(fragments_address, shape=shape, dtype=np.uint64, chunks=chunks, **meta,
                     attrs={"method": "mala", **options})
        engine.map(_fragments_task, todo, affs_address, fragments_address, layout, offsets, options, mask_address,
                   desc="fragments", on_result=lambda block_id, count: store.mark_done("fragments", [block_id]))
        computed["fragments"] = len(todo)
        with_histogram = function.kind == 1 and not function.init_with_max
        identity = stage_identity(layout, **inputs, fragments=options, histogram=with_histogram)
        todo = _pending(store, "region_graph", identity, n, overwrite)
        engine.map(_statistics_task, todo, affs_address, fragments_address, layout, offsets, with_histogram,
                   desc="region graph", on_result=lambda block_id, stats: store.write_block(block_id, stats))
        computed["region_graph"] = len(todo)
        statistics = store.read_statistics(histogram=with_histogram)  # merged in block order: the same every run
        identity = final_identity
        tables = [f"threshold_{float(t)!r}" for t in thresholds]
        if not _pending(store, "agglomerate", identity, 1, overwrite):
            lookups = [store.read_lookup(name) for name in tables]
            computed["agglomerate"] = 0
        else:
            result = agglomerate_graph(statistics, thresholds=thresholds, merge_function=merge_function)
            lookups = [(result.fragment_ids, result.segment_ids[i]) for i in range(len(thresholds))]
            for name, (old, new) in zip(tables, lookups):
                store.write_lookup(name, old, new)
            store.mark_done("agglomerate", [0])
            computed["agglomerate"] = 1
        outputs = [f"{out_group}/{name}" for name in tables]
        for address, t in zip(outputs, thresholds):
            stage_volume(address, shape=shape, dtype=np.uint64, chunks=chunks, **meta,
                         attrs={"method": "mala", "threshold": float(t), "merge_function": merge_function})
        todo = _pending(store, "relabel", identity, n, overwrite)
        fragment_ids = lookups[0][0] if lookups else np.zeros(0, np.uint64)
        engine.map(_lookup_task, todo, fragments_address, outputs, layout, fragment_ids,
                   [new for _, new in lookups], desc="relabel",
                   on_result=lambda block_id, _: store.mark_done("relabel", [block_id]))
        computed["relabel"] = len(todo)
        n_fragments = int(np.count_nonzero(fragment_ids)) if lookups else 0
    from ..io import volume_exists
    from ..io.volumes import staged_exists

    for address in [fragments_address, *outputs]:
        if staged_exists(address) or not volume_exists(address):
            publish_volume(address, overwrite=True)  # ours: staged by this run or the one it resumes
    return {"fragments": n_fragments or statistics.num_nodes, "edges": statistics.num_edges, "blocks": n,
            "datasets": names, "computed": computed}
