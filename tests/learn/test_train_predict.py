"""Training runs, resumes, refuses bad configs and diverging losses; tiled prediction equals one pass."""
from __future__ import annotations

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the learning tests need the 'train' extra (torch)")

from affseg.io import open_volume, read_volume, write_volume
from affseg.learn.config import load_config, validate_config
from affseg.learn.predict import predict, tile_shape
from affseg.learn.train import TrainingError, build_model, latest_checkpoint, load_checkpoint, train
from affseg.synthetic import make_volume


def small_config(tmp_path, **train):
    vol = make_volume((16, 48, 48), seed=0)
    write_volume(tmp_path / "data.zarr" / "raw", vol.raw)
    write_volume(tmp_path / "data.zarr" / "labels", vol.labels)
    return {
        "data": {"train": [{"raw": str(tmp_path / "data.zarr" / "raw"), "labels": str(tmp_path / "data.zarr" / "labels")}],
                 "min_labelled": 0.1},
        "model": {"num_fmaps": 2, "fmap_inc_factor": 2, "downsample_factors": [[1, 2, 2]],
                  "output_shape": [4, 12, 12]},
        "targets": {"lsd_sigma": 3.0},
        "augment": {"elastic_sigma": 0.0},
        "train": {"iterations": 4, "checkpoint_every": 2, "snapshot_every": 2, "seed": 1, "device": "cpu", **train},
    }


def test_train_writes_checkpoints_log_snapshots_and_resumes(tmp_path):
    cfg = small_config(tmp_path)
    result = train(cfg, tmp_path / "run")
    assert result.last_checkpoint.name == "iteration_00000004.pt"
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["time_forward"]) > 0 and r["loss_lsds"] for r in rows)
    assert read_volume(tmp_path / "run" / "snapshots.zarr" / "iteration_00000002" / "pred_affs")[0].shape == (3, 4, 12, 12)
    # resume: more iterations continue from the last checkpoint, the log keeps one row per iteration
    cfg["train"]["iterations"] = 6
    cfg["train"]["keep_checkpoints"] = 1
    train(cfg, tmp_path / "run")
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["iteration_00000006.pt"]
    _model, state = load_checkpoint(latest_checkpoint(tmp_path / "run"))
    assert state["iteration"] == 6
    # a different config in the same folder is refused
    cfg["model"]["num_fmaps"] = 3
    with pytest.raises(FileExistsError, match="different config"):
        train(cfg, tmp_path / "run")


def test_a_run_moved_together_with_its_data_resumes_and_elsewhere_is_a_different_config(tmp_path):
    import json
    import shutil

    project = tmp_path / "project"
    project.mkdir()
    cfg = small_config(project, iterations=2)
    train(cfg, project / "run")
    stored = json.loads((project / "run" / "config.json").read_text())
    assert stored["data"]["train"][0] == {**stored["data"]["train"][0], "raw": "../data.zarr/raw",
                                          "labels": "../data.zarr/labels"}  # relative to the run folder
    shutil.move(project, tmp_path / "moved")
    cfg = json.loads(json.dumps(cfg).replace(str(project), str(tmp_path / "moved")))
    cfg["train"]["iterations"] = 4
    train(cfg, tmp_path / "moved" / "run")  # resumes from iteration 2
    rows = list(csv.DictReader((tmp_path / "moved" / "run" / "log.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    # the run folder moved alone, its data left where they are: resumes too
    shutil.move(tmp_path / "moved" / "run", tmp_path / "archived_run")
    cfg["train"]["iterations"] = 5
    train(cfg, tmp_path / "archived_run")
    rows = list(csv.DictReader((tmp_path / "archived_run" / "log.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5]
    shutil.move(tmp_path / "archived_run", tmp_path / "moved" / "run")
    # the same run folder with other data (here: the same arrays under another path) is another experiment
    shutil.copytree(tmp_path / "moved" / "data.zarr", tmp_path / "other.zarr")
    cfg = json.loads(json.dumps(cfg).replace(str(tmp_path / "moved" / "data.zarr"), str(tmp_path / "other.zarr")))
    with pytest.raises(FileExistsError, match="different config"):
        train(cfg, tmp_path / "moved" / "run")


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, workers):
    """Resuming reloads weights, optimizer state and the per-iteration data: 2 + 2 iterations
    give the weights of 4 uninterrupted ones."""
    cfg = small_config(tmp_path, iterations=4)
    cfg["data"]["num_workers"] = workers
    train(cfg, tmp_path / "straight")
    cfg["train"]["iterations"] = 2
    train(cfg, tmp_path / "resumed")
    cfg["train"]["iterations"] = 4
    train(cfg, tmp_path / "resumed")
    straight, _ = load_checkpoint(latest_checkpoint(tmp_path / "straight"))
    resumed, _ = load_checkpoint(latest_checkpoint(tmp_path / "resumed"))
    for p, q in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)


def nan_loss_at(monkeypatch, bad_iteration: int):
    """Make the training loss NaN at one iteration; returns the real loss function."""
    import affseg.learn.train as T

    real = T._losses

    def exploding(cfg, outputs, batch, iteration):
        loss, parts, phase = real(cfg, outputs, batch, iteration)
        return (loss * float("nan") if iteration == bad_iteration else loss), parts, phase

    monkeypatch.setattr(T, "_losses", exploding)
    return real


def test_log_rows_of_a_run_without_checkpoint_are_dropped_on_restart(tmp_path, monkeypatch):
    cfg = small_config(tmp_path, iterations=4, checkpoint_every=3)
    real = nan_loss_at(monkeypatch, 2)
    with pytest.raises(TrainingError, match="none"):
        train(cfg, tmp_path / "run")
    monkeypatch.setattr("affseg.learn.train._losses", real)
    train(cfg, tmp_path / "run")
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message for a missing GPU")
def test_cuda_without_a_gpu_is_refused_before_writing(tmp_path):
    cfg = small_config(tmp_path, device="cuda")
    with pytest.raises(ValueError, match="no CUDA device"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_malis_phase_switch(tmp_path):
    cfg = small_config(tmp_path, iterations=3, malis_start=2)
    cfg["targets"]["lsd_sigma"] = None
    train(cfg, tmp_path / "run")
    phases = [r["phase"] for r in csv.DictReader((tmp_path / "run" / "log.csv").open())]
    assert phases == ["mse", "malis", "malis"]


def test_malis_phase_keeps_the_configured_share_of_mse(tmp_path):
    from affseg.learn.losses import malis_loss, weighted_mse
    from affseg.learn.train import _losses

    vol = make_volume((4, 12, 12), seed=3)
    offsets = [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]
    pred = torch.rand((1, 3, 4, 12, 12), generator=torch.Generator().manual_seed(0))
    batch = {"labels": vol.labels[None], "affs": torch.from_numpy(vol.affs[None].astype(np.float32)),
             "affs_weights": torch.rand(pred.shape), "affs_mask": torch.ones(pred.shape)}
    malis = malis_loss(pred, batch["labels"], offsets, mask=batch["affs_mask"] > 0)
    mse = weighted_mse(pred, batch["affs"], batch["affs_weights"])
    for share in (0.0, 0.7):
        cfg = validate_config({"data": {"train": [{"raw": "a.h5/raw", "labels": "a.h5/labels"}]},
                               "targets": {"offsets": offsets, "lsd_sigma": None},
                               "train": {"malis_start": 0, "malis_affinity_weight": share}})
        total, _parts, phase = _losses(cfg, {"affs": pred}, batch, iteration=5)
        assert phase == "malis"
        assert float(total) == pytest.approx(float(malis + share * mse), rel=1e-6)


def test_random_walker_training_moves_the_weights(tmp_path):
    # the random-walker loss alone (no MSE share): its gradient must reach the network
    cfg = small_config(tmp_path, iterations=2, loss="random_walker", learning_rate=1e-2, rw_affinity_weight=0.0)
    cfg["targets"]["lsd_sigma"] = None
    result = train(cfg, tmp_path / "run")
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [r["phase"] for r in rows] == ["random_walker", "random_walker"]
    assert all(np.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in rows)
    first = torch.load(result.last_checkpoint, weights_only=True)["model"]
    torch.manual_seed(cfg["train"]["seed"])  # the initial weights, as train() makes them
    fresh = build_model(validate_config(cfg))
    assert any(not torch.equal(first[k], v) for k, v in fresh.state_dict().items())


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    cfg = small_config(tmp_path, iterations=6)
    nan_loss_at(monkeypatch, 3)
    with pytest.raises(TrainingError, match=r"iteration 3.*iteration_00000002.pt"):
        train(cfg, tmp_path / "run")
    assert latest_checkpoint(tmp_path / "run").name == "iteration_00000002.pt"


@pytest.mark.parametrize("bad, message", [
    ({"model": {"num_fmap": 3}}, "unknown key"),
    ({"train": {"iterations": "ten"}}, "train.iterations must be int"),
    ({"optimizer": {}}, "unknown section"),
    ({"train": {"loss": "l1"}}, "train.loss"),
    ({"train": {"loss": "random_walker", "malis_start": 10}}, "train.malis_start"),
    ({"train": {"rw_gradient": "approx"}}, "train.rw_gradient"),
    ({"train": {"rw_affinity_weight": -1.0}}, "train.rw_affinity_weight"),
    ({"train": {"malis_affinity_weight": -0.5}}, "train.malis_affinity_weight"),
    ({"data": {"train": [{"raw": "x.h5/raw"}]}}, r"data.train\[0\]"),
])
def test_bad_configs(bad, message):
    cfg = {"data": {"train": [{"raw": "a.h5/raw", "labels": "a.h5/labels"}]}}
    for section, values in bad.items():
        cfg.setdefault(section, {}).update(values)
    with pytest.raises(ValueError, match=message):
        validate_config(cfg)


def test_config_files(tmp_path):
    (tmp_path / "c.yaml").write_text("data:\n  train:\n    - {raw: d.h5/raw, labels: d.h5/labels}\ntrain:\n  iterations: 5\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg["train"]["iterations"] == 5 and cfg["data"]["train"][0]["raw"] == str(tmp_path / "d.h5" / "raw")
    (tmp_path / "c.toml").write_text('[train]\niterations = 7\n[[data.train]]\nraw = "d.h5/raw"\nlabels = "d.h5/labels"\n')
    assert load_config(tmp_path / "c.toml")["train"]["iterations"] == 7
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def test_impossible_output_shape_is_rejected_before_writing(tmp_path):
    cfg = small_config(tmp_path)
    cfg["model"]["output_shape"] = [4, 13, 13]
    with pytest.raises(ValueError, match="no input gives the output shape"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_tiled_prediction_equals_one_pass(tmp_path):
    cfg = small_config(tmp_path, iterations=1)
    cfg["model"]["downsample_factors"] = [[1, 3, 3]]
    cfg["model"]["output_shape"] = [4, 14, 14]
    train(cfg, tmp_path / "run")
    ckpt = latest_checkpoint(tmp_path / "run")
    model, _ = load_checkpoint(ckpt)
    raw = make_volume((10, 40, 38), seed=4).raw
    written = predict(ckpt, raw, tmp_path / "pred.zarr", tile=(4, 12, 12))
    tiled, _ = read_volume(written["affs"])
    # one pass over the whole volume, zero-padded by the context
    out, step = tile_shape(model, (4, 12, 12))
    assert all(s % f == 0 for s, f in zip(step, model.total_factor))
    context = (np.array(model.input_shape(out)) - np.array(out)) // 2
    whole_out = [int(np.ceil(s / f)) * f for s, f in zip(raw.shape, model.total_factor)]
    whole_out = model.valid_output_shapes_near(tuple(whole_out))[-1]
    whole_in = model.input_shape(whole_out)
    padded = np.zeros(whole_in, np.float32)
    padded[tuple(slice(c, c + s) for c, s in zip(context, raw.shape))] = raw / 255
    with torch.no_grad():
        one = model(torch.from_numpy(padded)[None, None])["affs"][0].numpy()
    one = one[(slice(None),) + tuple(slice(0, s) for s in raw.shape)]
    np.testing.assert_allclose(tiled, one, atol=1e-5)
    assert read_volume(written["lsds"])[0].shape == (10,) + raw.shape
    with pytest.raises(FileExistsError):
        predict(ckpt, raw, tmp_path / "pred.zarr")
    with pytest.raises(ValueError, match="uint8 or float"):
        predict(ckpt, raw.astype(np.int32), tmp_path / "other.zarr")
    assert not (tmp_path / "other.zarr").exists()


def test_interrupted_prediction_resumes_from_finished_tiles(tmp_path, monkeypatch):
    cfg = small_config(tmp_path, iterations=1)
    train(cfg, tmp_path / "run")
    ckpt = latest_checkpoint(tmp_path / "run")
    raw = make_volume((8, 40, 40), seed=4).raw
    write_volume(tmp_path / "raw.zarr" / "raw", raw)
    address = str(tmp_path / "raw.zarr" / "raw")
    reference, _ = read_volume(predict(ckpt, address, tmp_path / "ref.zarr", tile=(4, 12, 12))["affs"])
    import affseg.learn.unet as unet_module

    real_forward = unet_module.UNet.forward
    calls = []

    def failing_forward(self, x):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run stops after two finished tiles
        return real_forward(self, x)

    monkeypatch.setattr(unet_module.UNet, "forward", failing_forward)
    with pytest.raises(KeyboardInterrupt):
        predict(ckpt, address, tmp_path / "pred.zarr", tile=(4, 12, 12))
    assert not (tmp_path / "pred.zarr" / "affs").exists()
    calls.clear()
    monkeypatch.setattr(unet_module.UNet, "forward", lambda self, x: (calls.append(1), real_forward(self, x))[1])
    resumed, _ = read_volume(predict(ckpt, address, tmp_path / "pred.zarr", tile=(4, 12, 12))["affs"])
    np.testing.assert_array_equal(resumed, reference)
    total_tiles = int(np.prod([int(np.ceil(s / t)) for s, t in zip(raw.shape, tile_shape(load_checkpoint(ckpt)[0], (4, 12, 12))[1])]))
    assert len(calls) == total_tiles - 2  # only the unfinished tiles were computed
    assert not [p for p in (tmp_path / "pred.zarr").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("loss", ["mse", "random_walker"])
def test_2d_training_and_prediction_end_to_end(tmp_path, loss):
    vol = make_volume((1, 64, 64), seed=3)
    write_volume(tmp_path / "d.zarr" / "raw", vol.raw[0])
    write_volume(tmp_path / "d.zarr" / "labels", vol.labels[0])
    cfg = {
        "data": {"train": [{"raw": str(tmp_path / "d.zarr" / "raw"), "labels": str(tmp_path / "d.zarr" / "labels")}],
                 "min_labelled": 0.1},
        "model": {"num_fmaps": 2, "fmap_inc_factor": 2, "downsample_factors": [[2, 2]], "output_shape": [20, 20]},
        "targets": {"offsets": [[-1, 0], [0, -1]]},
        "augment": {"elastic_sigma": 0.0},
        "train": {"iterations": 2, "checkpoint_every": 2, "seed": 0, "device": "cpu", "loss": loss},
    }
    result = train(cfg, tmp_path / "run")
    written = predict(result.last_checkpoint, vol.raw[0], tmp_path / "pred.zarr")
    affs, _meta = read_volume(written["affs"])
    assert affs.shape == (2, 64, 64) and np.isfinite(affs).all() and affs.min() >= 0 and affs.max() <= 1


def test_a_2d_network_predicts_a_stack_section_by_section(tmp_path):
    vol = make_volume((3, 48, 48), seed=3)
    write_volume(tmp_path / "d.zarr" / "raw", vol.raw)
    write_volume(tmp_path / "d.zarr" / "labels", vol.labels)
    cfg = {
        "data": {"train": [{"raw": str(tmp_path / "d.zarr" / "raw"), "labels": str(tmp_path / "d.zarr" / "labels")}],
                 "min_labelled": 0.1},
        "model": {"num_fmaps": 2, "fmap_inc_factor": 2, "downsample_factors": [[2, 2]], "output_shape": [20, 20]},
        "targets": {"offsets": [[-1, 0], [0, -1], [0, -3]]},
        "augment": {"elastic_sigma": 0.0},
        "train": {"iterations": 2, "checkpoint_every": 2, "seed": 0, "device": "cpu"},
    }
    ckpt = train(cfg, tmp_path / "run").last_checkpoint
    written = predict(ckpt, str(tmp_path / "d.zarr" / "raw"), tmp_path / "pred.zarr")["affs"]
    stack, _ = read_volume(written)
    assert stack.shape == (4, 3, 48, 48)
    assert open_volume(written).data.attrs["offsets"] == [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, 0, -3]]
    assert not stack[0].any()  # sections are separate objects
    for z in range(3):
        one, _ = read_volume(predict(ckpt, vol.raw[z], tmp_path / f"one{z}.zarr")["affs"])
        np.testing.assert_allclose(stack[1:, z], one, atol=1e-6)
