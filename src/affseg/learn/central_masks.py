"""Encoded central-instance masks (Bailoni et al., GCPR 2020): the network side.

A model of type ``enb`` (or ``snb+enb``) is a :class:`~affseg.learn.unet.UNet` with, per branch
(a mask window and a downscale factor), a *latent head* that outputs ``Q`` latent channels per
voxel of the branch grid, and a small :class:`MaskDecoder` that turns one latent vector into the
central-instance mask of its grid voxel. The latent head average-pools the U-Net's top-level
feature maps by the branch factor (pooling blocks aligned with the crop's origin, so grid voxel
``g`` pools the full-resolution block ``g * f ... g * f + f - 1``) and maps them through two 1x1
convolutions. This fits the valid-padding U-Net with any downsampling factors (the paper reads
the latents from the decoder level of the same scale instead) and keeps tiled prediction exact
when tiles start at multiples of the branch factor.

Training decodes the masks of ``masks.centres`` sampled grid voxels per crop and branch only
(never all voxels), against the ground truth of :func:`affseg.central_masks.central_mask_targets`,
with a soft Dice loss (:func:`affseg.learn.losses.mask_dice_loss`). Prediction writes the
latent maps tile by tile to hidden zarr arrays and derives affinities from them tile by tile
through :func:`affseg.central_masks.affinities_from_latents` (:func:`predict_masks`).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .central_masks_config import READOUTS, mask_branches, mask_offsets
from .unet import UNet

__all__ = ["CentralMaskUNet", "MaskDecoder", "add_sampled_masks", "central_mask_loss", "decoder_callable",
           "predict_masks", "sample_centres"]

# snb+enb with the affinity head: the mask-derived outputs get their own names beside ``affs``
MASK_AFFS, MASK_VARIANCE = "mask_affs", "mask_affs_variance"


class MaskDecoder(nn.Module):
    """Latent code -> central-instance mask: a linear layer to a ``(channels, *window)`` tensor,
    a residual block of two 3x3(x3) convolutions, a 1-channel convolution and a sigmoid.

    Parameters
    ----------
    latent_channels : int
        ``Q``, the length of a latent code.
    window : sequence of int
        The mask's odd sizes (2 or 3 of them: 2D or 3D convolutions).
    channels : int
        Feature channels of the decoded window (``C_d``).
    """

    def __init__(self, latent_channels: int, window: Sequence[int], *, channels: int = 16):
        super().__init__()
        self.latent_channels = int(latent_channels)
        self.window = tuple(int(w) for w in window)
        if len(self.window) not in (2, 3) or any(w < 1 or w % 2 == 0 for w in self.window):
            raise InputError(f"the mask window must be 2 or 3 odd positive sizes, got {list(window)}")
        if self.latent_channels < 1 or channels < 1:
            raise InputError(f"latent_channels and channels must be >= 1, got {latent_channels}, {channels}")
        self.channels = int(channels)
        conv = nn.Conv3d if len(self.window) == 3 else nn.Conv2d
        self.linear = nn.Linear(self.latent_channels, self.channels * math.prod(self.window))
        self.block = nn.Sequential(conv(self.channels, self.channels, 3, padding=1), nn.ReLU(inplace=True),
                                   conv(self.channels, self.channels, 3, padding=1))
        self.out = conv(self.channels, 1, 1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """``(N, Q)`` latent codes -> ``(N, *window)`` masks in [0, 1] (1 = the centre's object)."""
        if codes.ndim != 2 or codes.shape[1] != self.latent_channels:
            raise InputError(f"the mask decoder takes (N, {self.latent_channels}) latent codes, got shape "
                             f"{tuple(codes.shape)}")
        x = torch.relu(self.linear(codes)).view(codes.shape[0], self.channels, *self.window)
        x = torch.relu(x + self.block(x))
        return torch.sigmoid(self.out(x))[:, 0]


class CentralMaskUNet(UNet):
    """A U-Net with latent heads and mask decoders, one per branch, beside optional sigmoid heads.

    Parameters
    ----------
    in_channels, num_fmaps, fmap_inc_factor, downsample_factors
        As :class:`~affseg.learn.unet.UNet`.
    heads : mapping of str to int
        The sigmoid heads (``affs`` of an SNB+ENB model, ``lsds``); may be empty.
    branches : sequence of (window, factor)
        The mask branches: odd window sizes on the branch grid and the downscale factor.
    latent_channels : int
        ``Q``, latent channels per branch.
    decoder_channels : int
        Feature channels of each :class:`MaskDecoder`.
    **unet_options
        ``dims``, ``kernel_sizes``, ``num_convs``, ``padding``, ``upsampling`` of the U-Net.

    Notes
    -----
    ``forward`` returns the sigmoid heads and ``latents_<i>`` of shape ``(batch, Q,
    *(output_shape // factor_i))`` per branch ``i`` (output voxels beyond the last whole pooling
    block are dropped).
    """

    def __init__(self, in_channels: int, num_fmaps: int, fmap_inc_factor: int, downsample_factors, heads,
                 *, branches, latent_channels: int = 32, decoder_channels: int = 16, **unet_options):
        heads = dict(heads or {})
        super().__init__(in_channels, num_fmaps, fmap_inc_factor, downsample_factors, heads or {"unused": 1},
                         **unet_options)
        if not heads:  # ENB alone: no sigmoid head
            self.heads = nn.ModuleDict()
            self.head_channels = {}
        self.branches = [(tuple(int(w) for w in window), tuple(int(f) for f in factor)) for window, factor in branches]
        if not self.branches or any(len(w) != self.dims or len(f) != self.dims for w, f in self.branches):
            raise InputError(f"a {self.dims}D central-mask U-Net needs branches of {self.dims}D windows and factors, "
                             f"got {branches}")
        self.latent_channels = int(latent_channels)
        conv = nn.Conv3d if self.dims == 3 else nn.Conv2d
        q = self.latent_channels
        self.latent_heads = nn.ModuleList(
            nn.Sequential(conv(num_fmaps, q, 1), nn.ReLU(inplace=True), conv(q, q, 1)) for _ in self.branches)
        self.decoders = nn.ModuleList(MaskDecoder(q, window, channels=decoder_channels) for window, _ in self.branches)

    @property
    def mask_factor(self) -> tuple[int, ...]:
        """The least common multiple of the total factor and every branch factor, per axis: the
        step that tiled prediction must keep."""
        factors = [self.total_factor] + [f for _, f in self.branches]
        return tuple(math.lcm(*(f[d] for f in factors)) for d in range(self.dims))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.features(x)
        outputs = {name: torch.sigmoid(head(features)) for name, head in self.heads.items()}
        pool = nn.functional.avg_pool3d if self.dims == 3 else nn.functional.avg_pool2d
        for i, (_window, factor) in enumerate(self.branches):
            pooled = features if all(f == 1 for f in factor) else pool(features, factor, factor)
            outputs[f"latents_{i}"] = self.latent_heads[i](pooled)
        return outputs


def build_central_mask_model(cfg: dict, heads: dict, dims: int) -> CentralMaskUNet:
    """The :class:`CentralMaskUNet` of a validated config of model type ``enb`` or ``snb+enb``."""
    model, masks = cfg["model"], cfg["masks"]
    if model["type"] == "enb":
        heads = {k: v for k, v in heads.items() if k != "affs"}
    return CentralMaskUNet(1, model["num_fmaps"], model["fmap_inc_factor"], model["downsample_factors"], heads,
                           branches=mask_branches(cfg), latent_channels=masks["latent_channels"],
                           decoder_channels=masks["decoder_channels"], dims=dims, kernel_sizes=model["kernel_sizes"],
                           padding=model["padding"], upsampling=model["upsampling"])


# ---------------------------------------------------------------------- training


def sample_centres(labels: np.ndarray, factor: Sequence[int], count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct grid voxels of a branch, labelled ones first, in random order.

    Parameters
    ----------
    labels : (z, y, x) or (y, x) int array
        Full-resolution labels of the crop (0 = unlabelled); ``factor`` divides the shape.
    factor : sequence of int
        The branch factor.
    count : int
        Centres to draw: at most the number of grid voxels.
    rng : numpy Generator

    Returns
    -------
    centres : (count, ndim) int64
        Grid positions; where fewer grid voxels are labelled, unlabelled ones fill up (their
        masks are ignored by the loss).

    Raises
    ------
    InputError
        If ``count`` exceeds the grid voxels or ``factor`` does not divide the shape.
    """
    from ..central_masks import downscale_labels

    grid = downscale_labels(labels, factor)
    if count > grid.size:
        raise InputError(f"cannot sample {count} mask centres from a branch grid of {grid.size} voxels "
                         f"(shape {grid.shape}); lower masks.centres")
    keys = rng.random(grid.size) + (grid.ravel() == 0)  # labelled voxels in [0, 1), the others in [1, 2)
    chosen = np.argpartition(keys, count - 1)[:count] if count < grid.size else np.arange(grid.size)
    chosen = chosen[np.argsort(keys[chosen])]
    return np.stack(np.unravel_index(chosen, grid.shape), axis=1).astype(np.int64)


def add_sampled_masks(net: UNet, outputs: dict, batch: dict, cfg: dict, iteration: int) -> None:
    """Decode the masks of sampled centres for the Dice loss (nothing for a plain U-Net).

    For every branch ``i`` adds ``outputs["masks_<i>"]`` (the decoded masks, ``(B * R, *window)``)
    and ``batch["masks_<i>"]``, ``batch["masks_<i>_weights"]`` (their targets and where they are
    defined), from ``masks.centres`` (``R``) centres per crop drawn with the seed
    ``(train.seed, iteration)``: the same centres for a resumed run.

    Parameters
    ----------
    net : UNet
        The network; only a :class:`CentralMaskUNet` decodes masks.
    outputs : dict of str to tensor
        Its outputs for the batch (``latents_<i>`` per branch); changed in place.
    batch : dict of str to tensor
        The batch, with ``labels`` ``(B, *output_shape)`` (0 = unlabelled); changed in place.
    cfg : dict
        The validated config (``masks``, ``train.seed``).
    iteration : int
        The training iteration (seeds the centres).
    """
    if not isinstance(net, CentralMaskUNet):
        return
    from ..central_masks import central_mask_targets

    masks = cfg["masks"]
    rng = np.random.default_rng([cfg["train"]["seed"], iteration, 1])
    labels = batch["labels"].cpu().numpy().astype(np.uint64)
    margin = masks["boundary_margin"]
    for i, (window, factor) in enumerate(net.branches):
        latents = outputs[f"latents_{i}"]
        codes, targets, weights = [], [], []
        for b, crop in enumerate(labels):
            centres = sample_centres(crop, factor, masks["centres"], rng)
            target, weight = central_mask_targets(crop, centres, window=window, factor=factor,
                                                  boundary_margin=margin)
            codes.append(latents[b][(slice(None),) + tuple(torch.from_numpy(c).to(latents.device) for c in centres.T)].T)
            targets.append(target)
            weights.append(weight)
        outputs[f"masks_{i}"] = net.decoders[i](torch.cat(codes))
        device = latents.device
        batch[f"masks_{i}"] = torch.from_numpy(np.concatenate(targets)).to(device)
        batch[f"masks_{i}_weights"] = torch.from_numpy(np.concatenate(weights)).to(device)


def central_mask_loss(cfg: dict, outputs: dict, batch: dict) -> torch.Tensor:
    """The soft Dice loss of the decoded masks, summed over branches.

    Parameters
    ----------
    cfg : dict
        The validated config (its branches, ``masks.inverted``).
    outputs : dict of str to tensor
        With the decoded ``masks_<i>`` of :func:`add_sampled_masks`.
    batch : dict of str to tensor
        With the targets ``masks_<i>`` and ``masks_<i>_weights`` of :func:`add_sampled_masks`.

    Returns
    -------
    loss : scalar tensor
        The sum over branches of :func:`affseg.learn.losses.mask_dice_loss`.
    """
    from .losses import mask_dice_loss

    total = 0
    for i in range(len(mask_branches(cfg))):
        total = total + mask_dice_loss(outputs[f"masks_{i}"], batch[f"masks_{i}"], batch[f"masks_{i}_weights"],
                                       inverted=cfg["masks"]["inverted"])
    return total


# ---------------------------------------------------------------------- prediction


def decoder_callable(decoder: MaskDecoder, device: str | torch.device = "cpu", *,
                     batch_size: int = 4096) -> Callable[[np.ndarray], np.ndarray]:
    """A trained decoder as ``decode(codes)`` for :func:`affseg.central_masks.affinities_from_latents`.

    Parameters
    ----------
    decoder : MaskDecoder
        The branch's decoder (in eval mode).
    device : str or torch.device
        Where the decoder is.
    batch_size : int
        Codes decoded at once.

    Returns
    -------
    decode : callable
        ``decode(codes)``: ``(N, Q)`` float32 numpy in, ``(N, *window)`` float32 masks in
        [0, 1] out, without gradients. It raises :class:`~affseg.errors.InputError` for codes
        that are not ``(N, Q)`` with the decoder's ``Q`` (a latent map whose channels do not
        match the decoder).
    """
    def decode(codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.float32)
        if codes.ndim != 2 or codes.shape[1] != decoder.latent_channels:
            raise InputError(f"the mask decoder takes (N, {decoder.latent_channels}) latent codes, got shape "
                             f"{codes.shape}: the latent map's channels do not match the decoder")
        out = np.empty((codes.shape[0],) + decoder.window, np.float32)
        with torch.no_grad():
            for a in range(0, codes.shape[0], batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(codes[a:a + batch_size])).to(device)
                out[a:a + batch_size] = decoder(chunk).cpu().numpy()
        return out

    return decode


def predict_masks(model: CentralMaskUNet, state: dict, checkpoint: str | os.PathLike,
                  raw: str | os.PathLike | np.ndarray, data: Any, voxel_size: Sequence[float] | None,
                  output: str | os.PathLike, *, tile: Sequence[int] | None = None,
                  device: str | torch.device = "cpu", overwrite: bool = False, progress: bool = False,
                  readout: str | None = None) -> dict[str, str]:
    """:func:`affseg.learn.predict.predict` for a model with mask branches (see there).

    Parameters
    ----------
    model : CentralMaskUNet
        The checkpoint's network, in eval mode on ``device``.
    state : dict
        The checkpoint's contents (its config).
    checkpoint : path
        The checkpoint file (identifies the prediction for a resume).
    raw : str, path or array
        The raw as given (its address identifies the prediction).
    data : array-like
        The raw, opened: the network's number of dimensions.
    voxel_size : sequence of float or None
        The raw's voxel size, written with the outputs.
    output : path
        The zarr group of the outputs.
    tile : sequence of int, optional
        Wanted output tile shape; the step is rounded to multiples of
        :attr:`CentralMaskUNet.mask_factor`.
    device : str or torch.device
        Where the network runs.
    overwrite : bool
        Replace existing outputs (only datasets affseg wrote).
    progress : bool
        Show tqdm progress bars.
    readout : {"aggregate", "centre"}, optional
        Default the config's ``masks.readout``.

    Returns
    -------
    written : dict of str to str
        Dataset name (``mask_affs``, ``mask_affs_variance``, and ``affs``, ``lsds`` where the
        model has those heads) to the path of the zarr array.

    Raises
    ------
    InputError
        A bad readout, a network that is not valid-padded, or a raw of other dimensions.
    OutputExists
        If an output exists and may not be replaced (before any work).

    Notes
    -----
    Two passes over tiles of a step that is a multiple of :attr:`CentralMaskUNet.mask_factor`:
    the first writes the sigmoid heads (``affs``, ``lsds``) and each branch's latent map to
    hidden zarr arrays, the second reads each tile's latents with a halo of ``window // 2``
    grid voxels and derives the affinities of ``masks.offsets`` and their variance
    (:func:`affseg.central_masks.affinities_from_latents`) through the branch that serves each
    offset (:func:`affseg.central_masks.branch_for_offsets`). Both passes resume; the latent
    arrays are removed when the outputs are published.
    """
    from tqdm.auto import tqdm

    from ..central_masks import branch_for_offsets
    from .data import read_padded, to_unit
    from .predict import _publish, _read_progress, _stage

    cfg = state["config"]
    readout = readout or cfg["masks"]["readout"]
    if readout not in READOUTS:
        raise InputError(f"readout must be one of {READOUTS}, got {readout!r}")
    if model.padding != "valid":
        raise InputError("tiled prediction needs a valid-padding U-Net (same padding sees the tile borders)")
    shape = tuple(int(s) for s in data.shape)
    sections = model.dims == 2 and len(shape) == 3  # a stack of 2D sections, predicted one by one
    if len(shape) != model.dims and not sections:
        raise InputError(f"raw has shape {shape} but the network is {model.dims}D")
    offsets = np.array(mask_offsets(cfg), dtype=np.int64)  # the network's
    serving = np.array(branch_for_offsets(offsets, model.branches))
    out_tile, step = _mask_tiles(model, tile)
    in_tile = np.array(model.input_shape(out_tile))
    context = (in_tile - np.array(out_tile)) // 2
    lead = (1,) if sections else ()  # sections: one z step, no z context, factor 1 along z
    step, in_tile = np.array(lead + step), np.array(lead + tuple(in_tile))
    context = np.array(((0,) if sections else ()) + tuple(context))
    factors = [np.array(lead + factor) for _, factor in model.branches]
    grids = [tuple(int(g) for g in -(-np.array(shape) // f)) for f in factors]
    written_offsets = _written_offsets(offsets, sections)
    heads = dict(model.head_channels)
    if sections and "affs" in heads:
        heads["affs"] += 1
    corners = list(np.ndindex(*(-(-np.array(shape) // step))))
    identity = {"checkpoint": str(os.path.abspath(checkpoint)), "checkpoint_bytes": os.path.getsize(checkpoint),
                "checkpoint_mtime": os.path.getmtime(checkpoint),
                "raw": str(raw) if not isinstance(raw, np.ndarray) else os.urandom(16).hex(),
                "shape": list(shape), "step": step.tolist()}

    # every output is staged (and checked for replacement) before any work
    output = Path(output)
    channels = len(written_offsets)
    staged = _stage(output, {MASK_AFFS: channels, MASK_VARIANCE: channels}, shape, tuple(step), voxel_size, None,
                    overwrite)
    for name in (MASK_AFFS, MASK_VARIANCE):
        staged["arrays"][name].attrs.update({"offsets": written_offsets, "readout": readout,
                                             "source": "encoded central-instance masks"})
    snb_offsets = _written_offsets(np.array(cfg["targets"]["offsets"]), sections)
    heads = _stage(output, heads, shape, tuple(step), voxel_size, snb_offsets, overwrite) if heads else None
    latents = {}
    for i, f in enumerate(factors):
        latents[i] = _stage(output, {f"latents_{i}": model.latent_channels}, grids[i], tuple(int(s) for s in step // f),
                            None if voxel_size is None else [float(v) for v in np.array(voxel_size) * f], None, True)

    # pass 1: sigmoid heads and latent maps
    first = latents[0]["progress"]
    done = _read_progress(first, identity)
    with first.open("a") as log, torch.no_grad():
        for index in tqdm([c for c in corners if c not in done], desc="predict latents", unit="tile",
                          disable=not progress):
            start = np.array(index) * step
            stop = np.minimum(start + step, shape)
            x = to_unit(read_padded(data, start - context, in_tile))
            outputs = model(torch.from_numpy(x[0] if sections else x)[None, None].to(device))
            for name in model.head_channels:
                block = outputs[name][0].cpu().numpy()
                if sections:
                    block = block[:, None]
                    if name == "affs":
                        block = np.concatenate([np.zeros_like(block[:1]), block])
                heads["arrays"][name][_box(start, stop)] = block[_box(0 * start, stop - start)]
            for i, f in enumerate(factors):
                g0, g1 = start // f, np.minimum(-(-stop // f), grids[i])
                block = outputs[f"latents_{i}"][0].cpu().numpy()
                block = block[:, None] if sections else block
                latents[i]["arrays"][f"latents_{i}"][_box(g0, g1)] = block[_box(0 * g0, g1 - g0)]
            log.write(json.dumps([int(i) for i in index]) + "\n")
            log.flush()

    # pass 2: affinities and variances from the masks, tile by tile
    identity2 = dict(identity, readout=readout, offsets=written_offsets)
    done = _read_progress(staged["progress"], identity2)
    decoders = [decoder_callable(d, device) for d in model.decoders]
    arrays = [latents[i]["arrays"][f"latents_{i}"] for i in range(len(factors))]
    with staged["progress"].open("a") as log:
        for index in tqdm([c for c in corners if c not in done], desc="affinities from masks", unit="tile",
                          disable=not progress):
            start = np.array(index) * step
            stop = np.minimum(start + step, shape)
            if sections:  # the section's latents, 2D affinities, then a z channel of 0
                z = int(start[0])
                read = [lambda box, a=a, z=z: a[(slice(None), z) + box[1:]] for a in arrays]
                affs, variance = _tile_affinities(model, read, decoders, [g[1:] for g in grids], offsets, serving,
                                                  start[1:], stop[1:], shape[1:], readout)
                affs, variance = (np.concatenate([np.zeros_like(v[:1]), v])[:, None] for v in (affs, variance))
            else:
                read = [lambda box, a=a: a[box] for a in arrays]
                affs, variance = _tile_affinities(model, read, decoders, grids, offsets, serving, start, stop, shape,
                                                  readout)
            staged["arrays"][MASK_AFFS][_box(start, stop)] = affs
            staged["arrays"][MASK_VARIANCE][_box(start, stop)] = variance
            log.write(json.dumps([int(i) for i in index]) + "\n")
            log.flush()
    written = _publish(output, staged)
    if heads is not None:
        written.update(_publish(output, heads))
    for i, staged_latents in latents.items():
        shutil.rmtree(output / f".latents_{i}.partial", ignore_errors=True)
        staged_latents["progress"].unlink(missing_ok=True)
    return written


def _box(start, stop) -> tuple[slice, ...]:
    """All channels of the region ``[start, stop)``."""
    return (slice(None),) + tuple(slice(int(a), int(b)) for a, b in zip(start, stop))


def _written_offsets(offsets: np.ndarray, sections: bool) -> list[list[int]]:
    """The network's offsets as written: for a stack of sections a first ``[-1, 0, 0]`` channel
    (of 0: sections are separate objects) and the in-plane offsets with a z of 0, as
    :func:`affseg.learn.predict.tile_plan` writes them."""
    offsets = [list(map(int, o)) for o in offsets]
    return [[-1, 0, 0]] + [[0, *o] for o in offsets] if sections else offsets


def _mask_tiles(model: CentralMaskUNet, tile) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A valid output tile and a step that is a multiple of the mask factor (at least one)."""
    from .predict import tile_shape

    factor = np.array(model.mask_factor)
    wanted = np.maximum(np.array(tile if tile is not None else [64] * model.dims), factor)
    for _ in range(64):
        out_tile, _step = tile_shape(model, tuple(int(w) for w in wanted))
        step = (np.array(out_tile) // factor) * factor
        if np.all(step > 0):
            return tuple(int(o) for o in out_tile), tuple(int(s) for s in step)
        wanted = wanted + factor * (step == 0)
    raise InputError(f"no output tile of this network holds the mask factor {tuple(factor)}")


def _tile_affinities(model, read, decoders, grids, offsets, serving, start, stop, shape, readout):
    """The mask affinities and variances of the output tile ``[start, stop)`` (network axes),
    each branch's latents read by ``read[i](box)`` with a halo of ``window // 2`` grid voxels."""
    from ..central_masks import affinities_from_latents

    size = tuple(int(b - a) for a, b in zip(start, stop))
    affs = np.zeros((len(offsets),) + size, np.float32)
    variance = np.zeros_like(affs)
    for i, (window, factor) in enumerate(model.branches):
        channels = np.flatnonzero(serving == i)
        if not len(channels):
            continue
        f, halo = np.array(factor), np.array(window) // 2
        g0 = np.maximum(start // f - halo, 0)
        g1 = np.minimum(-(-stop // f) + halo, grids[i])
        block_shape = tuple(int(n) for n in np.minimum(g1 * f, shape) - g0 * f)
        a, v = affinities_from_latents(np.asarray(read[i](_box(g0, g1))), decoders[i], offsets[channels],
                                       window=window, factor=factor, readout=readout, shape=block_shape)
        crop = _box(start - g0 * f, start - g0 * f + np.array(size))
        affs[channels] = a[crop]
        variance[channels] = v[crop]
    return affs, variance
