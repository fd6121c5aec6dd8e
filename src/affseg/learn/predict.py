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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, OutputExists
from .data import check_raw_dtype, open_array, read_padded, to_unit
from .train import load_checkpoint
from .unet import UNet

__all__ = ["TilePlan", "check_not_input", "predict", "predict_tile", "tile_plan", "tile_shape"]


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


@dataclass(frozen=True)
class TilePlan:
    """How :func:`predict` tiles a volume: the geometry both the one-process and the blockwise
    prediction (:mod:`affseg.blockwise.predict`) follow, so that they compute the same tiles.

    Attributes
    ----------
    shape : tuple of int
        Spatial shape of the raw and of the outputs.
    sections : bool
        A 2D network over a (z, y, x) stack, section by section.
    step : tuple of int
        The tile step in output voxels, one per axis of ``shape`` (1 along z for sections):
        tiles start at multiples of it.
    in_tile, context : tuple of int
        The network's input shape for a tile and the context read on each side (0 along z for
        sections).
    offsets : list of list of int
        The affinities' offsets as written (3D for sections: a first ``[-1, 0, 0]`` channel).
    heads : dict of str to int
        Output name (``affs``, ``lsds``) to its number of channels as written.
    """

    shape: tuple[int, ...]
    sections: bool
    step: tuple[int, ...]
    in_tile: tuple[int, ...]
    context: tuple[int, ...]
    offsets: list
    heads: dict

    @property
    def grid(self) -> tuple[int, ...]:
        """Tiles per axis."""
        return tuple(-(-s // t) for s, t in zip(self.shape, self.step))


def tile_plan(model: UNet, state: dict, shape: Sequence[int], tile: Sequence[int] | None = None) -> TilePlan:
    """The tiling of a raw of ``shape`` for a checkpoint's network (checked).

    Parameters
    ----------
    model : UNet
        The network (from :func:`affseg.learn.train.load_checkpoint`).
    state : dict
        The checkpoint's contents (its config's offsets).
    shape : sequence of int
        The raw's shape: the network's dimensions, or (z, y, x) for a 2D network.
    tile : sequence of int, optional
        Wanted output tile shape (network axes); default 64 per axis.

    Returns
    -------
    TilePlan

    Raises
    ------
    InputError
        If the network is not valid-padded or the raw does not have its number of dimensions.
    """
    if model.padding != "valid":
        raise InputError("tiled prediction needs a valid-padding U-Net (same padding sees the tile borders)")
    if hasattr(model, "branches"):
        raise InputError("this checkpoint's model has mask branches (model.type enb or snb+enb): predict it "
                         "with affseg predict without --blockwise (affseg.learn.predict.predict)")
    shape = tuple(int(s) for s in shape)
    sections = model.dims == 2 and len(shape) == 3  # a stack of 2D sections, predicted one by one
    if len(shape) != model.dims and not sections:
        raise InputError(f"raw has shape {shape} but the network is {model.dims}D")
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
    return TilePlan(shape, sections, tuple(int(s) for s in step), tuple(int(i) for i in in_tile),
                    tuple(int(c) for c in context), [list(map(int, o)) for o in offsets], heads)


def predict_tile(model: UNet, data: Any, plan: TilePlan, start: Sequence[int],
                 device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """The outputs of the tile that starts at ``start`` (output voxels), cropped to the volume.

    Parameters
    ----------
    model : UNet
        The network, in eval mode on ``device``.
    data : array-like
        The raw (an array or a lazily read dataset), of ``plan.shape``.
    plan : TilePlan
        From :func:`tile_plan`.
    start : sequence of int
        The tile's first output voxel: a multiple of ``plan.step``.
    device : str or torch.device
        Where the model is.

    Returns
    -------
    dict of str to ndarray
        Head name to its float32 output (channels, *tile), the tile cropped at the volume's far
        border.
    """
    start = np.asarray(start, dtype=np.int64)
    x = to_unit(read_padded(data, start - np.array(plan.context), plan.in_tile))
    with torch.no_grad():
        outputs = model(torch.from_numpy(x[0] if plan.sections else x)[None, None].to(device))
    stop = np.minimum(start + np.array(plan.step), plan.shape)
    crop = (slice(None),) + tuple(slice(0, b - a) for a, b in zip(start, stop))
    result = {}
    for name in plan.heads:
        block = outputs[name][0].cpu().numpy()
        if plan.sections:
            block = block[:, None]
            if name == "affs":
                block = np.concatenate([np.zeros_like(block[:1]), block])
        result[name] = block[crop]
    return result


def check_not_input(raw: str | os.PathLike, container: str | os.PathLike, heads: Sequence[str]) -> None:
    """Refuse an output container whose heads would replace the raw dataset.

    Parameters
    ----------
    raw : str or path-like
        The raw's address (``data.zarr/raw``).
    container : str or path-like
        The output group (``pred.zarr``).
    heads : sequence of str
        The datasets written into it (``affs``, ``lsds``).

    Raises
    ------
    InputError
        If the raw is one of ``container/<head>``.
    """
    from ..io import parse_address

    source, dataset, _ = parse_address(raw)
    if Path(source).resolve() == Path(container).resolve() and dataset in heads:
        raise InputError(f"the output {Path(container) / dataset} would replace the input {raw}; choose another output")


def predict(checkpoint: str | os.PathLike, raw: str | os.PathLike | np.ndarray, output: str | os.PathLike, *,
            tile: Sequence[int] | None = None, device: str | torch.device = "cpu", overwrite: bool = False,
            progress: bool = False, readout: str | None = None) -> dict[str, str]:
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
    readout : {"aggregate", "centre"}, optional
        For a model with mask branches (``model.type`` ``enb`` or ``snb+enb``): how affinities
        come from the masks (:func:`affseg.central_masks.affinities_from_latents`); default the
        config's ``masks.readout``. Such a model writes ``mask_affs`` and ``mask_affs_variance``
        (the offsets of ``masks.offsets`` as their ``offsets`` attribute), besides ``affs`` (the
        affinity head of ``snb+enb``) and ``lsds``; see :func:`affseg.learn.central_masks.predict_masks`.

    Returns
    -------
    written : dict of str to str
        Head name (``affs``, ``lsds``, ``mask_affs``, ``mask_affs_variance``) to the path of the
        zarr array written.

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
    data, voxel_size = open_array(raw)
    check_raw_dtype(data, raw)
    if hasattr(model, "branches"):  # mask branches: affinities from the decoded masks
        from .central_masks import MASK_AFFS, MASK_VARIANCE, predict_masks

        if not isinstance(raw, np.ndarray):
            check_not_input(raw, Path(output), [*model.head_channels, MASK_AFFS, MASK_VARIANCE])
        return predict_masks(model, state, checkpoint, raw, data, voxel_size, output, tile=tile, device=device,
                             overwrite=overwrite, progress=progress, readout=readout)
    if readout is not None:
        raise InputError("readout applies to models with mask branches (model.type enb or snb+enb); this "
                         "checkpoint has none")
    plan = tile_plan(model, state, data.shape, tile)
    container = Path(output)
    if not isinstance(raw, np.ndarray):
        check_not_input(raw, container, plan.heads)
    identity = {"checkpoint": str(Path(checkpoint).resolve()), "checkpoint_bytes": Path(checkpoint).stat().st_size,
                "checkpoint_mtime": Path(checkpoint).stat().st_mtime, # an in-memory raw is never resumed: nothing identifies it
                "raw": str(raw) if not isinstance(raw, np.ndarray) else uuid.uuid4().hex,
                "shape": list(data.shape), "step": list(plan.step)}
    staged = _stage(container, plan.heads, data.shape, plan.step, voxel_size, plan.offsets, overwrite)
    done = _read_progress(staged["progress"], identity)
    corners = [c for c in np.ndindex(*plan.grid) if c not in done]
    from tqdm.auto import tqdm

    with staged["progress"].open("a") as log, torch.no_grad():
        for index in tqdm(corners, desc="predict", unit="tile", disable=not progress):
            start = np.array(index) * np.array(plan.step)
            outputs = predict_tile(model, data, plan, start, device)
            size = next(iter(outputs.values())).shape[1:]
            region = (slice(None),) + tuple(slice(a, a + b) for a, b in zip(start, size))
            for name, arr in staged["arrays"].items():
                arr[region] = outputs[name]
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
