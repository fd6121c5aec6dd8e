import json
from pathlib import Path

import numpy as np
import pytest

from affseg.cli import main
from affseg.io import read_volume


def test_synth_segment_evaluate(tmp_path, capsys):
    data = tmp_path / "data.zarr"
    assert main(["synth", str(data), "--shape", "8", "48", "48", "--seed", "1"]) == 0
    affs, vol = read_volume(data / "affs")
    assert affs.shape == (3, 8, 48, 48) and vol.axes == ("c^", "z", "y", "x")
    assert main(["segment", str(data / "affs"), str(tmp_path / "out.zarr/seg"), "--thresholds", "0.2", "0.5"]) == 0
    seg, _ = read_volume(tmp_path / "out.zarr/seg/threshold_0.5")
    frags, _ = read_volume(tmp_path / "out.zarr/seg/fragments")
    assert seg.shape == (8, 48, 48) and frags.max() >= len(np.unique(seg))
    out_json, out_png = tmp_path / "scores.json", tmp_path / "curve.png"
    assert main(["evaluate", str(tmp_path / "out.zarr/seg"), str(data / "labels"), "--json", str(out_json),
                 "--plot", str(out_png)]) == 0
    rows = json.loads(out_json.read_text())
    assert [r["threshold"] for r in rows] == [0.2, 0.5]
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    assert "best by VOI: threshold 0." in capsys.readouterr().out


def test_outputs_are_not_overwritten(tmp_path, capsys):
    data = tmp_path / "data.h5"
    assert main(["synth", str(data), "--shape", "4", "24", "24"]) == 0
    assert main(["synth", str(data), "--shape", "4", "24", "24"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["synth", str(data), "--shape", "4", "24", "24", "--overwrite"]) == 0


def test_missing_input_is_named(tmp_path, capsys):
    assert main(["segment", str(tmp_path / "nope.zarr/affs"), str(tmp_path / "o.zarr/s")]) == 2
    assert "nope.zarr" in capsys.readouterr().err


DEMO_ARGS = ["--shape", "12", "64", "64", "--train-shape", "16", "80", "80", "--iterations", "3"]


def test_demo_writes_everything(tmp_path, capsys):
    pytest.importorskip("torch", reason="the demo trains a network: it needs the 'train' extra")
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), *DEMO_ARGS]) == 0
    text = capsys.readouterr().out
    assert "CREMI score" in text and "best MALA: threshold" in text and "mutex watershed" in text
    assert (out / "split_merge.png").exists() and (out / "loss.png").exists()
    scores = json.loads((out / "scores.json").read_text())
    assert {"mala", "mutex_watershed", "gasp", "train"} <= set(scores)
    assert scores["train"]["iterations"] == 3 and Path(scores["train"]["checkpoint"]).is_file()
    affs, _ = read_volume(out / "demo.zarr" / "affs")
    assert affs.shape == (6, 12, 64, 64) and 0 <= affs.min() and affs.max() <= 1
    for name in ("segmentation", "mws", "gasp"):
        seg, _ = read_volume(out / "demo.zarr" / name)
        assert seg.shape == (12, 64, 64) and seg.min() >= 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not [p for p in (out / "demo.zarr").iterdir() if p.name.startswith(".")]
    assert main(["demo", "--output", str(out), *DEMO_ARGS]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_train_and_predict_commands(tmp_path, capsys):
    pytest.importorskip("torch", reason="needs the 'train' extra")
    assert main(["synth", str(tmp_path / "d.zarr"), "--shape", "12", "48", "48"]) == 0
    (tmp_path / "c.yaml").write_text(
        "data:\n  train: [{raw: d.zarr/raw, labels: d.zarr/labels}]\n  min_labelled: 0.1\n"
        "model: {num_fmaps: 2, fmap_inc_factor: 2, downsample_factors: [[1, 2, 2]], output_shape: [4, 12, 12]}\n"
        "train: {iterations: 2, checkpoint_every: 1}\n")
    assert main(["train", str(tmp_path / "c.yaml")]) == 0
    ckpt = tmp_path / "c" / "checkpoints" / "iteration_00000002.pt"
    assert ckpt.is_file()
    assert main(["predict", str(ckpt), str(tmp_path / "d.zarr/raw"), str(tmp_path / "p.zarr")]) == 0
    assert read_volume(tmp_path / "p.zarr" / "affs")[0].shape == (3, 12, 48, 48)
    assert main(["predict", str(ckpt), str(tmp_path / "d.zarr/raw"), str(tmp_path / "p.zarr")]) == 2
    assert "exists" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("model: {num_fmap: 2}\n")
    assert main(["train", str(tmp_path / "bad.yaml")]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_segment_and_evaluate_refuse_to_overwrite(tmp_path, capsys):
    data = tmp_path / "data.zarr"
    assert main(["synth", str(data), "--shape", "4", "24", "24"]) == 0
    out = str(tmp_path / "out.zarr/seg")
    assert main(["segment", str(data / "affs"), out, "--thresholds", "0.5", "--method", "cc"]) == 0
    # the same command again finds its output complete; other options would replace it
    assert main(["segment", str(data / "affs"), out, "--thresholds", "0.5", "--method", "cc"]) == 0
    assert "complete already" in capsys.readouterr().out
    assert main(["segment", str(data / "affs"), out, "--thresholds", "0.4", "--method", "cc"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    report = tmp_path / "s.json"
    report.write_text("{}")
    assert main(["evaluate", out, str(data / "labels"), "--json", str(report)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert report.read_text() == "{}"
    assert main(["evaluate", out, str(data / "labels"), "--json", str(report), "--overwrite"]) == 0
    assert json.loads(report.read_text())[0]["threshold"] == 0.5


@pytest.mark.parametrize("method,extra", [("mws", ["--long-range-bias", "0.7", "--strides", "1", "2", "2"]),
                                          ("gasp", ["--superpixels", "--cannot-link"])])
def test_segment_signed_graph_methods(tmp_path, method, extra):
    offsets = "[[-1,0,0],[0,-1,0],[0,0,-1],[-2,0,0],[0,-4,0],[0,0,-4]]"
    data = tmp_path / "data.zarr"
    assert main(["synth", str(data), "--shape", "4", "32", "32", "--offsets", offsets]) == 0
    out = tmp_path / "out.zarr" / "seg"
    assert main(["segment", str(data / "affs"), str(out), "--method", method, "--bias", "0.4", *extra]) == 0
    seg, _ = read_volume(out / "segmentation")
    affs, _ = read_volume(data / "affs")
    from affseg import gasp, mutex_watershed

    if method == "mws":
        expected = mutex_watershed(affs, json.loads(offsets), bias=0.4, long_range_bias=0.7, strides=[1, 2, 2])
    else:
        fragments, _ = read_volume(out / "fragments")
        expected = gasp(affs, json.loads(offsets), bias=0.4, cannot_link=True, fragments=fragments)
    np.testing.assert_array_equal(seg, expected)
    assert main(["evaluate", str(out / "segmentation"), str(data / "labels")]) == 0


@pytest.mark.parametrize("seeds", ["fragments", "maxima"])
def test_segment_random_walker(tmp_path, seeds):
    from affseg.pipeline import segment

    data = tmp_path / "data.zarr"
    assert main(["synth", str(data), "--shape", "4", "32", "32", "--seed", "2"]) == 0
    out = tmp_path / "out.zarr" / "seg"
    assert main(["segment", str(data / "affs"), str(out), "--method", "rw", "--rw-seeds", seeds,
                 "--thresholds", "0.3", "--min-seed-distance", "6"]) == 0
    affs, _ = read_volume(data / "affs")
    expected = segment(affs, thresholds=[0.3], method="rw", rw_seeds=seeds, min_seed_distance=6).segmentation(0)
    name = "threshold_0.3" if seeds == "fragments" else "segmentation"
    seg, _ = read_volume(out / name)
    np.testing.assert_array_equal(seg, expected)
    from affseg.io import open_volume

    with open_volume(out / name) as vol:
        assert vol.data.attrs["rw_seeds"] == seeds and vol.data.attrs["method"] == "rw"


def test_demo_overwrite_replaces_only_a_demo_output(tmp_path, monkeypatch, capsys):
    unrelated = tmp_path / "results"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("mine")
    assert main(["demo", "--output", str(unrelated), "--overwrite", *DEMO_ARGS]) == 2
    assert "not an affseg demo output" in capsys.readouterr().err
    monkeypatch.chdir(unrelated)
    (unrelated / "scores.json").write_text("{}")  # looks like a demo output, but it is the current folder
    (unrelated / "notes.txt").unlink()
    assert main(["demo", "--output", ".", "--overwrite", *DEMO_ARGS]) == 2
    assert sorted(p.name for p in unrelated.iterdir()) == ["scores.json"]


def _subparsers():
    import argparse

    from affseg.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def _without_help(parser) -> list[str]:
    import argparse

    return [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions
            if not isinstance(a, argparse._HelpAction) and (not a.help or a.help == argparse.SUPPRESS)]


@pytest.mark.parametrize("command", ["synth", "segment", "evaluate", "train", "predict", "demo", "view"])
def test_every_option_of_every_command_has_a_help_text(command):
    parser, commands = _subparsers()
    assert set(commands) == {"synth", "segment", "evaluate", "train", "predict", "demo", "view"}  # a new one is listed here
    assert _without_help(parser) == []
    assert _without_help(commands[command]) == []


def test_best_by_choices_are_the_evaluation_criteria():
    from affseg.cli import BEST_BY_CHOICES
    from affseg.evaluation import BEST_BY

    assert set(BEST_BY_CHOICES) == set(BEST_BY)


def test_library_messages_name_the_keyword_and_the_cli_the_flag(tmp_path, capsys):
    from affseg.errors import OutputExists
    from affseg.io import write_volume

    data = tmp_path / "data.zarr"
    assert main(["synth", str(data), "--shape", "4", "16", "16"]) == 0
    with pytest.raises(OutputExists) as info:
        write_volume(data / "raw", np.zeros((4, 16, 16), np.uint8))
    assert "pass overwrite=True" in str(info.value) and "--overwrite" not in str(info.value)
    capsys.readouterr()
    assert main(["synth", str(data), "--shape", "4", "16", "16"]) == 2
    err = capsys.readouterr().err
    assert "pass --overwrite to replace it" in err and "overwrite=True" not in err


@pytest.mark.parametrize("message,expected", [
    ("x exists; pass overwrite=True to replace it", "x exists; pass --overwrite to replace it"),
    ("x exists; rerun with --overwrite (overwrite=True) to replace it", "x exists; rerun with --overwrite to replace it"),
    ("pass overwrite=True (--overwrite) to discard them", "pass --overwrite to discard them"),
    ("--overwrite (overwrite=True) refuses to replace x", "--overwrite refuses to replace x"),
])
def test_cli_wording(message, expected):
    from affseg.cli import cli_wording

    assert cli_wording(message) == expected


def test_the_deprecated_flag_still_works_with_a_warning(tmp_path, capsys):
    data = tmp_path / "data.zarr"
    assert main(["synth", str(data), "--shape", "4", "24", "24"]) == 0
    capsys.readouterr()
    assert main(["segment", str(data / "affs"), str(tmp_path / "o.zarr/old"), "--fragments-in-xy",
                 "--thresholds", "0.5"]) == 0
    assert "warning: --fragments-in-xy is deprecated: use --in-plane" in capsys.readouterr().err
    assert main(["segment", str(data / "affs"), str(tmp_path / "o.zarr/new"), "--in-plane", "--thresholds", "0.5"]) == 0
    np.testing.assert_array_equal(read_volume(tmp_path / "o.zarr/old/threshold_0.5")[0],
                                  read_volume(tmp_path / "o.zarr/new/threshold_0.5")[0])
