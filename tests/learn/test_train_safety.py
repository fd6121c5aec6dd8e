"""Issue #13: checkpoints load as plain data only, corrupt checkpoints give clear errors (and a
resume falls back to the previous one), --overwrite only replaces affseg's own training runs,
and the default config trains."""
from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the learning tests need the 'train' extra (torch)")

from affseg.errors import AffsegError, CorruptInput, InputError, OutputExists, UnsafeCheckpoint
from affseg.io import read_volume, write_volume
from affseg.learn.config import load_config, validate_config
from affseg.learn.predict import predict, tile_shape
from affseg.learn.train import (
    RUN_MARKER,
    TrainingError,
    build_model,
    latest_checkpoint,
    load_checkpoint,
    resolve_output_shape,
    train,
)
from affseg.synthetic import make_volume


def write_data(folder: Path, shape=(16, 48, 48)) -> tuple[str, str]:
    vol = make_volume(shape, seed=0)
    write_volume(folder / "data.zarr" / "raw", vol.raw)
    write_volume(folder / "data.zarr" / "labels", vol.labels)
    return str(folder / "data.zarr" / "raw"), str(folder / "data.zarr" / "labels")


def tiny_config(folder: Path, **train_options) -> dict:
    raw, labels = write_data(folder)
    return {
        "data": {"train": [{"raw": raw, "labels": labels}], "min_labelled": 0.1},
        "model": {"num_fmaps": 2, "fmap_inc_factor": 2, "downsample_factors": [[1, 2, 2]], "output_shape": [4, 12, 12]},
        "augment": {"elastic_sigma": 0.0},
        "train": {"iterations": 2, "checkpoint_every": 1, "seed": 1, "device": "cpu", **train_options},
    }


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


class RunsCode:
    """Unpickling this calls os.system: what a hostile checkpoint would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real checkpoint of a short run (and the folder holding the run and its data)."""
    folder = tmp_path_factory.mktemp("trained")
    result = train(tiny_config(folder), folder / "run")
    return result.last_checkpoint


# ------------------------------------------------------------------ 1. plain-data checkpoints


@pytest.mark.parametrize("protocol", [2, 4])
def test_checkpoint_that_would_run_code_is_refused_unrun(tmp_path, trained, protocol):
    marker = tmp_path / "pwned"
    state = torch.load(trained, weights_only=True)
    state["extra"] = RunsCode(marker)
    evil = tmp_path / "evil.pt"
    torch.save(state, evil, pickle_protocol=protocol)
    with pytest.raises(UnsafeCheckpoint, match=r"evil\.pt holds more than plain data .*was not loaded"):
        load_checkpoint(evil)
    assert not marker.exists()
    raw = make_volume((4, 24, 24), seed=2).raw
    with pytest.raises(UnsafeCheckpoint, match=r"evil.pt"):
        predict(evil, raw, tmp_path / "pred.zarr")
    assert not marker.exists()
    assert not (tmp_path / "pred.zarr").exists()


def test_checkpoint_with_numpy_objects_is_refused(tmp_path, trained):
    state = torch.load(trained, weights_only=True)
    state["iteration"] = np.int64(2)  # loads only with weights_only=False: not plain data
    torch.save(state, tmp_path / "numpy.pt")
    with pytest.raises(UnsafeCheckpoint, match="numpy"):
        load_checkpoint(tmp_path / "numpy.pt")


def test_real_checkpoint_is_plain_data_and_predicts(tmp_path, trained):
    state = torch.load(trained, weights_only=True)  # would raise for anything but plain data
    assert state["iteration"] == 2 and state["config"]["model"]["output_shape"] == [4, 12, 12]
    _model, loaded = load_checkpoint(trained)
    assert loaded["iteration"] == 2
    written = predict(trained, make_volume((4, 24, 24), seed=2).raw, tmp_path / "pred.zarr")
    assert read_volume(written["affs"])[0].shape == (3, 4, 24, 24)


def test_config_with_numpy_numbers_tuples_and_paths_gives_a_plain_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, iterations=np.int64(1), betas=(np.float32(0.9), 0.999))
    cfg["data"]["train"][0] = {key: Path(value) for key, value in cfg["data"]["train"][0].items()}
    cfg["model"]["output_shape"] = tuple(np.array([4, 12, 12]))
    result = train(cfg, tmp_path / "run")
    state = torch.load(result.last_checkpoint, weights_only=True)
    assert state["config"]["model"]["output_shape"] == [4, 12, 12]
    assert state["config"]["train"]["iterations"] == 1 and type(state["config"]["train"]["iterations"]) is int
    assert isinstance(state["config"]["data"]["train"][0]["raw"], str)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["betas"][1] == 0.999


def test_config_with_an_array_is_refused(tmp_path):
    cfg = {"data": {"train": [{"raw": np.zeros((4, 4, 4), np.uint8), "labels": "a.zarr/labels"}]}}
    with pytest.raises(InputError, match=r"data\.train\[0\]\.raw must be plain data"):
        validate_config(cfg)


def test_checkpoint_without_the_expected_keys_is_corrupt(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CorruptInput, match=r"other\.pt is not an affseg checkpoint: it lacks the key\(s\) "
                                           r"\['model', 'config', 'iteration'\]"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CorruptInput, match="not an affseg checkpoint"):
        load_checkpoint(tmp_path / "list.pt")


# ------------------------------------------------------------------ 2. corrupt checkpoints


def test_checkpoint_path_that_is_a_directory(tmp_path):
    (tmp_path / "ckpt.pt").mkdir()
    with pytest.raises(InputError, match=r"ckpt\.pt is a directory, not a checkpoint file"):
        load_checkpoint(tmp_path / "ckpt.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("damage", ["empty", "truncated", "head", "garbage", "text", "unzipped"])
def test_corrupt_checkpoint_files_name_the_path(tmp_path, trained, damage):
    data = trained.read_bytes()
    content = {"empty": b"", "truncated": data[: len(data) // 2], "head": data[:10],
               "garbage": np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes(),
               "text": b"hello, I am not a checkpoint\n", "unzipped": pickle.dumps([1, 2, 3])}[damage]
    bad = tmp_path / f"{damage}.pt"
    bad.write_bytes(content)
    with pytest.raises(CorruptInput, match=f"checkpoint {bad}") as info:
        load_checkpoint(bad)
    assert not isinstance(info.value, UnsafeCheckpoint)  # damage is not reported as hostile content


def read_log(run: Path) -> list[int]:
    return [int(r["iteration"]) for r in csv.DictReader((run / "log.csv").open())]


def test_resume_falls_back_from_a_corrupt_latest_checkpoint(tmp_path, monkeypatch):
    import affseg.learn.train as T

    cfg = tiny_config(tmp_path, iterations=3, keep_checkpoints=3)
    train(cfg, tmp_path / "run")
    latest = tmp_path / "run" / "checkpoints" / "iteration_00000003.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated (a crash mid-copy, a full disk)
    real, ran = T._losses, []
    monkeypatch.setattr(T, "_losses", lambda c, o, b, i: (ran.append(i), real(c, o, b, i))[1])
    cfg["train"]["iterations"] = 5
    resumed_from = []
    with pytest.warns(RuntimeWarning, match=r"from \S*iteration_00000002\.pt \(iteration 2\).*iteration_00000003\.pt"):
        result = train(cfg, tmp_path / "run", on_resume=lambda i, path: resumed_from.append((i, path.name)))
    assert ran == [3, 4, 5]  # resumed after iteration 2, not from scratch and not after 3
    assert resumed_from == [(2, "iteration_00000002.pt")]  # what the CLI prints: the checkpoint really used
    assert read_log(tmp_path / "run") == [1, 2, 3, 4, 5]
    assert result.last_checkpoint.name == "iteration_00000005.pt"
    assert (tmp_path / "run" / "checkpoints" / "iteration_00000003.pt.unreadable").exists()
    # bit for bit the weights of an uninterrupted run
    monkeypatch.setattr(T, "_losses", real)
    train(cfg, tmp_path / "straight")
    resumed, _ = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    straight, _ = load_checkpoint(latest_checkpoint(tmp_path / "straight"))
    for p, q in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_resume_without_any_readable_checkpoint_is_corrupt_input(tmp_path):
    cfg = tiny_config(tmp_path, iterations=2)
    train(cfg, tmp_path / "run")
    for path in (tmp_path / "run" / "checkpoints").glob("iteration_*.pt"):
        path.write_bytes(b"")
    cfg["train"]["iterations"] = 3
    with pytest.raises(CorruptInput, match=r"no checkpoint of .*run can be read"):
        train(cfg, tmp_path / "run")


def test_training_error_is_an_affseg_error_and_a_runtime_error():
    assert issubclass(TrainingError, AffsegError) and issubclass(TrainingError, RuntimeError)


# ------------------------------------------------------------------ 3. --overwrite


def test_overwrite_refuses_the_folder_holding_the_data(tmp_path):
    cfg = tiny_config(tmp_path)
    before = listing(tmp_path / "data.zarr")
    with pytest.raises(OutputExists, match=r"refuses to replace .*data\.zarr: it holds data\.train\[0\]\.raw"):
        train(cfg, tmp_path / "data.zarr", overwrite=True)
    assert listing(tmp_path / "data.zarr") == before
    assert read_volume(cfg["data"]["train"][0]["raw"])[0].shape == (16, 48, 48)


def test_overwrite_refuses_a_folder_with_config_data_and_other_files(tmp_path):
    tiny_config(tmp_path)
    (tmp_path / "c.yaml").write_text("data:\n  train: [{raw: data.zarr/raw, labels: data.zarr/labels}]\n"
                                     "  min_labelled: 0.1\nmodel: {num_fmaps: 2, downsample_factors: [[1, 2, 2]]}\n"
                                     "train: {iterations: 1, device: cpu}\n")
    (tmp_path / "notes.txt").write_text("mine")
    cfg = load_config(tmp_path / "c.yaml")
    before = listing(tmp_path)
    with pytest.raises(OutputExists, match="refuses to replace"):
        train(cfg, tmp_path, overwrite=True, config_path=tmp_path / "c.yaml")
    assert listing(tmp_path) == before
    # without overwrite: not a run, and no suggestion to pass --overwrite
    with pytest.raises(OutputExists, match="is not an affseg training run") as info:
        train(cfg, tmp_path, config_path=tmp_path / "c.yaml")
    assert "--overwrite" not in str(info.value) and "another output folder" in str(info.value)
    assert listing(tmp_path) == before


def test_cli_train_output_dot_overwrite_deletes_nothing(tmp_path, monkeypatch, capsys):
    from affseg.cli import main

    tiny_config(tmp_path)
    (tmp_path / "c.yaml").write_text("data:\n  train: [{raw: data.zarr/raw, labels: data.zarr/labels}]\n"
                                     "  min_labelled: 0.1\nmodel: {num_fmaps: 2, downsample_factors: [[1, 2, 2]]}\n"
                                     "train: {iterations: 1, device: cpu}\n")
    (tmp_path / "notes.txt").write_text("mine")
    before = listing(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "c.yaml", "--output", ".", "--overwrite"]) == 2
    assert "refuses to replace" in capsys.readouterr().err
    assert main(["train", "c.yaml", "--output", "data.zarr", "--overwrite"]) == 2
    assert "data.train[0].raw" in capsys.readouterr().err
    assert main(["train", "c.yaml", "--output", "."]) == 2
    err = capsys.readouterr().err
    assert "not an affseg training run" in err and "--overwrite" not in err
    assert listing(tmp_path) == before


def test_overwrite_refuses_an_unrelated_folder(tmp_path):
    cfg = tiny_config(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputExists, match=r"not an affseg training run \(it holds thesis\.tex\)"):
        train(cfg, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"


def test_overwrite_replaces_a_previous_run(tmp_path):
    cfg = tiny_config(tmp_path, iterations=3)
    train(cfg, tmp_path / "run")
    marker = json.loads((tmp_path / "run" / RUN_MARKER).read_text())
    assert marker["kind"] == "affseg training run" and marker["version"]
    cfg["train"]["iterations"] = 1
    cfg["model"]["num_fmaps"] = 3  # a different config: only overwrite may replace it
    with pytest.raises(OutputExists, match="different config; pass overwrite=True"):
        train(cfg, tmp_path / "run")
    train(cfg, tmp_path / "run", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["iteration_00000001.pt"]
    assert read_log(tmp_path / "run") == [1]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["num_fmaps"] == 3
    assert (tmp_path / "run" / RUN_MARKER).exists()


def test_overwrite_refuses_a_run_with_an_unrelated_file(tmp_path):
    cfg = tiny_config(tmp_path, iterations=1)
    train(cfg, tmp_path / "run")
    (tmp_path / "run" / "notes.txt").write_text("keep me")
    before = listing(tmp_path / "run")
    with pytest.raises(OutputExists, match=r"it holds notes\.txt, which an affseg training run does not write"):
        train(cfg, tmp_path / "run", overwrite=True)
    assert listing(tmp_path / "run") == before
    (tmp_path / "run" / "notes.txt").unlink()
    (tmp_path / "run" / "checkpoints" / "best.pt").write_bytes(b"mine")
    with pytest.raises(OutputExists, match=r"checkpoints/best\.pt"):
        train(cfg, tmp_path / "run", overwrite=True)
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()


def test_overwrite_refuses_a_run_holding_an_input(tmp_path):
    cfg = tiny_config(tmp_path, iterations=1)
    train(cfg, tmp_path / "run")
    # training data kept inside the run's snapshots (the marker is there, but it is an input now)
    vol = make_volume((16, 48, 48), seed=0)
    inside = tmp_path / "run" / "snapshots.zarr"
    write_volume(inside / "raw", vol.raw)
    write_volume(inside / "labels", vol.labels)
    other = dict(cfg, data=dict(cfg["data"], train=[{"raw": str(inside / "raw"), "labels": str(inside / "labels")}]))
    with pytest.raises(OutputExists, match=r"it holds data\.train\[0\]\.raw"):
        train(other, tmp_path / "run", overwrite=True)
    assert read_volume(inside / "raw")[0].shape == (16, 48, 48)
    (inside / "c.yaml").write_text("kept")
    with pytest.raises(OutputExists, match="it holds the config file"):
        train(cfg, tmp_path / "run", overwrite=True, config_path=inside / "c.yaml")
    assert (inside / "c.yaml").exists() and latest_checkpoint(tmp_path / "run") is not None


def test_runs_from_before_the_marker_are_runs(tmp_path):
    cfg = tiny_config(tmp_path, iterations=2)
    train(cfg, tmp_path / "run")
    (tmp_path / "run" / RUN_MARKER).unlink()  # config.json, checkpoints/, log.csv: as older versions wrote
    cfg["train"]["iterations"] = 3
    train(cfg, tmp_path / "run")  # resumes, and marks the folder
    assert read_log(tmp_path / "run") == [1, 2, 3] and (tmp_path / "run" / RUN_MARKER).exists()
    (tmp_path / "run" / RUN_MARKER).unlink()
    cfg["train"]["iterations"] = 1
    train(cfg, tmp_path / "run", overwrite=True)
    assert read_log(tmp_path / "run") == [1]
    # a config.json alone (no checkpoints/) is not identified as a run
    (tmp_path / "lone").mkdir()
    (tmp_path / "lone" / "config.json").write_text((tmp_path / "run" / "config.json").read_text())
    with pytest.raises(OutputExists, match="not an affseg training run"):
        train(cfg, tmp_path / "lone", overwrite=True)
    assert (tmp_path / "lone" / "config.json").exists()


def test_output_that_is_a_file_is_refused(tmp_path):
    cfg = tiny_config(tmp_path)
    (tmp_path / "out").write_text("x")
    with pytest.raises(OutputExists, match="not a folder"):
        train(cfg, tmp_path / "out", overwrite=True)
    assert (tmp_path / "out").read_text() == "x"


# ------------------------------------------------------------------ 4./5. defaults


def test_default_model_has_a_valid_default_output_shape():
    cfg = validate_config({"data": {"train": [{"raw": "d.zarr/raw", "labels": "d.zarr/labels"}]}})
    assert cfg["model"]["output_shape"] is None
    net = build_model(cfg)
    shape = resolve_output_shape(cfg, net)
    assert shape == (9, 56, 56)
    assert net.output_shape(net.input_shape(shape)) == shape
    out, step = tile_shape(net, (64, 64, 64))  # what predict uses with this model
    assert net.output_shape(net.input_shape(out)) == out
    assert all(s > 0 and s % f == 0 for s, f in zip(step, net.total_factor))
    # any downsample factors alone: the shape follows the model
    for factors in ([[2, 2, 2]], [[1, 2, 2], [2, 2, 2]], [[1, 3, 3], [1, 3, 3]], []):
        cfg = validate_config({"data": {"train": [{"raw": "d.zarr/raw", "labels": "d.zarr/labels"}]},
                               "model": {"downsample_factors": factors, "num_fmaps": 1, "fmap_inc_factor": 1}})
        net = build_model(cfg)
        shape = resolve_output_shape(cfg, net)
        assert net.output_shape(net.input_shape(shape)) == shape
        assert all(s >= 8 for s in shape)
    # an explicit shape the model cannot produce is still a clear error
    cfg = validate_config({"data": {"train": [{"raw": "d.zarr/raw", "labels": "d.zarr/labels"}]},
                           "model": {"output_shape": [8, 44, 44]}})
    with pytest.raises(ValueError, match="no input gives the output shape"):
        resolve_output_shape(cfg, build_model(cfg))


def test_minimal_config_with_other_factors_trains_and_predicts(tmp_path):
    raw, _labels = write_data(tmp_path, (12, 40, 40))
    (tmp_path / "c.yaml").write_text("data:\n  train: [{raw: data.zarr/raw, labels: data.zarr/labels}]\n"
                                     "model:\n  downsample_factors: [[1, 2, 2]]\n"
                                     "train: {iterations: 2, device: cpu}\n")
    result = train(load_config(tmp_path / "c.yaml"), tmp_path / "run", config_path=tmp_path / "c.yaml")
    assert read_log(tmp_path / "run") == [1, 2]
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["model"]["output_shape"] == [8, 8, 8]  # the resolved shape is what the run records
    written = predict(result.last_checkpoint, raw, tmp_path / "pred.zarr")
    assert read_volume(written["affs"])[0].shape == (3, 12, 40, 40)


def test_null_output_shape_resumes_and_compares_resolved(tmp_path):
    cfg = tiny_config(tmp_path, iterations=1)
    cfg["model"]["output_shape"] = None
    train(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["output_shape"] == [8, 8, 8]
    cfg["train"]["iterations"] = 2
    train(cfg, tmp_path / "run")  # null again: the same resolved shape, the run resumes
    cfg["model"]["output_shape"] = [8, 8, 8]
    cfg["train"]["iterations"] = 3
    train(cfg, tmp_path / "run")  # the explicit resolved shape is the same config
    assert read_log(tmp_path / "run") == [1, 2, 3]
    cfg["model"]["output_shape"] = [4, 12, 12]
    with pytest.raises(OutputExists, match="different config"):
        train(cfg, tmp_path / "run")


@pytest.mark.slow
def test_training_from_the_minimal_config(tmp_path):
    """The default model (MALA's) from a config that only names the data: about a minute on 2 cores."""
    _raw, _labels = write_data(tmp_path, (12, 64, 64))  # crops larger than the volume are padded
    (tmp_path / "c.yaml").write_text("data:\n  train: [{raw: data.zarr/raw, labels: data.zarr/labels}]\n"
                                     "train: {iterations: 1, device: cpu}\n")
    result = train(load_config(tmp_path / "c.yaml"), tmp_path / "run")
    assert result.iterations == 1 and read_log(tmp_path / "run") == [1]
    written = predict(result.last_checkpoint, make_volume((3, 27, 27), seed=1).raw, tmp_path / "pred.zarr",
                      tile=(3, 27, 27))
    affs = read_volume(written["affs"])[0]
    assert affs.shape == (3, 3, 27, 27) and np.isfinite(affs).all()


# ------------------------------------------------------------------ predict: what --overwrite may replace


def test_predict_overwrite_replaces_only_its_own_outputs(tmp_path, trained):
    raw = make_volume((4, 24, 24), seed=2).raw
    out = tmp_path / "pred.zarr"
    write_volume(out / "raw", raw)
    predict(trained, str(out / "raw"), out)
    with pytest.raises(OutputExists, match="exists"):
        predict(trained, str(out / "raw"), out)
    predict(trained, str(out / "raw"), out, overwrite=True)  # its own output: replaced
    import zarr

    group = zarr.open_group(str(tmp_path / "theirs.zarr"), mode="a")
    group.create_array("affs", data=np.ones((2, 2), np.float32))  # not written by affseg
    with pytest.raises(OutputExists, match="not written by affseg"):
        predict(trained, raw, tmp_path / "theirs.zarr", overwrite=True)
    np.testing.assert_array_equal(read_volume(tmp_path / "theirs.zarr" / "affs")[0], 1)
    write_volume(tmp_path / "named.zarr" / "affs", raw)  # raw data stored under the name of an output
    with pytest.raises(InputError, match="would replace the input"):
        predict(trained, str(tmp_path / "named.zarr" / "affs"), tmp_path / "named.zarr", overwrite=True)
    np.testing.assert_array_equal(read_volume(tmp_path / "named.zarr" / "affs")[0], raw)
