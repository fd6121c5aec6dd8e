"""``affseg demo``: synthesize, train, predict, segment with every method, evaluate, plot.

The command-line layer of the demo (it prints and shows progress); everything it runs is the
public API.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import InputError, OutputExists

# the demo's neighbourhood: nearest neighbours for MALA, long-range ones for MWS and GASP
DEMO_OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -8, 0], [0, 0, -8]]
DEMO_BIASES = {"bias": 0.3, "long_range_bias": 0.7}
DEMO_STAGES = 6
DEMO_ITERATIONS = 250
# what --view shows: the test volume, its ground truth, the predicted affinities, the best MALA segmentation
DEMO_VIEW = ("raw", "labels", "affs", "segmentation")


def _shape(shape) -> str:
    return " x ".join(str(int(s)) for s in shape)


# what the demo writes into its output folder: --overwrite replaces a folder holding only these
DEMO_ENTRIES = {"demo.zarr", "run", "run.yaml", "loss.png", "split_merge.png", "scores.json"}


def _check_demo_output(out: Path, overwrite: bool) -> None:
    """The demo may replace only an earlier demo output, and never the current folder or one above it."""
    if not out.exists():
        return
    if not overwrite:
        raise OutputExists(f"{out} exists; rerun with --overwrite to replace it")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_ENTRIES) if out.is_dir() else [out.name]
    cwd = Path.cwd().resolve()
    if foreign or not (out / "scores.json").is_file() or out.resolve() in (cwd, *cwd.parents):
        raise OutputExists(f"{out} is not an affseg demo output (it holds {foreign or 'no scores.json'}); "
                           "--overwrite replaces only what the demo wrote: choose another --output")


def _staging_dir(out: Path, overwrite: bool) -> Path:
    from .io import check_output_writable, remove_stale_temporaries
    from .io.atomic import temporary_name

    _check_demo_output(out, overwrite)
    check_output_writable(out.parent)
    remove_stale_temporaries(out.parent, out.name)
    staging = out.with_name(temporary_name(out.name))
    staging.mkdir(parents=True)
    return staging


def _publish(staging: Path, out: Path) -> None:
    from .io.atomic import temporary_name

    trash = None
    if out.exists():
        trash = out.with_name(temporary_name(out.name, "old"))
        os.rename(out, trash)
    os.rename(staging, out)
    if trash is not None:
        shutil.rmtree(trash)


def demo_config(train_data: Path, iterations: int, seed: int) -> dict:
    """The demo's small U-Net on the synthetic training volume.

    One isotropic (2, 2, 2) level: the synthetic volume is isotropic and its membranes are a
    local cue, so a shallow net with large output crops learns them within the demo's few hundred
    CPU iterations (two (1, 3, 3) levels spent most of the time on context and did not). Adam at
    3e-3 reaches in 250 iterations the loss that 1e-3 reached in 400 (0.09; measured 2026-11-30,
    seed 0), with better MALA scores on the held-out volume; 6 feature maps instead of 12 learned
    more slowly per iteration than they saved in time.
    """
    return {
        "data": {"train": [{"raw": str(train_data / "raw"), "labels": str(train_data / "labels")}],
                 "min_labelled": 0.5},
        "model": {"num_fmaps": 12, "fmap_inc_factor": 3, "downsample_factors": [[2, 2, 2]],
                  "output_shape": [16, 40, 40]},
        "targets": {"offsets": DEMO_OFFSETS},
        "augment": {"elastic_sigma": 1.0},
        "train": {"iterations": iterations, "learning_rate": 3e-3, "checkpoint_every": max(1, iterations // 4),
                  "loss": "mse", "seed": seed, "device": "cpu"},
    }


def plot_loss(log: Path, path: Path) -> None:
    import csv

    from .evaluation.curves import new_figure
    from .io.atomic import atomic_path

    rows = list(csv.DictReader(log.open()))
    it = np.array([int(r["iteration"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    fig = new_figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.plot(it, loss, lw=0.5, alpha=0.4, label="loss")
    k = max(1, len(loss) // 20)
    ax.plot(it[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), label=f"mean of {k}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("weighted MSE (affinities)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def _say(step: int, started: float, text: str) -> None:
    """One status line per stage (stderr, like the progress bars): what the demo is doing now,
    and the seconds since it started (the first run on a machine also compiles the kernels)."""
    print(f"[{step}/{DEMO_STAGES}] {time.perf_counter() - started:5.0f} s  {text}", file=sys.stderr, flush=True)


def write_demo_config(staging: Path, iterations: int, seed: int) -> Path:
    """``run.yaml``: the demo's training config, with paths relative to it, reusable as it is
    (``affseg train affseg-demo/run.yaml`` continues the demo's run in ``affseg-demo/run``)."""
    import yaml

    from .io.atomic import atomic_path

    cfg = demo_config(Path("demo.zarr") / "train", iterations, seed)
    path = staging / "run.yaml"
    with atomic_path(path) as tmp:
        tmp.write_text("# the affseg demo's training config (docs/training.md explains every key); raise\n"
                       "# train.iterations and rerun 'affseg train run.yaml' to train the demo's network longer\n"
                       + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None))
    return path


def _check_demo_args(args) -> None:
    """Refuse bad numbers before anything is synthesized (InputError naming the option)."""
    from ._checks import as_int

    as_int(args.iterations, name="--iterations", minimum=1)
    as_int(args.seed, name="--seed", minimum=0)
    as_int(args.min_seed_distance, name="--min-seed-distance", minimum=1)
    if getattr(args, "view", False):
        as_int(args.port, name="--port", minimum=0, maximum=65535)
    elif getattr(args, "port", 0) != 0 or getattr(args, "bind", "127.0.0.1") != "127.0.0.1":
        raise InputError("--bind and --port are for --view")
    for name in ("shape", "train_shape"):
        shape = getattr(args, name)
        if min(shape) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be positive, got {' '.join(map(str, shape))}")


def segment_demo(affs: np.ndarray, *, min_seed_distance: int, merge_function: str,
                 between: Callable[[], object] | None = None) -> tuple:
    """The demo's segmentations of its affinities (``DEMO_OFFSETS``): MALA (fragments of the
    nearest-neighbour channels, the data's thresholds, agglomeration), then (after ``between()``)
    the Mutex Watershed and GASP. Returns (fragments, thresholds, agglomeration, mws, gasp)."""
    fragments, thresholds, agg = _mala_demo(affs, min_seed_distance=min_seed_distance, merge_function=merge_function)
    if between is not None:
        between()
    mws, gasp_seg = _signed_demo(affs, fragments)
    return fragments, thresholds, agg, mws, gasp_seg


def _mala_demo(affs: np.ndarray, *, min_seed_distance: int, merge_function: str) -> tuple:
    from .graph.mala.agglomeration import agglomerate
    from .graph.mala.fragments import extract_fragments
    from .pipeline import default_thresholds

    offsets = np.array(DEMO_OFFSETS)
    nearest = affs[:3]
    fragments = extract_fragments(nearest, offsets[:3], min_seed_distance=min_seed_distance)
    # the sweep spans the scores where the segmentation changes (none spent on a fully merged one)
    thresholds = default_thresholds(nearest, fragments, offsets[:3], merge_function=merge_function)
    agg = agglomerate(nearest, fragments, offsets[:3], thresholds=thresholds, merge_function=merge_function)
    return fragments, thresholds, agg


def _signed_demo(affs: np.ndarray, fragments: np.ndarray) -> tuple:
    from .graph.signed.gasp import gasp
    from .graph.signed.mutex import mutex_watershed

    offsets = np.array(DEMO_OFFSETS)
    mws = mutex_watershed(affs, offsets, **DEMO_BIASES)
    return mws, gasp(affs, offsets, linkage="mean", fragments=fragments, **DEMO_BIASES)


WARM_PARTS = ("mala", "signed")
"""The two halves of the demo's kernels that :func:`warm_kernels` compiles, each in a process."""


def warm_kernels(min_seed_distance: int, merge_function: str, parent: int | None = None, *,
                 part: str | None = None) -> None:
    """Run the demo's segmentations and scores on a small volume, so that numba compiles their
    kernels into its cache (the first run's minute of compiling), in processes of their own at
    low priority while the demo trains (:func:`cmd_demo`); each ends as soon as the process
    ``parent`` is gone (a demo killed by SIGTERM leaves no warmer behind). ``part`` (one of
    ``WARM_PARTS``; default both) splits the work in two: MALA and the scores, and the signed
    graphs (on fragments made without numba), so that two cores finish it once training ends."""
    from .evaluation import evaluate
    from .synthetic import make_volume

    if part is not None and part not in WARM_PARTS:
        raise InputError(f"part must be one of {', '.join(WARM_PARTS)}, got {part!r}")
    if parent is not None:
        _end_with(parent)
    with contextlib.suppress(OSError, AttributeError):  # (no os.nice on Windows)
        os.nice(10)  # the training comes first: this uses what it leaves idle
    vol = make_volume((8, 48, 48), seed=0, offsets=DEMO_OFFSETS)
    affs = np.ascontiguousarray(vol.affs, dtype=np.float32)
    if part in (None, "mala"):
        _, _, agg = _mala_demo(affs, min_seed_distance=min_seed_distance, merge_function=merge_function)
        evaluate(agg.segmentation(0), vol.labels)
    if part in (None, "signed"):
        from scipy import ndimage

        # fragments of the same dtype and layout as extract_fragments', without its kernels
        fragments = ndimage.label(affs[:3].mean(axis=0) > 0.5)[0].astype(np.uint64)
        _signed_demo(affs, fragments)


def _end_with(parent: int) -> None:
    """Exit this process once ``parent`` is no longer its parent (checked every second)."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _start_warming(args, part: str):
    """A process of :func:`warm_kernels` (its output discarded; its failure changes nothing)."""
    import subprocess

    code = (f"from affseg.demo import warm_kernels; "
            f"warm_kernels({int(args.min_seed_distance)}, {args.merge_function!r}, {os.getpid()}, part={part!r})")
    try:
        # -P: not the current folder first on sys.path (a numba.py there would shadow numba)
        return subprocess.Popen([sys.executable, "-P", "-c", code], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except OSError:
        return None


def _done_warming(warmer, timeout: float) -> None:
    """Wait for the warming process (it has compiled what the next stages need), or stop it."""
    import subprocess

    if warmer is None:
        return
    try:
        warmer.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    if warmer.poll() is None:
        warmer.kill()
        warmer.wait()


def cmd_demo(args) -> int:
    from .cli import print_table, use_cpu_threads
    from .evaluation import best_threshold, evaluate, plot_split_merge
    from .io import read_volume, write_json, write_volume
    from .learn.config import load_config
    from .learn.predict import predict
    from .learn.train import train
    from .synthetic import make_volume

    _check_demo_args(args)
    if getattr(args, "view", False):
        from .view.command import neuroglancer_missing

        if neuroglancer_missing("affseg demo --view"):  # before the demo's minutes of work
            return 2
    out = Path(args.output)
    staging = _staging_dir(out, args.overwrite)
    use_cpu_threads()
    started = time.perf_counter()
    warmers = {}
    try:
        _say(1, started, f"synthesizing a {_shape(args.train_shape)} training volume and a held-out {_shape(args.shape)} "
                "test volume (EM-like raw with a missing and a low-contrast section, labels)")
        data = staging / "demo.zarr"
        train_vol = make_volume(tuple(args.train_shape), seed=args.seed, defects=True)
        vol = make_volume(tuple(args.shape), seed=args.seed + 1, defects=True)
        meta = dict(voxel_size=vol.voxel_size)
        write_volume(data / "train" / "raw", train_vol.raw, **meta)
        write_volume(data / "train" / "labels", train_vol.labels, **meta)
        write_volume(data / "raw", vol.raw, **meta)
        write_volume(data / "labels", vol.labels, **meta)
        _say(2, started, f"training a small 3D U-Net for {args.iterations} iterations on the CPU ({len(DEMO_OFFSETS)} "
                "affinity channels: nearest neighbours and long range)")
        config = write_demo_config(staging, args.iterations, args.seed)
        # compiling the segmentation kernels beside the training, in two processes that both cores
        # finish once it ends
        for part in WARM_PARTS:  # (one by one: an interrupt between them still stops the first)
            warmers[part] = _start_warming(args, part)
        run = train(load_config(config), staging / "run", progress=True, config_path=config)
        _say(3, started, "predicting affinities on the held-out volume, tile by tile")
        predict(run.last_checkpoint, str(data / "raw"), data, progress=True)
        affs, _ = read_volume(data / "affs")
        _say(4, started, "MALA: watershed fragments, then agglomeration at each threshold")
        # idle cores finish its compiling in well under a minute; busy ones leave a nice-10 process
        # little, and then this process compiles the rest itself
        _done_warming(warmers["mala"], timeout=60)

        def stage_5():
            _say(5, started, "Mutex Watershed on voxels and GASP on the fragments (signed graphs, long-range offsets)")
            _done_warming(warmers["signed"], timeout=60)

        fragments, thresholds, agg, mws, gasp_seg = segment_demo(
            affs, min_seed_distance=args.min_seed_distance, merge_function=args.merge_function, between=stage_5)
        _say(6, started, "scoring against the ground truth, writing volumes, plots and scores")
        # the thresholds as given (agglomerate's are float32): 0.1, not 0.10000000149011612
        mala_rows = [{"threshold": float(t), **evaluate(agg.segmentation(i), vol.labels)}
                     for i, t in enumerate(thresholds)]
        signed_rows = {"mutex watershed (voxels)": evaluate(mws, vol.labels),
                       "GASP mean (fragments)": evaluate(gasp_seg, vol.labels)}
        best = best_threshold(mala_rows)
        best_index = [r["threshold"] for r in mala_rows].index(best["threshold"])
        write_volume(data / "fragments", fragments, **meta)
        write_volume(data / "segmentation", agg.segmentation(best_index), attrs={"threshold": best["threshold"]}, **meta)
        write_volume(data / "mws", mws, attrs=DEMO_BIASES, **meta)
        write_volume(data / "gasp", gasp_seg, attrs={"linkage": "mean", **DEMO_BIASES}, **meta)
        curves = {f"MALA ({args.merge_function})": mala_rows}
        curves.update({name: [row] for name, row in signed_rows.items()})
        plot_split_merge(curves, staging / "split_merge.png", title="demo: predicted affinities, held-out volume")
        plot_loss(run.log, staging / "loss.png")
        write_json(staging / "scores.json", {"mala": mala_rows,
                                             "mutex_watershed": signed_rows["mutex watershed (voxels)"],
                                             "gasp": signed_rows["GASP mean (fragments)"],
                                             "train": {"iterations": run.iterations,
                                                       "checkpoint": str(out / run.last_checkpoint.relative_to(staging))}})
    except BaseException:
        for warmer in warmers.values():
            _done_warming(warmer, timeout=0)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish(staging, out)
    print(f"trained a U-Net for {run.iterations} iterations on a synthetic {tuple(args.train_shape)} volume, "
          f"predicted {len(DEMO_OFFSETS)} affinity channels on a held-out {tuple(args.shape)} volume")
    print()
    print_table(mala_rows, title=f"MALA fragments + agglomeration ({args.merge_function}), {int(fragments.max())} fragments, {int(vol.labels.max())} objects")
    print()
    print(f"signed graphs, offsets {DEMO_OFFSETS}, bias {DEMO_BIASES['bias']} (long range "
          f"{DEMO_BIASES['long_range_bias']}):")
    for name, row in signed_rows.items():
        print(f"  {name:<26} VOI split {row['voi_split']:.3f}, VOI merge {row['voi_merge']:.3f}, "
              f"ARAND {row['arand']:.3f}, CREMI score {row['cremi_score']:.3f}")
    print()
    print(f"best MALA: threshold {best['threshold']:g}, VOI split {best['voi_split']:.3f}, VOI merge "
          f"{best['voi_merge']:.3f}, ARAND {best['arand']:.3f}, CREMI score {best['cremi_score']:.3f}")
    print(f"wrote {out}/demo.zarr (raw, labels, affs, fragments, segmentation, mws, gasp), {out}/run "
          f"(checkpoints, log.csv), {out}/run.yaml (the training config), {out}/loss.png, {out}/split_merge.png, "
          f"{out}/scores.json in {time.perf_counter() - started:.0f} s")
    print(f"next: 'affseg evaluate {out}/demo.zarr/mws {out}/demo.zarr/labels' scores a segmentation; "
          f"'affseg train {out}/run.yaml' trains further after raising train.iterations in it; "
          "docs/your-own-data.md walks through the same steps with your data")
    if getattr(args, "view", False):
        from .view.command import serve

        print()
        shown = [out / "demo.zarr" / name for name in DEMO_VIEW]
        return serve(args, shown)
    return 0
