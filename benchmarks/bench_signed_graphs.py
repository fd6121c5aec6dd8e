"""Mutex Watershed and GASP: affseg against mwatershed 0.5.4, in one run, on one core.

    python benchmarks/bench_signed_graphs.py               # synthetic 64 x 256 x 256, 6 offsets
    python benchmarks/bench_signed_graphs.py --repeats 3
    python benchmarks/bench_signed_graphs.py --profile     # where the time goes, one core
    python benchmarks/bench_signed_graphs.py --input curves          # another generator
    python benchmarks/bench_signed_graphs.py --input my.zarr/affs,labels=my.zarr/labels
    python benchmarks/bench_signed_graphs.py --uint8 --methods affseg-mws mwatershed --repeats 3

Input (--input, see benchmarks/inputs.py; default affseg.synthetic): noisy affinities for the
offsets 3 nearest neighbours, [-3, 0, 0], [0, -9, 0], [0, 0, -9] (a file must hold these six,
named by its `offsets` attribute); edge weights ``affinity - 0.5`` (float64 for mwatershed, as it
needs). The input is made or read once and handed to the workers as .npy files, untimed.
Each method runs in its own process pinned to one core; time and peak resident memory (above
the process's memory after loading the input) cover the segmentation call, including
mwatershed's float64 weights. Scores (VOI, ARAND against the synthetic labels) are computed
afterwards, untimed (skipped for a file without labels). mwatershed labels voxels without any attractive edge 0; for its scores
each of those voxels is a segment of its own, as in affseg. ``--uint8`` rounds the affinities to
``k / 255`` first, as stored by lsd and most pipelines (every method gets the same values: exact
ties of ``|weight|`` everywhere); ``--methods`` runs a subset.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_segmentation import _status_mb, load_labels, pin_to_one_core, run_in_process
from inputs import add_input_argument, load_input

OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-3, 0, 0], [0, -9, 0], [0, 0, -9]]
BIAS = 0.5
MALA_THRESHOLDS = [0.1, 0.3, 0.5, 0.7, 0.9]
GRID_GASP_CROP = (slice(0, 16), slice(0, 128), slice(0, 128))

METHODS = {
    "affseg-mws": "affseg mutex_watershed (voxels)",
    "mwatershed": "mwatershed 0.5.4 agglom (voxels)",
    "affseg-gasp": "affseg fragments + GASP mean",
    "affseg-gasp-abs-max": "affseg fragments + GASP abs_max",
    "affseg-mala": "affseg MALA (hist_quant_75, best)",
    "affseg-gasp-grid-crop": "affseg GASP mean (voxels, 16x128x128 crop)",
}


def mwatershed_labels(weights: np.ndarray, offsets=OFFSETS) -> np.ndarray:
    import mwatershed

    return mwatershed.agglom(weights, np.asarray(offsets).tolist())


def singletons_apart(labels: np.ndarray) -> np.ndarray:
    """mwatershed's 0 (voxels without an attractive edge) as one segment per voxel."""
    out = labels.astype(np.uint64)
    zero = out == 0
    out[zero] = out.max() + 1 + np.arange(int(zero.sum()), dtype=np.uint64)
    return out


TIE_PREFIX = "affseg-mws-ties="  # + a tie order: the Mutex Watershed with that ``ties`` (--ties)


def segment(method: str, affs: np.ndarray):
    from affseg import agglomerate, extract_fragments, gasp, mutex_watershed

    if method == "affseg-mws":
        return mutex_watershed(affs, OFFSETS, bias=BIAS)
    if method.startswith(TIE_PREFIX):
        return mutex_watershed(affs, OFFSETS, bias=BIAS, ties=method[len(TIE_PREFIX):])
    if method == "mwatershed":
        return mwatershed_labels(affs.astype(np.float64) - BIAS)
    if method.startswith("affseg-gasp-grid"):
        crop = np.ascontiguousarray(affs[(slice(None),) + GRID_GASP_CROP])
        return gasp(crop, OFFSETS, bias=BIAS, linkage="mean")
    fragments = extract_fragments(affs, OFFSETS)
    if method == "affseg-mala":
        return agglomerate(affs, fragments, thresholds=MALA_THRESHOLDS, offsets=OFFSETS, merge_function="hist_quant_75")
    linkage = "abs_max" if method.endswith("abs-max") else "mean"
    return gasp(affs, OFFSETS, bias=BIAS, linkage=linkage, fragments=fragments)


def worker(method: str, data_dir: Path) -> dict:
    pin_to_one_core()
    affs = np.load(data_dir / "affs.npy")
    labels = load_labels(data_dir)
    small = np.ascontiguousarray(affs[:, :4, :24, :24])
    if method.startswith("affseg"):
        segment(method, small)  # numba's one-time start in a process, like the imports
    else:
        import mwatershed  # noqa: F401
    rss_before = _status_mb("VmRSS")
    times_before = os.times()
    start = time.perf_counter()
    result = segment(method, affs)
    seconds = time.perf_counter() - start
    system_seconds = os.times().system - times_before.system  # mostly faulting in fresh memory
    peak_whole = _status_mb("VmHWM")
    peak = peak_whole - rss_before
    from affseg import evaluate

    if labels is None:
        scores = None
    elif method == "affseg-mala":
        rows = [evaluate(result.segmentation(i), labels) for i in range(len(MALA_THRESHOLDS))]
        scores = min(rows, key=lambda r: r["voi"])
    else:
        gt = labels[GRID_GASP_CROP] if method.startswith("affseg-gasp-grid") else labels
        seg = singletons_apart(result) if method == "mwatershed" else result
        scores = evaluate(seg, gt)
        scores["segments"] = len(np.unique(seg))
    return {"method": method, "seconds": seconds, "system_seconds": system_seconds, "peak_increase_mb": peak,
            "peak_mb": peak_whole, "scores": scores}


def benchmark(spec: str, seed: int, repeats: int, ties: list[str] = (), *, uint8: bool = False,
              only: list[str] = ()) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        affs, labels, _, desc = load_input(spec, OFFSETS, seed=seed)
        if uint8:
            affs = np.round(np.clip(affs, 0, 1) * 255) / 255
            desc += "; rounded to k / 255 (uint8)"
        np.save(data_dir / "affs.npy", np.ascontiguousarray(affs, dtype=np.float32))
        if labels is not None:
            np.save(data_dir / "labels.npy", labels)
        del affs, labels
        run_in_process(["--worker", "affseg-mws", str(data_dir)], script=__file__)  # warm numba's cache
        # repeats interleave the methods, so that a slow spell of the machine hits all of them
        methods = {**{m: name for m, name in METHODS.items() if not only or m in only},
                   **{f"{TIE_PREFIX}{t}": f"affseg mutex_watershed ties={t}" for t in ties}}
        runs = {method: [] for method in methods}
        for _ in range(repeats):
            for method in methods:
                runs[method].append(run_in_process(["--worker", method, str(data_dir)], script=__file__))
        rows = {}
        for method, method_runs in runs.items():
            fastest = min(method_runs, key=lambda r: r["seconds"])
            fastest["peak_increase_mb"] = max(r["peak_increase_mb"] for r in method_runs)
            fastest["peak_mb"] = max(r["peak_mb"] for r in method_runs)
            fastest["all_seconds"] = [round(r["seconds"], 2) for r in method_runs]
            fastest["all_system_seconds"] = [round(r["system_seconds"], 2) for r in method_runs]
            rows[method] = fastest
    print(f"input: {desc}; offsets {OFFSETS}, bias {BIAS}; "
          f"fastest of {repeats} run(s) per method, one core")
    print(f"{'method':<44}{'time (s)':>10}{'peak (MB)':>11}{'peak-start':>11}{'VOI split':>11}{'VOI merge':>11}"
          f"{'VOI':>8}{'ARAND':>8}")
    for method, r in rows.items():
        s = r["scores"]
        scores = (f"{'-':>11}{'-':>11}{'-':>8}{'-':>8}" if s is None else
                  f"{s['voi_split']:>11.3f}{s['voi_merge']:>11.3f}{s['voi']:>8.3f}{s['arand']:>8.3f}")
        print(f"{methods[method]:<44}{r['seconds']:>10.2f}{r['peak_mb']:>11.0f}{r['peak_increase_mb']:>11.0f}"
              f"{scores}")
    if "affseg-mws" not in rows:
        return
    ours = rows["affseg-mws"]
    for t in ties:  # each tie order against the default, paired run by run
        other = rows[f"{TIE_PREFIX}{t}"]["all_seconds"]
        ratio = float(np.median([o / d for d, o in zip(ours["all_seconds"], other)]))
        print(f"ties={t}: median time ratio to the default of the {repeats} paired runs {ratio:.2f}")
    if "mwatershed" not in rows:
        return
    ref = rows["mwatershed"]
    paired = [r / o for o, r in zip(ours["all_seconds"], ref["all_seconds"])]
    print(f"Mutex Watershed: speed-up {ref['seconds'] / ours['seconds']:.1f}x (fastest runs), median of the "
          f"{repeats} paired runs {float(np.median(paired)):.1f}x; peak memory ratio (affseg / mwatershed) "
          f"{ours['peak_increase_mb'] / ref['peak_increase_mb']:.2f} above start, "
          f"{ours['peak_mb'] / ref['peak_mb']:.2f} whole process; "
          f"all runs: affseg {ours['all_seconds']}, mwatershed {ref['all_seconds']}; of which system time "
          f"(page faults): affseg {ours['all_system_seconds']}, mwatershed {ref['all_system_seconds']}")


def profile(spec: str, seed: int, ties: str = "agreement", *, uint8: bool = False) -> None:
    """Stages of affseg's Mutex Watershed (with the tie order ``ties``) and of GASP on fragments,
    timed one by one."""
    pin_to_one_core()
    from affseg import extract_fragments, mutex_watershed
    from affseg.graph.core.edges import flat_steps
    from affseg.graph.signed import _gasp_kernels, _mutex_kernels
    from affseg.graph.signed.gasp import _signed_region_graph, graph_tie_ranks
    from affseg.graph.signed.mutex import TIE_ORDERS, channel_biases

    affs, _, _, desc = load_input(spec, OFFSETS, seed=seed)
    if uint8:
        affs = (np.round(np.clip(affs, 0, 1) * 255) / 255).astype(np.float32)
        desc += "; rounded to k / 255 (uint8)"
    affs = np.ascontiguousarray(affs)
    print(f"input: {desc}")
    offsets = np.asarray(OFFSETS)
    mutex_watershed(affs[:, :4, :24, :24], OFFSETS)  # compile / load the kernels
    biases = channel_biases(offsets, BIAS)
    n = affs[0].size
    ones = np.ones((len(offsets), 3), np.int64)
    no_mask = np.ones((1, 1, 1), bool)

    def timed(label, fn, *args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        print(f"{label:<58}{time.perf_counter() - start:>8.2f} s")
        return out

    clipped = float(np.mean((affs == 0) | (affs == 1)))
    print(f"affinities exactly 0 or 1 (|weight| {BIAS}, ties): {clipped:.1%}")
    print(f"tie order: {ties}")
    ties = TIE_ORDERS[ties]
    packed, scratch, n_repulsive = timed("MWS: edges radix-sorted by |weight|", _mutex_kernels.grid_edges, affs,
                                         offsets, biases, ones, np.ones(len(offsets)), 0, no_mask, False, ties)
    timed("MWS: ties put in exact and tie order", _mutex_kernels.exact_order, packed, affs, biases,
          offsets=offsets, scratch=scratch, ties=ties)
    entries = timed("MWS: entries compacted to 32 bits", _mutex_kernels.compact, packed)
    n_edges = len(packed)
    spare = (_mutex_kernels.spare_bytes(scratch), _mutex_kernels.spare_bytes(packed, entries.nbytes))
    node, seed_arr, keys, blocks, state = timed("MWS: state (in the sort's buffers)", _mutex_kernels.new_state, n,
                                                False, int(n_repulsive), spare=spare)
    keys, blocks = timed("MWS: union-find + mutexes over the sorted edges", _mutex_kernels.run,
                         _mutex_kernels.process_grid, (flat_steps(affs.shape[1:], offsets), n, entries), node, seed_arr, False,
                         keys, blocks, state)
    timed("MWS: labels", _mutex_kernels.labels_from_roots, node[:, 0], seed_arr, False, no_mask, False, 1)
    print(f"MWS: {n_edges} edges, {n_repulsive} repulsive, {state[_mutex_kernels.PAIRS]} cluster pairs in the "
          f"set ({keys.nbytes / 2**20:.0f} MB), {state[_mutex_kernels.USED]} partner blocks "
          f"({blocks[:state[_mutex_kernels.USED]].nbytes / 2**20:.0f} MB), sorted edges {entries.nbytes / 2**20:.0f} MB")
    del entries, node, keys, blocks, packed, scratch, spare
    fragments = timed("GASP: extract_fragments", extract_fragments, affs, OFFSETS)
    uv, w, sizes, local, ids = timed("GASP: signed region graph of the fragments, all offsets",
                                     _signed_region_graph, affs, offsets, fragments, biases)
    ranks = graph_tie_ranks("hash", len(w))  # gasp's default ties
    timed(f"GASP: mean linkage on {len(ids)} fragments, {len(uv)} edges", _gasp_kernels.gasp, len(ids),
          uv[:, 0].copy(), uv[:, 1].copy(), w, sizes, local, _gasp_kernels.MEAN, False, ranks,
          _gasp_kernels.SIGN_NONE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_argument(parser)
    parser.add_argument("--seed", type=int, default=0, help="the input's seed where SPEC gives none")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="time affseg's stages instead")
    parser.add_argument("--ties", nargs="+", default=[], metavar="ORDER",
                        choices=["agreement", "hash", "repulsive-first", "attractive-first"],
                        help="also run the Mutex Watershed with these tie orders (interleaved with the rest); "
                             "with --profile, profile the first instead of the default agreement")
    parser.add_argument("--uint8", action="store_true", help="round the affinities to k / 255 first (as stored)")
    parser.add_argument("--methods", nargs="+", default=[], metavar="METHOD", choices=list(METHODS),
                        help="run only these methods (default: all)")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], Path(args.worker[1]))))
        return
    if args.profile:
        os.environ.setdefault("NUMBA_NUM_THREADS", "1")
        profile(args.input, args.seed, args.ties[0] if args.ties else "agreement", uint8=args.uint8)
        return
    benchmark(args.input, args.seed, args.repeats, args.ties, uint8=args.uint8, only=args.methods)


if __name__ == "__main__":
    main()
