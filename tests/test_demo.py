"""affseg demo: says what it does at each stage, writes a training config that is reusable as it
is (it continues the demo's run, also from a moved folder), and scores with the thresholds as given."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch", reason="the demo trains a network: it needs the 'train' extra")
yaml = pytest.importorskip("yaml", reason="the demo's config is YAML: it needs the 'train' extra")

from affseg.cli import main
from affseg.demo import DEMO_STAGES

ARGS = ["--shape", "12", "64", "64", "--train-shape", "16", "80", "80", "--iterations", "2"]


def test_the_demo_reports_its_stages_and_its_config_continues_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--output", "d", *ARGS]) == 0
    err = capsys.readouterr().err
    stages = [line for line in err.splitlines() if line.startswith("[")]
    assert [s.split("]")[0] for s in stages] == [f"[{i}/{DEMO_STAGES}" for i in range(1, DEMO_STAGES + 1)]
    assert all(s.split("]")[1].split()[1] == "s" for s in stages)  # seconds since the start
    scores = json.loads((tmp_path / "d" / "scores.json").read_text())
    thresholds = [row["threshold"] for row in scores["mala"]]
    # the sweep the data calls for, written as short decimals (0.1, not 0.10000000149011612)
    assert thresholds and thresholds == sorted(thresholds) and all(len(repr(t)) <= 6 for t in thresholds)
    # the run's stored config names the data relative to the run, not in the demo's staging folder
    stored = json.loads((tmp_path / "d" / "run" / "config.json").read_text())
    assert stored["data"]["train"][0]["raw"] == "../demo.zarr/train/raw"
    # the demo's folder moved elsewhere: its config still continues its run
    (tmp_path / "d").rename(tmp_path / "moved")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "moved").rename(tmp_path / "elsewhere" / "d")
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = tmp_path / "elsewhere" / "d" / "run.yaml"
    text = config.read_text()
    assert "train:" in text and text.startswith("# ")
    cfg = yaml.safe_load(text)
    cfg["train"]["iterations"] = 3
    config.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(config)]) == 0
    assert "trained 3 iterations" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "elsewhere" / "d" / "run" / "checkpoints").iterdir())[-1] == \
        "iteration_00000003.pt"


@pytest.mark.parametrize("bad,named", [(["--iterations", "0"], "--iterations"), (["--iterations", "-3"], "--iterations"),
                                       (["--shape", "0", "64", "64"], "--shape"), (["--seed", "-1"], "--seed"),
                                       (["--min-seed-distance", "0"], "--min-seed-distance")])
def test_bad_demo_numbers_are_refused_before_anything_is_written(tmp_path, monkeypatch, capsys, bad, named):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--output", "d", *ARGS, *bad]) == 2
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # no staging folder, no output


@pytest.mark.parametrize("part", ["mala", "signed"])
def test_the_kernel_warming_processes_run_the_demo_s_segmentations(part):
    """The demo compiles its segmentation kernels in two processes beside the training; their
    failures are swallowed there, so each is run here on its own (a process: it lowers its own
    priority)."""
    import subprocess
    import sys

    code = f"from affseg.demo import warm_kernels; warm_kernels(4, 'hist_quant_75', part={part!r})"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def test_an_unknown_warming_part_is_refused():
    from affseg.demo import warm_kernels
    from affseg.errors import InputError

    with pytest.raises(InputError, match="part must be one of mala, signed, got 'gasp'"):
        warm_kernels(4, "hist_quant_75", part="gasp")


def test_the_warm_run_compiles_every_kernel_the_demo_then_runs(tmp_path, monkeypatch):
    """After warm_kernels' two parts, the demo's segmentations of affinities as predict writes
    them (float32 in zarr, another shape) and their scores need no new numba specialization: the
    warm runs compiled exactly what the demo runs (the signed part's fragments, made without
    numba, included)."""
    import os

    import numba

    from affseg.demo import DEMO_OFFSETS, WARM_PARTS, segment_demo, warm_kernels
    from affseg.evaluation import best_threshold, evaluate
    from affseg.io import read_volume, write_volume
    from affseg.synthetic import make_volume

    monkeypatch.setattr(os, "nice", lambda increment: 0)  # (in this process: leave the test's priority alone)
    for part in WARM_PARTS:
        warm_kernels(5, "hist_quant_75", part=part)

    def signatures() -> dict:
        import sys

        return {f"{name}.{attr}": len(value.signatures)
                for name, module in list(sys.modules.items()) if name.startswith("affseg")
                for attr, value in list(vars(module).items()) if isinstance(value, numba.core.dispatcher.Dispatcher)}

    before = signatures()
    assert len(before) > 20
    vol = make_volume((10, 56, 40), seed=3, defects=True)
    write_volume(tmp_path / "d.zarr" / "affs", make_volume((10, 56, 40), seed=4, offsets=DEMO_OFFSETS).affs,
                 axes=["c^", "z", "y", "x"])
    affs, _ = read_volume(tmp_path / "d.zarr" / "affs")
    _, thresholds, agg, mws, gasp_seg = segment_demo(affs, min_seed_distance=5, merge_function="hist_quant_75")
    rows = [{"threshold": float(t), **evaluate(agg.segmentation(i), vol.labels)} for i, t in enumerate(thresholds)]
    best_threshold(rows)
    evaluate(mws, vol.labels), evaluate(gasp_seg, vol.labels)
    after = signatures()
    assert {k: v for k, v in after.items() if before.get(k) != v} == {}


def test_the_warmer_ends_when_its_demo_is_gone(tmp_path):
    """A demo killed by SIGTERM (no clean-up) leaves no warmer compiling behind."""
    import os
    import subprocess
    import sys
    import time

    warmer_code = ("import time\nfrom affseg import demo\n"
                   "demo._mala_demo = lambda *args, **kwargs: time.sleep(60)  # (stands in for the compiling)\n"
                   "demo.warm_kernels(5, 'hist_quant_75', int(__import__('sys').argv[1]), part='mala')\n")
    (tmp_path / "warmer.py").write_text(warmer_code)
    (tmp_path / "demo.py").write_text(  # a stand-in demo: starts the warmer, then waits to be killed
        "import os, subprocess, sys, time\n"
        f"w = subprocess.Popen([sys.executable, {str(tmp_path / 'warmer.py')!r}, str(os.getpid())])\n"
        "print(w.pid, flush=True)\ntime.sleep(60)\n")
    demo = subprocess.Popen([sys.executable, str(tmp_path / "demo.py")], stdout=subprocess.PIPE, text=True)
    warmer = int(demo.stdout.readline())
    time.sleep(3)  # the warmer has started and waits in the stand-in segmentation
    demo.terminate()
    demo.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            state = open(f"/proc/{warmer}/stat").read().split()[2]
        except FileNotFoundError:
            break  # gone
        if state == "Z":
            break  # exited (a zombie until init reaps it)
        time.sleep(0.5)
    else:
        os.kill(warmer, 9)
        raise AssertionError("the warmer outlived its demo by 30 s")
