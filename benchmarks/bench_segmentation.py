"""Fragments + agglomeration: affseg against the lsd recipe + waterz, in one run, on one core.

    python benchmarks/bench_segmentation.py                      # synthetic 64 x 256 x 256
    python benchmarks/bench_segmentation.py --input neuroproof    # ../shared/data, noisy GT affinities
    python benchmarks/bench_segmentation.py --input curves:1      # another generator, seed 1
    python benchmarks/bench_segmentation.py --input my.h5/affs,labels=my.h5/labels   # your data
    python benchmarks/bench_segmentation.py --jit                 # cold / warm numba start-up
    python benchmarks/bench_segmentation.py --profile             # where affseg's time goes

Each method runs in its own process pinned to one core (numba and BLAS threads set to 1); the
time and the peak resident memory cover the whole pipeline (fragments, region graph,
agglomeration, one segmentation volume per threshold), not the loading of the input. The scores
(VOI, ARAND) of every threshold are computed afterwards, untimed, with affseg.evaluate (skipped
for an input without labels). The input (--input, see benchmarks/inputs.py) is made or read once
by the parent and handed to every worker as .npy files, so its making is not timed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inputs import NEAREST, add_input_argument, load_input

THRESHOLDS = [0.1, 0.3, 0.5, 0.7, 0.9]
MERGE_FUNCTION = "hist_quant_75"


def pin_to_one_core() -> None:
    """Run this process on its first allowed core only (with single-threaded numba/BLAS)."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def _status_mb(key: str) -> float:
    """A memory figure of this process from /proc (VmRSS now, VmHWM peak; unlike ru_maxrss, the
    peak is not inherited from the parent over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_affseg(affs, thresholds):
    from affseg import agglomerate, extract_fragments

    fragments = extract_fragments(affs)
    result = agglomerate(affs, fragments, thresholds=thresholds, merge_function=MERGE_FUNCTION)
    segs = []
    for i in range(len(thresholds)):
        segs.append(result.segmentation(i))
        if len(segs) > 1:  # keep one volume at a time, as waterz's generator does
            segs.pop(0)
    return result, fragments


def lsd_fragments(affs):
    """lsd.post.fragments.watershed_from_affinities (default options)."""
    from scipy.ndimage import distance_transform_edt, label, maximum_filter
    from skimage.segmentation import watershed

    boundary_mask = np.mean(affs, axis=0) > 0.5
    boundary_distances = distance_transform_edt(boundary_mask)
    maxima = maximum_filter(boundary_distances, 10) == boundary_distances
    seeds, _ = label(maxima)
    fragments = watershed(boundary_distances.max() - boundary_distances, seeds, mask=boundary_mask)
    return fragments.astype(np.uint64)


def run_reference(affs, thresholds):
    fragments = lsd_fragments(affs)
    for _ in waterz_segmentations(affs, fragments, thresholds, copy=False):
        pass
    return fragments


@contextlib.contextmanager
def quiet_stdout():
    """File descriptor 1 to /dev/null (waterz's C++ prints progress to stdout)."""
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


def waterz_segmentations(affs, fragments, thresholds, merge_function: str = MERGE_FUNCTION, copy: bool = True):
    """waterz.agglomerate on ``fragments`` (left unchanged) with ``merge_function``, silenced: one
    segmentation per threshold (copies unless ``copy=False``: waterz reuses one buffer)."""
    import waterz

    from affseg.graph.mala.agglomeration import waterz_scoring_function

    with quiet_stdout():
        for seg in waterz.agglomerate(affs, thresholds, fragments=fragments.copy(), discretize_queue=256,
                                      scoring_function=waterz_scoring_function(merge_function)):
            yield seg.copy() if copy else seg


def agglomeration_only(method: str, data_dir: Path) -> dict:
    """Agglomeration alone on the same fragments (affseg's), affseg against waterz."""
    pin_to_one_core()
    affs = np.load(data_dir / "affs.npy")
    fragments = np.load(data_dir / "fragments.npy")
    from affseg import agglomerate

    agglomerate(np.ascontiguousarray(affs[:, :4, :16, :16]), np.ascontiguousarray(fragments[:4, :16, :16]), thresholds=[0.5])
    import waterz  # noqa: F401  (imported before the clock starts)

    rss_before = _status_mb("VmRSS")
    start = time.perf_counter()
    if method == "affseg-agglomerate":
        result = agglomerate(affs, fragments, thresholds=THRESHOLDS, merge_function=MERGE_FUNCTION)
        for i in range(len(THRESHOLDS)):
            result.segmentation(i)
    else:
        for _ in waterz_segmentations(affs, fragments, THRESHOLDS, copy=False):
            pass
    return {"method": method, "seconds": time.perf_counter() - start,
            "peak_increase_mb": _status_mb("VmHWM") - rss_before}


def load_labels(data_dir: Path) -> np.ndarray | None:
    """The input's labels, None for an input without them."""
    path = data_dir / "labels.npy"
    return np.load(path) if path.exists() else None


def worker(method: str, data_dir: Path) -> dict:
    if method.endswith("-agglomerate"):
        return agglomeration_only(method, data_dir)
    pin_to_one_core()
    affs = np.load(data_dir / "affs.npy")
    labels = load_labels(data_dir)
    if method == "affseg":
        # numba's one-time start in a process (about 0.3 s, see --jit), like the imports below
        run_affseg(np.ascontiguousarray(affs[:, :4, :16, :16]), THRESHOLDS)
    else:
        import skimage.segmentation  # noqa: F401
        import waterz  # noqa: F401
    rss_before = _status_mb("VmRSS")
    start = time.perf_counter()
    if method == "affseg":
        result, fragments = run_affseg(affs, THRESHOLDS)
    else:
        fragments = run_reference(affs, THRESHOLDS)
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    # quality, untimed
    from affseg import evaluate

    if labels is None:
        segs = []
    elif method == "affseg":
        segs = result.segmentations()
    else:
        segs = list(waterz_segmentations(affs, fragments, THRESHOLDS))
    scores = [{"threshold": t, **evaluate(s, labels)} for t, s in zip(THRESHOLDS, segs)]
    return {
        "method": method,
        "seconds": seconds,
        "peak_rss_mb": peak,
        "rss_before_mb": rss_before,
        "peak_increase_mb": peak - rss_before,
        "fragments": int(len(np.unique(fragments)) - (1 if (fragments == 0).any() else 0)),
        "scores": scores,
    }


def make_input(spec: str, data_dir: Path, seed: int) -> str:
    """Write the input's affinities (nearest neighbours) and labels (if any) as .npy for the workers."""
    affs, labels, _, desc = load_input(spec, NEAREST, seed=seed)
    np.save(data_dir / "affs.npy", np.ascontiguousarray(affs, dtype=np.float32))
    if labels is not None:
        np.save(data_dir / "labels.npy", labels)
    return desc


def run_in_process(args: list[str], env_extra: dict | None = None, script: str = __file__) -> dict:
    """Run ``script --worker ...`` in a fresh single-threaded process; its last stdout line is JSON."""
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", RAYON_NUM_THREADS="1")
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, script, *args], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def best(scores):
    return min(scores, key=lambda s: s["voi"])


def score_columns(scores) -> str:
    """Best threshold, VOI split / merge / total, ARAND; dashes without labels."""
    if not scores:
        return f"{'-':>10}{'-':>11}{'-':>11}{'-':>8}{'-':>8}"
    b = best(scores)
    return (f"{b['threshold']:>10.1f}{b['voi_split']:>11.3f}{b['voi_merge']:>11.3f}"
            f"{b['voi']:>8.3f}{b['arand']:>8.3f}")


def benchmark(spec: str, seed: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        desc = make_input(spec, data_dir, seed)
        run_in_process(["--worker", "affseg", str(data_dir)])  # warm the numba cache
        # repeats interleave the two, so that a slow spell of the machine hits both
        runs = {"affseg": [], "reference": []}
        for _ in range(repeats):
            for method, method_runs in runs.items():
                method_runs.append(run_in_process(["--worker", method, str(data_dir)]))
        rows = {}
        for method, method_runs in runs.items():
            fastest = min(method_runs, key=lambda r: r["seconds"])
            fastest["peak_rss_mb"] = max(r["peak_rss_mb"] for r in method_runs)
            fastest["peak_increase_mb"] = max(r["peak_increase_mb"] for r in method_runs)
            fastest["all_seconds"] = [round(r["seconds"], 2) for r in method_runs]
            rows[method] = fastest
        from affseg import extract_fragments

        np.save(data_dir / "fragments.npy", extract_fragments(np.load(data_dir / "affs.npy")))
        agg = {m: min((run_in_process(["--worker", m, str(data_dir)]) for _ in range(repeats)),
                      key=lambda r: r["seconds"]) for m in ("affseg-agglomerate", "waterz-agglomerate")}
    ours, ref = rows["affseg"], rows["reference"]
    print(f"input: {desc}; thresholds {THRESHOLDS}; merge function {MERGE_FUNCTION}; 256-bucket queue")
    print(f"{'method':<34}{'time (s)':>10}{'peak RSS (MB)':>15}{'peak - start (MB)':>19}{'fragments':>11}"
          f"{'best thr':>10}{'VOI split':>11}{'VOI merge':>11}{'VOI':>8}{'ARAND':>8}")
    names = {"affseg": "affseg fragments + agglomerate", "reference": "lsd recipe + waterz 0.10.1"}
    for method, r in rows.items():
        print(f"{names[method]:<34}{r['seconds']:>10.2f}{r['peak_rss_mb']:>15.0f}{r['peak_increase_mb']:>19.0f}"
              f"{r['fragments']:>11}{score_columns(r['scores'])}")
    paired = [r / o for o, r in zip(ours["all_seconds"], ref["all_seconds"])]
    print(f"speed-up {ref['seconds'] / ours['seconds']:.1f}x (fastest runs), median of the {repeats} paired runs "
          f"{float(np.median(paired)):.1f}x (affseg {ours['all_seconds']}, reference {ref['all_seconds']}); "
          f"peak memory ratio (affseg / reference) "
          f"{ours['peak_rss_mb'] / ref['peak_rss_mb']:.2f} (whole process), "
          f"{ours['peak_increase_mb'] / ref['peak_increase_mb']:.2f} (above start)")
    a, w = agg["affseg-agglomerate"], agg["waterz-agglomerate"]
    print(f"agglomeration alone on the same fragments (identical results): affseg {a['seconds']:.2f} s, "
          f"{a['peak_increase_mb']:.0f} MB; waterz {w['seconds']:.2f} s, {w['peak_increase_mb']:.0f} MB; "
          f"speed-up {w['seconds'] / a['seconds']:.1f}x")


JIT_SNIPPET = """
import time, numpy as np
t = time.perf_counter()
from affseg import agglomerate, evaluate, extract_fragments
from affseg.synthetic import make_volume
vol = make_volume((8, 48, 48), seed=0)
t0 = time.perf_counter()
f = extract_fragments(vol.affs)
agglomerate(vol.affs, f, thresholds=[0.5]).segmentation(0)
evaluate(f, vol.labels)
print(time.perf_counter() - t0)
"""


def profile_stages(spec: str, seed: int) -> None:
    """Time per kernel of affseg's pipeline (cProfile sees each numba kernel as one call)."""
    import cProfile
    import pstats

    pin_to_one_core()
    affs = load_input(spec, NEAREST, seed=seed)[0]
    run_affseg(np.ascontiguousarray(affs[:, :4, :16, :16]), THRESHOLDS)  # numba's one-time start
    profiler = cProfile.Profile()
    profiler.runcall(run_affseg, affs, THRESHOLDS)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def jit_times() -> None:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        times = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", JIT_SNIPPET], check=True, capture_output=True, text=True,
                                 env=env)
            times.append(float(out.stdout.strip().splitlines()[-1]))
    print(f"first call of fragments + agglomerate + evaluate on 8 x 48 x 48: cold (empty numba cache) "
          f"{times[0]:.1f} s, warm (cached, new process) {times[1]:.2f} s")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], Path(sys.argv[3]))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_argument(p)
    p.add_argument("--dataset", choices=["synthetic", "neuroproof"],
                   help="the same as --input synthetic / --input neuroproof (kept for old commands)")
    p.add_argument("--seed", type=int, default=0, help="the input's seed where SPEC gives none")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--jit", action="store_true", help="only measure numba's cold and warm start")
    p.add_argument("--profile", action="store_true", help="only profile affseg's pipeline per kernel")
    args = p.parse_args()
    if args.dataset:
        if args.input != p.get_default("input"):
            p.error("--dataset and --input: give one (--dataset X is --input X)")
        args.input = args.dataset
    if args.jit:
        jit_times()
    elif args.profile:
        profile_stages(args.input, args.seed)
    else:
        benchmark(args.input, args.seed, args.repeats)


if __name__ == "__main__":
    main()
