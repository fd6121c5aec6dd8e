"""Tiled prediction block by block on Dask workers (:func:`predict_to_zarr`).

A block is a set of whole tiles of :func:`affseg.learn.predict.predict`'s tiling: its shape is a
multiple of the tile step, so its tiles are exactly the tiles the one-process prediction computes
for that region, each from the same padded input, and the outputs are the same bits.

Each worker process loads the checkpoint once, not once per block: the model is kept in a
module-level cache of the worker (:func:`cached_model`), keyed by the checkpoint's resolved path,
size and modification time and the device, and reused by every later block of that worker. A
worker runs torch with one thread (the workers are the cores).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError
from .engine import Engine

__all__ = ["cached_model", "check_predict_options", "predict_to_zarr"]

# checkpoint key -> (model, state); one entry: a worker runs one prediction at a time
_MODELS: dict[tuple, tuple] = {}
# checkpoint key -> how many times this process loaded it (read back by the tests and the summary)
_LOADS: dict[tuple, int] = {}


def _checkpoint_key(checkpoint: str | os.PathLike, device: str) -> tuple:
    path = Path(checkpoint).resolve()
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns, str(device)


def cached_model(checkpoint: str | os.PathLike, device: str = "cpu"):
    """The model and contents of a checkpoint, loaded once per process.

    The first call in a process loads the checkpoint with the safe loader
    (:func:`affseg.learn.train.load_checkpoint`, plain data only); later calls with the same
    checkpoint (resolved path, size and modification time) and device return the same objects.
    A different checkpoint replaces the cached one (a process keeps one model).

    Parameters
    ----------
    checkpoint : path
        A ``.pt`` file written by :func:`affseg.learn.train.train`.
    device : str
        Where the model runs.

    Returns
    -------
    model : UNet
        In eval mode on ``device``.
    state : dict
        The checkpoint's contents.
    """
    from ..learn.train import load_checkpoint

    try:
        key = _checkpoint_key(checkpoint, device)
    except OSError:  # missing or unreadable: the loader names it
        return load_checkpoint(checkpoint, device)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = load_checkpoint(checkpoint, device)
        _LOADS[key] = _LOADS.get(key, 0) + 1
    return _MODELS[key]


def _predict_block_task(block_id, checkpoint, raw_address, container, heads, layout, plan, device, threads):
    """Predict the tiles of one block and write them (whole chunks of the staged outputs).
    Returns this process's id and how many times it loaded the checkpoint."""
    import torch

    from ..io import open_volume
    from ..io.volumes import open_staged
    from ..learn.predict import predict_tile

    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    model, _state = cached_model(checkpoint, device)
    block = layout.block(block_id)
    start = np.array([s.start for s in block.write])
    outputs = {name: np.zeros((channels, *block.shape), np.float32) for name, channels in heads.items()}
    with open_volume(raw_address) as raw:
        for corner in np.ndindex(*[-(-n // t) for n, t in zip(block.shape, plan.step)]):
            offset = np.array(corner) * np.array(plan.step)
            tile = predict_tile(model, raw.data, plan, start + offset, device)
            for name, values in tile.items():
                outputs[name][(slice(None),) + tuple(slice(o, o + s) for o, s in zip(offset, values.shape[1:]))] = values
    for name, values in outputs.items():
        open_staged(f"{container}/{name}")[(slice(None),) + block.write] = values
    return os.getpid(), _LOADS[_checkpoint_key(checkpoint, device)]


def _checkpoint_digest(checkpoint: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with checkpoint.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_predict_options(checkpoint: str | os.PathLike, raw_address: str, out_container: str | os.PathLike, *,
                          block_shape: Sequence[int], device: str = "cpu", tile: Sequence[int] | None = None,
                          **_ignored) -> dict:
    """The options of :func:`predict_to_zarr` checked, without touching the graph store.

    Loads the checkpoint on the CPU (once per process, :func:`cached_model`) to learn the network's tiling.

    Parameters
    ----------
    checkpoint, raw_address, out_container, block_shape, device, tile
        As for :func:`predict_to_zarr`.
    **_ignored
        Its other options (``engine``, ``store``, ``overwrite``), checked when it runs.

    Returns
    -------
    dict
        ``checkpoint`` (resolved Path), ``raw_address`` (str), ``out_container`` (str), ``container``
        (Path), ``group`` (the dataset path of the outputs' group inside the container, "" for its
        root), ``layout`` (BlockLayout), ``plan`` (TilePlan), ``voxel_size``, ``device``.

    Raises
    ------
    InputError
        As :func:`predict_to_zarr` does for these options.
    UnsafeCheckpoint, CorruptInput, PathNotFound
        For a checkpoint that holds more than plain data, is damaged, or does not exist.
    OutputNotWritable
        If the container cannot be written.
    """
    from .._checks import describe
    from ..io import open_volume
    from ..learn.data import check_raw_dtype
    from ..learn.predict import check_not_input, tile_plan
    from .layout import _as_shape
    from .pipeline import _layout, _output_container

    if not isinstance(raw_address, (str, os.PathLike)):
        raise InputError(f"raw_address must be a dataset address (data.zarr/raw, data.h5/raw) that the workers read, "
                         f"got {describe(raw_address)}")
    if not isinstance(device, str) or not device:
        raise InputError(f"device must be a string like 'cpu' or 'cuda:0', got {describe(device)}")
    raw_address = os.fspath(raw_address)
    checkpoint = Path(checkpoint)
    # the safe loader, on the CPU (the workers may have the GPU this process lacks); refuses a missing or
    # unsafe file. A run in this process on the CPU reuses the loaded model.
    model, state = cached_model(checkpoint, "cpu")
    with open_volume(raw_address) as raw:
        check_raw_dtype(raw.data, raw_address)
        shape, voxel_size = tuple(raw.shape), tuple(raw.voxel_size)
    plan = tile_plan(model, state, shape, tile)
    block_shape = _as_shape(block_shape, len(shape), name="block_shape", minimum=1)
    off = [(axis, b) for axis, (b, t, n) in enumerate(zip(block_shape, plan.step, shape)) if b % t and b < n]
    if off:
        axis, b = off[0]
        t = plan.step[axis]
        raise InputError(
            f"block shape {block_shape} is not a multiple of the tile step {plan.step} along axis {axis} ({b}): a "
            f"block must hold whole tiles to predict what one process does; use e.g. {max(t, b // t * t)} or "
            f"{(b // t + 1) * t} there (or --tile to change the step)")
    # a block of at least the volume along an axis holds all its tiles: one block along it
    block_shape = tuple(min(b, n) for b, n in zip(block_shape, shape))
    out_container = os.fspath(out_container).rstrip("/")
    container, first = _output_container(f"{out_container}/{next(iter(plan.heads))}")
    group = first.rpartition("/")[0]
    check_not_input(raw_address, container / group, plan.heads)
    layout = _layout(shape, block_shape, 0, None, raw_address)
    return {"checkpoint": checkpoint.resolve(), "raw_address": raw_address, "out_container": out_container,
            "container": container, "group": group, "layout": layout, "plan": plan, "voxel_size": voxel_size,
            "device": device}


def predict_to_zarr(checkpoint: str | os.PathLike, raw_address: str, out_container: str | os.PathLike, *,
                    block_shape: Sequence[int], engine: Engine | None = None,
                    store: str | os.PathLike | None = None, overwrite: bool = False,
                    device: str = "cpu", tile: Sequence[int] | None = None) -> dict:
    """Run a checkpoint over a raw volume block by block: ``predict`` on Dask workers.

    The outputs are those of :func:`affseg.learn.predict.predict` with the same ``tile``, bit for
    bit (on the same device): each block predicts whole tiles of its tiling, every tile from the
    same padded input. Each worker loads the checkpoint once (:func:`cached_model`) and runs torch
    with one thread; ``engine=None`` runs in this process (leaving torch's threads alone).

    The datasets are staged under hidden names and published when every block is done. Each
    finished block is recorded in the graph ``store``; a rerun after a crash or a kill predicts
    only the blocks that were not finished. A finished output is replaced only with ``overwrite``.

    Parameters
    ----------
    checkpoint : path
        A ``.pt`` file written by :func:`affseg.learn.train.train`, loaded as plain data only
        (``weights_only``).
    raw_address : str
        The raw dataset (``data.zarr/raw``, ``data.h5/raw``), uint8 or float, axes as the
        network's (or a (z, y, x) stack for a 2D network, predicted section by section).
    out_container : str or path-like
        A zarr container or group (``pred.zarr``); writes ``affs`` (and ``lsds`` if the network
        has them) with the raw's voxel size and the affinity ``offsets`` attribute, chunked by
        ``block_shape`` (one chunk holds every channel).
    block_shape : sequence of int
        Write shape of a block (the chunks), one size per axis of the raw: a multiple of the
        tile step (:func:`affseg.learn.predict.tile_shape`; 1 along z for sections), or at least
        the volume's size along an axis (then one block spans it). The last blocks are shrunk.
    engine : Engine, optional
        Where the blocks run (entered already); default serially in this process.
    store : str or path-like, optional
        The graph store (SQLite path or PostgreSQL URL); default a SQLite file beside the
        container (``pred.zarr.graph.sqlite``). One prediction per output group.
    overwrite : bool
        Replace existing outputs that affseg wrote, and discard the store's records of a run
        with other parameters.
    device : str
        Where the network runs on every worker (``"cpu"``, ``"cuda"``, ``"cuda:1"``); part of
        the job's identity (devices may differ in the last bits), so a resume uses the same one.
    tile : sequence of int, optional
        Wanted output tile shape (the network's axes); default about 64 voxels per axis, as
        :func:`~affseg.learn.predict.predict`.

    Returns
    -------
    dict
        ``container``, ``datasets`` (the heads written), ``blocks``, ``computed`` (the blocks
        predicted by this call), ``step`` (the tile step), ``processes`` (the worker processes
        that predicted blocks in this call) and ``model_loads`` (how many times they loaded the
        checkpoint: one per process, unless a worker restarted or an earlier job in it used
        another checkpoint).

    Raises
    ------
    InputError
        Before any block runs, naming the value: a raw that is not a dataset address, not uint8 or
        float, or not of the network's dimensions; a network that is not valid-padded; a block
        shape that is not a multiple of the tile step; an output that is not zarr, or that would
        replace the raw; a wrong store URL.
    UnsafeCheckpoint, CorruptInput, PathNotFound
        For a checkpoint that holds more than plain data, is damaged, or does not exist.
    OutputExists
        Before any block runs: datasets that exist and are not this job's (unless ``overwrite``;
        never datasets affseg did not write), a store whose run had other parameters.
    """
    from ..io.volumes import stage_volume
    from .pipeline import _identity, _input_identity, _open_job, _pending, _publish, _restart_lost, _stage_key

    if engine is not None and not isinstance(engine, Engine):
        raise InputError(f"engine must be an affseg.blockwise.engine.Engine, got {type(engine).__name__}")
    checked = check_predict_options(checkpoint, raw_address, out_container, block_shape=block_shape, device=device,
                                    tile=tile)
    checkpoint, raw_address, layout, plan = (checked[k] for k in ("checkpoint", "raw_address", "layout", "plan"))
    container, group = checked["container"], checked["group"]
    prefix = f"{container}/{group}" if group else str(container)
    outputs = [f"{prefix}/{name}" for name in plan.heads]
    stage = f"predict:{_stage_key(group)}:blocks" if group else "predict:blocks"
    stat = checkpoint.stat()
    identity = _identity(layout, checkpoint={"path": str(checkpoint), "bytes": stat.st_size,
                                             "digest": _checkpoint_digest(checkpoint)},
                         raw=_input_identity(raw_address), step=list(plan.step), in_tile=list(plan.in_tile),
                         heads=plan.heads, offsets=plan.offsets, device=str(device))
    stages = {stage: identity}
    store, done = _open_job(store, container, outputs, stages, stage, overwrite)
    n = len(layout)
    loads: dict[int, int] = {}

    def record(block_id, result):
        pid, count = result
        loads[pid] = max(loads.get(pid, 0), count)
        store.mark_done(stage, [block_id])

    with store:
        _restart_lost(store, done, stages, n, finished=len(done[stage]) == n, first=stage, scratch=outputs[0],
                      last=stage, outputs=outputs, products=outputs)
        todo = _pending(done, stage, n)
        if todo:
            axes = ["c^", "z", "y", "x"][-(len(layout.shape) + 1):]
            for address, (name, channels) in zip(outputs, plan.heads.items()):
                stage_volume(address, shape=(channels, *layout.shape), dtype=np.float32,
                             chunks=(channels, *layout.block_shape), axes=axes,
                             voxel_size=checked["voxel_size"], offset=[0.0] * len(layout.shape),
                             attrs={"offsets": plan.offsets} if name == "affs" else None)
        serial = engine is None or engine.serial
        with contextlib.nullcontext(engine) if engine is not None else Engine(workers=0) as running:
            running.map(_predict_block_task, todo, str(checkpoint), raw_address, prefix, plan.heads, layout, plan,
                        device, None if serial else 1, desc="predict", on_result=record)
    _publish(outputs)
    return {"container": prefix, "datasets": list(plan.heads), "blocks": n, "computed": len(todo),
            "step": list(plan.step), "processes": len(loads), "model_loads": sum(loads.values())}
