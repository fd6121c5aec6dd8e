"""Blockwise stages over zarr volumes, run on an :class:`~affseg.blockwise.engine.Engine`.

Every function here checks everything it can before any block runs, and refuses with an
:mod:`affseg.errors` exception that names the value, leaving no output behind: the input (its
shape, offsets, mask, chunks), the layout (a block shape beyond the volume, a context larger
than the block, a block shape that straddles the input's chunks), the output address, the graph
store (a wrong URL, an unreachable server, a damaged or foreign file) and what the store
recorded (another layout, other options, an input that changed since).

Every stage records its finished blocks in the graph store, with the layout, the options and the
input's identity; a rerun after a crash or a kill redoes only the blocks that were not finished.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

import numpy as np

from .._checks import as_number, as_offsets
from ..errors import InputError, OutputExists, PathNotFound
from .engine import Engine
from .layout import BlockLayout

__all__ = ["connected_components_to_zarr", "mala_to_zarr", "mutex_watershed_to_zarr"]


# ---------------------------------------------------------------------------------------------
# checks shared by the stages


def _open(address):
    from ..io import open_volume

    return open_volume(address).data if address is not None else None


def _read_input(affs_address: str, offsets, mask_address: str | None):
    """Shape, offsets, spatial metadata and spatial chunks of an affinity dataset (checked)."""
    from ..io import open_volume

    with open_volume(affs_address) as vol:
        if vol.ndim not in (3, 4):
            raise InputError(f"{affs_address} must hold affinities (C, z, y, x) or (C, y, x), got shape {vol.shape}")
        shape, channels = vol.shape[1:], vol.shape[0]
        stored = vol.data.attrs.get("offsets")
        meta = dict(voxel_size=vol.voxel_size, offset=vol.offset)
        chunks = getattr(vol.data, "chunks", None)
    offsets = as_offsets(offsets if offsets is not None else stored, len(shape), channels=channels)
    if mask_address is not None:
        with open_volume(mask_address) as mask:
            if mask.shape != shape:
                raise InputError(f"mask {mask_address} has shape {mask.shape}, which does not match {shape}")
    return shape, offsets, meta, (tuple(chunks[1:]) if chunks is not None else None)


def _layout(shape, block_shape, context, chunks, affs_address: str) -> BlockLayout:
    """The block layout, refused where a block exceeds the volume or straddles the input's chunks."""
    layout = BlockLayout(shape, block_shape, context=context)
    beyond = [i for i, (b, n) in enumerate(zip(layout.block_shape, shape)) if b > n]
    if beyond:
        raise InputError(f"block shape {layout.block_shape} exceeds the volume {tuple(shape)} of {affs_address} "
                         f"along axis {beyond[0]}: use blocks of at most the volume's shape")
    if chunks is not None:
        for axis, (b, c, n) in enumerate(zip(layout.block_shape, chunks, shape)):
            if b < n and c < n and b % c and c % b:
                raise InputError(
                    f"block shape {layout.block_shape} does not align with the chunks {tuple(chunks)} of "
                    f"{affs_address} along axis {axis} ({b} is neither a multiple nor a divisor of {c}): "
                    f"blocks would read chunks they share only in part; choose a multiple or a divisor of the "
                    f"chunks, or rechunk the input")
    layout.check_ids_fit()
    return layout


def _output_container(address: str):
    from ..io import check_output_writable, parse_address

    container, dataset, kind = parse_address(address)
    if kind != "zarr":
        raise InputError(f"{address}: blockwise outputs are zarr (HDF5 has no safe concurrent writers); "
                         "write to a .zarr container")
    check_output_writable(container)
    return container, dataset


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


def _inputs_identity(affs_address: str, offsets: np.ndarray, mask_address: str | None) -> dict:
    """The inputs of a job, as its stages' identities record them."""
    return {"affs": _input_identity(affs_address), "offsets": offsets.tolist(),
            "mask": None if mask_address is None else _input_identity(mask_address)}


def _stage_key(dataset: str) -> str:
    """A stage-name prefix for an output dataset (letters, digits, _ . -; at most 120 characters)."""
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", dataset.strip("/"))
    if len(key) > 120:
        key = key[:100] + "." + hashlib.blake2b(dataset.encode(), digest_size=8).hexdigest()
    return key


def _plain(identity: dict) -> dict:
    return json.loads(json.dumps(identity, sort_keys=True))


def _changed_input(stored: dict, new: dict) -> str | None:
    """What changed since the store was written: an input (shape, dtype, chunks, metadata time)
    or the checkpoint (size, content) at the same address, named for the error message."""
    old_params, new_params = stored.get("parameters", {}), new.get("parameters", {})
    for name in ("affs", "mask", "raw"):
        a, b = old_params.get(name), new_params.get(name)
        if isinstance(a, dict) and isinstance(b, dict) and a.get("address") == b.get("address") and a != b:
            return f"the input {b['address']} changed (its shape, dtype, chunks or metadata time differ)"
    a, b = old_params.get("checkpoint"), new_params.get("checkpoint")
    if isinstance(a, dict) and isinstance(b, dict) and a.get("path") == b.get("path") and a != b:
        return f"the checkpoint {b['path']} changed (its size or content differ)"
    return None


def _open_job(store, container, outputs: Sequence[str], stages: dict[str, dict], final_stage: str,
              overwrite: bool):
    """Open the graph store and check it against this job before any work.

    Refuses (OutputExists) a store whose stages were run with another layout, other options or an
    input that has changed since, and outputs that exist but are not this job's (unless
    ``overwrite``). A store is created only once every check has passed."""
    from ..io import volume_exists
    from ..io.volumes import check_replaceable
    from .store import default_store_path, open_store

    existing = [a for a in outputs if volume_exists(a)]
    for address in existing:
        check_replaceable(address, overwrite=True)  # refuses datasets affseg did not write
    if store is not None:
        url = store
    else:  # beside the output container, whose folder is made as one-pass outputs' are
        url = default_store_path(container)
        if not existing:
            url.parent.mkdir(parents=True, exist_ok=True)
    try:
        opened = open_store(url, create=not existing or overwrite)
    except PathNotFound:
        if existing:  # outputs exist, and no store says they are ours
            check_replaceable(existing[0], overwrite=False)
        raise
    try:
        stages = {name: _plain(identity) for name, identity in stages.items()}
        if not overwrite:
            for name, identity in stages.items():
                stored = opened.identity(name)
                if stored is None or stored == identity:
                    continue
                changed = _changed_input(stored, identity)
                if changed is not None:
                    raise OutputExists(
                        f"{changed} since the {opened!r} recorded stage {name!r}: the finished blocks no longer "
                        "fit it; rerun with overwrite=True (--overwrite) to start again, or use another store")
                opened.begin_stage(name, identity)  # raises OutputExists naming the differences
        ours = opened.identity(final_stage) == stages[final_stage]
        for address in existing:
            check_replaceable(address, overwrite=overwrite or ours)
        done = {name: opened.begin_stage(name, identity, overwrite=overwrite) for name, identity in stages.items()}
    except BaseException:
        opened.close()
        raise
    return opened, done


def _identity(layout, **parameters) -> dict:
    from .store import stage_identity

    return stage_identity(layout, **parameters)


def _pending(done: dict, stage: str, blocks: int) -> list[int]:
    return [i for i in range(blocks) if i not in done[stage]]


def _restart(store, done: dict, stages: dict, stage: str) -> None:
    """Forget a stage's done blocks (their scratch output is gone)."""
    store.reset_stage(stage)
    done[stage] = store.begin_stage(stage, stages[stage])


def _pairs_statistics(pairs: Sequence[np.ndarray]):
    """Label pairs as the edges of an EdgeStatistics (u < v, each once), to keep in the store."""
    from ..graph.mala.statistics import EdgeStatistics

    every = np.concatenate([np.asarray(p, np.uint64).reshape(-1, 2) for p in pairs]) if pairs else \
        np.zeros((0, 2), np.uint64)
    every = np.unique(np.sort(every, axis=1), axis=0) if every.size else every
    n = every.shape[0]
    return EdgeStatistics(node_ids=np.zeros(0, np.uint64), node_sizes=np.zeros(0, np.int64), u=every[:, 0],
                          v=every[:, 1], count=np.ones(n, np.int64), sum=np.zeros(n), max=np.zeros(n, np.float32),
                          min=np.zeros(n, np.float32), histogram=None)


def _lookup_from_pairs(store, pairs_stage: str):
    from .components import merge_face_pairs

    statistics = store.read_statistics(pairs_stage, histogram=False)
    return merge_face_pairs([np.stack([statistics.u, statistics.v], axis=1)])


def _restart_lost(store, done: dict, stages: dict, n: int, *, finished: bool, first: str, scratch: str,
                  last: str, outputs: Sequence[str], products: Sequence[str]) -> bool:
    """Restart the stages whose staged output is gone (removed by hand, or never staged by a crash):
    ``first`` writes the ``scratch`` volume, ``last`` the staged ``outputs``. A finished job one
    of whose ``products`` (what it publishes) was removed since runs again from the start.
    Returns whether the job is still finished."""
    from ..io import volume_exists
    from ..io.volumes import staged_exists

    if len(done[last]) == n and not all(staged_exists(a) or volume_exists(a) for a in products):
        for stage in stages:
            _restart(store, done, stages, stage)
        return False
    if not finished and not staged_exists(scratch) and done[first]:
        _restart(store, done, stages, first)
    if len(done[last]) < n and not all(staged_exists(a) for a in outputs) and done[last]:
        _restart(store, done, stages, last)
    return finished


def _merge_stage(store, done: dict, key: str, *, pairs_stage: str, stage: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The lookup that merges the blocks' labels (from the pairs of every block), read back if a
    previous run stored it, in increasing order of the old ids; also the number of times it was
    computed (0 or 1)."""
    from ..graph.core.relabel import sorted_lookup

    computed = 0
    if done[stage]:
        old_ids, new_ids = store.read_lookup(key)
    else:
        old_ids, new_ids = _lookup_from_pairs(store, pairs_stage)
        store.write_lookup(key, old_ids, new_ids, stage=stage)
        store.mark_done(stage, [0])
        computed = 1
    old_ids, new_ids = sorted_lookup(old_ids, [new_ids])  # (as the relabel tasks take them)
    return old_ids, new_ids[0], computed


def _publish(addresses: Sequence[str]) -> None:
    from ..io import volume_exists
    from ..io.volumes import publish_volume, staged_exists

    for address in addresses:
        if staged_exists(address) or not volume_exists(address):
            publish_volume(address, overwrite=True)  # ours: staged by this run or the one it resumes


# ---------------------------------------------------------------------------------------------
# threshold + connected components


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

    return _pairs_statistics([block_face_pairs(_open(affs_address), open_staged(labels_address), offsets, layout,
                                               layout.block(block_id), threshold=threshold,
                                               mask=_open(mask_address))])


def _relabel_task(block_id, labels_address, out_address, layout, old_ids, new_ids):
    from ..graph.core.relabel import relabel_by_tables
    from ..io.volumes import open_staged

    block = layout.block(block_id)
    local = np.asarray(open_staged(labels_address)[block.write])
    open_staged(out_address)[block.write] = next(relabel_by_tables(local, old_ids, [new_ids]))


def connected_components_to_zarr(affs_address: str, out_address: str, offsets=None, *, threshold: float = 0.5,
                                 block_shape: Sequence[int], engine: Engine, mask_address: str | None = None,
                                 store=None, overwrite: bool = False) -> dict:
    """Threshold + connected components of a zarr/HDF5 affinity volume into a zarr dataset,
    block by block on ``engine`` (the same partition as :func:`affseg.connected_components`).

    Resumable: the stages (components per block, face pairs per block, one union-find, relabel
    per block) record their finished blocks in the graph ``store``; a rerun after a crash or a kill
    redoes only the blocks that were not finished.

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
        Write shape of a block (also the output chunks), at most the volume's shape, a multiple
        or a divisor of the input's chunks.
    engine : Engine
        Where the blocks run (entered already).
    mask_address : str, optional
        Mask dataset (non-zero = segment); voxels outside get 0.
    store : str or path-like, optional
        The graph store (a SQLite path or a PostgreSQL URL); default a SQLite file beside the
        output container (:func:`~affseg.blockwise.store.default_store_path`). Its stages are
        named after the output dataset, so one store serves several outputs.
    overwrite : bool
        Replace an existing output that affseg wrote, and discard the store's records of a run
        with other parameters.

    Returns
    -------
    dict
        ``dataset`` (``out_address``), ``blocks``, and per stage the number of blocks
        ``computed`` by this call.

    Raises
    ------
    InputError, CorruptInput, OutputExists, PathNotFound
        Before any block runs, naming the value (see the module's docstring).
    """
    from ..io.volumes import discard_staged, stage_volume

    shape, offsets, meta, chunks = _read_input(affs_address, offsets, mask_address)
    threshold = as_number(threshold, name="threshold")
    layout = _layout(shape, block_shape, 0, chunks, affs_address)
    container, dataset = _output_container(out_address)
    inputs = _inputs_identity(affs_address, offsets, mask_address)
    identity = _identity(layout, **inputs, threshold=threshold)
    key = f"cc:{_stage_key(dataset)}"
    names = {s: f"{key}:{s}" for s in ("components", "faces", "merge", "relabel")}
    stages = {names[s]: identity for s in names}
    store, done = _open_job(store, container, [out_address], stages, names["relabel"], overwrite)
    n = len(layout)
    computed = {}
    blocks_address = f"{out_address}.blocks"
    with store:
        finished = len(done[names["faces"]]) == n and len(done[names["relabel"]]) == n
        finished = _restart_lost(store, done, stages, n, finished=finished, first=names["components"],
                                 scratch=blocks_address, last=names["relabel"], outputs=[out_address],
                                 products=[out_address])
        args = (affs_address, blocks_address, layout, offsets, threshold, mask_address)
        todo = _pending(done, names["components"], n)
        if not finished:
            stage_volume(blocks_address, shape=shape, dtype=np.uint64, chunks=layout.block_shape, **meta)
        engine.map(_components_task, todo, *args, desc="components",
                   on_result=lambda block_id, _: store.mark_done(names["components"], [block_id]))
        computed["components"] = len(todo)
        todo = _pending(done, names["faces"], n)
        engine.map(_pairs_task, todo, *args, desc="faces",
                   on_result=lambda block_id, pairs: store.write_block(block_id, pairs, stage=names["faces"]))
        computed["faces"] = len(todo)
        old_ids, new_ids, computed["merge"] = _merge_stage(store, done, key, pairs_stage=names["faces"],
                                                          stage=names["merge"])
        todo = _pending(done, names["relabel"], n)
        if todo:
            stage_volume(out_address, shape=shape, dtype=np.uint64, chunks=layout.block_shape, **meta,
                         attrs={"method": "cc", "threshold": threshold, "block_shape": list(layout.block_shape)})
        engine.map(_relabel_task, todo, blocks_address, out_address, layout, old_ids, new_ids, desc="relabel",
                   on_result=lambda block_id, _: store.mark_done(names["relabel"], [block_id]))
        computed["relabel"] = len(todo)
    _publish([out_address])
    discard_staged(blocks_address)
    return {"dataset": out_address, "blocks": n, "computed": computed}


# ---------------------------------------------------------------------------------------------
# the Mutex Watershed


def _local_shape(layout: BlockLayout) -> tuple[int, ...]:
    """The largest read region of any block (the scratch array's block shape)."""
    return tuple(min(n, b + 2 * c) for n, b, c in zip(layout.shape, layout.block_shape, layout.context))


class _Run:
    """One block's read region in the scratch array, read by slices relative to the region."""

    def __init__(self, scratch, block):
        self.scratch, self.block = scratch, block

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self.scratch[(self.block.id,) + tuple(key)])


def _mws_block_task(block_id, affs_address, runs_address, layout, offsets, options, mask_address):
    from ..io.volumes import open_staged
    from .mutex import block_mutex_watershed

    block = layout.block(block_id)
    labels = block_mutex_watershed(_open(affs_address), offsets, layout, block, mask=_open(mask_address), **options)
    scratch = open_staged(runs_address)
    padded = np.zeros(scratch.shape[1:], np.uint64)
    padded[tuple(slice(0, s) for s in labels.shape)] = labels
    scratch[block_id] = padded  # the block's own chunk, whole: idempotent


def _mws_pairs_task(block_id, runs_address, layout, overlap):
    from ..io.volumes import open_staged
    from .mutex import neighbours, stitch_pairs

    scratch = open_staged(runs_address)
    block = layout.block(block_id)
    pairs = []
    for other_id in neighbours(layout, block):
        other = layout.block(other_id)
        pairs.append(stitch_pairs(_Run(scratch, block), block, _Run(scratch, other), other, overlap=overlap))
    return _pairs_statistics(pairs)


def _mws_relabel_task(block_id, runs_address, out_address, layout, old_ids, new_ids):
    from ..graph.core.relabel import relabel_by_tables
    from ..io.volumes import open_staged

    block = layout.block(block_id)
    labels = _Run(open_staged(runs_address), block)[block.write_in_read]
    open_staged(out_address)[block.write] = next(relabel_by_tables(labels, old_ids, [new_ids]))


def _check_mws_options(offsets: np.ndarray, options: dict) -> None:
    """Refuse bad Mutex Watershed options before any block runs (a run on one voxel checks them)."""
    from ..graph.signed.mutex import mutex_watershed

    tiny = np.zeros((offsets.shape[0],) + (1,) * offsets.shape[1], np.float32)
    mutex_watershed(tiny, offsets, **options)


def mutex_watershed_to_zarr(affs_address: str, out_address: str, offsets=None, *, block_shape: Sequence[int],
                            context: int | Sequence[int], engine: Engine, bias=0.5, long_range_bias: float | None = None,
                            strides=None, randomized_strides: bool = False, rng_seed: int = 0, min_size: int = 0,
                            ties: str = "agreement", overlap: float = 0.5, mask_address: str | None = None,
                            store=None, overwrite: bool = False) -> dict:
    """The Mutex Watershed blockwise: per block with ``context``, stitched where the runs of
    neighbouring blocks agree in their overlap (see :mod:`affseg.blockwise.mutex`).

    Stages, each resumable through the graph ``store``: ``blocks`` (:func:`affseg.mutex_watershed`
    of each block's read region, kept in a scratch array ``<name>.runs`` beside the output),
    ``pairs`` (per block, the segment pairs its runs and its neighbours' agree on), ``stitch`` (one
    union-find over all pairs, a lookup table in the store) and ``relabel`` (per block). The
    result does not depend on the number of workers or the order of the blocks.

    Parameters
    ----------
    affs_address : str
        ``container/dataset`` of the affinities, (C, [z,] y, x), short- and long-range.
    out_address : str
        Zarr dataset to write, chunked by ``block_shape``.
    offsets : (C, ndim) array_like of int, optional
        Default: the dataset's ``offsets`` attribute, else nearest neighbours.
    block_shape : sequence of int
        Write shape of a block (also the output chunks), at most the volume's shape, a multiple
        or a divisor of the input's chunks.
    context : int or sequence of int
        Voxels read beyond the write region on each side: at least 1 (blocks are stitched in
        it) and at most the block shape along every axis that has more than one block. More
        context, closer to one pass (see docs/blockwise.md for measurements).
    engine : Engine
        Where the blocks run (entered already).
    bias : float or (C,) array_like of float
        Edge weight is ``affinity - bias``, as for :func:`affseg.mutex_watershed`.
    long_range_bias : float, optional
        Bias of the long-range channels (default: ``bias``).
    strides : (ndim,) or (C, ndim) array_like of int, optional
        Keep only the long-range edges on a grid with this step; per block, the grid starts at
        the read region's corner.
    randomized_strides : bool
        Keep each long-range edge with probability ``1 / prod(stride)`` instead (per block).
    rng_seed : int
        Seed of the randomized strides.
    min_size : int
        Segments under this many voxels merge into a neighbour, per block (before stitching).
    ties : {"agreement", "hash", "repulsive-first", "attractive-first"}
        Order of edges whose weights tie exactly, as for :func:`affseg.mutex_watershed` (per
        block: the hash is of the edge's index in the read region).
    overlap : float
        Fraction in [0.5, 1) of a segment's voxels in the overlap that the neighbour's run must
        give one segment for the two to merge (default one half: a majority; higher merges less).
    mask_address : str, optional
        Mask dataset (non-zero = segment); voxels outside get 0.
    store : str or path-like, optional
        The graph store (SQLite path or PostgreSQL URL); default a SQLite file beside the output
        container. Its stages are named after the output dataset.
    overwrite : bool
        Replace an existing output that affseg wrote, and discard the store's records of a run
        with other parameters.

    Returns
    -------
    dict
        ``dataset`` (``out_address``), ``blocks``, ``segments_merged`` (how many of the blocks'
        segments the stitch merged into another) and per stage the number of blocks ``computed``
        by this call.

    Raises
    ------
    InputError, CorruptInput, OutputExists, PathNotFound
        Before any block runs, naming the value (see the module's docstring).
    """
    from ..io.volumes import discard_staged, stage_volume
    from .mutex import check_context, check_overlap

    shape, offsets, meta, chunks = _read_input(affs_address, offsets, mask_address)
    layout = _layout(shape, block_shape, context, chunks, affs_address)
    check_context(layout)
    options = {"bias": bias, "long_range_bias": long_range_bias, "strides": strides,
               "randomized_strides": randomized_strides, "rng_seed": rng_seed, "min_size": min_size, "ties": ties}
    _check_mws_options(offsets, options)
    options = _plain({k: (np.asarray(v).tolist() if isinstance(v, (np.ndarray, list, tuple)) else v)
                      for k, v in options.items()})
    overlap = check_overlap(overlap)
    container, dataset = _output_container(out_address)
    inputs = _inputs_identity(affs_address, offsets, mask_address)
    key = f"mws:{_stage_key(dataset)}"
    names = {s: f"{key}:{s}" for s in ("blocks", "pairs", "stitch", "relabel")}
    blocks_identity = _identity(layout, **inputs, mws=options)
    identity = _identity(layout, **inputs, mws=options, overlap=overlap)
    stages = {names["blocks"]: blocks_identity, names["pairs"]: identity, names["stitch"]: identity,
              names["relabel"]: identity}
    store, done = _open_job(store, container, [out_address], stages, names["relabel"], overwrite)
    n = len(layout)
    computed = {}
    runs_address = f"{out_address}.runs"
    with store:
        finished = len(done[names["pairs"]]) == n and len(done[names["relabel"]]) == n
        finished = _restart_lost(store, done, stages, n, finished=finished, first=names["blocks"],
                                 scratch=runs_address, last=names["relabel"], outputs=[out_address],
                                 products=[out_address])
        if not finished:
            run_shape = _local_shape(layout)
            stage_volume(runs_address, shape=(n, *run_shape), dtype=np.uint64, chunks=(1, *run_shape),
                         attrs={"method": "mws", "layout": layout.describe()})
        todo = _pending(done, names["blocks"], n)
        engine.map(_mws_block_task, todo, affs_address, runs_address, layout, offsets, options, mask_address,
                   desc="mutex watershed", on_result=lambda block_id, _: store.mark_done(names["blocks"], [block_id]))
        computed["blocks"] = len(todo)
        todo = _pending(done, names["pairs"], n)
        engine.map(_mws_pairs_task, todo, runs_address, layout, overlap, desc="stitch",
                   on_result=lambda block_id, pairs: store.write_block(block_id, pairs, stage=names["pairs"]))
        computed["pairs"] = len(todo)
        old_ids, new_ids, computed["stitch"] = _merge_stage(store, done, key, pairs_stage=names["pairs"],
                                                            stage=names["stitch"])
        todo = _pending(done, names["relabel"], n)
        if todo:
            stage_volume(out_address, shape=shape, dtype=np.uint64, chunks=layout.block_shape, **meta,
                         attrs={"method": "mws", **options, "overlap": overlap,
                                "block_shape": list(layout.block_shape), "context": list(layout.context)})
        engine.map(_mws_relabel_task, todo, runs_address, out_address, layout, old_ids, new_ids, desc="relabel",
                   on_result=lambda block_id, _: store.mark_done(names["relabel"], [block_id]))
        computed["relabel"] = len(todo)
        merged = int(np.count_nonzero(old_ids != new_ids))
    _publish([out_address])
    discard_staged(runs_address)
    return {"dataset": out_address, "blocks": n, "segments_merged": merged, "computed": computed}


# ---------------------------------------------------------------------------------------------
# MALA

MALA_MODES = ("exact", "hierarchical")
"""How blockwise MALA agglomerates: the whole region graph at once, or lsd's block by block."""


def _fragments_task(block_id, affs_address, fragments_address, layout, offsets, options, mask_address, histogram):
    """One block's fragments, written; returns their table and, unless ``histogram`` is None, the
    statistics of the region-graph edges inside the block (its faces come later)."""
    from ..graph.core.relabel import relabel_consecutive
    from ..graph.mala.fragments import extract_fragments
    from ..graph.mala.statistics import edge_statistics
    from ..io.volumes import open_staged

    block = layout.block(block_id)
    affs = np.asarray(_open(affs_address)[(slice(None),) + block.read])
    mask = _open(mask_address)
    mask = None if mask is None else np.asarray(mask[block.read]) != 0
    fragments = extract_fragments(affs, offsets, mask=mask, **options)[block.write_in_read]
    first = layout.id_offset(block_id) + 1
    fragments, count = relabel_consecutive(fragments, start=first)
    open_staged(fragments_address)[block.write] = fragments
    table = _fragment_table(fragments, first, count, [w.start for w in block.write])
    if histogram is None:
        return table, None
    # (while the block's affinities and fragments are in memory: no second read of them)
    return table, edge_statistics(affs[(slice(None),) + block.write_in_read], fragments, offsets, histogram=histogram)


def _fragment_table(fragments: np.ndarray, first: int, count: int, origin) -> tuple[np.ndarray, ...]:
    """ids, sizes and centres (voxel coordinates of the volume) of the fragments ``first ..
    first + count - 1`` of a block whose write region starts at ``origin``."""
    from ..graph.mala.fragments import sizes_and_centres

    sizes, centres = sizes_and_centres(fragments, first, count)
    centres += np.asarray(origin, np.float64)
    return np.arange(first, first + count, dtype=np.uint64), sizes, centres  # relabel_consecutive leaves no gap


def _inside_task(block_id, affs_address, fragments_address, layout, offsets, histogram):
    """The statistics of the region-graph edges inside a block (both voxels of every contact in
    its write region), from its stored fragments: for blocks whose fragments are kept while their
    inside edges are not (a rerun with ``overwrite`` over a store of the one-stage region graph,
    or with a merge function that needs histograms where the fragments' run did not)."""
    from ..graph.mala.statistics import edge_statistics
    from ..io.volumes import open_staged

    block = layout.block(block_id)
    affs = np.asarray(_open(affs_address)[(slice(None),) + block.write])
    return edge_statistics(affs, np.asarray(open_staged(fragments_address)[block.write]), offsets,
                           histogram=histogram)


def _lower_faces(block):
    """Per axis along which a block has a lower neighbour, as slices of the block's write region
    grown by one voxel layer below (:func:`_faces_task` reads that region): the two layers
    across the face (the neighbour's last, the block's first) over the write region, and the
    block's layer within them."""
    below = [int(w.start > 0) for w in block.write]
    for axis, w in enumerate(block.write):
        if w.start == 0:
            continue
        slab = tuple(slice(0, 2) if a == axis else slice(below[a], below[a] + s.stop - s.start)
                     for a, s in enumerate(block.write))
        own = tuple(slice(1, 2) if a == axis else slice(0, s.stop - s.start) for a, s in enumerate(block.write))
        yield slab, own


def _faces_task(block_id, affs_address, fragments_address, layout, offsets, histogram):
    """The statistics of the region-graph edges across a block's lower faces: contacts whose
    upper voxel (the one carrying the affinity) is the block's, the lower one its neighbour's.
    With the edges inside each block (:func:`_fragments_task`), every contact of the volume is
    counted once. No nodes: each block's come with its inside."""
    from dataclasses import replace

    from ..graph.mala.statistics import edge_statistics, empty_edge_statistics, merge_edge_statistics
    from ..io.volumes import open_staged

    block = layout.block(block_id)
    faces = list(_lower_faces(block))
    if faces:  # one read of the block and the layers below it: its chunks decoded once, not per face
        region = tuple(slice(max(0, w.start - 1), w.stop) for w in block.write)
        affs = np.asarray(_open(affs_address)[(slice(None),) + region])
        fragments = np.asarray(open_staged(fragments_address)[region])
    per_block = np.uint64(layout.voxels_per_block)
    no_nodes = {"node_ids": np.zeros(0, np.uint64), "node_sizes": np.zeros(0, np.int64)}
    parts = []
    for slab, own in faces:
        stats = edge_statistics(affs[(slice(None),) + slab], fragments[slab], offsets, owned=own, histogram=histogram)
        # (the contacts within the block's layer are inside edges: both ends are its fragments)
        across = (stats.u - np.uint64(1)) // per_block != (stats.v - np.uint64(1)) // per_block
        parts.append(replace(stats, **no_nodes, u=stats.u[across], v=stats.v[across], count=stats.count[across],
                             sum=stats.sum[across], max=stats.max[across], min=stats.min[across],
                             histogram=None if stats.histogram is None else stats.histogram[across]))
    # (faces towards different neighbours share no edge)
    return merge_edge_statistics(parts) if parts else empty_edge_statistics(histogram=histogram)


def _graph_region(block, affs_address: str, fragments_address: str):
    """A block's affinities and fragments for its region graph with context: the read region
    and at least one voxel below the write region, whose contacts with the write region's lowest
    voxels the block owns (see edge_statistics(owned=)); and the owned region within them."""
    from ..io.volumes import open_staged

    read = tuple(slice(max(0, min(r.start, w.start - 1)), r.stop) for r, w in zip(block.read, block.write))
    owned = tuple(slice(w.start - r.start, w.stop - r.start) for w, r in zip(block.write, read))
    affs = np.asarray(_open(affs_address)[(slice(None),) + read])
    fragments = np.asarray(open_staged(fragments_address)[read])
    return affs, fragments, owned


def _scores_task(block_id, affs_address, fragments_address, layout, offsets, histogram, merge_function, thresholds):
    """lsd's hierarchical mode, one block: agglomerate the region graph of the block with its
    context at every threshold, and keep each edge the block owns with the threshold at which its
    fragments first joined (edges that never join are left out)."""
    from ..graph.mala.agglomeration import agglomerate_graph
    from ..graph.mala.levels import join_levels
    from ..graph.mala.statistics import EdgeStatistics, edge_statistics

    affs, fragments, owned = _graph_region(layout.block(block_id), affs_address, fragments_address)
    # (two passes over the region: every contact it sees, and the ones the block owns)
    seen = edge_statistics(affs, fragments, offsets, histogram=histogram)
    own = edge_statistics(affs, fragments, offsets, owned=owned, histogram=False)
    level = join_levels(agglomerate_graph(seen, thresholds=thresholds, merge_function=merge_function,
                                          overwrite_statistics=True), own.u, own.v)
    keep = np.isfinite(level)
    # stored as statistics: the contacts' count and sum, and the join level as max and min
    return EdgeStatistics(node_ids=own.node_ids, node_sizes=own.node_sizes, u=own.u[keep], v=own.v[keep],
                          count=own.count[keep], sum=own.sum[keep], max=level[keep], min=level[keep], histogram=None)


def _lookups_from_levels(statistics, thresholds: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per threshold, the fragment -> segment table that joins every stored edge whose level is
    at most it (each segment named by its smallest fragment, as agglomerate's)."""
    from .components import smallest_in_components

    n = statistics.num_edges
    ids, index = np.unique(np.concatenate([statistics.u, statistics.v]), return_inverse=True)
    iu, iv = index[:n], index[n:]
    levels = np.asarray(statistics.max, np.float32)
    return [(ids, smallest_in_components(ids, iu[keep], iv[keep]))
            for keep in (levels <= np.float32(t) for t in thresholds)]


def _lookup_task(block_id, fragments_address, out_addresses, layout, fragment_ids, segment_ids):
    from ..graph.core.relabel import relabel_by_tables
    from ..io.volumes import open_staged

    block = layout.block(block_id)
    fragments = np.asarray(open_staged(fragments_address)[block.write])
    for address, segments in zip(out_addresses, relabel_by_tables(fragments, fragment_ids, segment_ids)):
        open_staged(address)[block.write] = segments


def _load_agglomeration_kernels(merge_function: str, thresholds: np.ndarray, histogram: bool):
    """Load (or compile) the agglomeration's numba kernels in a thread, by agglomerating a graph of
    two edges, while the blocks run: the client would otherwise load them after the last block.
    Returns the started thread (its errors are left to the real call)."""
    import threading

    from ..graph.mala.agglomeration import agglomerate_graph
    from ..graph.mala.statistics import HISTOGRAM_BINS, EdgeStatistics

    values = np.array([0.25, 0.75])
    tiny = EdgeStatistics(node_ids=np.array([1, 2, 3], np.uint64), node_sizes=np.ones(3, np.int64),
                          u=np.array([1, 2], np.uint64), v=np.array([2, 3], np.uint64), count=np.ones(2, np.int64),
                          sum=values, max=values.astype(np.float32), min=values.astype(np.float32),
                          histogram=np.eye(2, HISTOGRAM_BINS, 64, np.uint32) if histogram else None)

    def load():
        try:
            # (as the real call: the same kernels)
            agglomerate_graph(tiny, thresholds=thresholds, merge_function=merge_function, overwrite_statistics=True)
            if histogram:  # the store's, which reads the merged histograms
                from ._kernels import add_packed_histograms

                add_packed_histograms(np.zeros((1, HISTOGRAM_BINS), np.uint32), np.zeros(1, np.int64),
                                      np.ones(1, np.int64), np.zeros(5, np.uint8))
        except Exception:  # (the real call reports it)
            pass

    thread = threading.Thread(target=load, name="affseg-load-agglomeration", daemon=True)
    thread.start()
    return thread


def mala_to_zarr(affs_address: str, out_group: str, offsets=None, *, thresholds: Sequence[float],
                 block_shape: Sequence[int], context: int | Sequence[int], engine: Engine,
                 merge_function: str = "hist_quant_75", fragment_options: dict | None = None,
                 mask_address: str | None = None, store=None, overwrite: bool = False,
                 mode: str = "exact") -> dict:
    """MALA blockwise: fragments per block (with ``context``), then the agglomeration, relabelled
    per block.

    ``mode="exact"``: region-graph statistics per block (each contact counted once), one
    agglomeration of the merged graph on the client. It equals :func:`affseg.agglomerate` on the
    same fragments for ``hist_quant_*``, ``max`` and ``min`` (``mean``: see
    :mod:`affseg.graph.mala.statistics`); the client holds every edge (with ``hist_quant_*``
    about 1.1 KiB each, docs/blockwise.md). ``mode="hierarchical"`` (lsd's): each block
    agglomerates its own region graph with the context at every threshold and stores each edge
    it owns whose fragments joined, with the first threshold that joined them
    (:func:`~affseg.graph.mala.levels.join_levels`); each threshold's segmentation is then the
    connected components of the stored edges at or below it. The client holds these joined edges
    only (about 100 bytes each while reading them); the result approximates the exact mode (the
    blocks do not see the whole graph: docs/blockwise.md gives the VOI between the two). Writes ``out_group/fragments`` and ``out_group/threshold_<t>``
    (zarr, chunked by ``block_shape``).

    Resumable: every stage records its finished blocks in the graph ``store`` (a URL or path;
    default a SQLite file beside the output container) with the layout, the options and the
    input's identity; a rerun after a crash or a kill redoes only the blocks that were not
    finished. A rerun with other options or another input is refused unless ``overwrite``;
    so are a block shape beyond the volume or straddling the input's chunks, a context larger
    than the block, a wrong store URL and a damaged or foreign store, all before any block runs.

    Returns
    -------
    dict
        ``fragments`` (the number), ``edges`` (of the region graph; hierarchical: the joined edges
        stored), ``blocks``, the written ``datasets``, per stage the
        number of blocks ``computed`` by this call, and ``fragments_stage``: the stage whose node
        table (``store.read_fragments(stage)``: ids, sizes, centres) the fragments stage wrote.
    """
    from .._checks import as_thresholds
    from ..graph.core.relabel import sorted_lookup
    from ..graph.mala.agglomeration import agglomerate_graph, parse_merge_function
    from ..io.volumes import stage_volume
    from ..methods import get_method

    if mode not in MALA_MODES:
        raise InputError(f"mode must be one of {', '.join(MALA_MODES)}, got {mode!r}")
    shape, offsets, meta, chunks = _read_input(affs_address, offsets, mask_address)
    thresholds = as_thresholds(thresholds)
    function = parse_merge_function(merge_function)
    options = {k: v for k, v in get_method("mala").resolve({"merge_function": merge_function,
                                                            **(fragment_options or {})}).items()
               if k != "merge_function"}
    layout = _layout(shape, block_shape, context, chunks, affs_address)
    out_group = out_group.rstrip("/")
    names = ["fragments"] + [f"threshold_{float(t)!r}" for t in thresholds]
    container, dataset = _output_container(f"{out_group}/fragments")
    inputs = _inputs_identity(affs_address, offsets, mask_address)
    with_histogram = function.kind == 1 and not function.init_with_max
    hierarchical = {"mode": mode} if mode != "exact" else {}  # (exact runs keep the identity they had)
    final_identity = _identity(layout, **inputs, fragments=options, merge_function=merge_function,
                                       thresholds=thresholds.tolist(), **hierarchical)
    key = f"mala:{_stage_key(dataset.rpartition('/')[0] or '.')}"  # one store serves every output group
    graph_stage = "scores" if hierarchical else "region_graph"
    stage = {s: f"{key}:{s}" for s in ("fragments", "inside", graph_stage, "agglomerate", "relabel")}
    stage["region_graph"] = stage[graph_stage]
    # exact: the edges inside each block come with its fragments, the region-graph stage adds
    # those across its faces ("faces": stores of the one-stage graph are refused, not misread)
    graph_identity = (_identity(layout, **inputs, fragments=options, merge_function=merge_function,
                                thresholds=thresholds.tolist(), **hierarchical) if hierarchical else
                      _identity(layout, **inputs, fragments=options, histogram=with_histogram, faces=True))
    stages = {stage["fragments"]: _identity(layout, **inputs, fragments=options),
              **({} if hierarchical else {stage["inside"]: graph_identity}),
              stage["region_graph"]: graph_identity,
              stage["agglomerate"]: final_identity, stage["relabel"]: final_identity}
    store, done = _open_job(store, container, [f"{out_group}/{name}" for name in names], stages, stage["relabel"],
                            overwrite)
    computed = {}
    n = len(layout)
    chunks = layout.block_shape
    fragments_address = f"{out_group}/fragments"
    outputs = [f"{out_group}/{name}" for name in names[1:]]
    with store:
        finished = len(done[stage["region_graph"]]) == n and len(done[stage["relabel"]]) == n
        finished = _restart_lost(store, done, stages, n, finished=finished, first=stage["fragments"],
                                 scratch=fragments_address, last=stage["relabel"], outputs=outputs,
                                 products=[fragments_address, *outputs])
        todo = _pending(done, stage["fragments"], n)
        loading = (_load_agglomeration_kernels(merge_function, thresholds, with_histogram)
                   if not hierarchical and not done[stage["agglomerate"]] else None)
        if not finished:  # (a finished job's fragments may be published already: not staged again)
            stage_volume(fragments_address, shape=shape, dtype=np.uint64, chunks=chunks, **meta,
                         attrs={"method": "mala", **options})

        def store_fragments(block_id, result):
            table, inside = result
            if inside is not None:  # first: a crash between the two leaves the fragments to redo
                store.write_block(block_id, inside, stage=stage["inside"])
            store.write_fragments(block_id, *table, stage=stage["fragments"])

        engine.map(_fragments_task, todo, affs_address, fragments_address, layout, offsets, options, mask_address,
                   None if hierarchical else with_histogram, desc="fragments", on_result=store_fragments)
        computed["fragments"] = len(todo)
        if not hierarchical and not finished:  # fragments kept without their inside edges (_inside_task)
            todo = sorted(set(range(n)) - store.done_blocks(stage["inside"]))
            if todo:
                engine.map(_inside_task, todo, affs_address, fragments_address, layout, offsets, with_histogram,
                           desc="region graph (inside blocks)",
                           on_result=lambda block_id, stats: store.write_block(block_id, stats, stage=stage["inside"]))
            computed["inside"] = len(todo) + computed["fragments"]
        elif not hierarchical:
            computed["inside"] = 0
        todo = _pending(done, stage["region_graph"], n)
        task, task_options = ((_scores_task, (with_histogram, merge_function, thresholds))
                              if hierarchical else (_faces_task, (with_histogram,)))
        engine.map(task, todo, affs_address, fragments_address, layout, offsets, *task_options,
                   desc="block agglomeration" if hierarchical else "region graph (faces)",
                   on_result=lambda block_id, stats: store.write_block(block_id, stats, stage=stage["region_graph"]))
        computed[graph_stage] = len(todo)
        # merged in block order: the same every run
        statistics = store.read_statistics(stage["region_graph"] if hierarchical else
                                           [stage["inside"], stage["region_graph"]],
                                           histogram=with_histogram and not hierarchical)
        tables = [f"{key}:threshold_{float(t)!r}" for t in thresholds]
        if done[stage["agglomerate"]]:
            lookups = [store.read_lookup(name) for name in tables]
            computed["agglomerate"] = 0
        elif hierarchical:
            lookups = _lookups_from_levels(statistics, thresholds)
        else:
            if loading is not None:
                loading.join()
            # the merged histograms (1 KiB per edge) are the agglomeration's state, not copied
            result = agglomerate_graph(statistics, thresholds=thresholds, merge_function=merge_function,
                                       overwrite_statistics=True)
            lookups = [(result.fragment_ids, result.segment_ids[i]) for i in range(len(thresholds))]
        if not done[stage["agglomerate"]]:
            for name, (old, new) in zip(tables, lookups):
                store.write_lookup(name, old, new, stage=stage["agglomerate"])
            store.mark_done(stage["agglomerate"], [0])
            computed["agglomerate"] = 1
        todo = _pending(done, stage["relabel"], n)
        for address, t in zip(outputs, thresholds):
            if todo:
                stage_volume(address, shape=shape, dtype=np.uint64, chunks=chunks, **meta,
                             attrs={"method": "mala", "threshold": float(t), "merge_function": merge_function,
                                    **hierarchical})
        fragment_ids, segment_ids = sorted_lookup(lookups[0][0] if lookups else np.zeros(0, np.uint64),
                                                  [new for _, new in lookups])
        engine.map(_lookup_task, todo, fragments_address, outputs, layout, fragment_ids, segment_ids, desc="relabel",
                   on_result=lambda block_id, _: store.mark_done(stage["relabel"], [block_id]))
        computed["relabel"] = len(todo)
    _publish([fragments_address, *outputs])
    # (every fragment is a node of the block that holds it, in both modes)
    return {"fragments": statistics.num_nodes, "edges": statistics.num_edges, "blocks": n, "datasets": names,
            "computed": computed, "fragments_stage": stage["fragments"]}
