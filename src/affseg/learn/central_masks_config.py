"""The ``masks`` section of a training config (encoded central-instance masks), torch-free.

:func:`check_masks_config` is called by :func:`affseg.learn.config.validate_config` for a model
of type ``enb`` or ``snb+enb``; :func:`mask_branches` and :func:`mask_offsets` read the section
with its defaults resolved.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..central_masks.aggregate import READOUTS
from ..errors import InputError

__all__ = ["READOUTS", "check_masks_config", "check_masks_fit", "mask_branches", "mask_offsets"]

DEFAULT_WINDOW = {3: [5, 7, 7], 2: [7, 7]}  # the finest branch of Bailoni et al. 2020


def _dims(cfg: dict) -> int:
    return len(cfg["targets"]["offsets"][0])


def mask_branches(cfg: dict) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The ``(window, factor)`` of every branch of a config.

    Parameters
    ----------
    cfg : dict
        A validated config.

    Returns
    -------
    branches : list of (tuple of int, tuple of int)
        ``masks.branches`` with the factor filled in (1 per axis); null: one full-resolution
        branch with a 5 x 7 x 7 (3D) or 7 x 7 (2D) window.
    """
    dims = _dims(cfg)
    given = cfg["masks"]["branches"]
    if given is None:
        return [(tuple(DEFAULT_WINDOW[dims]), (1,) * dims)]
    return [(tuple(b["window"]), tuple(b.get("factor") or [1] * dims)) for b in given]


def mask_offsets(cfg: dict) -> list[list[int]]:
    """The offsets whose affinities ``affseg predict`` derives from the masks.

    Parameters
    ----------
    cfg : dict
        A validated config.

    Returns
    -------
    offsets : list of list of int
        ``masks.offsets``, or ``targets.offsets`` where it is null.
    """
    offsets = cfg["masks"]["offsets"]
    return [list(o) for o in (offsets if offsets is not None else cfg["targets"]["offsets"])]


def _positive_ints(value, dims: int) -> bool:
    return (isinstance(value, list) and len(value) == dims
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))


def check_masks_config(cfg: dict, where: str = "config") -> None:
    """Refuse a bad ``masks`` section (and ``model.output_shape``s its factors do not divide).

    Parameters
    ----------
    cfg : dict
        A config whose sections and key types are checked, with ``model.type`` ``enb`` or
        ``snb+enb``.
    where : str
        How error messages name the config.

    Raises
    ------
    InputError
        Naming the key: MALIS or the random-walker loss without an affinity head (``enb``), branches that are not ``{window, factor}`` mappings of ``ndim`` positive
        integers, even window sizes, non-positive channel or centre counts, a bad readout or
        boundary margin, an offset that fits no branch (a multiple of its factor inside its
        window), or a set ``model.output_shape`` that a factor does not divide.
    """
    from ..central_masks import branch_for_offsets

    def bad(key, why):
        raise InputError(f"{where}: {key} {why}")

    masks, dims = cfg["masks"], _dims(cfg)
    if cfg["model"]["type"] == "enb":  # no affinity head for the affinity losses to train
        if cfg["train"]["malis_start"] is not None:
            bad("train.malis_start", "must be null with model.type enb (MALIS trains an affinity head: use snb+enb)")
        if cfg["train"]["loss"] == "random_walker":
            bad("train.loss", "random_walker trains an affinity head, which model.type enb has not: use snb+enb")
    given = masks["branches"]
    if given is not None:
        if not given:
            bad("masks.branches", "must list at least one branch (or be null for the default), e.g. "
                                  "[{window: [5, 7, 7], factor: [1, 1, 1]}]")
        for i, branch in enumerate(given):
            if not isinstance(branch, dict) or "window" not in branch or set(branch) - {"window", "factor"}:
                bad(f"masks.branches[{i}]", f"must be a mapping with the keys window (and optionally factor), "
                                            f"got {branch!r}")
            if not _positive_ints(branch["window"], dims) or any(w % 2 == 0 for w in branch["window"]):
                bad(f"masks.branches[{i}].window", f"must be {dims} odd positive sizes (the centre voxel in the "
                                                   f"middle), got {branch['window']!r}")
            if branch.get("factor") is not None and not _positive_ints(branch["factor"], dims):
                bad(f"masks.branches[{i}].factor", f"must be {dims} positive integers, got {branch['factor']!r}")
    for key in ("latent_channels", "decoder_channels", "centres"):
        if masks[key] < 1:
            bad(f"masks.{key}", f"must be >= 1, got {masks[key]}")
    margin = masks["boundary_margin"]
    margins = margin if isinstance(margin, list) else [margin]
    if (isinstance(margin, list) and len(margin) != dims) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in margins):
        bad("masks.boundary_margin", f"must be an integer >= 0 or {dims} of them, got {margin!r}")
    if masks["readout"] not in READOUTS:
        bad("masks.readout", f"must be one of {READOUTS}, got {masks['readout']!r}")
    given = masks["offsets"]
    if given is not None and (not given or not all(_is_offset(o, dims) for o in given)):
        bad("masks.offsets", f"must be null or a list of {dims}-integer offsets, got {given!r}")
    offsets = mask_offsets(cfg)
    try:
        branch_for_offsets(offsets, mask_branches(cfg))
    except InputError as e:
        key = "masks.offsets" if masks["offsets"] is not None else "targets.offsets"
        raise InputError(f"{where}: {key} (the affinities derived from the masks): {e}") from None
    shape = cfg["model"]["output_shape"]
    if shape is not None and len(shape) == dims:
        check_masks_fit(cfg, shape, where)


def _is_offset(value, dims: int) -> bool:
    return (isinstance(value, list) and len(value) == dims
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value))


def check_masks_fit(cfg: dict, output_shape: Sequence[int], where: str = "config") -> None:
    """Refuse a training output shape that a branch factor does not divide, or whose branch grid
    holds fewer voxels than ``masks.centres`` (the centres are distinct grid voxels).

    Parameters
    ----------
    cfg : dict
        A config with a ``masks`` section.
    output_shape : sequence of int
        The training output shape (``model.output_shape``, resolved).
    where : str
        How error messages name the config.

    Raises
    ------
    InputError
        Naming the branch, its factor and the shape.
    """
    centres = cfg["masks"]["centres"]
    for i, (_window, factor) in enumerate(mask_branches(cfg)):
        if any(s % f for s, f in zip(output_shape, factor)):
            raise InputError(f"{where}: the factor {list(factor)} of masks.branches[{i}] does not divide the "
                             f"training output shape {list(output_shape)} (model.output_shape); choose a "
                             f"shape it divides")
        voxels = 1
        for s, f in zip(output_shape, factor):
            voxels *= s // f
        if centres > voxels:
            raise InputError(f"{where}: masks.centres is {centres} but the grid of masks.branches[{i}] (factor "
                             f"{list(factor)}) has only {voxels} voxels in the training output shape "
                             f"{list(output_shape)}; lower masks.centres")
