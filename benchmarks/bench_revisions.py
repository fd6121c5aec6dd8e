"""Kernel speed of two source trees of affseg, old against new, on the same inputs.

    git worktree add /tmp/affseg_old 9704673
    python benchmarks/bench_revisions.py /tmp/affseg_old/src src --repeats 7
    python benchmarks/bench_revisions.py OLD/src NEW/src --workloads mws gasp_grid --repeats 5

For a change that should not cost speed (a refactoring of shared kernels, say). Every run is a
fresh process with ``PYTHONPATH`` at one tree's ``src``, pinned to one core, numba and BLAS on one
thread; it loads the input, runs the workload once on a small crop (numba's start, not timed),
then calls it ``--inner`` times on the full input and keeps the fastest call (wall time, and
separately the process's CPU time, user + system, which time slices given to other processes do
not inflate). The repeats interleave the two trees (old, new / new, old in turn) so that a slow
spell of the machine hits both; the result per workload is the median of the paired ratios
new / old. Inputs are made once by the tree this
script runs in and saved, so both trees read the same bits.

Workloads (one core): ``fragments`` extract_fragments on synthetic 64 x 256 x 256 (seed 0,
3 offsets); ``agglomerate`` hist_quant_75 at 0.1, 0.3, 0.5, 0.7, 0.9 on those fragments;
``components`` connected_components of the same affinities at 0.5; ``mws`` mutex_watershed and
``gasp`` (mean, on fragments) on synthetic 64 x 256 x 256 with the 6 offsets of
bench_signed_graphs.py; ``gasp_grid`` GASP mean on its 16 x 128 x 128 crop; ``malis`` /
``cmalis`` MALIS pair counts / constrained MALIS weights on 64 x 128 x 128 (1 megavoxel,
3 offsets); ``rw`` the random walker (cg, tol 1e-3) on a 32 x 64 x 64 image with 10 seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIGNED_OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-3, 0, 0], [0, -9, 0], [0, 0, -9]]
THRESHOLDS = [0.1, 0.3, 0.5, 0.7, 0.9]
GRID_CROP = (slice(None), slice(0, 16), slice(0, 128), slice(0, 128))
WORKLOADS = ("fragments", "agglomerate", "components", "mws", "gasp", "gasp_grid", "malis", "cmalis", "rw")
SMALL = (slice(None), slice(0, 8), slice(0, 32), slice(0, 32))


def make_inputs(data_dir: Path) -> None:
    from affseg.synthetic import make_volume

    vol = make_volume((64, 256, 256), seed=0)
    np.save(data_dir / "mala_affs.npy", np.ascontiguousarray(vol.affs, dtype=np.float32))
    vol = make_volume((64, 256, 256), seed=0, offsets=SIGNED_OFFSETS)
    np.save(data_dir / "signed_affs.npy", np.ascontiguousarray(vol.affs, dtype=np.float32))
    vol = make_volume((64, 128, 128), seed=0)
    np.save(data_dir / "malis_affs.npy", np.ascontiguousarray(vol.affs, dtype=np.float32))
    np.save(data_dir / "malis_labels.npy", vol.labels)
    vol = make_volume((32, 64, 64), seed=0)
    image = vol.raw.astype(np.float64) / 255
    rng = np.random.default_rng(0)
    seeds = np.zeros(image.shape, np.int64)
    ids, sizes = np.unique(vol.labels, return_counts=True)
    for k, obj in enumerate(rng.choice(ids[np.argsort(sizes)[::-1][:20]], 10, replace=False), start=1):
        where = np.argwhere(vol.labels == obj)
        z, y, x = where[rng.integers(len(where))]
        seeds[max(z - 1, 0):z + 2, max(y - 2, 0):y + 3, max(x - 2, 0):x + 3] = k
    np.save(data_dir / "rw_image.npy", image)
    np.save(data_dir / "rw_seeds.npy", seeds)


def prepare(workload: str, data_dir: Path, crop) -> tuple:
    """The workload's function and its arguments (work not timed: loading, fragments)."""
    import affseg

    def load(name):
        array = np.load(data_dir / f"{name}.npy")
        if crop is None:
            return array
        return np.ascontiguousarray(array[crop if array.ndim == 4 else crop[1:]])

    if workload in ("fragments", "agglomerate", "components"):
        affs = load("mala_affs")
        if workload == "fragments":
            return affseg.extract_fragments, (affs,), {}
        if workload == "components":
            return affseg.connected_components, (affs,), {"threshold": 0.5}
        fragments = affseg.extract_fragments(affs)
        return affseg.agglomerate, (affs, fragments), {"thresholds": THRESHOLDS, "merge_function": "hist_quant_75"}
    if workload in ("mws", "gasp", "gasp_grid"):
        affs = load("signed_affs")
        if workload == "mws":
            return affseg.mutex_watershed, (affs, SIGNED_OFFSETS), {"bias": 0.5}
        if workload == "gasp_grid":
            affs = affs if crop is not None else np.ascontiguousarray(affs[GRID_CROP])
            return affseg.gasp, (affs, SIGNED_OFFSETS), {"bias": 0.5, "linkage": "mean"}
        fragments = affseg.extract_fragments(affs, SIGNED_OFFSETS)
        return affseg.gasp, (affs, SIGNED_OFFSETS), {"bias": 0.5, "linkage": "mean", "fragments": fragments}
    if workload in ("malis", "cmalis"):
        from affseg.graph.malis import constrained_malis_weights, malis_pair_counts

        fn = malis_pair_counts if workload == "malis" else constrained_malis_weights
        return fn, (load("malis_affs"), load("malis_labels")), {}
    if workload == "rw":
        image, seeds = load("rw_image"), load("rw_seeds")
        if crop is not None:
            seeds = seeds.copy()
            seeds[0, 0, 0], seeds[-1, -1, -1] = 1, 2
        weights = affseg.image_weights(image, beta=130)
        return affseg.random_walker, (weights, seeds), {"solver": "cg", "tol": 1e-3}
    raise ValueError(workload)


def worker(workload: str, data_dir: Path, inner: int) -> dict:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    fn, args, kwargs = prepare(workload, data_dir, SMALL)
    fn(*args, **kwargs)  # numba's start in this process (cache load or compile), not timed
    fn, args, kwargs = prepare(workload, data_dir, None)
    walls, cpus = [], []
    for _ in range(inner):
        cpu, wall = time.process_time(), time.perf_counter()
        fn(*args, **kwargs)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"seconds": min(walls), "cpu_seconds": min(cpus)}


def run(src: str, workload: str, data_dir: Path, inner: int = 1) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(src).resolve()), NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, __file__, "--worker", workload, str(data_dir), str(inner)], check=True,
                         capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", nargs="?", help="the old tree's src folder")
    parser.add_argument("new", nargs="?", help="the new tree's src folder")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inner", type=int, default=3, help="calls per process, the fastest kept")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--data", type=Path, help="keep the inputs in this folder (made once)")
    parser.add_argument("--worker", nargs=3, metavar=("WORKLOAD", "DATA", "INNER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]), int(args.worker[2]))))
        return
    if not (args.old and args.new):
        parser.error("name the old and the new tree's src folders")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data or Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        if not (data_dir / "rw_seeds.npy").exists():
            make_inputs(data_dir)
        trees = {"old": args.old, "new": args.new}
        for workload in args.workloads:  # compile or load each tree's numba cache once, untimed
            for src in trees.values():
                run(src, workload, data_dir)
        runs = {w: {"old": [], "new": []} for w in args.workloads}
        for r in range(args.repeats):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for workload in args.workloads:
                for which in order:
                    runs[workload][which].append(run(trees[which], workload, data_dir, args.inner))
            print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    print(f"old: {args.old}\nnew: {args.new}\n{args.repeats} paired processes per workload, fastest of "
          f"{args.inner} calls in each, one core; times: medians of the processes' fastest calls\n")
    print(f"{'workload':<12}{'old (s)':>9}{'new (s)':>9}{'new/old wall':>14}{'new/old cpu':>13}   paired cpu ratios")
    for workload, pair in runs.items():
        old, new = pair["old"], pair["new"]
        wall = [n["seconds"] / o["seconds"] for o, n in zip(old, new)]
        cpu = [n["cpu_seconds"] / o["cpu_seconds"] for o, n in zip(old, new)]
        print(f"{workload:<12}{np.median([o['seconds'] for o in old]):>9.3f}"
              f"{np.median([n['seconds'] for n in new]):>9.3f}{np.median(wall):>14.3f}{np.median(cpu):>13.3f}   "
              + " ".join(f"{x:.2f}" for x in cpu))


if __name__ == "__main__":
    main()
