"""Benchmark inputs from a spec string: synthetic generators, the neuroproof labels, or any file.

``load_input(spec, offsets)`` returns ``(affs, labels, offsets, description)``: affinities
float32 ``(C, z, y, x)`` in [0, 1] for the requested offsets (channel ``c`` at ``u`` links ``u``
and ``u + offsets[c]``, 1 = same object), labels uint64 ``(z, y, x)`` or None, the offsets as a
``(C, 3)`` int64 array and a one-line description for the benchmark's report. The specs are in
``INPUT_HELP`` (the ``--input`` help of every benchmark) and in docs/benchmarks.md, "Inputs".
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data"
NEUROPROOF = DATA_DIR / "neuroproof_train.h5"

DEFAULT_SHAPE = (64, 256, 256)
NEAREST = np.array([[-1, 0, 0], [0, -1, 0], [0, 0, -1]], dtype=np.int64)

# neuroproof noise presets: blur (sigma, voxels) and the amplitudes of affseg.synthetic.noisy_affinities'
# correlated (smooth, sigma 3) and white noise. `medium` is noisy_affinities' defaults, i.e. the input of the
# published neuroproof figures; `noise=N` stands for correlated N, white N / 2 (the defaults' ratio).
NEUROPROOF_PRESETS = {
    "low": {"blur": 0.5, "correlated_noise": 0.1, "white_noise": 0.05},
    "medium": {"blur": 0.7, "correlated_noise": 0.2, "white_noise": 0.1},
    "high": {"blur": 1.0, "correlated_noise": 0.4, "white_noise": 0.2},
}

# the curves generator: ground-truth affinities blurred (sigma CURVES_BLUR), plus correlated (white noise smoothed
# with sigma CURVES_SMOOTH, then scaled) and white noise of these standard deviations, clipped to [0, 1]: 38.8 % of
# the values end up exactly 0 or 1 at seed 0, 64 x 256 x 256 (0.6 % at 0, 38.3 % at 1)
CURVES_PER_VOLUME = 300  # curves in 64 x 256 x 256, scaled with the volume
CURVES_BLUR = 0.5
CURVES_SMOOTH = 2.0
CURVES_CORRELATED = 0.15
CURVES_WHITE = 0.1

GENERATORS = ("synthetic", "curves", "neuroproof")

INPUT_HELP = (
    "the input volume; one of: "
    "'synthetic[:SEED][:shape=ZxYxX]' (affseg.synthetic.make_volume, 64 x 256 x 256: neurites along z, noisy "
    "affinities with membrane gaps and spurious boundaries); "
    "'curves[:SEED][:shape=ZxYxX]' (Voronoi cells of about 300 random smooth curves in every direction, "
    "ground-truth affinities plus correlated and white noise clipped to [0, 1], about 39%% of the values exactly "
    "0 or 1, 64 x 256 x 256); "
    "'neuroproof[:SEED][:low|medium|high][:blur=B,noise=N,correlated=C,white=W][:shape=ZxYxX]' "
    "(../shared/data/neuroproof_train.h5 labels, 150 x 250 x 250, through affseg.synthetic.noisy_affinities; "
    "presets blur / correlated / white noise: low 0.5 / 0.1 / 0.05, medium (default) 0.7 / 0.2 / 0.1, high "
    "1.0 / 0.4 / 0.2; noise=N sets correlated N and white N/2; shape= crops from the corner); "
    "'FILE.h5/AFFS[,labels=FILE.h5/LABELS]' or the same with .zarr (your affinities (C, z, y, x), float or "
    "uint8, their offsets from the dataset's `offsets` attribute, else the 3 nearest neighbours; the channels "
    "the benchmark needs are picked by offset; labels, optional, score the results). SEED defaults to --seed; "
    "the fields after the name come in any order, a later one overriding an earlier"
)


class InputSpecError(ValueError):
    """A spec that cannot be parsed or an input that does not fit the benchmark."""


@dataclass
class Spec:
    kind: str  # a generator name, or "file"
    seed: int | None = None
    options: dict = field(default_factory=dict)
    affs: str | None = None  # file specs
    labels: str | None = None


def _shape(text: str, spec: str) -> tuple[int, int, int]:
    parts = text.split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise InputSpecError(f"input {spec!r}: shape must be three positive sizes ZxYxX, got {text!r}")
    return shape


def parse_spec(spec: str) -> Spec:
    """Split a spec into its parts (syntax only: nothing is read or generated)."""
    spec = spec.strip()
    name, _, rest = spec.partition(":")
    if name in GENERATORS:
        parsed = Spec(name)
        for part in rest.split(":") if rest else []:
            if re.fullmatch(r"\d+", part):
                if parsed.seed is not None:
                    raise InputSpecError(f"input {spec!r}: two seeds")
                parsed.seed = int(part)
            elif part in NEUROPROOF_PRESETS and name == "neuroproof":
                parsed.options.update(NEUROPROOF_PRESETS[part], preset=part)
            elif "=" in part:
                for item in part.split(","):
                    key, _, value = item.partition("=")
                    _option(parsed, key.strip(), value.strip(), spec)
            else:
                presets = f", a preset ({' / '.join(NEUROPROOF_PRESETS)})" if name == "neuroproof" else ""
                raise InputSpecError(f"input {spec!r}: cannot read {part!r}; expected a seed (an integer){presets} "
                                     f"or key=value options")
        return parsed
    affs, _, labels = spec.partition(",labels=")
    from affseg.errors import InputError
    from affseg.io import parse_address

    try:
        parse_address(affs)
        if labels:
            parse_address(labels)
    except InputError:
        if "/" not in spec and "." not in spec:
            raise InputSpecError(f"unknown input {spec!r}: expected one of {', '.join(GENERATORS)} (with options) "
                                 "or a dataset FILE.h5/AFFS[,labels=FILE.h5/LABELS] (or .zarr)") from None
        raise InputSpecError(f"input {spec!r} is neither a generator ({', '.join(GENERATORS)}) nor a dataset "
                             "address: expected FILE.h5/AFFS[,labels=FILE.h5/LABELS] or FILE.zarr/AFFS[,...]") from None
    return Spec("file", affs=affs, labels=labels or None)


def _option(parsed: Spec, key: str, value: str, spec: str) -> None:
    numbers = {"blur": "blur", "noise": "noise", "correlated": "correlated_noise", "white": "white_noise"}
    if key == "shape":
        parsed.options["shape"] = _shape(value, spec)
    elif parsed.kind == "neuroproof" and key in numbers:
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not number >= 0:
            raise InputSpecError(f"input {spec!r}: {key} must be a number >= 0, got {value!r}")
        if key == "noise":
            parsed.options.update(correlated_noise=number, white_noise=number / 2)
        else:
            parsed.options[numbers[key]] = number
        parsed.options.pop("preset", None)
    else:
        known = "shape" + (", blur, noise, correlated, white" if parsed.kind == "neuroproof" else "")
        raise InputSpecError(f"input {spec!r}: unknown option {key!r} for {parsed.kind} (known: {known})")


def check_spec(spec: str) -> str:
    """argparse ``type=``: the spec unchanged, or its syntax error as an argparse error."""
    try:
        parse_spec(spec)
    except InputSpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return spec


def add_input_argument(parser: argparse.ArgumentParser, default: str | None = "synthetic",
                       default_text: str | None = None) -> None:
    """``--input SPEC`` (checked for syntax when parsed)."""
    text = default_text or f"default {default}"
    parser.add_argument("--input", default=default, type=check_spec, metavar="SPEC", help=f"{INPUT_HELP} ({text})")


# ----------------------------------------------------------------------------------- generators


def curve_labels(shape=DEFAULT_SHAPE, seed: int = 0, n_curves: int | None = None) -> np.ndarray:
    """Voronoi cells (uint64, ids 1..n) of random smooth 3D curves in every direction.

    Each curve is a random walk with momentum (unit steps, the direction turned by a little
    Gaussian noise each step) from a random point, both ways, for a random length; every voxel
    takes the id of the nearest curve voxel (Euclidean distance transform).
    """
    from scipy import ndimage as ndi

    shape = tuple(int(s) for s in shape)
    rng = np.random.default_rng(seed)
    if n_curves is None:
        n_curves = max(2, round(CURVES_PER_VOLUME * np.prod(shape) / np.prod(DEFAULT_SHAPE)))
    ids = np.zeros(shape, np.int32)
    bounds = np.array(shape)
    start = rng.random((n_curves, 3)) * bounds
    heading = rng.normal(size=(n_curves, 3))
    heading /= np.linalg.norm(heading, axis=1, keepdims=True)
    lengths = rng.integers(10, 2 * max(shape), size=n_curves)
    names = np.arange(1, n_curves + 1, dtype=np.int32)
    for sign in (1.0, -1.0):
        p, d = start.copy(), heading * sign
        alive = np.ones(n_curves, bool)
        for step in range(int(lengths.max())):
            index = np.floor(p).astype(np.int64)
            alive &= np.all((index >= 0) & (index < bounds), axis=1) & (step < lengths)
            if not alive.any():
                break
            ids[tuple(index[alive].T)] = names[alive]
            d = d + rng.normal(scale=0.15, size=d.shape)
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            p = p + d
    if not ids.any():
        ids[tuple(bounds // 2)] = 1
    nearest = ndi.distance_transform_edt(ids == 0, return_distances=False, return_indices=True)
    labels = ids[tuple(nearest)]
    del nearest
    present = np.zeros(n_curves + 1, bool)
    present[labels.ravel()] = True
    consecutive = np.cumsum(present).astype(np.uint64)
    return consecutive[labels]


def curves_volume(shape=DEFAULT_SHAPE, seed: int = 0, offsets=None) -> tuple[np.ndarray, np.ndarray, float]:
    """The ``curves`` input: affinities (C, *shape) float32, labels and the share of affinities
    exactly 0 or 1.

    Ground-truth affinities of :func:`curve_labels`, blurred (sigma ``CURVES_BLUR``), plus
    correlated noise (white noise smoothed with sigma
    ``CURVES_SMOOTH``, scaled to standard deviation ``CURVES_CORRELATED``) and white noise
    (standard deviation ``CURVES_WHITE``), clipped to [0, 1]: the noise pushes a large share of
    the values past the bounds, so many are exactly 0 or 1 (ties for every method that sorts).
    """
    from scipy import ndimage as ndi

    from affseg.conventions import affinities_from_labels

    offsets = NEAREST if offsets is None else np.asarray(offsets, dtype=np.int64)
    labels = curve_labels(shape, seed)
    rng = np.random.default_rng([seed, 1])
    affs, _ = affinities_from_labels(labels, offsets)
    for c in range(len(offsets)):
        a = ndi.gaussian_filter(affs[c], CURVES_BLUR)
        smooth = ndi.gaussian_filter(rng.standard_normal(labels.shape, dtype=np.float32), CURVES_SMOOTH)
        a += smooth * np.float32(CURVES_CORRELATED / (smooth.std() + 1e-12))
        a += rng.standard_normal(labels.shape, dtype=np.float32) * np.float32(CURVES_WHITE)
        np.clip(a, 0.0, 1.0, out=affs[c])
    saturated = float(np.count_nonzero((affs == 0) | (affs == 1)) / affs.size)
    return affs, labels, saturated


# ----------------------------------------------------------------------------------- loading


def _crop(shape, vol_shape, what: str, spec: str) -> tuple[slice, ...]:
    if shape is None:
        return (slice(None),) * len(vol_shape)
    if len(shape) != len(vol_shape) or any(s > v for s, v in zip(shape, vol_shape)):
        raise InputSpecError(f"input {spec!r}: cannot crop {shape} from {what} of shape {tuple(vol_shape)}")
    return tuple(slice(0, s) for s in shape)


def _read_file(parsed: Spec, offsets, shape, spec: str):
    from affseg._checks import as_labels, as_unit_float32
    from affseg.io import open_volume

    with open_volume(parsed.affs) as vol:
        if vol.ndim != 4:
            raise InputSpecError(f"{parsed.affs} must hold affinities (C, z, y, x), got shape {vol.shape}")
        channels, spatial = vol.shape[0], vol.shape[1:]
        stored = vol.data.attrs.get("offsets")
        crop = _crop(shape, spatial, parsed.affs, spec)
        if stored is None:
            if channels != 3:
                raise InputSpecError(
                    f"{parsed.affs} has {channels} channels and no `offsets` attribute: without it the channels "
                    f"must be the 3 nearest neighbours {NEAREST.tolist()}; store the offsets as the dataset's "
                    f"`offsets` attribute")
            stored = NEAREST
        stored = np.asarray(stored, dtype=np.int64)
        if stored.shape != (channels, 3):
            raise InputSpecError(f"{parsed.affs}: its `offsets` attribute {stored.tolist()} does not fit its "
                                 f"{channels} channels of 3D offsets")
        if offsets is None:
            picked = list(range(channels))
        else:
            where = {tuple(o): c for c, o in reversed(list(enumerate(stored.tolist())))}
            missing = [o for o in offsets.tolist() if tuple(o) not in where]
            if missing:
                raise InputSpecError(
                    f"the benchmark needs {len(offsets)} affinity channels for the offsets {offsets.tolist()}, but "
                    f"{parsed.affs} has {channels} channel(s) with offsets {stored.tolist()} (missing {missing})")
            picked = [where[tuple(o)] for o in offsets.tolist()]
        if picked == list(range(channels)):
            data = vol[(slice(None),) + crop]
        else:
            data = np.stack([vol[(c,) + crop] for c in picked])
    try:
        affs = as_unit_float32(data, name=parsed.affs)
    except ValueError as e:
        raise InputSpecError(str(e)) from None
    labels = None
    if parsed.labels:
        with open_volume(parsed.labels) as lab:
            if lab.shape != spatial:
                raise InputSpecError(f"labels {parsed.labels} have shape {lab.shape}, but the affinities "
                                     f"{parsed.affs} have the spatial shape {spatial}")
            labels = as_labels(lab[crop], name=parsed.labels)
    desc = (f"{parsed.affs} {affs.shape[1:]}"
            + (f" (channels {picked} of {channels})" if picked != list(range(channels)) else "")
            + (f", labels {parsed.labels}" if labels is not None else ", no labels (scores skipped)"))
    return affs, labels, stored[picked], desc


def load_input(spec: str, offsets=None, *, seed: int = 0, shape=None):
    """The benchmark input of ``spec`` for ``offsets`` (default: the nearest neighbours).

    Parameters
    ----------
    spec : str
        See ``INPUT_HELP``.
    offsets : (C, 3) array_like of int, optional
        The offsets the benchmark needs. Generators make these channels; a file must hold them
        (they are picked by its ``offsets`` attribute). For a file, None takes all its channels.
    seed : int
        The seed where the spec gives none.
    shape : (z, y, x), optional
        Overrides the spec's ``shape=``: the generated shape (synthetic, curves) or a crop from
        the corner (neuroproof, files).

    Returns
    -------
    affs : (C, z, y, x) float32 in [0, 1]
    labels : (z, y, x) uint64, or None for a file without labels
    offsets : (C, 3) int64, the offsets of ``affs``' channels
    description : str
    """
    parsed = parse_spec(spec)
    requested = None if offsets is None else np.asarray(offsets, dtype=np.int64).reshape(-1, 3)
    if shape is not None:
        shape = tuple(int(s) for s in shape)
    else:
        shape = parsed.options.get("shape")
    if parsed.kind == "file":
        return _read_file(parsed, requested, shape, spec)
    offsets = NEAREST if requested is None else requested
    seed = parsed.seed if parsed.seed is not None else int(seed)
    where = "" if offsets is NEAREST or np.array_equal(offsets, NEAREST) else f", offsets {offsets.tolist()}"
    if parsed.kind == "synthetic":
        from affseg.synthetic import make_volume

        gen_shape = shape or DEFAULT_SHAPE
        vol = make_volume(gen_shape, seed=seed, offsets=offsets)
        desc = (f"synthetic {' x '.join(map(str, gen_shape))}, noisy affinities (affseg.synthetic, seed {seed})"
                f"{where}")
        return vol.affs, vol.labels, vol.offsets, desc
    if parsed.kind == "curves":
        gen_shape = shape or DEFAULT_SHAPE
        affs, labels, saturated = curves_volume(gen_shape, seed, offsets)
        desc = (f"curves {' x '.join(map(str, gen_shape))} (seed {seed}): {int(labels.max())} Voronoi cells of random "
                f"curves, affinities {saturated:.1%} exactly 0 or 1{where}")
        return affs, labels, offsets, desc
    # neuroproof
    from affseg.io import open_volume
    from affseg.synthetic import noisy_affinities

    if not NEUROPROOF.exists():
        raise FileNotFoundError(f"input {spec!r} needs {NEUROPROOF} (the shared data folder next to the checkout, "
                                "see its README.md); it does not exist here")
    with open_volume(NEUROPROOF / "labels") as vol:
        labels = vol[_crop(shape, vol.shape, "neuroproof_train.h5/labels", spec)].astype(np.uint64)
    noise = dict(NEUROPROOF_PRESETS["medium"])
    noise.update({k: v for k, v in parsed.options.items() if k in noise})
    preset = parsed.options.get("preset", "medium" if not any(k in parsed.options for k in noise) else None)
    affs = noisy_affinities(labels, offsets, seed=seed, **noise)
    levels = f"blur {noise['blur']}, correlated noise {noise['correlated_noise']}, white {noise['white_noise']}"
    desc = (f"neuroproof_train.h5 {labels.shape}, ground-truth affinities made noisy "
            f"({preset + ': ' if preset else ''}{levels}; seed {seed}){where}")
    return affs, labels, offsets, desc
