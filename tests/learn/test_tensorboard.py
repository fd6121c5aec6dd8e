"""affseg train writes TensorBoard event files that TensorBoard's own reader reads, with the expected
tags; without the tensorboard package (or with train.tensorboard false) it trains as before and
writes none."""
from __future__ import annotations

import csv
import io
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the learning tests need the 'train' extra (torch)")

from test_train_predict import small_config

from affseg.learn.train import train

SCALARS = {"loss/total", "loss/mse", "terms/mse", "terms/lsds", "learning_rate", "time/data", "time/forward",
           "time/loss", "time/backward", "time/iteration"}
IMAGES = {"snapshot/raw", "snapshot/target_affs", "snapshot/pred_affs", "snapshot/target_lsds",
          "snapshot/pred_lsds"}


def read_events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_training_writes_event_files_with_the_expected_tags(tmp_path):
    pytest.importorskip("tensorboard", reason="needs the 'tensorboard' extra")
    cfg = small_config(tmp_path)  # 4 iterations, a snapshot every 2
    train(cfg, tmp_path / "run")
    events = read_events(tmp_path / "run")
    tags = events.Tags()
    assert SCALARS <= set(tags["scalars"])
    assert set(tags["images"]) == IMAGES
    # one value per logged iteration, equal to the CSV log's
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    total = events.Scalars("loss/total")
    assert [e.step for e in total] == [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert [e.value for e in total] == pytest.approx([float(r["loss"]) for r in rows], rel=1e-6)
    assert [e.value for e in events.Scalars("terms/lsds")] == pytest.approx([float(r["loss_lsds"]) for r in rows],
                                                                            rel=1e-6)
    assert [e.value for e in events.Scalars("learning_rate")] == pytest.approx([5e-5] * 4)
    times = [sum(float(r[f"time_{k}"]) for k in ("data", "forward", "loss", "backward")) for r in rows]
    assert [e.value for e in events.Scalars("time/iteration")] == pytest.approx(times, rel=1e-5)
    # images at the snapshots: a section of the raw (grey) and RGB affinities of the output's size
    assert [e.step for e in events.Images("snapshot/pred_affs")] == [2, 4]
    raw, = [e for e in events.Images("snapshot/raw") if e.step == 2]
    pred, = [e for e in events.Images("snapshot/pred_affs") if e.step == 2]
    assert (pred.height, pred.width) == (12, 12) and raw.height > pred.height
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(pred.encoded_image_string)))
    assert rgb.shape == (12, 12, 3) and rgb.std() > 0  # the predicted affinities, not a blank image


def test_a_resumed_run_continues_the_event_files(tmp_path):
    """Events of iterations after the checkpoint a run resumes from are hidden, as log.csv drops them."""
    pytest.importorskip("tensorboard", reason="needs the 'tensorboard' extra")
    cfg = small_config(tmp_path, iterations=3, snapshot_every=0)  # checkpoints at 2 and 3
    train(cfg, tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / "iteration_00000003.pt").unlink()  # as if killed before it was written
    cfg["train"]["iterations"] = 4
    train(cfg, tmp_path / "run")
    steps = [e.step for e in read_events(tmp_path / "run").Scalars("loss/total")]
    assert steps == [1, 2, 3, 4]
    # overwrite replaces a run folder holding event files (they are a run's own entries)
    train(cfg, tmp_path / "run", overwrite=True)
    assert [e.step for e in read_events(tmp_path / "run").Scalars("loss/total")] == [1, 2, 3, 4]


def test_training_without_tensorboard_writes_no_event_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    from affseg.learn.tensorboard import tensorboard_available

    assert not tensorboard_available()
    cfg = small_config(tmp_path, iterations=2)
    result = train(cfg, tmp_path / "run")
    assert result.last_checkpoint.name == "iteration_00000002.pt"
    assert not (tmp_path / "run" / "tensorboard").exists()
    assert not list((tmp_path / "run").rglob("events.out.tfevents*"))
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # the library says nothing


def test_the_config_turns_it_off(tmp_path):
    pytest.importorskip("tensorboard", reason="needs the 'tensorboard' extra")
    cfg = small_config(tmp_path, iterations=2, tensorboard=False)
    train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "tensorboard").exists()
