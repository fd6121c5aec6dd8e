"""Training loop: Adam, MSE (or BCE) warm-up then optional constrained MALIS, checkpoints every N
iterations with resume from the last one, a CSV log with the time split per iteration, and
periodic snapshots to zarr.

Checkpoints are written atomically; a non-finite loss stops the run before anything is saved,
so the last checkpoint is always a good one. They hold plain data only (tensors, numbers,
strings, lists, dicts) and are read with ``torch.load(weights_only=True)``: a checkpoint that
holds anything else (an object whose unpickling could run code) is refused, not loaded.
"""
from __future__ import annotations

import copy
import csv
import json
import os
import pickle
import pickletools
import re
import shutil
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from .. import __version__
from ..errors import AffsegError, CorruptInput, InputError, OutputExists, PathNotFound, UnsafeCheckpoint
from ..io.atomic import atomic_path, is_temporary
from .augment import Augment
from .central_masks import add_sampled_masks
from .central_masks_config import check_masks_fit
from .config import plain, validate_config
from .data import CropDataset, CropSampler, Source
from .losses import malis_loss, random_walker_loss, weighted_bce, weighted_mse
from .tensorboard import TENSORBOARD_DIR, TensorBoardLog
from .unet import UNet

__all__ = ["RUN_MARKER", "TrainingError", "build_model", "latest_checkpoint", "load_checkpoint",
           "resolve_output_shape", "train"]

LOG_FIELDS = ["iteration", "phase", "loss", "loss_affs", "loss_lsds", "time_data", "time_forward",
              "time_loss", "time_backward", "loss_masks"]


# the file that marks a folder as a training run affseg wrote (see train())
RUN_MARKER = "affseg-run.json"
RUN_KIND = "affseg training run"
# what a run folder holds; anything else makes it not a run (overwrite refuses it)
RUN_ENTRIES = {"config.json", RUN_MARKER, "checkpoints", "log.csv", "snapshots.zarr", TENSORBOARD_DIR}
_CHECKPOINT_NAME = re.compile(r"^iteration_\d+\.pt(?:\.unreadable)?$")
CHECKPOINT_KEYS = ("model", "config", "iteration")
RESUME_KEYS = CHECKPOINT_KEYS + ("optimizer", "torch_rng")


class TrainingError(AffsegError, RuntimeError):
    """Training stopped (e.g. a non-finite loss); the last good checkpoint is kept."""


def build_model(cfg: dict) -> UNet:
    """The U-Net of a validated config: one head for the affinities, one for LSDs if asked.

    Parameters
    ----------
    cfg : dict
        A config from :func:`affseg.learn.config.validate_config`.

    Returns
    -------
    model : UNet
        One input channel; head ``affs`` with a channel per offset, and ``lsds`` (10 channels
        in 3D, 6 in 2D) if ``targets.lsd_sigma`` is set. Freshly initialised, in train mode.
    """
    model = cfg["model"]
    offsets = cfg["targets"]["offsets"]
    dims = len(offsets[0])
    heads = {"affs": len(offsets)}
    if cfg["targets"]["lsd_sigma"] is not None:
        heads["lsds"] = 10 if dims == 3 else 6
    if cfg["model"]["type"] != "snb":  # mask branches (affseg.learn.central_masks)
        from .central_masks import build_central_mask_model

        return build_central_mask_model(cfg, heads, dims)
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
    """The newest checkpoint file of a run folder, by iteration (not checked for readability).

    Parameters
    ----------
    output : str or Path
        The run folder.

    Returns
    -------
    checkpoint : Path or None
        ``output/checkpoints/iteration_<N>.pt`` of the largest ``N``; None if there is none.
    """
    found = sorted((Path(output) / "checkpoints").glob("iteration_*.pt"))
    return found[-1] if found else None


def _read_checkpoint(path: str | Path, device, keys=CHECKPOINT_KEYS) -> dict:
    """The contents of a checkpoint, loaded as plain data only (``weights_only=True``).

    Raises PathNotFound (missing), InputError (a folder, unreadable), UnsafeCheckpoint (it holds
    more than plain data: not loaded) or CorruptInput (truncated, empty, not a checkpoint, or
    lacking one of ``keys``), each naming the path.
    """
    path = Path(path)
    if not path.exists():
        raise PathNotFound(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise InputError(f"checkpoint {path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise InputError(f"checkpoint {path} is not a regular file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's notes on unusual pickle protocols
            state = torch.load(path, map_location=device, weights_only=True)
    except PermissionError as e:
        raise InputError(f"checkpoint {path} cannot be read: {e.strerror or e}") from None
    except Exception as e:
        _refuse(path, e)
    if not isinstance(state, dict):
        raise CorruptInput(f"checkpoint {path} is not an affseg checkpoint: it holds a {type(state).__name__}, "
                           f"not a mapping with the keys {list(keys)}")
    missing = [k for k in keys if k not in state]
    if missing:
        raise CorruptInput(f"checkpoint {path} is not an affseg checkpoint: it lacks the key(s) {missing} "
                           f"(expected {list(keys)})")
    if not isinstance(state["iteration"], int) or isinstance(state["iteration"], bool) or state["iteration"] < 0:
        raise CorruptInput(f"checkpoint {path}: its iteration must be an integer >= 0, got {state['iteration']!r}")
    try:
        state["config"] = validate_config(state["config"], where=f"the config of checkpoint {path}")
    except InputError as e:
        raise CorruptInput(str(e)) from None
    return state


def _refuse(path: Path, error: Exception) -> NoReturn:
    """Raise the error for a checkpoint that ``torch.load(weights_only=True)`` could not load."""
    if isinstance(error, pickle.UnpicklingError) and _holds_objects(path, str(error)):
        found = re.search(r"GLOBAL (\S+)", str(error))
        raise UnsafeCheckpoint(
            f"checkpoint {path} holds more than plain data (arrays, numbers, strings)"
            f"{f', e.g. a reference to {found.group(1)}' if found else ''}, and was not loaded: loading it "
            f"could run code. Use a checkpoint written by affseg train"
        ) from None
    # truncated/garbage files: RuntimeError, EOFError, OSError, KeyError, UnpicklingError, zip errors...
    why = "the file is empty" if path.stat().st_size == 0 else _first_line(error)
    raise CorruptInput(f"checkpoint {path} is corrupt, truncated or not a checkpoint ({why})") from None


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip()
    if text.startswith("Weights only load failed"):  # torch's advice to load unsafely: keep its detail only
        text = text.rsplit("WeightsUnpickler error:", 1)[-1].strip()
    text = text.splitlines()[0].strip() if text else ""
    text = text.split(". ")[0].rstrip(".")  # torch adds paragraphs of advice after the first sentence
    text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def _holds_objects(path: Path, message: str) -> bool:
    """Whether a file that ``weights_only`` loading refused is a well-formed pickle that refers to
    something other than plain data (rather than a damaged file). Nothing in it is run: the
    pickle is only parsed."""
    if re.search(r"GLOBAL \S+|unrecognized function|Can only (?:create new object|build)", message):
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            data = archive.read(name)
        for _ in pickletools.genops(data):
            pass
    except Exception:
        return False
    return True  # a complete pickle that the plain-data loader refuses: objects, not damage


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[UNet, dict]:
    """The model of a checkpoint (in eval mode) and the checkpoint's contents.

    The checkpoint is loaded as plain data only; see :func:`_read_checkpoint` for the errors.

    Parameters
    ----------
    path : str or Path
        A ``.pt`` file written by :func:`train`.
    device : str or torch.device
        Where the tensors and the model are loaded.

    Returns
    -------
    model : UNet
        The network of the checkpoint's config with its weights, in eval mode on ``device``.
    state : dict
        The checkpoint: ``model`` (weights), ``config`` (validated), ``iteration`` and, if
        stored, ``optimizer`` and ``torch_rng``.

    Raises
    ------
    PathNotFound
        If ``path`` does not exist.
    InputError
        If ``path`` is a folder or cannot be read.
    UnsafeCheckpoint
        If it holds more than plain data (not loaded).
    CorruptInput
        If it is damaged, not an affseg checkpoint, or its weights do not fit its config.
    """
    state = _read_checkpoint(path, device)
    model = build_model(state["config"])
    _load_weights(model, state, path)
    return model.to(device).eval(), state


def _load_weights(model: UNet, state: dict, path) -> None:
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError, KeyError) as e:
        raise CorruptInput(f"checkpoint {path}: its weights do not fit the model of its config "
                           f"({_first_line(e)})") from None


def resolve_output_shape(cfg: dict, net: UNet) -> tuple[int, ...]:
    """The training output shape: ``model.output_shape`` if given (an error if the network cannot
    produce it), else the valid output shape nearest to a target of ``max(8, 2 * factor)`` voxels
    per axis, ``factor`` being the product of the downsampling factors on that axis (for the
    default model, (9, 56, 56) from an input of (45, 268, 268)).

    Parameters
    ----------
    cfg : dict
        A validated config.
    net : UNet
        The network built from it.

    Returns
    -------
    shape : tuple of int
        The spatial output shape, one size per axis of the network.

    Raises
    ------
    InputError
        If ``model.output_shape`` has the wrong length or no input shape gives it.
    """
    given = cfg["model"]["output_shape"]
    if given is not None:
        if len(given) != net.dims:
            raise InputError(f"model.output_shape {given} must have {net.dims} entries: the network is "
                             f"{net.dims}D (as the offsets)")
        net.input_shape(tuple(given))  # a clear error if no input gives it
        return tuple(int(s) for s in given)
    target = [max(8, 2 * f) for f in net.total_factor]
    near = net.valid_output_shapes_near(tuple(target))
    below, above = near[0], near[-1]
    shape = tuple(int(b) if abs(t - b) < abs(a - t) else int(a) for t, b, a in zip(target, below, above))
    net.input_shape(shape)
    return shape


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


def _protected_paths(cfg: dict, config_path) -> list[tuple[str, Path]]:
    """The inputs a run must never delete: each data.train volume address (and its container)
    and the config file, as (what, path)."""
    from ..io import parse_address

    found = []
    for i, source in enumerate(cfg["data"]["train"]):
        for key in ("raw", "labels", "mask"):
            address = source.get(key)
            if not isinstance(address, str):
                continue
            found.append((f"data.train[{i}].{key}", Path(address)))
            try:
                found.append((f"data.train[{i}].{key}", parse_address(address)[0]))
            except (ValueError, TypeError):
                pass
    if config_path is not None:
        found.append(("the config file", Path(config_path)))
    return found


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it, as written and with links resolved."""
    for p, f in ((path.absolute(), folder.absolute()), (path.resolve(), folder.resolve())):
        if p == f or f in p.parents:
            return True
    return False


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _has_marker(output: Path) -> bool:
    marker = _read_json(output / RUN_MARKER)
    return isinstance(marker, dict) and marker.get("kind") == RUN_KIND


def _stored_config(output: Path) -> dict | None:
    """The validated config.json of a run folder, or None if there is none or it is not an affseg config."""
    stored = _read_json(output / "config.json")
    if not isinstance(stored, dict):
        return None
    try:
        return validate_config(stored)
    except (InputError, ValueError, TypeError):
        return None


def _foreign_entries(entries: list[str]) -> list[str]:
    return [e for e in entries if e not in RUN_ENTRIES and not is_temporary(e)]


def _why_not_replaceable(output: Path, entries: list[str], protected) -> str | None:
    """None if ``overwrite`` may delete ``output``: a training run affseg wrote (its marker, or,
    for runs older than the marker, a config.json that is a valid affseg config), holding nothing
    but what a run writes, and none of the config's inputs. Else the reason, for the message."""
    for what, path in protected:
        if _inside(path, output):
            return f"it holds {what} ({path}), which overwrite=True would delete"
    if output.is_symlink():
        return "it is a symbolic link"
    foreign = _foreign_entries(entries)
    old_run = (output / "checkpoints").is_dir() and _stored_config(output) is not None  # from before the marker
    if not (_has_marker(output) or old_run):
        return f"it is not an affseg training run{_holds(foreign)}"
    checkpoints = output / "checkpoints"
    if checkpoints.is_symlink() or (checkpoints.exists() and not checkpoints.is_dir()):
        return f"its {checkpoints.name} is not a folder of checkpoints"
    if checkpoints.is_dir():
        foreign += [f"checkpoints/{p.name}" for p in sorted(checkpoints.iterdir())
                    if not (_CHECKPOINT_NAME.match(p.name) or is_temporary(p.name))]
    if foreign:
        return f"it holds {_holds(foreign, bare=True)}, which an affseg training run does not write"
    return None


def _holds(names: list[str], bare: bool = False) -> str:
    if not names:
        return ""
    listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return listed if bare else f" (it holds {listed})"


def _remove_run(output: Path, entries: list[str]) -> None:
    """Delete what a run wrote (every entry was checked to be a run entry or a temporary)."""
    for name in entries:
        path = output / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _write_marker(output: Path) -> None:
    # "folder": where the run last ran, against which config.json's relative data paths also resolve
    with atomic_path(output / RUN_MARKER) as tmp:
        tmp.write_text(json.dumps({"kind": RUN_KIND, "version": __version__, "folder": str(output.resolve())},
                                  indent=2) + "\n")


def _same_experiment(previous: dict, cfg: dict, output: Path) -> bool:
    """Whether a run's stored config and a new one are one experiment (``train`` may differ). The
    stored data paths are relative to the run folder: they match where the run is now (moved
    together with its data) or where it last ran (the run folder moved alone)."""
    given = _with_data_paths(cfg, lambda p: str(Path(p).resolve()))
    marker = _read_json(output / RUN_MARKER)
    made_in = marker.get("folder") if isinstance(marker, dict) and isinstance(marker.get("folder"), str) else None
    for folder in [output] + ([Path(made_in)] if made_in else []):
        stored = _with_data_paths(previous, lambda p, folder=folder: str((folder / p).resolve()))
        if {k: v for k, v in stored.items() if k != "train"} == {k: v for k, v in given.items() if k != "train"}:
            return True
    return False


def _prepare_output(output: Path, cfg: dict, overwrite: bool, protected=()) -> Path | None:
    """Create the run folder, or find the checkpoint to resume from; refuses a different config,
    a folder that is not a run, and (``overwrite``) anything but a run that holds no input."""
    stored = output / "config.json"
    if output.exists() or output.is_symlink():
        if not output.is_dir():
            raise OutputExists(f"{output} exists and is not a folder; choose another output folder")
        entries = sorted(p.name for p in output.iterdir())
        if entries and overwrite:
            why = _why_not_replaceable(output, entries, protected)
            if why is not None:
                raise OutputExists(f"overwrite=True refuses to replace {output}: {why}. "
                                   f"It only replaces a training run that affseg wrote; choose another output folder")
            _remove_run(output, entries)
            entries = []
        if entries:
            previous = _stored_config(output)
            if previous is None and _has_marker(output) and (stored.exists() or latest_checkpoint(output)):
                why = "cannot be read as an affseg config" if stored.exists() else "is missing (the run has checkpoints)"
                raise CorruptInput(f"{stored} {why}; pass overwrite=True to start over or choose another output folder")
            if previous is None and not (_has_marker(output) and not _foreign_entries(entries)):
                raise OutputExists(f"{output} exists and is not an affseg training run"
                                   f"{_holds(_foreign_entries(entries))}; choose another output folder")
            if previous is not None:
                if not _same_experiment(previous, cfg, output):
                    hint = ("pass overwrite=True to start over or choose another output folder"
                            if _why_not_replaceable(output, entries, protected) is None else "choose another output folder")
                    raise OutputExists(f"{output} holds a run with a different config; {hint}")
                _settle(output, previous, cfg)
                return latest_checkpoint(output)
            # else: a run folder killed while it was created (the marker, no config yet): set it up
    output.mkdir(parents=True, exist_ok=True)
    _write_marker(output)
    (output / "checkpoints").mkdir(exist_ok=True)
    _write_config(output, cfg)
    return None


def _write_config(output: Path, cfg: dict) -> None:
    """config.json with data paths relative to the run folder (a folder moved together with its
    data still resumes)."""
    portable = _with_data_paths(cfg, lambda p: os.path.relpath(Path(p).resolve(), output.resolve()))
    with atomic_path(output / "config.json") as tmp:
        tmp.write_text(json.dumps(portable, indent=2))


def _settle(output: Path, previous: dict, cfg: dict) -> None:
    """A run resumed where it is now: its marker names this folder and config.json's data paths
    are relative to it (the stored train section is kept), so later moves compare against here."""
    marker = _read_json(output / RUN_MARKER)
    if not (isinstance(marker, dict) and marker.get("kind") == RUN_KIND and marker.get("folder") == str(output.resolve())):
        _write_marker(output)  # (also marks a run from before the marker)
    settled = {**cfg, "train": previous["train"]}
    if _stored_config(output) != _with_data_paths(settled, lambda p: os.path.relpath(Path(p).resolve(),
                                                                                     output.resolve())):
        _write_config(output, settled)


_DATA_PATH_KEYS = ("raw", "labels", "mask")


def _with_data_paths(cfg: dict, change: Callable[[str], str]) -> dict:
    """A copy of ``cfg`` with ``change`` applied to the raw, labels and mask path of each training source."""
    cfg = copy.deepcopy(cfg)
    for source in cfg.get("data", {}).get("train", []):
        for key in _DATA_PATH_KEYS:
            if isinstance(source.get(key), str):
                source[key] = change(source[key])
    return cfg


def _resume(output: Path, device, net: UNet, optimizer) -> tuple[dict, Path]:
    """Load the newest readable checkpoint of a run into ``net`` and ``optimizer``.

    A checkpoint that cannot be read (truncated, corrupt) is renamed ``<name>.unreadable`` and the
    previous one is used, with a warning naming both; CorruptInput if none can be read. A
    checkpoint that holds more than plain data stops the run (UnsafeCheckpoint): it was not
    written by affseg."""
    found = sorted((output / "checkpoints").glob("iteration_*.pt"), reverse=True)
    unreadable = []
    for path in found:
        try:
            state = _read_checkpoint(path, device, RESUME_KEYS)
            _load_weights(net, state, path)
            try:
                optimizer.load_state_dict(state["optimizer"])
                torch.set_rng_state(state["torch_rng"].cpu())
            except (ValueError, RuntimeError, TypeError, KeyError, AttributeError) as e:
                raise CorruptInput(f"checkpoint {path}: its optimizer or random state does not fit this run "
                                   f"({_first_line(e)})") from None
        except UnsafeCheckpoint:
            raise
        except CorruptInput as e:
            unreadable.append((path, e))
            continue
        if unreadable:
            moved = []
            for bad, _ in unreadable:
                target = bad.with_name(bad.name + ".unreadable")
                bad.replace(target)
                moved.append(target.name)
            warnings.warn(
                f"resuming {output} from {path} (iteration {state['iteration']}) because the newer "
                f"checkpoint cannot be read: {'; '.join(str(e) for _, e in unreadable)}. Set aside as "
                f"{', '.join(moved)}", RuntimeWarning, stacklevel=3)
        return state, path
    if not unreadable:
        raise CorruptInput(f"{output / 'checkpoints'} holds no checkpoint to resume from")
    raise CorruptInput(f"no checkpoint of {output} can be read: " + "; ".join(str(e) for _, e in unreadable)
                       + "; pass overwrite=True to start over or choose another output folder")


def _losses(cfg: dict, outputs: dict, batch: dict, iteration: int) -> tuple[torch.Tensor, dict, str]:
    train = cfg["train"]
    malis = train["malis_start"] is not None and iteration >= train["malis_start"]
    if "affs" not in outputs:  # model.type enb: the masks' Dice loss (and the LSDs')
        return _with_masks(cfg, outputs, batch, batch["raw"].new_zeros(()), {"loss_affs": ""}, "dice", 1.0)
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
    return _with_masks(cfg, outputs, batch, total, parts, "malis" if malis else train["loss"],
                       train["mask_loss_weight"])


def _with_masks(cfg: dict, outputs: dict, batch: dict, total, parts: dict, phase: str, weight: float):
    """Add the Dice loss of the decoded masks (model types enb, snb+enb), and the LSD loss of a
    model without an affinity head."""
    if "affs" not in outputs and "lsds" in outputs:
        loss_lsds = weighted_mse(outputs["lsds"], batch["lsds"], batch["lsds_mask"])
        parts["loss_lsds"] = float(loss_lsds.detach())
        total = total + loss_lsds
    if "masks_0" in outputs:
        from .central_masks import central_mask_loss

        loss_masks = central_mask_loss(cfg, outputs, batch)
        parts["loss_masks"] = float(loss_masks.detach())
        total = total + weight * loss_masks
    return total, parts, phase


def _save_checkpoint(output: Path, iteration: int, model, optimizer, cfg, keep: int) -> Path:
    path = output / "checkpoints" / f"iteration_{iteration:08d}.pt"
    with atomic_path(path) as tmp:
        # plain data only: it loads with weights_only=True (the config is made plain by validate_config)
        torch.save({"iteration": int(iteration), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "config": plain(cfg), "torch_rng": torch.get_rng_state()}, tmp)
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
    for name in [k for k in outputs if k.startswith("masks_")]:  # the sampled masks of the batch (mask branches)
        axes = ["c^"] + ["z", "y", "x"][-(outputs[name].ndim - 1):]
        write_volume(group / f"gt_{name}", batch[name].cpu().numpy(), axes=axes, overwrite=True)
        write_volume(group / f"weights_{name}", batch[f"{name}_weights"].cpu().numpy(), axes=axes, overwrite=True)
        write_volume(group / f"pred_{name}", outputs[name].detach().cpu().numpy(), axes=axes, overwrite=True)


def train(config: dict, output: str | Path, *, overwrite: bool = False, progress: bool = False,
          config_path: str | Path | None = None,
          on_resume: Callable[[int, Path], None] | None = None) -> TrainResult:
    """Train (or resume) the run in ``output`` as the config says.

    Parameters
    ----------
    config : dict
        A config as read by :func:`affseg.learn.config.load_config` (validated here again).
        A null ``model.output_shape`` is resolved (:func:`resolve_output_shape`); ``config.json``
        and the checkpoints store the resolved shape, so a resume compares resolved shapes.
    output : path
        Run folder: ``affseg-run.json`` (the marker ``{"kind": "affseg training run", "version":
        ...}``, written atomically when the folder is created), ``config.json``,
        ``checkpoints/iteration_*.pt``, ``log.csv``, ``snapshots.zarr``, ``tensorboard/`` (event
        files, when the ``tensorboard`` package is installed). An existing run with the
        same config resumes from its last readable checkpoint (an unreadable newer one is set
        aside with a warning). An existing folder that is not a run is refused.
    overwrite : bool
        Replace an existing run folder. Only a folder that affseg identifies as a training run
        it wrote is replaced: it holds the marker (or, for runs older than the marker, a
        ``config.json`` that is a valid affseg config and a ``checkpoints`` folder) and nothing
        but run entries (the files above, ``checkpoints/`` holding only ``iteration_*.pt``, and
        affseg's hidden temporaries ``.<name>.tmp-*``), and none of the config's inputs
        (data.train volumes) nor ``config_path`` lies inside it. Anything else is refused with
        :class:`~affseg.errors.OutputExists`; nothing is deleted.
    progress : bool
        Show a tqdm progress bar.
    config_path : path, optional
        The config file the config was read from, protected like the inputs.
    on_resume : callable, optional
        Called as ``on_resume(iteration, checkpoint)`` when the run resumes, with the checkpoint
        it was loaded from (before any iteration; also when no iteration is left to do).

    Returns
    -------
    result : TrainResult
        ``output``, the number of ``iterations`` done in all, the ``last_checkpoint`` and the
        ``log`` (CSV) path.

    Raises
    ------
    InputError
        A bad config (before any file is written).
    OutputExists
        ``output`` is not a run, holds a run of a different config, or may not be replaced.
    CorruptInput
        No checkpoint of the run to resume can be read (UnsafeCheckpoint: one holds more than
        plain data).
    TrainingError
        The loss became non-finite; the last good checkpoint is kept.
    """
    cfg = validate_config(config)
    output = Path(output)
    torch.manual_seed(cfg["train"]["seed"])  # the initial weights
    net = build_model(cfg)
    cfg["model"]["output_shape"] = list(resolve_output_shape(cfg, net))
    if cfg["model"]["type"] != "snb":
        check_masks_fit(cfg, cfg["model"]["output_shape"])  # factors divide the crop, centres fit in it
    sampler = _sampler(cfg, net)  # shapes and sources checked before any file is written
    device = _device(cfg["train"]["device"])
    resume = _prepare_output(output, cfg, overwrite, _protected_paths(cfg, config_path))
    net = net.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg["train"]["learning_rate"], betas=tuple(cfg["train"]["betas"]))
    start = 0
    log = output / "log.csv"
    if resume is not None:
        state, resume = _resume(output, device, net, optimizer)
        start = state["iteration"]
        if on_resume is not None:
            on_resume(start, resume)
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
    board = TensorBoardLog(output, start, enabled=cfg["train"]["tensorboard"])  # nothing without the package
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
                add_sampled_masks(net, outputs, batch, cfg, iteration)  # mask branches only
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
                                     "loss_masks": parts.get("loss_masks", ""),
                                     "time_data": t1 - t0, "time_forward": t2 - t1, "time_loss": t3 - t2,
                                     "time_backward": t4 - t3})
                    f.flush()
                    board.scalars(iteration, phase=phase, loss=float(loss.detach()), parts=parts,
                                  learning_rate=optimizer.param_groups[0]["lr"],
                                  times={"data": t1 - t0, "forward": t2 - t1, "loss": t3 - t2, "backward": t4 - t3})
                every = cfg["train"]["snapshot_every"]
                if every and iteration % every == 0:
                    _snapshot(output, iteration, batch, outputs)
                    board.images(iteration, batch, outputs)
                if iteration % cfg["train"]["checkpoint_every"] == 0 or iteration == total:
                    last = _save_checkpoint(output, iteration, net, optimizer, cfg, cfg["train"]["keep_checkpoints"])
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", phase=phase)
                bar.update()
    finally:
        bar.close()
        board.close()
        del batches
    return TrainResult(output, total, last, log)
