"""Validation and documented conversions of user input, done before any work.

Every public entry point calls these, so that bad input fails with a message that names the
offending value (shape, dtype, offsets) instead of crashing a numba kernel.
"""
from __future__ import annotations

import numpy as np

from .errors import InputError

__all__ = [
    "as_affinities",
    "as_array",
    "as_flag",
    "as_int",
    "as_labels",
    "as_mask",
    "as_number",
    "as_offsets",
    "as_spacing",
    "as_thresholds",
    "as_unit_float32",
    "check_id_range",
    "default_offsets",
    "describe",
]


def default_offsets(ndim: int) -> np.ndarray:
    """The nearest-neighbour offsets ``-e_d`` for each axis (waterz and gunpowder).

    Parameters
    ----------
    ndim : int
        Number of spatial axes: 2 (yx) or 3 (zyx).

    Returns
    -------
    offsets : (ndim, ndim) int64
        ``-np.eye(ndim)``: row ``d`` links ``u`` and ``u - e_d``.

    Raises
    ------
    InputError
        If ``ndim`` is not 2 or 3.
    """
    if ndim not in (2, 3):
        raise InputError(f"only 2D (yx) and 3D (zyx) volumes are supported, not ndim={ndim}")
    return -np.eye(ndim, dtype=np.int64)


MAX_OFFSET = 2**31 - 1  # far beyond any volume; keeps flat-index arithmetic in int64
MAX_ID = 2**64 - 1


def as_offsets(offsets, ndim: int, *, channels: int | None = None) -> np.ndarray:
    """Offsets as a ``(C, ndim)`` int64 array, or an InputError that shows them.

    Offsets may exceed the volume: such a channel links no voxel pair (as any offset does at
    the border), so every method treats it alike.
    """
    if offsets is None:
        result = default_offsets(ndim)
    else:
        try:
            raw = np.asarray(offsets)
        except ValueError:  # ragged nesting
            raw = None
        if raw is None or raw.dtype == object or raw.ndim != 2 or raw.shape[1] != ndim or raw.shape[0] == 0:
            raise InputError(
                f"offsets must be a list of {ndim}-vectors of integers for a {ndim}D volume, got "
                f"{describe(offsets)}" + ("" if raw is None or raw.dtype == object else f" (shape {raw.shape})")
            )
        if raw.dtype.kind == "f":
            if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
                raise InputError(f"offsets must be integers, got {raw.tolist()}")
        elif raw.dtype.kind not in "iu":
            raise InputError(f"offsets must be integers, got dtype {raw.dtype}: {describe(offsets)}")
        too_far = np.abs(raw.astype(np.float64)) > MAX_OFFSET
        if too_far.any():
            raise InputError(f"offsets must lie within +-{MAX_OFFSET}, got {raw[too_far.any(axis=1)][0].tolist()}")
        result = raw.astype(np.int64)
        zero = np.flatnonzero(~result.any(axis=1))
        if zero.size:
            raise InputError(f"offset {zero[0]} is all zero, which links a voxel to itself")
    if channels is not None and result.shape[0] != channels:
        raise InputError(
            f"the affinities have {channels} channels but {result.shape[0]} offsets were given: "
            f"{result.tolist()}"
        )
    return result


def describe(value, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def as_array(value, *, name: str) -> np.ndarray:
    """``np.asarray(value)``, or an InputError for ragged nesting (numpy's own message is cryptic)."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError):
        raise InputError(f"{name} must be a regular array, got {describe(value)}") from None


def as_flag(value, *, name: str) -> bool:
    """A yes/no option: a bool (or numpy bool, or the integers 0 and 1), nothing else."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise InputError(f"{name} must be True or False, got {describe(value)}")


def _is_real_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def as_number(value, *, name: str, low: float | None = None, high: float | None = None) -> float:
    """A finite real number (not a bool or a string) within ``[low, high]``, as a float."""
    if not _is_real_number(value) or not np.isfinite(float(value)):
        raise InputError(f"{name} must be a finite number, got {describe(value)}")
    value = float(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise InputError(f"{name} must lie in [{low}, {high}], got {value}")
    return value


def as_int(value, *, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (Python or numpy; not a bool, float or string) within ``[minimum, maximum]``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer, got {describe(value)}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InputError(f"{name} must be {bounds}, got {value}")
    return value


def as_thresholds(values, *, name: str = "thresholds") -> np.ndarray:
    """Thresholds as an increasing float64 array: finite numbers, at least one, no two equal
    (also not after the float32 rounding the kernels compare in)."""
    items = list(values) if isinstance(values, (list, tuple, np.ndarray)) else None
    if items is None or not items:
        raise InputError(f"{name} must be a non-empty list of numbers, got {describe(values)}")
    numbers = [as_number(v, name=f"{name}[{i}]") for i, v in enumerate(items)]
    result = np.sort(np.asarray(numbers, dtype=np.float64))
    single = result.astype(np.float32)
    same = np.flatnonzero(single[1:] == single[:-1])
    if same.size:
        a, b = result[same[0]], result[same[0] + 1]
        raise InputError(f"{name} holds {float(a)!r} and {float(b)!r}, which are the same threshold (in float32): "
                         "give each threshold once")
    return result


def as_spacing(values, ndim: int, *, name: str = "sampling") -> np.ndarray | None:
    """Voxel spacing as ``ndim`` positive finite float64 values, or None."""
    if values is None:
        return None
    items = list(values) if isinstance(values, (list, tuple, np.ndarray)) else None
    if items is None or len(items) != ndim or not all(_is_real_number(v) and 0 < float(v) < np.inf for v in items):
        raise InputError(f"{name} must hold {ndim} positive numbers (one per spatial axis), got {describe(values)}")
    return np.array(items, dtype=np.float64)


def check_id_range(first: int, count: int, *, name: str) -> None:
    """Ids ``first .. first + count - 1`` must fit in uint64 (checked before any work)."""
    if first + max(count, 1) - 1 > MAX_ID:
        raise InputError(
            f"{name}: ids from {first} for up to {count} segments do not fit in uint64 (largest id "
            f"{MAX_ID}); use a smaller {name}"
        )


def as_affinities(affs, offsets=None, *, name: str = "affs") -> tuple[np.ndarray, np.ndarray]:
    """Affinities as C-contiguous float32 in [0, 1] with matching offsets.

    Documented conversions: float64 and float16 are cast to float32; uint8 is divided by 255
    (0..255 -> 0..1); Fortran-ordered or strided arrays are copied to C order. NaN, inf or values
    outside [0, 1] raise a ValueError.
    """
    arr = as_array(affs, name=name)
    if arr.ndim not in (3, 4):
        raise InputError(
            f"{name} must have the shape (channels, z, y, x) or (channels, y, x), got {arr.shape}"
        )
    offsets = as_offsets(offsets, arr.ndim - 1, channels=arr.shape[0])
    return as_unit_float32(arr, name=name), offsets


def as_unit_float32(values, *, name: str) -> np.ndarray:
    """Values in [0, 1] as C-contiguous float32 (float64/float16 cast, uint8 divided by 255)."""
    arr = as_array(values, name=name)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / np.float32(255)
    elif arr.dtype.kind == "f":
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
    else:
        raise InputError(f"{name} must be float32 (or float64, float16, uint8), got dtype {arr.dtype}")
    if arr.size == 0:
        raise InputError(f"{name} is empty, shape {arr.shape}")
    arr = np.ascontiguousarray(arr)
    from ._unit_interval import all_in_unit_interval

    if all_in_unit_interval(arr.reshape(-1)):  # one pass; min and max take two (and NaN fails it)
        return arr
    lo, hi = _finite_range(arr, name)
    if lo < 0 or hi > 1:
        raise InputError(f"{name} must lie in [0, 1], found values in [{lo}, {hi}]")
    return arr


def _finite_range(arr: np.ndarray, name: str) -> tuple[float, float]:
    lo, hi = float(arr.min()), float(arr.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise InputError(f"{name} contains {bad} NaN or infinite values")
    return lo, hi


def as_labels(labels, *, name: str = "labels", shape: tuple[int, ...] | None = None,
              any_ndim: bool = False) -> np.ndarray:
    """Labels as C-contiguous uint64; negative or non-integer labels raise a ValueError.

    Volumes must be 2D or 3D unless ``any_ndim`` (voxel sets, as for metrics).
    """
    arr = as_array(labels, name=name)
    if arr.dtype.kind not in "iub":
        raise InputError(f"{name} must have an integer dtype, got {arr.dtype}")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise InputError(f"{name} must not be negative, found {arr.min()}")
    if arr.ndim not in (2, 3) and not any_ndim:
        raise InputError(f"{name} must be a 2D (y, x) or 3D (z, y, x) volume, got shape {arr.shape}")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise InputError(f"{name} has shape {arr.shape}, which does not match {tuple(shape)}")
    return np.ascontiguousarray(arr, dtype=np.uint64)


def as_mask(mask, shape: tuple[int, ...], *, name: str = "mask") -> np.ndarray | None:
    """A boolean mask of the given shape, or None."""
    if mask is None:
        return None
    arr = as_array(mask, name=name)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} must be boolean or numeric (non-zero = inside), got dtype {arr.dtype}")
    if tuple(arr.shape) != tuple(shape):
        raise InputError(f"{name} has shape {arr.shape}, which does not match {tuple(shape)}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(arr != 0)
