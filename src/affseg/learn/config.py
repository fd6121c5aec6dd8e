"""Training configuration: YAML or TOML, validated before any work with messages that name the key."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, PathNotFound

__all__ = ["DEFAULTS", "load_config", "validate_config"]

# mse/bce: affinities against ground truth; random_walker: the affinities are the diffusivities of
# a random walker seeded from the ground truth (one blob per object), cross-entropy on its output
LOSSES = ("mse", "bce", "random_walker")
# snb: sparse affinities (the affinity head); enb: encoded central-instance masks; snb+enb: both
MODEL_TYPES = ("snb", "enb", "snb+enb")

# section -> key -> (allowed types, default); ``None`` in the types means the key may be null
DEFAULTS: dict[str, dict[str, tuple]] = {
    "data": {
        "train": ((list,), []),
        "voxel_size": ((list, None), None),
        "min_labelled": ((float, int), 0.5),
        "grow_boundary": ((int,), 0),
        "num_workers": ((int,), 0),
    },
    "model": {
        "num_fmaps": ((int,), 12),
        "fmap_inc_factor": ((int,), 5),
        "downsample_factors": ((list,), [[1, 3, 3], [1, 3, 3], [3, 3, 3]]),
        "kernel_sizes": ((int, list), 3),
        "padding": ((str,), "valid"),
        "upsampling": ((str,), "constant"),
        # null: the valid output shape nearest to a target that fits the model (see
        # affseg.learn.train.resolve_output_shape), so the defaults work with any downsample_factors
        "output_shape": ((list, None), None),
        # snb: affinity head only; enb: encoded central-instance masks (Bailoni et al. 2020) only;
        # snb+enb: both (see the masks section and affseg.learn.central_masks)
        "type": ((str,), "snb"),
    },
    "targets": {
        "offsets": ((list,), [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]),
        "lsd_sigma": ((float, int, None), None),
        "lsd_downsample": ((int,), 1),
        "rw_seed_radius": ((int,), 2),
    },
    "masks": {
        # each {window: odd sizes on the branch grid, factor: downscale per axis}; null: one
        # full-resolution branch with a 5 x 7 x 7 (3D) or 7 x 7 (2D) window
        "branches": ((list, None), None),
        "latent_channels": ((int,), 32),
        "decoder_channels": ((int,), 16),
        "centres": ((int,), 64),
        "boundary_margin": ((int, list), 2),
        "inverted": ((bool,), True),
        "offsets": ((list, None), None),
        "readout": ((str,), "aggregate"),
    },
    "augment": {
        "mirror": ((bool,), True),
        "transpose": ((bool,), True),
        "elastic_spacing": ((float, int), 10.0),
        "elastic_sigma": ((float, int), 1.0),
        "rotation": ((bool,), True),
        "intensity_scale": ((float, int), 0.1),
        "intensity_shift": ((float, int), 0.1),
        "missing_section": ((float, int), 0.0),
        "low_contrast": ((float, int), 0.0),
        "contrast_factor": ((float, int), 0.1),
    },
    "train": {
        "iterations": ((int,), 1000),
        "batch_size": ((int,), 1),
        "learning_rate": ((float,), 0.5e-4),  # MALA (Funke 2018): Adam, lr 0.5e-4, betas 0.95, 0.999
        "betas": ((list,), [0.95, 0.999]),
        "loss": ((str,), "mse"),
        "malis_start": ((int, None), None),
        "malis_constrained": ((bool,), True),
        # optional share of the balanced affinity MSE kept in the MALIS phase (0: MALIS alone,
        # as Turaga 2009 and Funke 2018; see docs/benchmarks.md for neuroproof)
        "malis_affinity_weight": ((float, int), 0.0),
        "rw_gradient": ((str,), "exact"),
        "rw_samples": ((int,), 1000),
        # optional share of the balanced affinity MSE added to the random-walker loss (0: the
        # paper's loss alone, best on ISBI 2012 at lr 1e-4; see docs/benchmarks.md)
        "rw_affinity_weight": ((float, int), 0.0),
        # weight of the masks' Dice loss beside the affinity loss (model.type snb+enb)
        "mask_loss_weight": ((float, int), 1.0),
        "checkpoint_every": ((int,), 100),
        "keep_checkpoints": ((int,), 3),
        "snapshot_every": ((int,), 0),
        "log_every": ((int,), 1),
        # also write TensorBoard event files to <run>/tensorboard when the package is installed
        "tensorboard": ((bool,), True),
        "seed": ((int,), 0),
        "device": ((str,), "auto"),
    },
}
_SOURCE_KEYS = {"raw", "labels", "mask", "roi"}


def _type_ok(value, types) -> bool:
    if value is None:
        return None in types
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return any(t is not None and isinstance(value, t) for t in types)


def _type_names(types) -> str:
    return " or ".join("null" if t is None else t.__name__ for t in types)


def plain(value, where: str = "config"):
    """``value`` as plain data: dicts with string keys, lists, str, int, float, bool, None.

    Tuples become lists, numpy scalars python numbers, paths strings; anything else (an array,
    an object) is an :class:`~affseg.errors.InputError` naming where it is. A config made of plain
    data can be stored as JSON and in a checkpoint that loads with ``weights_only=True``.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, np.generic):
        return plain(value.item(), where)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fsdecode(value)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InputError(f"{where}: keys must be strings, got {key!r}")
            out[key] = plain(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise InputError(f"{where} must be plain data (a number, string, list or mapping), got a {type(value).__name__}")


def validate_config(config: dict, *, where: str = "config") -> dict:
    """The config with defaults filled in, or a ValueError naming the first bad key.

    The result is a new dict of plain data (see :func:`plain`); ``config`` is not changed.

    Parameters
    ----------
    config : dict
        Sections (``data``, ``model``, ``targets``, ``augment``, ``train``) of keys; missing
        sections and keys take the defaults of :data:`DEFAULTS`.
    where : str
        How error messages name the config (e.g. its file).

    Returns
    -------
    config : dict
        Every section with every key.

    Raises
    ------
    InputError
        If ``config`` is not plain data, a section or key is unknown, or a value has the wrong
        type or is out of range.
    """
    if not isinstance(config, dict):
        raise InputError(f"{where} must be a mapping of sections, got {type(config).__name__}")
    config = plain(config, where)
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise InputError(f"{where}: unknown section(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    out = {}
    for section, keys in DEFAULTS.items():
        given = config.get(section) or {}
        if not isinstance(given, dict):
            raise InputError(f"{where}: section '{section}' must be a mapping, got {given!r}")
        unknown = set(given) - set(keys)
        if unknown:
            raise InputError(f"{where}: unknown key(s) {sorted(unknown)} in '{section}'; known: {sorted(keys)}")
        out[section] = {}
        for key, (types, default) in keys.items():
            value = given.get(key, copy.deepcopy(default))
            if not _type_ok(value, types):
                raise InputError(f"{where}: {section}.{key} must be {_type_names(types)}, got {value!r}")
            out[section][key] = value
    _check_values(out, where)
    return out


def _check_values(cfg: dict, where: str) -> None:
    def bad(key, why):
        raise InputError(f"{where}: {key} {why}")

    train = cfg["train"]
    for key in ("iterations", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
        if train[key] < 1:
            bad(f"train.{key}", f"must be >= 1, got {train[key]}")
    if train["loss"] not in LOSSES:
        bad("train.loss", f"must be one of {LOSSES}, got {train['loss']!r}")
    if train["loss"] == "random_walker" and train["malis_start"] is not None:
        bad("train.malis_start", "must be null with the random_walker loss")
    if train["rw_gradient"] not in ("exact", "sampled"):
        bad("train.rw_gradient", f"must be 'exact' or 'sampled', got {train['rw_gradient']!r}")
    for key in ("rw_affinity_weight", "malis_affinity_weight"):
        if train[key] < 0:
            bad(f"train.{key}", f"must be >= 0, got {train[key]}")
    if train["rw_samples"] < 1 or cfg["targets"]["rw_seed_radius"] < 0:
        bad("train.rw_samples / targets.rw_seed_radius", "must be >= 1 / >= 0")
    if train["device"] not in ("auto", "cpu", "cuda") and not train["device"].startswith("cuda:"):
        bad("train.device", f"must be auto, cpu or cuda[:N], got {train['device']!r}")
    if train["learning_rate"] <= 0:
        bad("train.learning_rate", f"must be positive, got {train['learning_rate']}")
    if len(train["betas"]) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in train["betas"]):
        bad("train.betas", f"must be two numbers in [0, 1), got {train['betas']}")
    if train["snapshot_every"] < 0:
        bad("train.snapshot_every", f"must be >= 0, got {train['snapshot_every']}")
    data = cfg["data"]
    if not data["train"]:
        bad("data.train", "must list at least one volume, e.g. [{raw: data.h5/raw, labels: data.h5/labels}]")
    for i, source in enumerate(data["train"]):
        if not isinstance(source, dict) or not {"raw", "labels"} <= set(source) or set(source) - _SOURCE_KEYS:
            bad(f"data.train[{i}]", f"must have the keys raw, labels (and optionally mask, roi), got {source!r}")
    if data["num_workers"] < 0:
        bad("data.num_workers", f"must be >= 0, got {data['num_workers']}")
    if not 0 <= data["min_labelled"] <= 1:
        bad("data.min_labelled", f"must lie in [0, 1], got {data['min_labelled']}")
    model = cfg["model"]
    shape = model["output_shape"]
    if shape is not None and (not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                                   for s in shape)):
        bad("model.output_shape", f"must be null or positive integers, got {shape}")
    if model["type"] not in MODEL_TYPES:
        bad("model.type", f"must be one of {MODEL_TYPES}, got {model['type']!r}")
    if train["mask_loss_weight"] < 0:
        bad("train.mask_loss_weight", f"must be >= 0, got {train['mask_loss_weight']}")
    if "enb" in model["type"]:
        from .central_masks_config import check_masks_config

        check_masks_config(cfg, where)


def load_config(path: str | os.PathLike) -> dict:
    """Read a ``.yaml``/``.yml`` or ``.toml`` config and validate it; relative data paths are
    resolved against the config file's folder.

    Parameters
    ----------
    path : str or path-like
        The config file.

    Returns
    -------
    config : dict
        The validated config (see :func:`validate_config`), with the ``raw``, ``labels`` and
        ``mask`` of each ``data.train`` entry made absolute.

    Raises
    ------
    PathNotFound
        If ``path`` is not a file.
    InputError
        If the suffix is not ``.yaml``, ``.yml`` or ``.toml``, the text does not parse, or the
        config is invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise PathNotFound(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise InputError(f"{path} is not valid YAML: {e}") from None
    elif path.suffix.lower() == ".toml":
        import tomllib

        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{path} is not valid TOML: {e}") from None
    else:
        raise InputError(f"config {path} must end in .yaml, .yml or .toml")
    cfg = validate_config(raw, where=str(path))
    for source in cfg["data"]["train"]:
        for key in ("raw", "labels", "mask"):
            if isinstance(source.get(key), str) and not Path(source[key]).is_absolute():
                source[key] = str((path.parent / source[key]).resolve())
    return cfg
