"""Tiled prediction of a trained network over a large volume, written to zarr chunk by chunk.

Tiles are placed on a grid whose step is a multiple of the network's total downsampling factor,
so a valid-padding U-Net computes exactly what one pass over the whole (zero-padded) volume
would. Each tile's output is one zarr chunk; the volume is never held in memory. The output is
written under a hidden name and renamed into place when complete; an interrupted run of the same
prediction (checkpoint, raw address, geometry) resumes from the tiles already written.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, OutputExists
from .data import check_raw_dtype, open_array, read_padded, to_unit
from .train import load_checkpoint
from .unet import UNet

__all__ = ["predict", "tile_shape"]


def tile_shape(model: UNet, wanted: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A valid output shape near ``wanted`` (at least the total factor) and the tile step: the
    largest multiple of the total factor that fits in it. Neighbouring tiles overlap by the
    difference, which is recomputed and discarded.

    Parameters
    ----------
    model : UNet
        The network (its total downsampling factor and valid output shapes).
    wanted : sequence of int
        Wanted output tile shape, one size per spatial axis of the network.

    Returns
    -------
    output : tuple of int
        Per axis the largest valid output size <= the wanted one (raised to the total factor),
        or the smallest above where that is below the total factor.
    step : tuple of int
        ``output`` rounded down to a multiple of the total factor.
    """
    factor = np.array(model.total_factor)
    near = model.valid_output_shapes_near(tuple(int(w) for w in np.maximum(tuple(wanted), factor)))
    below, above = np.array(near[0]), np.array(near[-1])
    output = np.where(below >= factor, below, above)  # each axis valid on its own
    step = (output // factor) * factor
    return tuple(int(o) for o in output), tuple(int(s) for s in step)


def predict(checkpoint: str | os.PathLike, raw: str | os.PathLike | np.ndarray, output: str | os.PathLike, *,
            tile: Sequence[int] | None = None, device: str | torch.device = "cpu", overwrite: bool = False,
            progress: bool = False) -> dict[str, str]:
    """Run a checkpoint over ``raw`` and write each head to ``output/<head>`` (zarr).

    Parameters
    ----------
    checkpoint : path
        A ``.pt`` file written by :func:`affseg.learn.train.train`. It is loaded as plain data
        only (``weights_only``): one that holds anything else is refused with
        :class:`~affseg.errors.UnsafeCheckpoint`, a damaged one with
        :class:`~affseg.errors.CorruptInput`, before anything is written.
    raw : str or array
        A volume address (``data.h5/raw``) or a uint8/float array, axes as the network's; for a
        2D network also a (z, y, x) stack of sections, predicted section by section into 3D
        affinities: a first channel ``[-1, 0, 0]`` of 0 (sections are separate objects), then
        the network's offsets with a z component of 0.
    output : path
        A zarr group, e.g. ``pred.zarr``; writes ``pred.zarr/affs`` (and ``lsds``) with the
        raw's voxel size and the affinity ``offsets`` attribute.
    tile : tuple of int, optional
        Wanted output tile shape; default about 64 voxels per axis. The chunks of the output are
        the tile step (see :func:`tile_shape`).
    device : str or torch.device
        Where the network runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    overwrite : bool
        Replace existing outputs (only datasets affseg wrote).
    progress : bool
        Show a tqdm progress bar over the tiles.

    Returns
    -------
    written : dict of str to str
        Head name (``affs``, ``lsds``) to the path of the zarr array written.

    Raises
    ------
    InputError
        If the network is not valid-padded, raw is not uint8 or float or does not have the
        network's number of dimensions, or the output would replace the input.
    UnsafeCheckpoint, CorruptInput, PathNotFound
        For a checkpoint that holds more than plain data, is damaged, or does not exist.
    OutputExists
        If an output exists and may not be replaced.
    OutputNotWritable
        If the output cannot be written.
    """
    model, state = load_checkpoint(checkpoint, device)
    if model.padding != "valid":
        raise InputError("tiled prediction needs a valid-padding U-Net (same padding sees the tile borders)")
    data, voxel_size = open_array(raw)
    check_raw_dtype(data, raw)
    sections = model.dims == 2 and data.ndim == 3  # a stack of 2D sections, predicted one by one
    if data.ndim != model.dims and not sections:
        raise InputError(f"raw has shape {tuple(data.shape)} but the network is {model.dims}D")
    out_tile, step = tile_shape(model, tile if tile is not None else [64] * model.dims)
    in_tile = np.array(model.input_shape(out_tile))
    context = (in_tile - np.array(out_tile)) // 2
    offsets = state["config"]["targets"]["offsets"]
    heads = dict(model.head_channels)
    if sections:
        # tiles of one section; the in-plane offsets become 3D ones within a section, after a
        # z channel of 0 (sections are separate objects, as 2D labels are), so that every method,
        # MALA's fragments and agglomeration too, reads the result as 3D affinities
        step, in_tile, context = (1, *step), np.array((1, *in_tile)), np.array((0, *context))
        offsets = [[-1, 0, 0]] + [[0, *o] for o in offsets]
        heads["affs"] += 1
    grid = [range(0, s, t) for s, t in zip(data.shape, step)]
    container = Path(output)
    if not isinstance(raw, np.ndarray):
        from ..io import parse_address

        source, dataset, _ = parse_address(raw)
        if source.resolve() == container.resolve() and dataset in model.head_channels:
            raise InputError(f"the output {container / dataset} would replace the input {raw}; choose another output")
    identity = {"checkpoint": str(Path(checkpoint).resolve()), "checkpoint_bytes": Path(checkpoint).stat().st_size,
                "checkpoint_mtime": Path(checkpoint).stat().st_mtime, # an in-memory raw is never resumed: nothing identifies it
                "raw": str(raw) if not isinstance(raw, np.ndarray) else uuid.uuid4().hex,
                "shape": list(data.shape), "step": list(step)}
    staged = _stage(container, heads, data.shape, step, voxel_size, offsets, overwrite)
    done = _read_progress(staged["progress"], identity)
    corners = [c for c in np.ndindex(*[len(g) for g in grid]) if c not in done]
    from tqdm.auto import tqdm

    with staged["progress"].open("a") as log, torch.no_grad():
        for index in tqdm(corners, desc="predict", unit="tile", disable=not progress):
            start = np.array([g[i] for g, i in zip(grid, index)])
            x = to_unit(read_padded(data, start - context, in_tile))
            outputs = model(torch.from_numpy(x[0] if sections else x)[None, None].to(device))
            for name, arr in staged["arrays"].items():
                block = outputs[name][0].cpu().numpy()
                if sections:
                    block = block[:, None]
                    if name == "affs":
                        block = np.concatenate([np.zeros_like(block[:1]), block])
                stop = np.minimum(start + step, data.shape)
                region = tuple(slice(a, b) for a, b in zip(start, stop))
                arr[(slice(None),) + region] = block[(slice(None),) + tuple(slice(0, b - a) for a, b in zip(start, stop))]
            log.write(json.dumps([int(i) for i in index]) + "\n")
            log.flush()
    return _publish(container, staged)


def _stage(container: Path, heads: dict, shape, out_tile, voxel_size, offsets, overwrite: bool) -> dict:
    import zarr

    from ..io import check_output_writable
    from ..io.volumes import WRITTEN_BY, check_replaceable, volume_exists

    for name in heads:
        target = container / name
        if target.exists() and not volume_exists(target):  # a folder or file that is not a dataset
            raise OutputExists(f"{target} exists and is not an affseg output; choose another output")
        check_replaceable(target, overwrite=overwrite)
    check_output_writable(container)
    root = zarr.open_group(store=str(container), mode="a")
    arrays = {}
    progress = container / f".{'-'.join(heads)}.progress.jsonl"
    for name, channels in heads.items():
        hidden = f".{name}.partial"
        full = (channels,) + tuple(shape)
        chunks = (channels,) + tuple(int(t) for t in out_tile)
        if hidden in root and (root[hidden].shape != full or root[hidden].chunks != chunks):
            shutil.rmtree(container / hidden)  # a partial run of another geometry
        if hidden not in root:
            progress.unlink(missing_ok=True)  # finished tiles of a partial array that is gone
            arr = root.create_array(hidden, shape=full, dtype=np.float32, chunks=chunks, fill_value=0)
            axes = ["c^"] + ["z", "y", "x"][-len(shape):]
            arr.attrs.update({"written_by": WRITTEN_BY, "axes": axes, "voxel_size": voxel_size or [1.0] * len(shape), "units": ["nm"] * len(shape),
                              "offset": [0.0] * len(shape)})
            if name == "affs":
                arr.attrs["offsets"] = offsets
        arrays[name] = root[hidden]
    return {"arrays": arrays, "progress": progress}


def _read_progress(path: Path, identity: dict) -> set:
    """Tiles finished by an interrupted run of the same prediction; the file's first line names
    the prediction, one line per finished tile follows (a torn last line is ignored). Tiles of a
    different prediction (checkpoint, raw, geometry) are not reused: the file starts over."""
    done = set()
    if path.exists():
        lines = path.read_text().splitlines()
        if lines and _parse(lines[0]) == identity:
            done = {tuple(t) for t in map(_parse, lines[1:]) if isinstance(t, list)}
    if not done:
        path.write_text(json.dumps(identity) + "\n")
    return done


def _parse(line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _publish(container: Path, staged: dict) -> dict[str, str]:
    written = {}
    for name in staged["arrays"]:
        final = container / name
        if final.exists():
            shutil.rmtree(final)
        os.rename(container / f".{name}.partial", final)
        written[name] = str(final)
    staged["progress"].unlink(missing_ok=True)
    return written
