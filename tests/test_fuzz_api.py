"""Fuzz the public API with hypothesis (issue 13): random shapes (1D to 5D, empty and size-1
axes), dtypes, memory layouts, offsets, ids near the uint64 limit, NaN/inf and options of the
wrong type. Every call must either return a valid result (right shape and dtype, 0 only where
masked, ...) or raise one of affseg's errors (an ``AffsegError``; for bad input an
``InputError``), never anything else (a numba TypingError, IndexError, OverflowError,
MemoryError, TypeError, numpy's own ValueError ...), and must not modify its inputs.

Options that are not numbers of the documented kind (NaN, None, strings, non-integral floats
for counts, duplicate thresholds) must be refused, not silently taken.

Volumes are tiny and validated input is float32 / uint64, so the numba kernels compile once
per signature (and are cached on disk). The failures the fuzzing found are kept as minimal
calls in ``REGRESSIONS`` at the end.

``AFFSEG_FUZZ_EXAMPLES=N`` sets the examples per test (default 100; a few thousand make a
good search).
"""
from __future__ import annotations

import inspect
import math
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import affseg
from affseg.errors import AffsegError, InputError
from affseg.graph import malis
from affseg.methods import get_method, method_names

MAX_ID = 2**64 - 1
MAX_VOXELS = 216  # spatial voxels at most; affinities have up to 4 channels of them

# more examples for a longer search: AFFSEG_FUZZ_EXAMPLES=1000 pytest tests/test_fuzz_api.py
EXAMPLES = int(os.environ.get("AFFSEG_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=max(1, EXAMPLES // 2), deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------
# the contract


class Refused(Exception):
    """Raised by :func:`call` when affseg refused the input (the call is then done)."""


def _snapshot(value):
    if isinstance(value, np.ndarray):
        return value.copy(), value
    if isinstance(value, (list, tuple)):
        return [_snapshot(v) for v in value]
    return None


def _unchanged(snapshot) -> bool:
    if snapshot is None:
        return True
    if isinstance(snapshot, list):
        return all(_unchanged(s) for s in snapshot)
    before, after = snapshot
    if before.dtype == object:
        return before.shape == after.shape and all(a is b or a == b or (a != a and b != b)
                                                    for a, b in zip(before.ravel(), after.ravel()))
    return before.shape == after.shape and before.tobytes() == np.ascontiguousarray(after).tobytes()


def call(fn, *args, must_refuse: str | None = None, **kwargs):
    """``fn(*args, **kwargs)``; raises :class:`Refused` if affseg refused the input, fails the
    test on any other exception, on a returned result where ``must_refuse`` names why the input
    had to be refused, and where an input array was modified."""
    mask = kwargs.get("mask")
    if isinstance(mask, np.ndarray) and mask.dtype.kind in "OUSc":
        must_refuse = must_refuse or f"a mask of dtype {mask.dtype}"
    snaps = [_snapshot(a) for a in args] + [_snapshot(v) for v in kwargs.values()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # cg's "did not reach tol"
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            result = fn(*args, **kwargs)
    except AffsegError as err:  # an InputError for bad arguments; any of affseg's errors is a clear refusal
        assert all(_unchanged(s) for s in snaps), f"{fn.__name__} modified an input before refusing it"
        raise Refused(f"{type(err).__name__}: {err}") from None
    assert all(_unchanged(s) for s in snaps), f"{fn.__name__} modified an input"
    assert must_refuse is None, f"{fn.__name__} accepted {must_refuse}"
    return result


def check_labels(labels, shape, keep=None, *, nonzero=True):
    """uint64 labels of ``shape``: 0 where ``keep`` is False, and (with ``nonzero``) nowhere
    else."""
    assert isinstance(labels, np.ndarray) and labels.dtype == np.uint64, (type(labels), getattr(labels, "dtype", None))
    assert labels.shape == tuple(shape), (labels.shape, shape)
    if keep is None:
        keep = np.ones(shape, bool)
    assert not labels[~keep].any(), "labels outside the mask"
    if nonzero:
        assert labels[keep].all(), "label 0 inside the mask"


# ---------------------------------------------------------------------------------------------
# strategies
#
# A test draws at most one fault: the part of the call (an array, the offsets, one option) that
# comes from its broken variants, all other parts being valid. So about half the calls run all
# the way through and the others probe one refusal at a time.

# Input kinds that once failed: ``REGRESSIONS`` (below) holds a minimal call of each. A kind
# listed here is left out of the strategies (for a module being fixed); empty when all pass.
UNFIXED: set[str] = set()

FLOAT_DTYPES = ("float32", "float64", "float16", "uint8")  # the documented affinity dtypes
BAD_DTYPES = ("int64", "bool", "complex64", "object")
LAYOUTS = ("C", "F", "negative", "strided")


def fault_of(data, *parts):
    """None (all valid) half of the time, else one of ``parts``."""
    return data.draw(st.sampled_from([None] * len(parts) + list(parts)), label="fault")


def _layout(arr: np.ndarray, layout: str) -> np.ndarray:
    """The same values in another memory layout: Fortran order, a negative stride, a
    non-contiguous view."""
    if arr.ndim == 0 or arr.size == 0 or layout == "C":
        return arr
    if layout == "F":
        return np.asfortranarray(arr)
    if layout == "negative":
        axis = arr.ndim - 1
        return np.flip(np.flip(arr, axis=axis).copy(), axis=axis)
    big = np.zeros(arr.shape[:-1] + (2 * arr.shape[-1],), arr.dtype)
    big[..., ::2] = arr
    return big[..., ::2]


def _cast(values: np.ndarray, dtype: str) -> np.ndarray:
    """Unit-interval float64 values in ``dtype`` (uint8 as 0..255)."""
    if dtype == "uint8":
        return np.round(np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0).clip(0, 1) * 255).astype(np.uint8)
    if dtype == "int64":
        return (values > 0.5).astype(np.int64)
    if dtype == "bool":
        return values > 0.5
    if dtype == "object":
        return values.astype(object)
    with np.errstate(over="ignore"):  # float16: inf where too large, on purpose
        return values.astype(dtype)


@st.composite
def spatial_shapes(draw, bad=False):
    """2D or 3D shapes with sides 1..7 (size-1 axes included); broken: 0D, 1D, 4D, 5D or an
    empty axis."""
    ndim = draw(st.sampled_from((0, 1, 1, 4, 4, 5, 2, 3) if bad else (2, 3)))
    side = draw(st.integers(1, 7))
    shape = [draw(st.integers(1, side)) for _ in range(ndim)]
    if (bad and ndim in (2, 3)) or (ndim and draw(st.integers(0, 3)) == 0 and bad):
        shape[draw(st.integers(0, ndim - 1))] = 0
    while math.prod(shape) > MAX_VOXELS:
        shape[int(np.argmax(shape))] //= 2
    return tuple(shape)


@st.composite
def offsets_for(draw, ndim, bad=False):
    """``(offsets, n_channels)``: None (nearest neighbours), random short- and long-range
    offsets (some beyond the volume), integral floats; broken: an all-zero offset, ragged,
    non-integral, beyond int64 arithmetic, uint64 near the limit, the wrong length."""
    kinds = (["zero", "ragged", "float", "uint64", "huge", "wrong_ndim"] if bad
             else ["none"] * 3 + ["long_range"] * 4 + ["random"] * 2 + ["far", "integral_float", "uint8"])
    kind = draw(st.sampled_from(kinds))
    nn = max(ndim, 1)
    if kind == "none":
        return None, (nn if ndim else 1)
    rows = [[draw(st.integers(-3, 3)) for _ in range(nn)] for _ in range(draw(st.integers(1, 4)))]
    rows = [r if any(r) else [-1] + r[1:] for r in rows]
    if kind != "random":  # the nearest neighbours (either sign), then long-range offsets
        rows = [[draw(st.sampled_from([-1, 1])) if j == d else 0 for j in range(nn)] for d in range(nn)] + rows[:2]
    n = len(rows)
    if kind == "far":
        rows[0][0] = draw(st.sampled_from([-40, 40, -(2**31 - 1)]))
    elif kind == "integral_float":
        rows = np.array(rows, np.float64)
    elif kind == "uint8":
        rows = np.abs(np.array(rows)).astype(np.uint8)
    elif kind == "zero":
        rows[-1] = [0] * nn
    elif kind == "ragged":
        rows[-1] = rows[-1] + [1]
    elif kind == "float":
        rows = np.array(rows, np.float64)
        rows[0, 0] += 0.5
    elif kind == "uint64":
        rows = np.abs(np.array(rows, np.int64)).astype(np.uint64)
        rows[0, 0] = draw(st.sampled_from([2**63, MAX_ID, 2**31]))
    elif kind == "huge":
        rows[0][0] = draw(st.sampled_from([2**31, -(2**40), 2**62]))
    elif kind == "wrong_ndim":
        rows = [r + [1] for r in rows]
    return rows, n


@st.composite
def affinities(draw, bad=False):
    """``(affs, offsets, spatial_shape)``: values in [0, 1] with plateaus, in a documented
    dtype and any layout; broken: a bad shape, dtype, values (NaN, inf, outside [0, 1]),
    channel count or offsets."""
    parts = ["shape", "dtype", "values", "channels", "offsets", "list"]
    parts += [] if "ragged arrays" in UNFIXED else ["ragged"]
    part = draw(st.sampled_from(parts)) if bad else None
    shape = draw(spatial_shapes(part == "shape"))
    offsets, n = draw(offsets_for(len(shape), part == "offsets"))
    if part == "channels":
        n += draw(st.sampled_from([1, -n]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.random((n,) + shape)
    if draw(st.booleans()):  # plateaus and ties
        values = np.round(values * 4) / 4
    if part == "values" and values.size:
        values.ravel()[rng.integers(0, values.size)] = draw(st.sampled_from([np.nan, np.inf, -np.inf, -0.25, 1.5]))
    dtype = draw(st.sampled_from(BAD_DTYPES if part == "dtype" else FLOAT_DTYPES * 2))
    if part == "values" and dtype == "uint8":
        dtype = "float32"
    affs = _layout(_cast(values, dtype), draw(st.sampled_from(LAYOUTS)))
    if part == "list":  # nested lists of Python floats: array_like, valid
        affs = affs.tolist()
    elif part == "ragged":
        affs = _ragged(affs)
    return affs, offsets, shape


def _ragged(arr: np.ndarray) -> list:
    """The values as nested lists with one more item of another depth: numpy cannot make an
    array of them."""
    out = arr.tolist() if arr.ndim else [arr.item()]
    return out + [0] if out and isinstance(out[0], list) else out + [[0]]


ID_VALUES = [1, 2, 3, 7, 2**32, 2**63, MAX_ID - 300, MAX_ID - 1, MAX_ID]


@st.composite
def label_volumes(draw, shape, *, zero_share=0.3, bad=False):
    """A label volume of ``shape``: small ids or ids near the uint64 limit, in an unsigned,
    signed or bool dtype and any layout; broken: negative, float, object or complex labels."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kinds = (["negative", "float", "object", "complex"] + ([] if "ragged arrays" in UNFIXED else ["ragged"]) if bad
             else ["small"] * 3 + ["big"] * 3 + ["uint8", "int32", "bool", "list"])
    kind = draw(st.sampled_from(kinds))
    small = rng.integers(1, 5, shape)
    small[rng.random(shape) < zero_share] = 0
    if kind == "big":
        table = np.array([0] + draw(st.lists(st.sampled_from(ID_VALUES), min_size=4, max_size=4)), np.uint64)
        labels = table[small]
    elif kind == "negative":
        labels = small.astype(np.int64) - 2
    elif kind == "float":
        labels = small.astype(np.float32)
    elif kind == "object":
        labels = small.astype(object)
    elif kind == "complex":
        labels = small.astype(np.complex64)
    elif kind == "bool":
        labels = small > 0
    else:
        labels = small.astype({"uint8": np.uint8, "int32": np.int32}.get(kind, np.uint64))
    labels = _layout(labels, draw(st.sampled_from(LAYOUTS)))
    if kind == "list":
        return labels.tolist()
    return _ragged(labels) if kind == "ragged" else labels


@st.composite
def masks(draw, shape, bad=False):
    """None, a boolean mask, a 0/1 float or a 0/3 int mask in any layout; broken: NaN, the
    wrong shape."""
    kind = draw(st.sampled_from(["nan", "shape"] + ([] if "ragged arrays" in UNFIXED else ["ragged"])
                                + ([] if "mask of strings or objects" in UNFIXED else ["strings", "objects"]) if bad
                                else ["none"] * 3 + ["bool"] * 3 + ["float", "int"]))
    if kind == "none":
        return None
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask = rng.random(shape) < 0.8
    if kind == "float":
        mask = mask.astype(np.float32)
    elif kind == "int":
        mask = mask.astype(np.int64) * 3
    elif kind == "nan":
        mask = mask.astype(np.float64)
        mask.ravel()[:1] = np.nan
        if not mask.size:
            return np.ones(tuple(s + 1 for s in shape), bool)
    elif kind == "shape":
        return np.ones(tuple(s + 1 for s in shape), bool)
    elif kind == "ragged":
        return _ragged(mask)
    elif kind == "strings":
        return np.where(mask, "yes", "no")
    elif kind == "objects":
        return np.where(mask, None, 0).astype(object)
    return _layout(mask, draw(st.sampled_from(LAYOUTS)))


def mask_keep(mask, shape):
    return np.ones(shape, bool) if mask is None else np.asarray(mask) != 0


# Option values: ``(value, must_refuse)``, where must_refuse says why a returned result would
# be wrong (None: any outcome is fine, e.g. for a value out of range, which may be refused).
NOT_A_NUMBER = [(np.nan, "a NaN"), (None, "None"), ("0.5", "a string"), (np.inf, "inf"), (1 + 0j, "a complex"),
                ([0.5], "a list")]
NOT_A_COUNT = [(1.5, "a non-integral float"), ("3", "a string"), (None, "None"), (np.nan, "a NaN"), (2.0, None),
               (True, None), (-1, None)]
NOT_A_FLAG = [("no", "a string"), (None, None), (2, None)]


def option(data, valid, bad_values, bad):
    """A valid option value (must_refuse None), or with ``bad`` one of ``bad_values``."""
    if bad:
        return data.draw(st.sampled_from(bad_values))
    return data.draw(st.sampled_from(valid)), None


def flag(data, bad):
    return option(data, [True, False], NOT_A_FLAG, bad)


@st.composite
def threshold_lists(draw, bad=False):
    """Increasing or unsorted lists and arrays of distinct thresholds; broken: empty, NaN,
    None, strings, duplicates (also after float32 rounding), a scalar."""
    valid = sorted(set(draw(st.lists(st.floats(0, 1, width=32), min_size=1, max_size=3))))
    if not bad:
        return draw(st.sampled_from([valid, valid[::-1], np.array(valid, np.float32), tuple(valid)])), None
    kind = draw(st.sampled_from(["empty", "nan", "none", "str", "dup", "dup32", "scalar", "none_list"]))
    return {
        "empty": ([], "no thresholds"),
        "nan": (valid + [float("nan")], "a NaN threshold"),
        "none": ([None], "a None threshold"),
        "str": (["0.5"], "a string threshold"),
        "dup": (valid + [valid[0]], "a duplicate threshold"),
        "dup32": ([0.3, 0.30000001], "thresholds equal in float32"),
        "scalar": (0.5, None),
        "none_list": (None, "None as thresholds"),
    }[kind]


def _must(*reasons):
    """The first reason that makes an input invalid, or None."""
    return next((r for r in reasons if r), None)


# ---------------------------------------------------------------------------------------------
# the functions


@FUZZ
@given(data=st.data())
def test_connected_components(data):
    fault = fault_of(data, "affs", "threshold", "mask")
    affs, offsets, shape = data.draw(affinities(fault == "affs"))
    threshold, bad = option(data, [0.5, 0.0, 0.9, np.float32(0.25), -1.0, 1.0, 2], NOT_A_NUMBER, fault == "threshold")
    mask = data.draw(masks(shape, fault == "mask"))
    try:
        labels = call(affseg.connected_components, affs, offsets, threshold=threshold, mask=mask, must_refuse=bad)
    except Refused:
        return
    check_labels(labels, shape, mask_keep(mask, shape))


def _fragment_kwargs(fn, in_plane, voxel_size) -> dict:
    """``in_plane`` and ``voxel_size`` under the names ``fn`` takes (formerly ``fragments_in_xy``
    and ``sampling``)."""
    names = inspect.signature(fn).parameters
    return {"in_plane" if "in_plane" in names else "fragments_in_xy": in_plane,
            "voxel_size" if "voxel_size" in names else "sampling": voxel_size}


@FUZZ
@given(data=st.data())
def test_extract_fragments_and_distance_seeds(data):
    fault = fault_of(data, "affs", "threshold", "distance", "min_size", "id_offset", "xy", "sampling", "mask")
    affs, offsets, shape = data.draw(affinities(fault == "affs"))
    threshold, bad_t = option(data, [0.5, 0.0, 0.3], NOT_A_NUMBER + [(1.0, None), (-0.1, None)], fault == "threshold")
    distance, bad_d = option(data, [1, 2, 10, np.int64(3)], NOT_A_COUNT, fault == "distance")
    min_size, bad_s = option(data, [0, 2, 5], NOT_A_COUNT, fault == "min_size")
    id_offset, bad_i = option(data, [0, 5, 2**32, 2**62], NOT_A_COUNT + [(MAX_ID - 3, None), (MAX_ID, None),
                                                                        (2**64, None)], fault == "id_offset")
    in_xy, _ = flag(data, fault == "xy")
    n = len(shape)
    sampling = data.draw(st.sampled_from([(1.0,), (np.nan,) * n, (-1.0,) * n, "1", (1j,) * n] if fault == "sampling"
                                         else [None, (1.0,) * n, (2.0,) + (1.0,) * (n - 1)]))
    mask = data.draw(masks(shape, fault == "mask"))
    try:
        fragments = call(affseg.extract_fragments, affs, offsets, threshold=threshold, min_seed_distance=distance,
                         mask=mask, min_size=min_size, **_fragment_kwargs(affseg.extract_fragments, in_xy, sampling),
                         id_offset=id_offset, must_refuse=_must(bad_t, bad_d, bad_s, bad_i))
    except Refused:
        pass
    else:
        keep = mask_keep(mask, shape)
        check_labels(fragments, shape, keep)
        assert int(fragments[keep].min(initial=MAX_ID)) > id_offset
    try:
        seeds = call(affseg.distance_seeds, affs, offsets, threshold=threshold, min_seed_distance=distance,
                     mask=mask, must_refuse=_must(bad_t, bad_d),
                     **_fragment_kwargs(affseg.distance_seeds, in_xy, sampling))
    except Refused:
        return
    check_labels(seeds, shape, mask_keep(mask, shape), nonzero=False)


@FUZZ
@given(data=st.data())
def test_agglomerate(data):
    fault = fault_of(data, "affs", "fragments", "thresholds", "merge_function", "queue")
    affs, offsets, shape = data.draw(affinities(fault == "affs"))
    fragments = data.draw(label_volumes(shape, zero_share=0.1, bad=fault == "fragments"))
    thresholds, bad_t = data.draw(threshold_lists(fault == "thresholds"))
    merge_function = data.draw(st.sampled_from(
        ["hist_quant_101", "median"] + ([] if "merge_function of a wrong type" in UNFIXED else [None, 3, ["mean"]])
        if fault == "merge_function" else ["hist_quant_75", "mean", "max", "min", "hist_quant_50_initmax"]))
    queue, bad_q = option(data, [0, 256, 16], NOT_A_COUNT + [(2**16 + 1, None)], fault == "queue")
    try:
        result = call(affseg.agglomerate, affs, fragments, offsets=offsets, thresholds=thresholds,
                      merge_function=merge_function, discretize_queue=queue, must_refuse=_must(bad_t, bad_q))
    except Refused:
        return
    frag = np.asarray(fragments).astype(np.uint64)
    assert len(result.thresholds) == np.size(thresholds) and np.all(np.diff(result.thresholds) > 0)
    for seg in result.segmentations():
        check_labels(seg, shape, frag != 0)
        assert np.isin(seg, frag).all()  # a segment is named by its smallest fragment id


@FUZZ
@given(data=st.data())
def test_mutex_watershed(data):
    fault = fault_of(data, "affs", "bias", "long_range_bias", "strides", "randomized", "rng_seed", "min_size", "mask",
                     "seeds")
    affs, offsets, shape = data.draw(affinities(fault == "affs"))
    bias, bad_b = option(data, [0.5, 0.3, 0.7],
                         NOT_A_NUMBER[:-1] + [([0.5], None), (0.0, None), (1.0, None), (-1.0, None)], fault == "bias")
    long_range, bad_l = option(data, [None, None, 0.2], NOT_A_NUMBER[:1] + NOT_A_NUMBER[2:] + [(1.0, None)],
                               fault == "long_range_bias")
    n = len(shape)
    strides = data.draw(st.sampled_from([[0] * n, [1.5] * n, [2**40] * n, "2", [[1, 2], [1]]] if fault == "strides"
                                        else [None, None, [2] * n, [1] * n]))
    randomized, bad_r = flag(data, fault == "randomized")
    rng_seed, bad_g = option(data, [0, 7, -3, 2**70, np.uint64(MAX_ID)],
                             [("x", "a string"), (1.5, "a float"), (None, "None")], fault == "rng_seed")
    min_size, bad_s = option(data, [0, 2, 4], NOT_A_COUNT, fault == "min_size")
    mask = data.draw(masks(shape, fault == "mask"))
    seeds = data.draw(st.none() | label_volumes(shape, zero_share=0.8, bad=fault == "seeds"))
    try:
        labels = call(affseg.mutex_watershed, affs, offsets, bias=bias, long_range_bias=long_range, strides=strides,
                      randomized_strides=randomized, rng_seed=rng_seed, mask=mask, seeds=seeds, min_size=min_size,
                      must_refuse=_must(bad_b, bad_l, bad_r, bad_g, bad_s))
    except Refused:
        return
    keep = mask_keep(mask, shape)
    check_labels(labels, shape, keep)
    if seeds is not None:
        s = np.asarray(seeds).astype(np.uint64)
        seeded = keep & (s != 0)
        np.testing.assert_array_equal(labels[seeded], s[seeded])  # seeds keep their ids
        top = int(s[seeded].max(initial=0))
        new = labels[keep & ~seeded & ~np.isin(labels, s[seeded])]
        assert top == 0 or new.size == 0 or int(new.min()) > top  # new ids above every seed id: no reuse, no wrap


@st.composite
def graphs(draw, bad=False):
    """``(num_nodes, uv_ids, weights, must_refuse)``; broken: a bad node count, a self-loop,
    an edge twice, node ids outside, float or huge node ids, complex, object, NaN or
    mismatched weights, ragged edges."""
    part = draw(st.sampled_from(["num_nodes", "edges"])) if bad else None
    num_nodes, bad_n = draw(st.sampled_from([(0, "no nodes"), (2**40, "2**40 nodes"), (2**31, "2**31 nodes"),
                                             (3.0, None),
                                             (True, None), ("3", "a string"), (None, "None")] if part == "num_nodes"
                                            else [(n, None) for n in (1, 2, 3, 5, 8)] + [(np.int32(4), None)]))
    n = int(num_nodes) if isinstance(num_nodes, (int, np.integer)) and 1 <= num_nodes <= 8 else 4
    pairs = [(u, v) for u in range(n) for v in range(u + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=8)) if pairs else []
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    uv = np.array(chosen, np.int64).reshape(-1, 2)
    w = np.round(rng.normal(size=len(uv)), 2)
    kind = draw(st.sampled_from(["loop", "dup", "outside", "float_uv", "uint64_uv", "complex", "object", "nan",
                                 "ragged",
                                 "shape"]) if part == "edges" else st.sampled_from(["valid"] * 4 + ["bool", "list"]))
    bad = None
    if kind == "bool":
        w = w > 0
    elif kind == "list":
        uv, w = uv.tolist(), w.tolist()
    elif kind == "loop":
        uv, w, bad = np.concatenate([uv, [[0, 0]]]), np.append(w, 1.0), "a self-loop"
    elif kind == "dup" and len(uv):
        uv, w, bad = np.concatenate([uv, uv[:1, ::-1]]), np.append(w, 1.0), "an edge twice"
    elif kind == "outside":
        uv, w, bad = np.concatenate([uv, [[0, n + 5]]]), np.append(w, 1.0), "a node outside"
    elif kind == "float_uv":
        uv, bad = uv.astype(np.float64) + 0.5, "float node ids" if len(uv) else None
    elif kind == "uint64_uv":
        uv = np.concatenate([uv.astype(np.uint64), np.array([[0, MAX_ID]], np.uint64)])
        w, bad = np.append(w, 1.0), "node id 2**64 - 1"
    elif kind == "complex":
        w, bad = w + 1j, "complex weights"
    elif kind == "object":
        w, bad = np.array(list(w[:-1]) + ["x"] if len(w) else ["x"], object), "object weights"
    elif kind == "nan" and len(w):
        w, bad = w.copy(), "NaN weights"
        w[0] = np.nan
    elif kind == "ragged":
        uv, bad = [[0, 1], [1]], "ragged uv_ids"
    elif kind == "shape":
        w, bad = np.append(w, 1.0), "weights that do not match the edges"
    return num_nodes, uv, w, bad_n or bad


@FUZZ
@given(data=st.data())
def test_mutex_watershed_graph(data):
    num_nodes, uv, w, bad = data.draw(graphs(data.draw(st.booleans())))
    extra = {}
    if bad is None and data.draw(st.booleans()) and isinstance(uv, np.ndarray) and len(uv) > 1 \
            and np.asarray(w).dtype.kind == "f":  # the repulsive edges given apart
        half = len(uv) // 2
        extra = {"mutex_uv_ids": uv[half:], "mutex_weights": np.abs(np.asarray(w)[half:])}
        uv, w = uv[:half], np.abs(np.asarray(w)[:half])
    try:
        labels = call(affseg.mutex_watershed_graph, num_nodes, uv, w, must_refuse=bad, **extra)
    except Refused:
        return
    check_labels(labels, (int(num_nodes),))


@FUZZ
@given(data=st.data())
def test_gasp_graph(data):
    fault = fault_of(data, "graph", "sizes", "mergeable", "linkage", "cannot_link")
    num_nodes, uv, w, bad = data.draw(graphs(fault == "graph"))
    m = len(uv)
    sizes, bad_s = data.draw(st.sampled_from([(np.full(m, "1"), "string sizes"), (np.ones(m) * 1j, "complex sizes"),
                                              (np.zeros(m), "zero sizes" if m else None), (np.ones(m + 1), "sizes")]
                                             if fault == "sizes" else [(None, None), (np.ones(m) * 2, None),
                                                                       (np.arange(1, m + 1), None)]))
    mergeable = data.draw(st.sampled_from([np.full(m, "yes"), np.ones(m + 1, bool)] if fault == "mergeable"
                                          else [None, np.ones(m, bool), np.arange(m) % 2]))
    linkage = data.draw(st.sampled_from(["median", None, ["mean"]] if fault == "linkage"
                                        else ["mean", "sum", "max", "min", "abs_max"]))
    cannot_link, bad_c = flag(data, fault == "cannot_link")
    try:
        labels = call(affseg.gasp_graph, num_nodes, uv, w, edge_sizes=sizes, mergeable=mergeable, linkage=linkage,
                      cannot_link=cannot_link, must_refuse=_must(bad, bad_s, bad_c))
    except Refused:
        return
    check_labels(labels, (int(num_nodes),))


@FUZZ
@given(data=st.data())
def test_gasp(data):
    fault = fault_of(data, "affs", "bias", "linkage", "cannot_link", "long_range_merges", "mask", "fragments")
    affs, offsets, shape = data.draw(affinities(fault == "affs"))
    bias, bad_b = option(data, [0.5, 0.4], NOT_A_NUMBER[:-1] + [([0.5], None), (0.0, None), (1.0, None)],
                         fault == "bias")
    linkage = data.draw(st.sampled_from(["median", None, 1] if fault == "linkage"
                                        else ["mean", "sum", "max", "min", "abs_max"]))
    cannot_link, bad_c = flag(data, fault == "cannot_link")
    long_range_merges, bad_m = flag(data, fault == "long_range_merges")
    mask = data.draw(masks(shape, fault == "mask"))
    fragments = data.draw(st.none() | label_volumes(shape, zero_share=0.1, bad=fault == "fragments"))
    try:
        labels = call(affseg.gasp, affs, offsets, bias=bias, linkage=linkage, cannot_link=cannot_link,
                      long_range_merges=long_range_merges, mask=mask, fragments=fragments,
                      must_refuse=_must(bad_b, bad_c, bad_m))
    except Refused:
        return
    keep = mask_keep(mask, shape)
    if fragments is not None:
        keep = keep & (np.asarray(fragments) != 0)
    check_labels(labels, shape, keep)


@FUZZ
@given(data=st.data())
def test_random_walker(data):
    fault = fault_of(data, "weights", "seeds", "mask", "solver", "tol", "probabilities")
    weights, offsets, shape = data.draw(affinities(fault == "weights"))
    if isinstance(weights, np.ndarray) and weights.dtype == np.float64 and data.draw(st.booleans()):
        # any scale, and weights spanning up to 25 orders of magnitude (then singular in float64)
        weights = weights * 10.0 ** data.draw(st.sampled_from([-320, -300, -20, -3, 3, 20, 300]))
        if data.draw(st.booleans()):
            weights = weights * 10.0 ** -np.random.default_rng(0).uniform(0, 25, weights.shape)
    seeds = data.draw(label_volumes(shape, zero_share=0.85, bad=fault == "seeds"))
    mask = data.draw(masks(shape, fault == "mask"))
    if fault is None and len(shape) in (2, 3) and isinstance(seeds, np.ndarray) and seeds.size:
        keep = mask_keep(mask, shape)  # valid seeds: inside the mask, at least one
        seeds = np.where(keep, seeds, 0).astype(seeds.dtype)
        if not seeds.any() and keep.any():
            seeds[np.unravel_index(np.flatnonzero(keep)[0], shape)] = 1
    solver = data.draw(st.sampled_from(["lu", None, ["cg"]] if fault == "solver" else ["auto", "direct", "cg"]))
    tol, bad_t = option(data, [1e-6, 1e-3], NOT_A_NUMBER + [(0.0, None), (1.0, None)], fault == "tol")
    probabilities, bad_p = flag(data, fault == "probabilities")
    try:
        result = call(affseg.random_walker, weights, seeds, offsets, mask=mask, solver=solver, tol=tol,
                      return_probabilities=probabilities, must_refuse=_must(bad_t, bad_p))
    except Refused:
        return
    labels, probs = result if probabilities else (result, None)
    check_labels(labels, shape, mask_keep(mask, shape), nonzero=False)  # unreached voxels are 0 too
    s = np.asarray(seeds).astype(np.uint64)
    np.testing.assert_array_equal(labels[s != 0], s[s != 0])
    assert np.isin(labels, np.append(s[s != 0], 0)).all()
    if probs is not None:
        k = len(np.unique(s[s != 0]))
        assert probs.dtype == np.float32 and probs.shape == (k,) + shape
        assert np.isfinite(probs).all() and probs.min(initial=0) >= 0 and probs.max(initial=0) <= 1 + 1e-5


@FUZZ
@given(data=st.data())
def test_image_weights(data):
    fault = fault_of(data, "shape", "dtype", "values", "beta", "eps", "spacing")
    shape = data.draw(spatial_shapes(fault == "shape"))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    image = rng.random(shape) * data.draw(st.sampled_from([1.0, 255.0, 1e-3]))
    if fault == "values":
        with np.errstate(over="ignore"):
            image = image * data.draw(st.sampled_from([1.0, 1e200, 1e308]))
        if image.size:
            image.ravel()[0] = data.draw(st.sampled_from([np.nan, np.inf, -1e308, 1e308]))
    dtype = data.draw(st.sampled_from(["bool", "complex64", "object"] if fault == "dtype"
                                      else ["float64", "float32"] if fault == "values"
                                      else ["float64", "float32", "uint8", "int64"]))
    image = _layout(_cast(image, dtype) if dtype not in ("uint8", "int64") else (image * 200).astype(dtype),
                    data.draw(st.sampled_from(LAYOUTS)))
    beta, bad_b = option(data, [130.0, 0.0, 10], NOT_A_NUMBER + [(-1.0, None)], fault == "beta")
    eps, bad_e = option(data, [1e-10, 0.0], NOT_A_NUMBER + [(-1.0, None)], fault == "eps")
    n = len(shape)
    spacing = data.draw(st.sampled_from([(1.0,), (np.nan,) * n, (0.0,) * n, ("1",) * n] if fault == "spacing"
                                        else [None, (1.0,) * n, (2.0,) * n]))
    try:
        weights = call(affseg.image_weights, image, beta=beta, spacing=spacing, eps=eps,
                       must_refuse=_must(bad_b, bad_e))
    except Refused:
        return
    assert weights.dtype == np.float64 and weights.shape == (len(shape),) + shape
    assert np.isfinite(weights).all() and weights.min(initial=0) >= 0


@FUZZ
@given(data=st.data())
def test_affinities_from_labels(data):
    fault = fault_of(data, "shape", "labels", "offsets", "mask")
    shape = data.draw(spatial_shapes(fault == "shape"))
    labels = data.draw(label_volumes(shape, bad=fault == "labels"))
    offsets, n = data.draw(offsets_for(len(shape), fault == "offsets"))
    mask = data.draw(masks(shape, fault == "mask"))
    try:
        affs, affs_mask = call(affseg.affinities_from_labels, labels, offsets, mask=mask)
    except Refused:
        return
    for a in (affs, affs_mask):
        assert a.dtype == np.float32 and a.shape == (n,) + shape
        assert np.isin(a, [0, 1]).all()


@FUZZ
@given(data=st.data())
def test_evaluate(data):
    fault = fault_of(data, "shape", "seg", "gt", "mismatch")
    shape = data.draw(spatial_shapes(fault == "shape"))
    seg = data.draw(label_volumes(shape, zero_share=0.2, bad=fault == "seg"))
    gt_shape = shape[::-1] + (1,) if fault == "mismatch" else shape
    gt = data.draw(label_volumes(gt_shape, zero_share=0.2, bad=fault == "gt"))
    try:
        scores = call(affseg.evaluate, seg, gt,
                      must_refuse=None if len(shape) in (1, 2, 3) else f"a {len(shape)}D volume")
    except Refused:
        return
    assert all(math.isfinite(v) for v in scores.values())
    assert scores["n_voxels"] == int((np.asarray(gt) != 0).sum()) > 0
    assert 0 <= scores["arand"] <= 1 and scores["voi_split"] >= 0 and scores["voi_merge"] >= 0


def _option_values(option, ndim):
    """``(valid values, broken (value, must_refuse) pairs)`` of a method option (affseg.methods)."""
    if option.kind == "int":
        low = int(option.minimum or 0)
        return [option.default, low, low + 2], NOT_A_COUNT
    if option.kind == "float":
        valid = [option.default, 0.3] if option.default is not None else [None, 0.2]
        return valid, [v for v in NOT_A_NUMBER if v[0] is not None] + [(1.0, None), (0.0, None)]
    if option.kind == "bool":
        return [False, True], [("no", "a string"), (None, None), (1, None)]
    if option.kind == "str":
        odd = [] if option.name == "merge_function" and "merge_function of a wrong type" in UNFIXED else \
            [(None, None), (["mean"], None), (3, None)]
        return (list(option.choices) if option.choices else [option.default, "mean"]), [("median", None)] + odd
    if option.kind == "ints":
        return [None, [2] * ndim, [1] * ndim], [("2", "a string"), ([1.5] * ndim, "a float"), ([], None),
                                                ([0] * ndim, None), ([2**40] * ndim, None)]
    raise AssertionError(option.kind)


@FEW
@given(data=st.data(), method=st.sampled_from(method_names()))
def test_segment(data, method):
    chosen = get_method(method)
    fault = fault_of(data, "affs", "thresholds", "mask", "voxel_size", "fragments", "method", "unknown_option",
                     *[o.name for o in chosen.options])
    affs, offsets, shape = data.draw(affinities(fault == "affs"))
    if "ragged offsets to segment" in UNFIXED and isinstance(offsets, list) and len({len(o) for o in offsets}) > 1:
        offsets = None
    ndim = len(shape)
    thresholds, bad_t = data.draw(threshold_lists(fault == "thresholds"))
    mask = data.draw(masks(shape, fault == "mask"))
    voxel_size = data.draw(st.sampled_from([(np.nan,) * ndim, (1.0,) * (ndim + 1), (0.0,) * ndim, "1"]
                                           if fault == "voxel_size"
                                           else [None, (1.0,) * ndim, (2.0,) + (1.0,) * (ndim - 1)]))
    bad_v = "a bad voxel_size" if fault == "voxel_size" and ndim in (2, 3) else None
    options, bad_o = {}, None
    for option in chosen.options:
        if option.name == "rw_seeds" and fault != "rw_seeds":  # one solve per seed with maxima: rarely
            options[option.name] = data.draw(st.sampled_from(["fragments"] * 3 + ["maxima"]))
            continue
        valid, broken = _option_values(option, ndim)
        value, bad = (data.draw(st.sampled_from(broken)) if fault == option.name
                      else (data.draw(st.sampled_from(valid)), None))
        if value is not None or option.default is None or fault == option.name:
            options[option.name] = value
        bad_o = bad_o or bad
    if fault == "unknown_option":
        options[data.draw(st.sampled_from(["threshold", "min_sizes", "seeds"]))] = 1
        bad_o = "an unknown option"
    resolved_ok = bad_o is None
    uses_fragments = resolved_ok and chosen.uses_fragments({**{o.name: o.default for o in chosen.options}, **options})
    fragments = None
    if fault == "fragments" or (uses_fragments and data.draw(st.integers(0, 3)) == 0):
        fragments = data.draw(label_volumes(shape, zero_share=0.0, bad=fault == "fragments"))
    if fragments is not None and "mask with given fragments" in UNFIXED:
        mask = None
    if fault == "method":
        method = data.draw(st.sampled_from(["MALA", "watershed", None, ["cc"]]))
        bad_o = "an unknown method"
    thresholded = resolved_ok and chosen.thresholded({**{o.name: o.default for o in chosen.options}, **options})
    must = _must(bad_o, bad_t if thresholded else None, bad_v)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*expect a much worse segmentation", category=UserWarning)
            result = call(affseg.segment, affs, offsets, method=method, thresholds=thresholds, mask=mask,
                          voxel_size=voxel_size, fragments=fragments, must_refuse=must, **options)
    except Refused:
        return
    keep = mask_keep(mask, shape)
    if fragments is not None and uses_fragments:
        keep = keep & (np.asarray(fragments) != 0)  # fragment 0 is background
    assert len(result) == (np.size(thresholds) if thresholded else 1)
    for i in range(len(result)):
        check_labels(result.segmentation(i), shape, keep, nonzero=method != "rw")


@FUZZ
@given(data=st.data(), which=st.sampled_from(["constrained", "unconstrained", "pair_counts"]))
def test_malis(data, which):
    fault = fault_of(data, "affs", "labels", "mask", "normalize")
    affs, offsets, shape = data.draw(affinities(fault == "affs"))
    labels = data.draw(label_volumes(shape, bad=fault == "labels"))
    mask = data.draw(masks(shape, fault == "mask") | st.just("affinity"))
    if isinstance(mask, str):
        try:
            mask_shape = np.shape(affs)
        except ValueError:  # ragged (deliberately bad) affinities have no shape: any mask will do
            mask_shape = (1, *shape)
        mask = np.random.default_rng(0).random(mask_shape) < 0.7
    normalize, bad_n = flag(data, fault == "normalize")
    if which == "pair_counts":
        fn, options, bad_n = malis.malis_pair_counts, {}, None
    else:
        fn, options = malis.malis_weights, {"constrained": which == "constrained", "normalize": normalize}
    try:
        a, b = call(fn, affs, labels, offsets, mask=mask, must_refuse=bad_n, **options)
    except Refused:
        return
    for w in (a, b):
        assert w.dtype == np.float64 and w.shape == np.shape(affs)
        assert np.isfinite(w).all() and w.min(initial=0) >= 0


# ---------------------------------------------------------------------------------------------
# minimal calls that fuzzing found failing in modules this file's owner does not maintain


def _affs():
    return np.full((2, 2, 2), 0.6, np.float32)


def _refused(fn, *args, **kwargs):
    def run():
        with pytest.raises(InputError):
            fn(*args, **kwargs)
    return run


def _masked_fragments_stay_zero():
    affs = np.array([[[0.64, 0.27, 0.04, 0.02, 0.81]], [[0.91, 0.61, 0.73, 0.54, 0.94]]], np.float32)
    result = affseg.segment(affs, method="mala", thresholds=[0.0], mask=np.array([[1, 1, 1, 1, 0]], bool),
                            fragments=np.array([[4, 3, 3, 2, 2]], np.uint64))
    assert result.segmentation(0)[0, 4] == 0  # was 2: the mask was not applied


# (id, the call): each raised something other than an InputError, or was accepted, before it was fixed
REGRESSIONS = [
    # _checks.as_affinities / as_labels / as_mask: np.asarray's own ValueError ("inhomogeneous shape")
    ("ragged affs (_checks.as_affinities)", _refused(affseg.connected_components, [[[0.5, 0.5], [0.5]]])),
    ("ragged labels (_checks.as_labels)", _refused(affseg.affinities_from_labels, [[1, 2], [1]])),
    ("ragged mask (_checks.as_mask)", _refused(affseg.connected_components, _affs(), mask=[[1, 1], [1]])),
    # _checks.as_mask: ``arr != 0`` makes any string or object True: the mask is silently ignored
    ("mask of strings (_checks.as_mask)",
     _refused(affseg.connected_components, _affs(), mask=np.array([["no", "no"], ["no", "no"]]))),
    ("mask of None objects (_checks.as_mask)",
     _refused(affseg.connected_components, _affs(), mask=np.full((2, 2), None, object))),
    # agglomeration.parse_merge_function: ``name in dict`` on a list is a TypeError
    ("merge_function list (agglomeration.parse_merge_function)",
     _refused(affseg.agglomerate, _affs(), np.ones((2, 2), np.uint64), thresholds=[0.5], merge_function=["mean"])),
    # methods/mala.py (fragments_of): given fragments are used as they are, outside the mask too
    ("mask ignored with given fragments (methods.mala)", _masked_fragments_stay_zero),
    # pipeline._looks_like_thresholds: np.ndim of ragged offsets is numpy's ValueError
    ("ragged offsets (pipeline.segment)",
     _refused(affseg.segment, _affs(), [[-1, 0], [0]], method="cc", thresholds=[0.5])),
]


@pytest.mark.parametrize("run", [k[1] for k in REGRESSIONS], ids=[k[0] for k in REGRESSIONS])
def test_found_by_fuzzing(run):
    run()
