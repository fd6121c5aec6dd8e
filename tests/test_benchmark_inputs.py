"""benchmarks/inputs.py: the --input specs of the benchmarks (generators, neuroproof, files)."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SMALL = (8, 32, 32)
SIX = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-3, 0, 0], [0, -9, 0], [0, 0, -9]]


def _load_module():
    spec = importlib.util.spec_from_file_location("benchmark_inputs", BENCHMARKS / "inputs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


inputs = _load_module()


def _check(affs, labels, offsets, shape, channels):
    assert affs.dtype == np.float32 and affs.shape == (channels, *shape)
    assert affs.flags.c_contiguous
    assert 0.0 <= affs.min() and affs.max() <= 1.0
    assert labels.dtype == np.uint64 and labels.shape == shape
    assert offsets.shape == (channels, 3) and offsets.dtype.kind == "i"


@pytest.mark.parametrize("name", ["synthetic", "curves"])
def test_generators_are_deterministic_per_seed(name):
    a1, l1, o1, d1 = inputs.load_input(f"{name}:3", shape=SMALL)
    a2, l2, _, d2 = inputs.load_input(name, seed=3, shape=SMALL)  # the seed where the spec gives none
    _check(a1, l1, o1, SMALL, 3)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(l1, l2)
    assert d1 == d2 and "seed 3" in d1
    a3, _, _, _ = inputs.load_input(f"{name}:4", shape=SMALL)
    assert not np.array_equal(a1, a3)
    np.testing.assert_array_equal(o1, inputs.NEAREST)


@pytest.mark.parametrize("name", ["synthetic", "curves"])
def test_generators_make_the_requested_offsets(name):
    affs, labels, offsets, desc = inputs.load_input(name, SIX, shape=SMALL)
    _check(affs, labels, offsets, SMALL, 6)
    np.testing.assert_array_equal(offsets, SIX)
    assert "offsets" in desc
    # the nearest channels are those of a nearest-only input (the published figures stay reproducible)
    near, _, _, _ = inputs.load_input(name, shape=SMALL)
    np.testing.assert_array_equal(affs[:3], near)


def test_synthetic_is_make_volume():
    from affseg.synthetic import make_volume

    affs, labels, _, _ = inputs.load_input("synthetic:2", SIX, shape=SMALL)
    vol = make_volume(SMALL, seed=2, offsets=SIX)
    np.testing.assert_array_equal(affs, vol.affs)
    np.testing.assert_array_equal(labels, vol.labels)


def test_shape_in_the_spec():
    affs, _, _, desc = inputs.load_input("curves:1:shape=8x24x40")
    assert affs.shape == (3, 8, 24, 40) and "8 x 24 x 40" in desc


@pytest.mark.parametrize("seed", [0, 1])
def test_curves_saturated_share(seed):
    affs, labels, _, desc = inputs.load_input(f"curves:{seed}", shape=(24, 96, 96))
    share = float(np.mean((affs == 0) | (affs == 1)))
    assert 0.30 <= share <= 0.50
    assert f"{share:.1%} exactly 0 or 1" in desc
    assert labels.min() == 1 and len(np.unique(labels)) == labels.max() > 5  # consecutive ids, no 0


def _write_h5(path: Path, affs, labels, offsets=None, dtype=None):
    import h5py

    with h5py.File(path, "w") as f:
        ds = f.create_dataset("affs", data=affs if dtype is None else affs.astype(dtype))
        if offsets is not None:
            ds.attrs["offsets"] = np.asarray(offsets)
        f.create_dataset("labels", data=labels)


def test_hdf5_round_trip(tmp_path):
    affs, labels, _, _ = inputs.load_input("curves:5", SIX, shape=SMALL)
    path = tmp_path / "mine.h5"
    _write_h5(path, affs, labels, SIX)
    got, got_labels, offsets, desc = inputs.load_input(f"{path}/affs,labels={path}/labels", SIX)
    np.testing.assert_array_equal(got, affs)
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_array_equal(offsets, SIX)
    # nearest neighbours picked from the six channels by their offsets
    near, _, offsets, desc = inputs.load_input(f"{path}/affs,labels={path}/labels", inputs.NEAREST)
    np.testing.assert_array_equal(near, affs[:3])
    assert "channels [0, 1, 2] of 6" in desc
    # no labels: None; all channels without requested offsets; a crop
    got, got_labels, offsets, desc = inputs.load_input(f"{path}/affs", shape=(4, 16, 16))
    assert got_labels is None and "no labels" in desc
    np.testing.assert_array_equal(got, affs[:, :4, :16, :16])
    np.testing.assert_array_equal(offsets, SIX)


def test_hdf5_without_offsets_is_nearest_and_uint8_is_scaled(tmp_path):
    affs, labels, _, _ = inputs.load_input("curves:5", shape=SMALL)
    path = tmp_path / "plain.h5"
    as_uint8 = np.round(affs * 255).astype(np.uint8)
    _write_h5(path, as_uint8, labels.astype(np.int32))
    got, got_labels, offsets, _ = inputs.load_input(f"{path}/affs,labels={path}/labels")
    np.testing.assert_array_equal(offsets, inputs.NEAREST)
    np.testing.assert_allclose(got, as_uint8 / np.float32(255))
    assert got.dtype == np.float32 and got_labels.dtype == np.uint64


def test_zarr_round_trip(tmp_path):
    from affseg.io import write_volume

    affs, labels, _, _ = inputs.load_input("synthetic:1", SIX, shape=SMALL)
    store = tmp_path / "mine.zarr"
    write_volume(store / "volumes" / "affs", affs, attrs={"offsets": SIX})
    write_volume(store / "volumes" / "labels", labels)
    spec = f"{store}/volumes/affs,labels={store}/volumes/labels"
    got, got_labels, offsets, _ = inputs.load_input(spec, SIX)
    np.testing.assert_array_equal(got, affs)
    np.testing.assert_array_equal(got_labels, labels)
    np.testing.assert_array_equal(offsets, SIX)


@pytest.mark.parametrize("spec, match", [
    ("bogus", "unknown input 'bogus'"),
    ("bogus:1", "unknown input"),
    ("curves:1:2", "two seeds"),
    ("curves:blur=1", "unknown option 'blur' for curves"),
    ("synthetic:high", "cannot read 'high'"),
    ("neuroproof:extreme", "cannot read 'extreme'"),
    ("neuroproof:noise=-1", "noise must be a number >= 0"),
    ("curves:shape=8x32", "three positive sizes"),
    ("data/affs.npy", "neither a generator"),
])
def test_bad_specs(spec, match):
    with pytest.raises(inputs.InputSpecError, match=match):
        inputs.parse_spec(spec)
    with pytest.raises(argparse.ArgumentTypeError):
        inputs.check_spec(spec)


def test_neuroproof_presets_parse():
    assert inputs.parse_spec("neuroproof").options == {}
    parsed = inputs.parse_spec("neuroproof:high:2")
    assert parsed.seed == 2 and parsed.options == {**inputs.NEUROPROOF_PRESETS["high"], "preset": "high"}
    parsed = inputs.parse_spec("neuroproof:blur=0.6,noise=0.3:shape=4x8x8")
    assert parsed.options == {"blur": 0.6, "correlated_noise": 0.3, "white_noise": 0.15, "shape": (4, 8, 8)}


def test_file_errors(tmp_path):
    affs, labels, _, _ = inputs.load_input("curves:5", SIX, shape=SMALL)
    path = tmp_path / "mine.h5"
    _write_h5(path, affs[:3], labels, inputs.NEAREST)
    with pytest.raises(FileNotFoundError, match="no dataset 'nothing'"):
        inputs.load_input(f"{path}/nothing")
    with pytest.raises(FileNotFoundError, match="no such file"):
        inputs.load_input(f"{tmp_path / 'absent.h5'}/affs")
    with pytest.raises(FileNotFoundError, match="no dataset 'nothing'"):
        inputs.load_input(f"{path}/affs,labels={path}/nothing")
    with pytest.raises(inputs.InputSpecError, match=r"needs 6 affinity channels .* has 3 channel\(s\)"):
        inputs.load_input(f"{path}/affs", SIX)
    six = tmp_path / "six.h5"
    _write_h5(six, affs, labels)  # six channels, no offsets attribute
    with pytest.raises(inputs.InputSpecError, match="6 channels and no `offsets` attribute"):
        inputs.load_input(f"{six}/affs")
    _write_h5(six, affs[:3], labels[:4], inputs.NEAREST)  # labels of another shape
    with pytest.raises(inputs.InputSpecError, match="spatial shape"):
        inputs.load_input(f"{six}/affs,labels={six}/labels")
    bad = tmp_path / "bad.h5"
    _write_h5(bad, affs[:3] * 2, labels, inputs.NEAREST)
    with pytest.raises(inputs.InputSpecError, match=r"must lie in \[0, 1\]"):
        inputs.load_input(f"{bad}/affs")
    with pytest.raises(inputs.InputSpecError, match="cannot crop"):
        inputs.load_input(f"{path}/affs", shape=(9, 32, 32))


def test_neuroproof_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(inputs, "NEUROPROOF", tmp_path / "neuroproof_train.h5")
    with pytest.raises(FileNotFoundError, match=r"neuroproof_train\.h5.*does not exist"):
        inputs.load_input("neuroproof")


@pytest.mark.skipif(not inputs.NEUROPROOF.exists(), reason="../shared/data/neuroproof_train.h5 is absent")
def test_neuroproof_presets():
    from affseg.synthetic import noisy_affinities

    medium, labels, _, desc = inputs.load_input("neuroproof:1", shape=SMALL)
    assert "medium" in desc and labels.shape == SMALL
    # medium is noisy_affinities' defaults (the published neuroproof figures)
    np.testing.assert_array_equal(medium, noisy_affinities(labels, seed=1))
    high, _, _, desc = inputs.load_input("neuroproof:1:high", shape=SMALL)
    assert "high" in desc and not np.array_equal(high, medium)
    custom, _, _, desc = inputs.load_input("neuroproof:1:blur=0.7,noise=0.2", shape=SMALL)
    np.testing.assert_array_equal(custom, medium)
