"""Training loop: Adam, MSE (or BCE) warm-up then optional constrained MALIS, checkpoints every N
iterations with resume from the last one, a CSV log with the time split per iteration, and
periodic snapshots to zarr.

Checkpoints are written atomically; a non-finite loss stops the run before anything is saved,
so the last checkpoint is always a good one.
"""
from __future__ import annotations

import csv
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..io.atomic import atomic_path
from .augment import Augment
from .config import validate_config
from .data import CropDataset, CropSampler, Source
from .losses import malis_loss, random_walker_loss, weighted_bce, weighted_mse
from .unet import UNet
from ..errors import InputError, OutputExists, PathNotFound

__all__ = ["TrainingError", "build_model", "latest_checkpoint", "load_checkpoint", "train"]

LOG_FIELDS = ["iteration", "phase", "loss", "loss_affs", "loss_lsds", "time_data", "time_forward",
              "time_loss", "time_backward"]


class TrainingError(RuntimeError):
    """Training stopped (e.g. a non-finite loss); the last good checkpoint is kept."""


def build_model(cfg: dict) -> UNet:
    """The U-Net of a validated config: one head for the affinities, one for LSDs if asked."""
    model = cfg["model"]
    offsets = cfg["targets"]["offsets"]
    dims = len(offsets[0])
    heads = {"affs": len(offsets)}
    if cfg["targets"]["lsd_sigma"] is not None:
        heads["lsds"] = 10 if dims == 3 else 6
    return UNet(1, model["num_fmaps"], model["fmap_inc_factor"], model["downsample_factors"], heads,
                dims=dims, kernel_sizes=model["kernel_sizes"], padding=model["padding"],
                upsampling=model["upsampling"])


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"train.device is {name!r} but no CUDA device is available")
    return torch.device(name)


def latest_checkpoint(output: str | Path) -> Path | None:
    found = sorted((Path(output) / "checkpoints").glob("iteration_*.pt"))
    return found[-1] if found else None


def _read_checkpoint(path: str | Path, device) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PathNotFound(f"checkpoint {path} does not exist")
    return torch.load(path, map_location=device, weights_only=False)


def load_checkpoint(path: str | Path, device="cpu") -> tuple[UNet, dict]:
    """The model of a checkpoint (in eval mode) and the checkpoint's contents."""
    state = _read_checkpoint(path, device)
    model = build_model(state["config"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


@dataclass
class TrainResult:
    output: Path
    iterations: int
    last_checkpoint: Path
    log: Path


def _sampler(cfg: dict, net: UNet) -> CropSampler:
    output_shape = tuple(cfg["model"]["output_shape"])
    input_shape = net.input_shape(output_shape)
    sources = [Source(s["raw"], s["labels"], s.get("mask"), tuple(s["roi"]) if s.get("roi") else None)
               for s in cfg["data"]["train"]]
    return CropSampler(sources, input_shape, output_shape, cfg["targets"]["offsets"],
                       augment=Augment(**cfg["augment"]), voxel_size=cfg["data"]["voxel_size"],
                       lsd_sigma=cfg["targets"]["lsd_sigma"], lsd_downsample=cfg["targets"]["lsd_downsample"],
                       grow_boundary=cfg["data"]["grow_boundary"], min_labelled=cfg["data"]["min_labelled"])


def _prepare_output(output: Path, cfg: dict, overwrite: bool) -> Path | None:
    """Create the run folder, or find the checkpoint to resume from; refuses a different config."""
    stored = output / "config.json"
    if overwrite and output.exists():
        shutil.rmtree(output)
    if stored.exists():
        previous = json.loads(stored.read_text())
        same = {k: v for k, v in previous.items() if k != "train"} == {k: v for k, v in cfg.items() if k != "train"}
        if not same:
            raise OutputExists(f"{output} holds a run with a different config; pass --overwrite to start over "
                                  f"or choose another output folder")
        return latest_checkpoint(output)
    if output.exists() and any(output.iterdir()):
        raise OutputExists(f"{output} exists and is not a training run; pass --overwrite to replace it")
    (output / "checkpoints").mkdir(parents=True, exist_ok=True)
    with atomic_path(stored) as tmp:
        tmp.write_text(json.dumps(cfg, indent=2))
    return None


def _losses(cfg: dict, outputs: dict, batch: dict, iteration: int) -> tuple[torch.Tensor, dict, str]:
    train = cfg["train"]
    malis = train["malis_start"] is not None and iteration >= train["malis_start"]
    pred = outputs["affs"]
    if train["loss"] == "random_walker":
        loss_affs = random_walker_loss(pred, batch["labels"], cfg["targets"]["offsets"],
                                       seed_radius=cfg["targets"]["rw_seed_radius"], gradient=train["rw_gradient"],
                                       num_samples=train["rw_samples"])
        if train["rw_affinity_weight"]:
            loss_affs = loss_affs + train["rw_affinity_weight"] * weighted_mse(pred, batch["affs"],
                                                                               batch["affs_weights"])
    elif malis:
        loss_affs = malis_loss(pred, batch["labels"], cfg["targets"]["offsets"], mask=batch["affs_mask"] > 0,
                               constrained=train["malis_constrained"])
        if train["malis_affinity_weight"]:
            loss_affs = loss_affs + train["malis_affinity_weight"] * weighted_mse(pred, batch["affs"],
                                                                                 batch["affs_weights"])
    elif train["loss"] == "bce":
        loss_affs = weighted_bce(pred, batch["affs"], batch["affs_weights"])
    else:
        loss_affs = weighted_mse(pred, batch["affs"], batch["affs_weights"])
    parts = {"loss_affs": float(loss_affs.detach())}
    total = loss_affs
    if "lsds" in outputs:
        loss_lsds = weighted_mse(outputs["lsds"], batch["lsds"], batch["lsds_mask"])
        parts["loss_lsds"] = float(loss_lsds.detach())
        total = total + loss_lsds
    return total, parts, "malis" if malis else train["loss"]


def _save_checkpoint(output: Path, iteration: int, model, optimizer, cfg, keep: int) -> Path:
    path = output / "checkpoints" / f"iteration_{iteration:08d}.pt"
    with atomic_path(path) as tmp:
        torch.save({"iteration": iteration, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "config": cfg, "torch_rng": torch.get_rng_state()}, tmp)
    for old in sorted((output / "checkpoints").glob("iteration_*.pt"))[:-keep]:
        old.unlink()
    return path


def _truncate_log(log: Path, iteration: int) -> None:
    """Drop log rows after the iteration a run (re)starts from."""
    if not log.exists():
        return
    with log.open() as f:
        rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= iteration]
    with atomic_path(log) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _snapshot(output: Path, iteration: int, batch: dict, outputs: dict) -> None:
    from ..io import write_volume

    group = output / "snapshots.zarr" / f"iteration_{iteration:08d}"
    write_volume(group / "raw", batch["raw"][0, 0].cpu().numpy(), overwrite=True)
    write_volume(group / "labels", batch["labels"][0].cpu().numpy().astype(np.uint64), overwrite=True)
    for name in ("affs", "lsds"):
        if name in outputs:
            axes = ["c^"] + ["z", "y", "x"][-(outputs[name].ndim - 2):]
            write_volume(group / f"gt_{name}", batch[name][0].cpu().numpy(), axes=axes, overwrite=True)
            write_volume(group / f"pred_{name}", outputs[name][0].detach().cpu().numpy(), axes=axes, overwrite=True)


def train(config: dict, output: str | Path, *, overwrite: bool = False, progress: bool = False) -> TrainResult:
    """Train (or resume) the run in ``output`` as the config says.

    Parameters
    ----------
    config : dict
        A config as read by :func:`affseg.learn.config.load_config` (validated here again).
    output : path
        Run folder: ``config.json``, ``checkpoints/iteration_*.pt``, ``log.csv``, ``snapshots.zarr``.
        An existing run with the same config resumes from its last checkpoint.
    overwrite : bool
        Delete an existing run folder first.
    progress : bool
        Show a tqdm progress bar.
    """
    cfg = validate_config(config)
    output = Path(output)
    torch.manual_seed(cfg["train"]["seed"])  # the initial weights
    net = build_model(cfg)
    sampler = _sampler(cfg, net)  # shapes and sources checked before any file is written
    device = _device(cfg["train"]["device"])
    resume = _prepare_output(output, cfg, overwrite)
    net = net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg["train"]["learning_rate"], betas=tuple(cfg["train"]["betas"]))
    start = 0
    log = output / "log.csv"
    if resume is not None:
        state = _read_checkpoint(resume, device)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        start = state["iteration"]
    _truncate_log(log, start)  # rows of iterations after the checkpoint (or of a run that never saved one)
    total = cfg["train"]["iterations"]
    last = resume
    if start >= total:
        return TrainResult(output, start, resume, log)
    dataset = CropDataset(sampler, seed=cfg["train"]["seed"], batch_size=cfg["train"]["batch_size"],
                          first_iteration=start + 1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=cfg["data"]["num_workers"])
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start, desc="train", unit="it", disable=not progress)
    new_log = not log.exists()
    batches = iter(loader)
    net.train()
    try:
        with log.open("a", newline="") as f:
            writer = csv.DictWriter(f, LOG_FIELDS)
            if new_log:
                writer.writeheader()
            for iteration in range(start + 1, total + 1):
                t0 = time.perf_counter()
                batch = {k: v.to(device) for k, v in next(batches).items()}
                t1 = time.perf_counter()
                outputs = net(batch["raw"])
                t2 = time.perf_counter()
                loss, parts, phase = _losses(cfg, outputs, batch, iteration)
                t3 = time.perf_counter()
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"the loss became {float(loss.detach())} at iteration {iteration}; stopped without saving. "
                        f"The last good checkpoint is {last or 'none (no checkpoint was written yet)'}"
                    )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                t4 = time.perf_counter()
                if iteration % cfg["train"]["log_every"] == 0 or iteration == total:
                    writer.writerow({"iteration": iteration, "phase": phase, "loss": float(loss.detach()),
                                     "loss_affs": parts["loss_affs"], "loss_lsds": parts.get("loss_lsds", ""),
                                     "time_data": t1 - t0, "time_forward": t2 - t1, "time_loss": t3 - t2,
                                     "time_backward": t4 - t3})
                    f.flush()
                every = cfg["train"]["snapshot_every"]
                if every and iteration % every == 0:
                    _snapshot(output, iteration, batch, outputs)
                if iteration % cfg["train"]["checkpoint_every"] == 0 or iteration == total:
                    last = _save_checkpoint(output, iteration, net, optimizer, cfg, cfg["train"]["keep_checkpoints"])
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", phase=phase)
                bar.update()
    finally:
        bar.close()
        del batches
    return TrainResult(output, total, last, log)
