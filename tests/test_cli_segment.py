"""``affseg segment`` outputs: every method to both back ends, names, bad input before work,
resuming an interrupted output, and runs killed at random points."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from affseg.cli import main
from affseg.io import open_volume, read_volume

OFFSETS = "[[-1,0,0],[0,-1,0],[0,0,-1],[-2,0,0],[0,-4,0],[0,0,-4]]"
METHODS = {
    "mala": ["--thresholds", "0.3", "0.6", "--min-seed-distance", "4"],
    "cc": ["--thresholds", "0.3", "0.6"],
    "mws": ["--long-range-bias", "0.7"],
    "gasp": ["--superpixels", "--min-seed-distance", "4", "--ties", "edge-order"],
    "rw": ["--thresholds", "0.3", "--min-seed-distance", "4"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "data.zarr"
    assert main(["synth", str(path), "--shape", "4", "32", "32", "--offsets", OFFSETS, "--seed", "3"]) == 0
    return path


@pytest.mark.parametrize("backend", [".zarr", ".h5"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_writes_both_backends_and_evaluates_by_the_same_path(tmp_path, data, method, backend, capsys):
    out = tmp_path / f"out{backend}" / "seg"
    assert main(["segment", str(data / "affs"), str(out), "--method", method, *METHODS[method]]) == 0
    thresholds = [a for a in METHODS[method] if a in ("0.3", "0.6")]
    names = [f"threshold_{t}" for t in thresholds] or ["segmentation"]
    for name in names:
        seg, _ = read_volume(out / name)
        assert seg.shape == (4, 32, 32) and seg.dtype == np.uint64 and seg.min() >= 1
        with open_volume(out / name) as vol:
            assert vol.data.attrs["method"] == method
    capsys.readouterr()
    assert main(["evaluate", str(out), str(data / "labels")]) == 0  # the path given to segment
    assert "cremi_score" in capsys.readouterr().out


def test_close_thresholds_get_their_own_datasets(tmp_path, data):
    out = tmp_path / "out.zarr" / "seg"
    assert main(["segment", str(data / "affs"), str(out), "--method", "cc", "--thresholds", "0.30001", "0.30004"]) == 0
    for value in (0.30001, 0.30004):
        with open_volume(out / f"threshold_{value}") as vol:
            assert vol.data.attrs["threshold"] == value  # the decimal the user typed
    _seg_a, _ = read_volume(out / "threshold_0.30001")
    assert main(["evaluate", str(out), str(data / "labels"), "--json", str(tmp_path / "s.json")]) == 0
    assert [r["threshold"] for r in json.loads((tmp_path / "s.json").read_text())] == [0.30001, 0.30004]


@pytest.mark.parametrize("args,match", [
    (["--thresholds", "nan"], "finite number"),
    (["--thresholds", "0.3", "0.3"], "same threshold"),
    (["--offsets", "[[-1,0,0],"], "--offsets must be JSON"),
    (["--offsets", "[[-1,0,0],[0,-1]]"], "offsets"),
    (["--min-seed-distance", "0"], "min_seed_distance"),
    (["--method", "cc", "--bias", "0.4"], "--bias is not an option of --method cc"),
    # one --ties flag, each method's own choices
    (["--method", "mws", "--ties", "edge-order"], "unknown ties 'edge-order'"),
    (["--method", "gasp", "--superpixels", "--ties", "agreement"], "ties 'agreement' needs a grid"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, data, capsys, args, match):
    out = tmp_path / "out.zarr" / "seg"
    assert main(["segment", str(data / "affs"), str(out), *args]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_one_ties_flag_shows_each_methods_default(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[gasp; default hash]" in text and "[mws; default agreement]" in text
    assert "{agreement,hash,repulsive-first,attractive-first,edge-order}" in text


def test_output_that_would_replace_the_input_is_refused(tmp_path, data, capsys):
    copy = tmp_path / "d.zarr"
    assert main(["synth", str(copy), "--shape", "4", "16", "16"]) == 0
    assert main(["segment", str(copy / "affs"), str(copy / "affs"), "--overwrite"]) == 2
    assert "would replace the input" in capsys.readouterr().err
    affs, _ = read_volume(copy / "affs")
    assert affs.shape[0] == 3


def test_unwritable_output_is_found_before_work(tmp_path, data, capsys, read_only_dir):
    assert main(["segment", str(data / "affs"), str(read_only_dir / "out.zarr" / "seg")]) == 2
    assert "read-only" in capsys.readouterr().err


def _simulate_interruption(out: Path, drop: str) -> None:
    """What a run killed after its fragments and some thresholds leaves: those datasets, and a
    record that says the group is not complete."""
    import shutil

    import zarr

    shutil.rmtree(out / drop)
    group = zarr.open_group(str(out), mode="a")
    record = json.loads(group.attrs["affseg_segment"])
    written = [n for n in record["datasets"] if n != drop]
    group.attrs["affseg_segment"] = json.dumps({**record, "complete": False, "written": written})


def test_an_interrupted_output_is_finished_without_redoing_what_is_complete(tmp_path, data, capsys):
    out = tmp_path / "out.zarr" / "seg"
    command = ["segment", str(data / "affs"), str(out), "--thresholds", "0.2", "0.5", "0.8",
               "--min-seed-distance", "4"]
    assert main(command) == 0
    expected = {n: read_volume(out / n)[0] for n in ("fragments", "threshold_0.2", "threshold_0.5", "threshold_0.8")}
    _simulate_interruption(out, "threshold_0.5")
    capsys.readouterr()
    assert main(["evaluate", str(out), str(data / "labels")]) == 0
    err = capsys.readouterr().err
    assert "incomplete" in err and "3 of 4 datasets are written, missing threshold_0.5" in err
    kept = {n: (out / n / "zarr.json").stat().st_mtime_ns for n in ("fragments", "threshold_0.2", "threshold_0.8")}
    assert main(command) == 0
    assert "resuming" in capsys.readouterr().out
    assert kept == {n: (out / n / "zarr.json").stat().st_mtime_ns for n in kept}  # not rewritten
    for name, seg in expected.items():
        np.testing.assert_array_equal(read_volume(out / name)[0], seg)
    assert main(["evaluate", str(out), str(data / "labels")]) == 0
    assert "incomplete" not in capsys.readouterr().err


def test_a_changed_run_replaces_the_old_one_only_with_overwrite(tmp_path, data, capsys):
    out = tmp_path / "out.zarr" / "seg"
    assert main(["segment", str(data / "affs"), str(out), "--method", "cc", "--thresholds", "0.2", "0.5"]) == 0
    assert main(["segment", str(data / "affs"), str(out), "--method", "cc", "--thresholds", "0.4"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["segment", str(data / "affs"), str(out), "--method", "cc", "--thresholds", "0.4", "--overwrite"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["threshold_0.4", "zarr.json"]  # nothing of the replaced run is left to mix in


def _leftovers(root: Path) -> list[str]:
    found = [str(p.relative_to(root)) for p in root.rglob("*")
             if p.name.startswith(".") or p.name.endswith(".partial")]
    return found


@pytest.mark.slow
def test_segment_killed_at_random_points_finishes_on_rerun(tmp_path):
    data = tmp_path / "data.zarr"
    assert main(["synth", str(data), "--shape", "24", "96", "96", "--seed", "5"]) == 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def command(out):
        return [sys.executable, "-m", "affseg.cli", "segment", str(data / "affs"), str(out),
                "--min-seed-distance", "6"]

    reference = tmp_path / "ref.zarr" / "seg"
    started = time.perf_counter()
    subprocess.run(command(reference), check=True, env=env, capture_output=True)
    duration = time.perf_counter() - started
    expected = {p.name: read_volume(p)[0] for p in reference.iterdir() if p.is_dir()}
    assert len(expected) == 10  # fragments and 9 thresholds

    rng = np.random.default_rng(0)
    out = tmp_path / "out.zarr" / "seg"
    kills = 0
    # random points spread over the whole run: start-up, computation, the writes of the datasets
    for delay in (np.linspace(0.1, 0.9, 5) + rng.uniform(-0.05, 0.05, size=5)) * duration:
        run = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)
            kills += 1
        run.wait()
    assert kills >= 3
    finished = subprocess.run(command(out), env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert {p.name for p in out.iterdir() if p.is_dir()} == set(expected)
    for name, seg in expected.items():
        np.testing.assert_array_equal(read_volume(out / name)[0], seg, err_msg=name)
    assert _leftovers(tmp_path / "out.zarr") == [] and not list(tmp_path.glob(".out.zarr*"))


@pytest.mark.parametrize("method", ["mala", "cc"])
def test_blockwise_segment_equals_the_one_pass_command(tmp_path, data, method, capsys):
    pytest.importorskip("distributed", reason="blockwise runs on Dask: install the 'blockwise' extra")
    args = ["--method", method, "--thresholds", "0.3", "0.6"] + (["--min-seed-distance", "4"] if method == "mala" else [])
    one = tmp_path / "one.zarr" / "seg"
    assert main(["segment", str(data / "affs"), str(one), *args]) == 0
    blocks = tmp_path / "blocks.zarr" / "seg"
    context = ["--context", "2,8,8"] if method == "mala" else []
    assert main(["segment", str(data / "affs"), str(blocks), *args, "--blockwise", "--block-shape", "2,16,16",
                 "--workers", "0", *context]) == 0
    from conftest import same_partition

    if method == "cc":
        for name in ("threshold_0.3", "threshold_0.6"):
            assert same_partition(read_volume(blocks / name)[0], read_volume(one / name)[0])
    else:  # other fragments (blocks see less context); the agglomeration of them is exact
        from affseg import agglomerate

        affs, _ = read_volume(data / "affs")
        fragments, _ = read_volume(blocks / "fragments")
        single = agglomerate(affs, fragments, json.loads(OFFSETS), thresholds=[0.3, 0.6])
        np.testing.assert_array_equal(read_volume(blocks / "threshold_0.6")[0], single.segmentation(1))
    assert main(["segment", str(data / "affs"), str(blocks), "--method", "gasp", "--blockwise",
                 "--block-shape", "2,16,16"]) == 2
    assert "--blockwise runs --method mala, cc or mws" in capsys.readouterr().err
    if method == "cc":  # a context would be ignored: refused rather than silently dropped
        assert main(["segment", str(data / "affs"), str(tmp_path / "c.zarr" / "seg"), *args, "--blockwise",
                     "--block-shape", "2,16,16", "--workers", "0", "--context", "2,8,8"]) == 2
        assert "--context is for --method mala and mws" in capsys.readouterr().err
        assert main(["segment", str(data / "affs"), str(tmp_path / "c.zarr" / "seg"), *args, "--blockwise",
                     "--block-shape", "2,16,16", "--workers", "0", "--mala-mode", "hierarchical"]) == 2
        assert "--mala-mode is for --method mala, not cc" in capsys.readouterr().err
    else:  # lsd's hierarchical mode: the blocks' join levels of the same fragments
        from affseg.blockwise.engine import Engine
        from affseg.blockwise.pipeline import mala_to_zarr

        hier = tmp_path / "hier.zarr" / "seg"
        assert main(["segment", str(data / "affs"), str(hier), *args, "--blockwise", "--block-shape", "2,16,16",
                     "--workers", "0", *context, "--mala-mode", "hierarchical"]) == 0
        with Engine(workers=0) as engine:
            mala_to_zarr(str(data / "affs"), str(tmp_path / "lib.zarr" / "seg"), json.loads(OFFSETS),
                         thresholds=[0.3, 0.6], block_shape=(2, 16, 16), context=(2, 8, 8), engine=engine,
                         fragment_options={"min_seed_distance": 4}, mode="hierarchical")
        for name in ("fragments", "threshold_0.3", "threshold_0.6"):
            np.testing.assert_array_equal(read_volume(hier / name)[0], read_volume(tmp_path / "lib.zarr" / "seg" /
                                                                                    name)[0], err_msg=name)
    # blockwise options without --blockwise: refused, not ignored
    for flag, value in (("--mala-mode", "exact"), ("--context", "2,8,8"), ("--block-shape", "2,16,16")):
        assert main(["segment", str(data / "affs"), str(tmp_path / "x.zarr" / "seg"), *args, flag, value]) == 2
        assert f"{flag} needs --blockwise" in capsys.readouterr().err


def test_blockwise_mutex_watershed_command_equals_the_library(tmp_path, data, capsys):
    pytest.importorskip("distributed", reason="blockwise runs on Dask: install the 'blockwise' extra")
    from affseg.blockwise.mutex import mutex_watershed_blockwise

    out = tmp_path / "blocks.zarr" / "seg"
    assert main(["segment", str(data / "affs"), str(out), "--method", "mws", "--blockwise", "--block-shape",
                 "2,16,16", "--context", "1,4,4", "--workers", "1", "--bias", "0.4"]) == 0
    printed = capsys.readouterr().out
    assert "the stitch merged" in printed
    assert re.search(r"peak memory of the Dask workers: \d+ MiB \(the largest of 1,", printed)
    affs, _ = read_volume(data / "affs")
    expected = mutex_watershed_blockwise(affs, json.loads(OFFSETS), block_shape=(2, 16, 16), context=(1, 4, 4),
                                         bias=0.4)
    np.testing.assert_array_equal(read_volume(out / "segmentation")[0], expected)
    assert main(["evaluate", str(out), str(data / "labels")]) == 0


def test_every_registered_method_is_tested_through_the_cli():
    from affseg.methods import method_names

    assert sorted(METHODS) == sorted(method_names())  # a new method gets its case in METHODS


@pytest.mark.parametrize("method,args", [
    ("rw", ["--rw-seeds", "maxima", "--min-seed-distance", "4"]),
    ("gasp", ["--long-range-bias", "0.7"]),  # on voxels: no fragments
    ("mala", ["--thresholds", "0.5", "--min-seed-distance", "4"]),
])
@pytest.mark.parametrize("slash", ["", "/"])
def test_evaluate_takes_the_path_given_to_segment_for_each_variant(tmp_path, data, method, args, slash, capsys):
    out = f"{tmp_path / 'out.zarr' / 'seg'}{slash}"
    assert main(["segment", str(data / "affs"), out, "--method", method, *args]) == 0
    capsys.readouterr()
    assert main(["evaluate", out, str(data / "labels"), "--json", str(tmp_path / "s.json")]) == 0
    rows = json.loads((tmp_path / "s.json").read_text())
    assert len(rows) == 1 and rows[0]["voi"] >= 0
    assert rows[0]["segmentation"].endswith("threshold_0.5" if method == "mala" else "segmentation")


def test_default_thresholds_come_from_the_data(tmp_path, data, capsys):
    from affseg.graph.mala.fragments import extract_fragments
    from affseg.pipeline import default_thresholds

    out = tmp_path / "out.zarr" / "seg"
    command = ["segment", str(data / "affs"), str(out), "--min-seed-distance", "4"]
    assert main(command) == 0
    printed = capsys.readouterr().out
    affs, _ = read_volume(data / "affs")
    fragments, _ = read_volume(out / "fragments")
    np.testing.assert_array_equal(fragments, extract_fragments(affs, json.loads(OFFSETS), min_seed_distance=4))
    expected = default_thresholds(affs, fragments, json.loads(OFFSETS))
    assert "thresholds from the data" in printed and " ".join(map(repr, expected)) in printed
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("threshold_")) == \
        sorted(f"threshold_{t!r}" for t in expected)
    for t in expected:
        with open_volume(out / f"threshold_{t!r}") as vol:
            assert vol.data.attrs["threshold"] == t
    assert main(command) == 0
    assert "complete already" in capsys.readouterr().out
    # interrupted after some of them: the rerun keeps the thresholds and finishes
    _simulate_interruption(out, f"threshold_{expected[-1]!r}")
    assert main(command) == 0
    assert "resuming" in capsys.readouterr().out
    assert (out / f"threshold_{expected[-1]!r}").is_dir()
    # explicit thresholds are another run, used exactly as given
    assert main([*command, "--thresholds", "0.25", "0.5", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("threshold_")) == \
        ["threshold_0.25", "threshold_0.5"]


@pytest.mark.parametrize("method", ["mws", "gasp"])
def test_signed_methods_warn_without_long_range_offsets(tmp_path, data, method, capsys):
    nearest = "[[-1,0,0],[0,-1,0],[0,0,-1]]"
    affs, _ = read_volume(data / "affs")
    from affseg.io import write_volume

    write_volume(tmp_path / "nn.zarr" / "affs", affs[:3], attrs={"offsets": json.loads(nearest)})
    assert main(["segment", str(tmp_path / "nn.zarr" / "affs"), str(tmp_path / "o.zarr" / "seg"), "--method",
                 method]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: method '{method}' needs long-range offsets for good results")
    assert main(["segment", str(data / "affs"), str(tmp_path / "o.zarr" / "lr"), "--method", method]) == 0
    assert "warning" not in capsys.readouterr().err  # with long-range offsets: no warning


def test_evaluate_says_by_which_criterion_it_chose(tmp_path, data, capsys):
    out = tmp_path / "out.zarr" / "seg"
    assert main(["segment", str(data / "affs"), str(out), "--method", "cc", "--thresholds", "0.30001", "0.5",
                 "0.7", "0.9"]) == 0
    report = tmp_path / "s.json"
    for criterion, key, name in (("voi", "voi", "VOI"), ("cremi", "cremi_score", "CREMI score"),
                                 ("arand", "arand", "ARAND")):
        capsys.readouterr()
        extra = [] if criterion == "voi" else ["--best-by", criterion]  # VOI is the default
        assert main(["evaluate", str(out), str(data / "labels"), "--json", str(report), "--overwrite", *extra]) == 0
        text = capsys.readouterr().out
        rows = json.loads(report.read_text())
        best = min(rows, key=lambda r: r[key])
        assert f"best by {name}: threshold {best['threshold']!r} (" in text
    assert "    0.30001 " in text  # the table writes thresholds as typed
    with pytest.raises(SystemExit):  # argparse: "invalid choice: 'f1' (choose from 'voi', 'cremi', 'arand')"
        main(["evaluate", str(out), str(data / "labels"), "--best-by", "f1"])


def test_a_run_stopped_before_its_final_record_is_complete_on_rerun(tmp_path, data, capsys):
    out = tmp_path / "out.zarr" / "seg"
    command = ["segment", str(data / "affs"), str(out), "--method", "cc", "--thresholds", "0.4", "0.6"]
    assert main(command) == 0
    import zarr

    group = zarr.open_group(str(out), mode="a")
    record = json.loads(group.attrs["affseg_segment"])
    assert record["written"] == record["datasets"] == ["threshold_0.4", "threshold_0.6"]
    group.attrs["affseg_segment"] = json.dumps({**record, "complete": False})  # all written, not yet marked
    kept = {n: (out / n / "zarr.json").stat().st_mtime_ns for n in record["datasets"]}
    capsys.readouterr()
    assert main(command) == 0
    assert "complete already" in capsys.readouterr().out
    assert json.loads(zarr.open_group(str(out), mode="r").attrs["affseg_segment"])["complete"] is True
    assert kept == {n: (out / n / "zarr.json").stat().st_mtime_ns for n in kept}
