"""A large synthetic volume written block by block (:func:`synthetic_to_zarr`), never whole in memory.

The volume is :func:`affseg.synthetic.worley_region`'s: every voxel a function of the seed and its
global position, so each block is computed on its own and the result does not depend on the block
shape, the order of the blocks or the number of workers.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from .engine import Engine

__all__ = ["DATASETS", "STAGE", "check_synthetic_options", "synthetic_to_zarr"]

DATASETS = ("labels", "raw", "affs")
STAGE = "synth:blocks"  # one synthetic volume per graph store
GENERATOR = "worley-1"  # recorded in the store: a change of the generator's output bumps it


def _synth_block_task(block_id, container, layout, seed, offsets, noise, affs_dtype):
    from ..io.volumes import open_staged
    from ..synthetic import worley_region

    block = layout.block(block_id)
    volume = worley_region(layout.shape, block.write, seed=seed, offsets=offsets, noise=noise,
                           affs_dtype=affs_dtype)
    # whole chunks of this block only: a retried block overwrites the same bits
    open_staged(f"{container}/labels")[block.write] = volume.labels
    open_staged(f"{container}/raw")[block.write] = volume.raw
    open_staged(f"{container}/affs")[(slice(None),) + block.write] = volume.affs


def check_synthetic_options(out_container: str | os.PathLike, shape: Sequence[int], *, block_shape: Sequence[int],
                            seed: int = 0, offsets: ArrayLike | None = None, noise: bool = True,
                            affs_dtype: str = "uint8", **_ignored) -> dict:
    """The options of :func:`synthetic_to_zarr` checked, without touching the graph store.

    Parameters
    ----------
    out_container, shape, block_shape, seed, offsets, noise, affs_dtype
        As for :func:`synthetic_to_zarr`.
    **_ignored
        Its other options (``store``, ``overwrite``), checked when it runs.

    Returns
    -------
    dict
        ``out_container`` (str), ``container`` (Path), ``layout`` (BlockLayout), and ``shape``,
        ``seed``, ``offsets``, ``noise``, ``affs_dtype`` as checked.

    Raises
    ------
    InputError
        As :func:`synthetic_to_zarr` does for these options.
    OutputNotWritable
        If the container cannot be written.
    """
    from ..synthetic import worley_options
    from .pipeline import _layout, _output_container

    shape, seed, offsets, noise, affs_dtype = worley_options(shape, seed=seed, offsets=offsets, noise=noise,
                                                             affs_dtype=affs_dtype)
    out_container = os.fspath(out_container).rstrip("/")
    container, _ = _output_container(f"{out_container}/{DATASETS[0]}")
    layout = _layout(shape, block_shape, 0, None, out_container)
    return {"out_container": out_container, "container": container, "layout": layout, "shape": shape,
            "seed": seed, "offsets": offsets, "noise": noise, "affs_dtype": affs_dtype}


def synthetic_to_zarr(out_container: str | os.PathLike, shape: Sequence[int], *, block_shape: Sequence[int],
                      engine: Engine | None = None, seed: int = 0, offsets: ArrayLike | None = None,
                      noise: bool = True, affs_dtype: str = "uint8", store=None, overwrite: bool = False) -> dict:
    """Write a synthetic volume of any size block by block: ``labels``, ``raw`` and ``affs``.

    The data are :func:`affseg.synthetic.worley_region`'s (objects about 20 voxels across,
    elongated along z; raw with dark membranes; affinities made hard with gaps, spurious
    boundaries and noise unless ``noise=False``). A worker holds one block at a time; every
    voxel depends on ``seed`` and its global position only, so the output is the same bit for
    bit for any block shape, block order or number of workers, and equals ``worley_region`` of
    the whole volume.

    The datasets are staged under hidden names and published when every block is done. Each
    finished block is recorded in the graph ``store``; a rerun after a crash or a kill writes only
    the blocks that were not finished. A finished output is replaced only with ``overwrite``.

    Parameters
    ----------
    out_container : str or path-like
        A zarr container (``synth.zarr``), created if absent; the datasets ``labels`` (uint64),
        ``raw`` (uint8) and ``affs`` ((C, z, y, x), with an ``offsets`` attribute) are chunked by
        ``block_shape`` (one chunk of ``affs`` holds every channel).
    shape : (z, y, x) sequence of int
        Volume shape.
    block_shape : (z, y, x) sequence of int
        Write shape of a block (the chunks), at most the volume's shape; the last blocks along
        an axis are shrunk.
    engine : Engine, optional
        Where the blocks run (entered already); default serially in this process.
    seed : int
        Seed of the volume, >= 0.
    offsets : (C, 3) array_like of int, optional
        Offsets of the affinities; default the nearest neighbours ``-e_d``.
    noise : bool
        Make the affinities hard (else exactly the labels' affinities).
    affs_dtype : {"uint8", "float32"}
        Affinities scaled to 0..255 (a quarter of the bytes; the segmentation methods read
        uint8 affinities as value / 255), or in [0, 1].
    store : str or path-like, optional
        The graph store (SQLite path or PostgreSQL URL); default a SQLite file beside the
        container (``synth.zarr.graph.sqlite``). One synthetic volume per store.
    overwrite : bool
        Replace existing datasets that affseg wrote, and discard the store's records of a run
        with other parameters.

    Returns
    -------
    dict
        ``container``, ``datasets``, ``blocks`` and ``computed`` (the blocks written by this call).

    Raises
    ------
    InputError
        Before any block runs, naming the value: a shape that is not 3 positive sizes, a block
        shape that is not 3 positive sizes or exceeds the volume, a seed, offsets, ``noise`` or
        ``affs_dtype`` out of range, an output that is not zarr, a wrong store URL.
    OutputExists, CorruptInput
        Before any block runs: datasets that exist and are not this job's (unless ``overwrite``;
        never datasets affseg did not write), a store whose run had other parameters, a damaged
        or foreign store.
    """
    from ..io.volumes import stage_volume
    from .pipeline import _identity, _open_job, _pending, _publish, _restart_lost

    if engine is not None and not isinstance(engine, Engine):
        from ..errors import InputError

        raise InputError(f"engine must be an affseg.blockwise.engine.Engine, got {type(engine).__name__}")
    plan = check_synthetic_options(out_container, shape, block_shape=block_shape, seed=seed, offsets=offsets,
                                   noise=noise, affs_dtype=affs_dtype)
    out_container, container, layout = plan["out_container"], plan["container"], plan["layout"]
    shape, seed, offsets, noise, affs_dtype = (plan[k] for k in ("shape", "seed", "offsets", "noise", "affs_dtype"))
    outputs = [f"{out_container}/{name}" for name in DATASETS]
    identity = _identity(layout, generator=GENERATOR, seed=seed, offsets=offsets.tolist(), noise=noise,
                         affs_dtype=affs_dtype)
    stages = {STAGE: identity}
    store, done = _open_job(store, container, outputs, stages, STAGE, overwrite)
    n = len(layout)
    with store:
        _restart_lost(store, done, stages, n, finished=len(done[STAGE]) == n, first=STAGE, scratch=outputs[0],
                      last=STAGE, outputs=outputs, products=outputs)
        todo = _pending(done, STAGE, n)
        if todo:
            attrs = {"synthetic": GENERATOR, "seed": seed, "noise": noise}
            stage_volume(outputs[0], shape=shape, dtype=np.uint64, chunks=layout.block_shape, attrs=attrs)
            stage_volume(outputs[1], shape=shape, dtype=np.uint8, chunks=layout.block_shape, attrs=attrs)
            stage_volume(outputs[2], shape=(len(offsets), *shape), dtype=affs_dtype,
                         chunks=(len(offsets), *layout.block_shape), axes=["c^", "z", "y", "x"],
                         attrs={**attrs, "offsets": offsets.tolist()})
        with contextlib.nullcontext(engine) if engine is not None else Engine(workers=0) as running:
            running.map(_synth_block_task, todo, out_container, layout, seed, offsets, noise, affs_dtype,
                        desc="synth", on_result=lambda block_id, _: store.mark_done(STAGE, [block_id]))
    _publish(outputs)
    return {"container": out_container, "datasets": list(DATASETS), "blocks": n, "computed": len(todo)}
