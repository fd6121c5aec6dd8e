"""Blockwise segmentation against one pass, in one run: overhead, scaling with workers, memory.

    python benchmarks/bench_blockwise.py                                  # synthetic 64 x 512 x 512
    python benchmarks/bench_blockwise.py --shape 32 256 256 --repeats 1   # a quick look
    python benchmarks/bench_blockwise.py --data my.zarr/affs              # someone else's volume
    python benchmarks/bench_blockwise.py --spawned                        # also workers spawned as Dask's default

Each run is a fresh ``affseg segment`` process on a zarr affinity volume (MALA: fragments +
agglomeration, thresholds 0.3 0.5 0.7): the one-pass command, then ``--blockwise`` with the
blocks run in the command's own process (``--workers 0``, no Dask cluster) and with 1 and with 2
worker processes. The repeats interleave the four; the table gives the median time, the
median of the paired ratios, the peak resident memory of the largest process of the run (the
client or a worker: ``ru_maxrss`` of the children, and the workers' own figure, since workers
forked from affseg's worker server are not the command's children) and that of the largest Dask
worker alone (as the command prints it at the end), which is bounded by the block size, not the
volume (run two shapes with the same blocks to see it).

    python benchmarks/bench_blockwise.py --mws-voi                        # Mutex Watershed blockwise vs one pass
    python benchmarks/bench_blockwise.py --voi --shape 64 256 256         # MALA and cc blockwise vs one pass

    python benchmarks/bench_blockwise.py --stages --shape 64 512 512      # where the time goes, per stage
    python benchmarks/bench_blockwise.py --parallel --repeats 5           # what 2 processes get from this machine

``--stages`` runs everything in this process (numba on one thread) and times each stage: one
pass (read, fragments, agglomerate, the segmentations, writing them) and ``mala_to_zarr`` with the
tasks run serially here (``workers=0``) and on a LocalCluster of 1 and of 2 workers (each
``Engine.map`` timed by its stage name; "client" is the rest: the store, the merged graph's
agglomeration, staging and publishing; "cluster" the LocalCluster's start, waited for before the
stages, and its close). The workers are spawned, Dask's default (``Engine``'s from Python); the
command line forks them from affseg's worker server (compare with ``--spawned``). Medians over
the repeats, interleaved.

``--parallel`` measures what two processes computing at once get from this machine, the bound on
the scaling from one worker to two: the seconds of ``extract_fragments`` of one block in one
process alone, and in each of two processes started together (each a fresh process, numba on one
thread; repeats interleaved), and the throughput of the two against one.

``--voi`` also runs MALA's hierarchical mode (``mode="hierarchical"``, lsd's) on the fragments of
each exact blockwise run and scores it against the exact mode.

``--mws-voi`` measures how far the Mutex Watershed blockwise (per block with context, stitched
where neighbouring runs agree; docs/blockwise.md) is from one pass of ``affseg.mutex_watershed``:
VOI (bits) of each against the ground truth and of blockwise against one pass, for a few block
shapes and contexts, on a synthetic volume and on ``../shared/data/neuroproof_train.h5`` labels
turned into noisy affinities (skipped where absent). The blockwise result is computed in this
process (``mutex_watershed_blockwise``: the same bits as the zarr stages with any workers).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THRESHOLDS = ["0.3", "0.5", "0.7"]


def make_data(folder: Path, shape, block_shape, seed: int) -> str:
    import numpy as np

    from affseg.io import write_volume
    from affseg.synthetic import make_volume

    vol = make_volume(tuple(shape), seed=seed)
    address = folder / "data.zarr" / "affs"
    write_volume(address, (vol.affs * 255).round().astype(np.uint8), axes=["c^", "z", "y", "x"],
                 chunks=(3, *block_shape))
    return str(address)


_PEAK = ("import resource, subprocess, sys; out = subprocess.run(sys.argv[1:], check=True, stdout=subprocess.PIPE, "
         "stderr=subprocess.DEVNULL, text=True).stdout; "
         "print(*[line for line in out.splitlines() if line.startswith('peak memory of the Dask workers')]); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def run(command: list[str], env: dict | None = None) -> tuple[float, float, float | None]:
    """Wall seconds, the peak RSS (MB) of the largest process the command started (measured by a
    fresh wrapper process, so that each run has its own peak) and the largest Dask worker's peak
    (MiB, as the command prints it; None without workers)."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _PEAK, *command], check=True, capture_output=True, text=True,
                         env=None if env is None else {**os.environ, **env})
    seconds = time.perf_counter() - started
    workers = re.search(r"peak memory of the Dask workers: (\d+) MiB", out.stdout)
    worker = float(workers.group(1)) if workers else None
    children = int(out.stdout.split()[-1]) / 1024
    return seconds, max(children, worker or 0.0), worker  # (both MiB)


MWS_OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -8, 0], [0, 0, -8]]  # the demo's
MWS_BIASES = {"bias": 0.3, "long_range_bias": 0.7}
MWS_LAYOUTS = [((32, 128, 128), (4, 16, 16)), ((32, 128, 128), (8, 32, 32)), ((32, 64, 64), (8, 32, 32))]
MWS_OVERLAPS = [0.5, 0.75, 0.9]


def mws_voi(shape) -> None:
    """Print the VOI table of the Mutex Watershed blockwise against one pass (each layout's block
    runs computed once, then stitched with each overlap fraction, as mutex_watershed_blockwise)."""
    import numpy as np

    from affseg import evaluate, mutex_watershed
    from affseg.blockwise.components import merge_face_pairs
    from affseg.blockwise.layout import BlockLayout
    from affseg.blockwise.mutex import block_mutex_watershed, neighbours, stitch_pairs
    from affseg.graph.core.relabel import relabel
    from affseg.synthetic import make_volume, noisy_affinities

    volumes = []
    vol = make_volume(tuple(shape), seed=0, offsets=MWS_OFFSETS)
    volumes.append((f"synthetic {tuple(shape)}", vol.labels, vol.affs))
    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "neuroproof_train.h5"
    if data.is_file():
        import h5py

        with h5py.File(data, "r") as f:
            labels = f["labels"][:]
        volumes.append((f"neuroproof {labels.shape}", labels, noisy_affinities(labels, MWS_OFFSETS, seed=0)))
    else:
        print(f"({data} is absent: neuroproof skipped)")
    offsets = np.array(MWS_OFFSETS)
    print(f"offsets {MWS_OFFSETS}, {MWS_BIASES}; VOI split / merge in bits; s: seconds of the block runs (one "
          "process)")
    print(f"{'volume':<28} {'run':<44} {'s':>6} {'vs gt split':>11} {'merge':>6} {'vs one split':>12} {'merge':>6}")
    for name, labels, affs in volumes:
        started = time.perf_counter()
        one = mutex_watershed(affs, offsets, **MWS_BIASES)
        seconds = time.perf_counter() - started
        gt = evaluate(one, labels)
        print(f"{name:<28} {'one pass':<44} {seconds:>6.1f} {gt['voi_split']:>11.3f} {gt['voi_merge']:>6.3f}",
              flush=True)
        for block_shape, context in MWS_LAYOUTS:
            block_shape = tuple(min(b, s) for b, s in zip(block_shape, labels.shape))
            layout = BlockLayout(labels.shape, block_shape, context=context)
            started = time.perf_counter()
            runs = {b.id: block_mutex_watershed(affs, offsets, layout, b, **MWS_BIASES) for b in layout}
            seconds = time.perf_counter() - started
            for overlap in MWS_OVERLAPS:
                pairs = [stitch_pairs(runs[b.id], b, runs[o], layout.block(o), overlap=overlap)
                         for b in layout for o in neighbours(layout, b)]
                old, new = merge_face_pairs(pairs)
                blocks = np.zeros(labels.shape, np.uint64)
                for b in layout:
                    blocks[b.write] = relabel(runs[b.id][b.write_in_read], old, new)
                gt, vs = evaluate(blocks, labels), evaluate(blocks, one)
                run_name = f"blocks {block_shape} context {context} overlap {overlap}"
                print(f"{'':<28} {run_name:<44} {seconds:>6.1f} {gt['voi_split']:>11.3f} {gt['voi_merge']:>6.3f} "
                      f"{vs['voi_split']:>12.3f} {vs['voi_merge']:>6.3f}", flush=True)


MALA_LAYOUTS = [((32, 128, 128), (8, 32, 32)), ((32, 64, 64), (8, 16, 16)), ((64, 128, 128), (4, 16, 16))]


def mala_cc_voi(shape) -> None:
    """Print the VOI table of MALA and threshold + connected components blockwise (the zarr
    stages, one process) against one pass, on the synthetic volume and neuroproof."""

    from affseg import agglomerate, connected_components, evaluate, extract_fragments
    from affseg.blockwise.engine import Engine
    from affseg.blockwise.pipeline import connected_components_to_zarr, mala_to_zarr
    from affseg.io import read_volume, write_volume
    from affseg.synthetic import make_volume, noisy_affinities

    volumes = []
    vol = make_volume(tuple(shape), seed=0)
    volumes.append((f"synthetic {tuple(shape)}", vol.labels, vol.affs))
    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "neuroproof_train.h5"
    if data.is_file():
        import h5py

        with h5py.File(data, "r") as f:
            labels = f["labels"][:]
        volumes.append((f"neuroproof {labels.shape}", labels, noisy_affinities(labels, seed=0)))
    else:
        print(f"({data} is absent: neuroproof skipped)")
    thresholds = [float(t) for t in THRESHOLDS]
    print(f"MALA hist_quant_75 at {thresholds} (default fragments), cc at 0.5; VOI split / merge in bits")
    print(f"{'volume':<28} {'run':<40} {'t':>4} {'vs gt split':>11} {'merge':>6} {'vs one split':>12} {'merge':>6}")

    def row(name, run, t, seg, labels, one):
        gt = evaluate(seg, labels)
        against = None if one is None else evaluate(seg, one)
        vs = "" if against is None else f"{against['voi_split']:>12.3f} {against['voi_merge']:>6.3f}"
        print(f"{name:<28} {run:<40} {t:>4} {gt['voi_split']:>11.3f} {gt['voi_merge']:>6.3f} {vs}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        for name, labels, affs in volumes:
            address = str(Path(tmp) / f"{len(name)}.zarr" / "affs")
            write_volume(address, affs, axes=["c^", "z", "y", "x"], chunks=(3, 16, 64, 64), overwrite=True)
            fragments = extract_fragments(affs)
            result = agglomerate(affs, fragments, thresholds=thresholds)
            one = {t: result.segmentation(i) for i, t in enumerate(thresholds)}
            for t in thresholds:
                row(name, "MALA one pass", t, one[t], labels, None)
            whole = connected_components(affs, threshold=0.5)
            row(name, "cc one pass", 0.5, whole, labels, None)
            for block_shape, context in MALA_LAYOUTS:
                block_shape = tuple(min(b, s) for b, s in zip(block_shape, labels.shape))
                out = str(Path(tmp) / f"out{len(name)}_{'x'.join(map(str, block_shape))}_{context[0]}.zarr" / "seg")
                exact = {}
                for mode in ("exact", "hierarchical"):  # the same fragments (the same blocks and context)
                    with Engine(workers=0) as engine:
                        mala_to_zarr(address, f"{out}_{mode}", thresholds=thresholds, block_shape=block_shape,
                                     context=context, engine=engine, mode=mode)
                    for t in thresholds:
                        seg, _ = read_volume(f"{out}_{mode}/threshold_{t!r}")
                        if mode == "exact":
                            exact[t] = seg
                            row("", f"MALA blocks {block_shape} context {context}", t, seg, labels, one[t])
                        else:  # lsd's mode against the exact one on the same fragments
                            row("", "  hierarchical (vs exact blockwise)", t, seg, labels, exact[t])
            block_shape = tuple(min(b, s) for b, s in zip(MALA_LAYOUTS[0][0], labels.shape))
            with Engine(workers=0) as engine:
                connected_components_to_zarr(address, str(Path(tmp) / f"cc{len(name)}.zarr" / "cc"), threshold=0.5,
                                             block_shape=block_shape, engine=engine)
            seg, _ = read_volume(Path(tmp) / f"cc{len(name)}.zarr" / "cc")
            row("", f"cc blocks {block_shape}", 0.5, seg, labels, whole)


def stage_times(affs: str, block_shape, repeats: int) -> None:
    """Print the median seconds of each stage of one pass and of MALA blockwise (in-process)."""
    from affseg import agglomerate, extract_fragments
    from affseg.blockwise.engine import Engine
    from affseg.blockwise.pipeline import mala_to_zarr
    from affseg.io import read_volume, write_volume

    thresholds = [float(t) for t in THRESHOLDS]

    class TimedEngine(Engine):
        """An Engine that adds the wall time of each map to ``times[desc]``."""

        def __init__(self, times, **kwargs):
            super().__init__(**kwargs)
            self.times = times

        def map(self, function, items, *args, desc="blocks", **kwargs):
            started = time.perf_counter()
            super().map(function, items, *args, desc=desc, **kwargs)
            self.times[desc] = self.times.get(desc, 0.0) + time.perf_counter() - started

    def one_pass(out: Path) -> dict:
        times, started = {}, time.perf_counter()
        data, _ = read_volume(affs)
        times["read"], started = time.perf_counter() - started, time.perf_counter()
        fragments = extract_fragments(data)
        times["fragments"], started = time.perf_counter() - started, time.perf_counter()
        result = agglomerate(data, fragments, thresholds=thresholds)
        times["agglomerate"], started = time.perf_counter() - started, time.perf_counter()
        segmentations = [result.segmentation(i) for i in range(len(thresholds))]
        times["segmentations"], started = time.perf_counter() - started, time.perf_counter()
        for t, seg in zip(thresholds, segmentations):
            write_volume(out / f"threshold_{t!r}", seg, chunks=tuple(block_shape))
        times["write"] = time.perf_counter() - started
        return times

    def blockwise(out: Path, workers: int) -> dict:
        times, started = {}, time.perf_counter()
        engine = TimedEngine(times, workers=workers)
        with engine:
            _ = engine.client  # (the cluster starts in a thread: its start is counted as "cluster")
            entered = time.perf_counter()
            mala_to_zarr(affs, str(out), thresholds=thresholds, block_shape=block_shape, context=10, engine=engine)
            left = time.perf_counter()
        total = time.perf_counter() - started
        times["client"] = left - entered - sum(times.values())
        times["cluster"] = total - (left - entered)
        return times

    runs = {"one pass": one_pass, "blockwise, in-process": lambda out: blockwise(out, 0),
            "blockwise, 1 worker": lambda out: blockwise(out, 1),
            "blockwise, 2 workers": lambda out: blockwise(out, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in runs.items():  # numba's compiling, and the cache of every worker
            fn(Path(tmp) / "warm" / name.replace(" ", "_").replace(",", "") / "seg.zarr")
        results = {name: [] for name in runs}
        for r in range(repeats):
            for name, fn in runs.items():
                results[name].append(fn(Path(tmp) / str(r) / name.replace(" ", "_").replace(",", "") / "seg.zarr"))
    print(f"stages of {affs}, blocks {list(block_shape)}, context 10, thresholds {thresholds}; "
          f"median seconds of {repeats} interleaved repeats")
    for name, runs_times in results.items():
        stages = list(runs_times[0])
        medians = {s: statistics.median(t[s] for t in runs_times) for s in stages}
        total = statistics.median(sum(t.values()) for t in runs_times)
        print(f"{name:<22} total {total:6.2f}: " + ", ".join(f"{s} {v:.2f}" for s, v in medians.items()))


_ONE_BLOCK = """
import sys, time
import numpy as np
from affseg.graph.mala.fragments import extract_fragments
from affseg.io import open_volume
with open_volume(sys.argv[1]) as vol:  # (one block read, not the volume)
    affs = np.asarray(vol.data[(slice(None),) + tuple(slice(0, int(b)) for b in sys.argv[2:])])
extract_fragments(affs[:, :8, :16, :16])  # (numba's kernels loaded)
started = time.perf_counter()
extract_fragments(affs)
print(time.perf_counter() - started)
"""


def parallel_throughput(affs: str, block_shape, repeats: int) -> None:
    """Print the seconds of extract_fragments of one block alone and in two processes at once."""
    command = [sys.executable, "-c", _ONE_BLOCK, affs, *map(str, block_shape)]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, env=env, capture_output=True)  # warm the numba cache
    alone, together = [], []
    for _ in range(repeats):
        alone.append(float(subprocess.run(command, check=True, env=env, capture_output=True, text=True).stdout))
        pair = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        together.append([float(p.communicate()[0]) for p in pair])
    print(f"extract_fragments of one block {list(block_shape)} of {affs}, {repeats} interleaved repeats")
    print(f"alone: median {statistics.median(alone):.2f} s; two at once: median "
          f"{statistics.median(min(t) for t in together):.2f} and {statistics.median(max(t) for t in together):.2f} s")
    gains = [2 * a / max(t) for a, t in zip(alone, together)]
    print(f"two processes do {statistics.median(gains):.2f}x the work of one in the same time (median of paired "
          "runs: 2 x alone / slower of the two)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs=3, default=[64, 512, 512])
    p.add_argument("--block-shape", type=int, nargs=3, default=[64, 256, 256])
    p.add_argument("--data", help="an affinity dataset to use instead of the synthetic volume")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mws-voi", action="store_true", help="the Mutex Watershed blockwise vs one pass (VOI)")
    p.add_argument("--voi", action="store_true", help="MALA and connected components blockwise vs one pass (VOI)")
    p.add_argument("--stages", action="store_true", help="time each stage of one pass and of blockwise (in-process)")
    p.add_argument("--spawned", action="store_true",
                   help="also run 1 and 2 workers spawned as Dask does by default (each a fresh interpreter), "
                        "not forked from affseg's worker server")
    p.add_argument("--parallel", action="store_true",
                   help="extract_fragments of one block alone and in two processes at once (the scaling's bound)")
    args = p.parse_args()
    if args.mws_voi:
        mws_voi(args.shape)
        return
    if args.voi:
        mala_cc_voi(args.shape)
        return
    if args.parallel:
        with tempfile.TemporaryDirectory() as tmp:
            parallel_throughput(args.data or make_data(Path(tmp), args.shape, args.block_shape, args.seed),
                                args.block_shape, args.repeats)
        return
    if args.stages:
        os.environ.update({"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})  # (before numba starts)
        with tempfile.TemporaryDirectory() as tmp:
            stage_times(args.data or make_data(Path(tmp), args.shape, args.block_shape, args.seed), args.block_shape,
                        args.repeats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        affs = args.data or make_data(folder, args.shape, args.block_shape, args.seed)
        block = ",".join(map(str, args.block_shape))
        base = [sys.executable, "-m", "affseg.cli", "segment", affs]
        commands = {
            "one pass": base + ["{out}", "--thresholds", *THRESHOLDS],
            "blockwise, in-process": base + ["{out}", "--thresholds", *THRESHOLDS, "--blockwise", "--block-shape",
                                             block, "--workers", "0"],
            "blockwise, 1 worker": base + ["{out}", "--thresholds", *THRESHOLDS, "--blockwise", "--block-shape",
                                           block, "--workers", "1"],
            "blockwise, 2 workers": base + ["{out}", "--thresholds", *THRESHOLDS, "--blockwise", "--block-shape",
                                            block, "--workers", "2"],
        }
        envs = {}
        if args.spawned:  # (a DASK_ variable for the start method: Dask's spawn, see Engine)
            for workers in (1, 2):
                name = f"{workers} worker{'s' * (workers > 1)}, spawned"
                commands[name] = commands[f"blockwise, {workers} worker{'s' * (workers > 1)}"]
                envs[name] = {"DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD": "spawn"}
        times = {name: [] for name in commands}
        peaks = {name: 0.0 for name in commands}
        worker_peaks = {name: None for name in commands}
        env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        os.environ.update(env)
        for name, command in commands.items():  # warm the numba cache once
            subprocess.run([c.format(out=str(folder / "warm.zarr" / name.replace(" ", "_").replace(",", "")))
                            for c in command], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, **envs.get(name, {})})
        for r in range(args.repeats):
            for name, command in commands.items():
                out = folder / f"out{r}.zarr" / name.replace(" ", "_").replace(",", "")
                seconds, peak, worker_peak = run([c.format(out=str(out)) for c in command], envs.get(name))
                times[name].append(seconds)
                peaks[name] = max(peaks[name], peak)
                if worker_peak is not None:
                    worker_peaks[name] = max(worker_peaks[name] or 0.0, worker_peak)
        one = times["one pass"]
        print(f"volume {affs} (shape {args.shape if not args.data else 'as stored'}), blocks {args.block_shape}, "
              f"{args.repeats} interleaved repeats")
        print(f"{'run':<22} {'median s':>9} {'vs one pass':>12} {'peak MB':>8} {'worker MiB':>11}")
        for name in commands:
            ratio = statistics.median(t / o for t, o in zip(times[name], one))
            worker = "-" if worker_peaks[name] is None else f"{worker_peaks[name]:.0f}"
            print(f"{name:<22} {statistics.median(times[name]):>9.2f} {ratio:>11.2f}x {peaks[name]:>8.0f} "
                  f"{worker:>11}")
        for one_worker, two in (("blockwise, 1 worker", "blockwise, 2 workers"),
                                ("1 worker, spawned", "2 workers, spawned")):
            if two in times:
                scaling = statistics.median(a / b for a, b in zip(times[one_worker], times[two]))
                print(f"{two}: {scaling:.2f}x faster than {one_worker} (median of paired runs)")


if __name__ == "__main__":
    main()
