"""Tie orders: the scores of affseg's ``ties`` choices on inputs with many exactly equal weights
(saturated or uint8 affinities), for the Mutex Watershed (against mwatershed's), GASP, and the
agglomeration queue (its bucket width).

    python benchmarks/bench_ties.py --input curves:0 neuroproof:0:low neuroproof:0:high
    python benchmarks/bench_ties.py --input pred.zarr/affs,labels=pred.zarr/labels --uint8
    python benchmarks/bench_ties.py --method gasp --shape 32 128 128 --input curves:0 neuroproof:0:high
    python benchmarks/bench_ties.py --method agglomeration --input curves:0 neuroproof:0:high

Generators get the 6 offsets of bench_signed_graphs.py (the agglomeration uses the 3 nearest);
a file is segmented with all its channels (their ``offsets`` attribute). ``--uint8`` rounds the
affinities to 1/255 first (lsd stores predictions as uint8). VOI (bits) and ARAND against the
labels; the agglomeration's row is its best threshold (0.05 .. 0.95) by VOI. Time of the call,
one process (the machine's load shows in it: compare times in bench_signed_graphs.py).

GASP rows: ``mean`` linkage on voxels (``--shape`` keeps the crop small: GASP on voxels needs
about 240 bytes per edge), with and without ``cannot_link``, and on the input's fragments
(``extract_fragments`` defaults). Agglomeration rows: ``discretize_queue`` 256 (waterz's
bucket queue: scores within 1/256 tie and leave first in, first out), 65536, and 0 (an exact
heap: only equal scores tie, in the order they came), for ``hist_quant_75`` and ``mean``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_signed_graphs import BIAS, OFFSETS, mwatershed_labels, singletons_apart
from inputs import INPUT_HELP, check_spec, load_input

MWS_TIES = ("agreement", "hash", "repulsive-first", "attractive-first")
GASP_TIES = ("agreement", "hash", "repulsive-first", "attractive-first", "edge-order")
THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.05), 2)


def mws_runs(affs, offsets):
    from affseg.graph.signed.mutex import mutex_watershed

    for ties in MWS_TIES:
        yield ties, lambda ties=ties: mutex_watershed(affs, offsets, bias=BIAS, ties=ties)
    yield "mwatershed", lambda: singletons_apart(mwatershed_labels(affs.astype(np.float64) - BIAS, offsets))


def gasp_runs(affs, offsets):
    from affseg import extract_fragments
    from affseg.graph.signed.gasp import gasp

    fragments = extract_fragments(affs, offsets)
    for where, cannot_link in (("voxels", False), ("voxels", True), ("fragments", False)):
        for ties in GASP_TIES:
            # the sign orders differ from the edge order only in cannot-link ties of |interaction|
            if (ties.endswith("-first") and not cannot_link) or (ties == "agreement" and where == "fragments"):
                continue
            name = f"mean, {where}{', cannot_link' if cannot_link else ''}, {ties}"
            yield name, lambda ties=ties, where=where, cannot_link=cannot_link: gasp(
                affs, offsets, bias=BIAS, linkage="mean", cannot_link=cannot_link, ties=ties,
                fragments=fragments if where == "fragments" else None)


def agglomeration_runs(affs, offsets):
    from affseg import agglomerate, extract_fragments

    fragments = extract_fragments(affs, offsets)
    for merge_function in ("hist_quant_75", "mean"):
        for buckets in (256, 65536, 0):
            name = f"{merge_function}, discretize_queue={buckets}"
            yield name, lambda f=merge_function, b=buckets: agglomerate(
                affs, fragments, offsets, thresholds=THRESHOLDS, merge_function=f, discretize_queue=b)


def best_threshold(result, labels) -> dict:
    from affseg import evaluate

    scores = [evaluate(result.segmentation(i), labels) for i in range(len(THRESHOLDS))]
    i = int(np.argmin([s["voi_split"] + s["voi_merge"] for s in scores]))
    return {**scores[i], "threshold": float(THRESHOLDS[i])}


def score_rows(spec: str, method: str, uint8: bool, shape) -> list[dict]:
    from affseg import evaluate

    is_file = "/" in spec
    wanted = None if is_file else (OFFSETS[:3] if method == "agglomeration" else OFFSETS)
    affs, labels, offsets, _ = load_input(spec, wanted, shape=shape)
    if labels is None:
        raise SystemExit(f"{spec}: the input has no labels to score against")
    if uint8:
        affs = (np.round(affs * 255) / 255).astype(np.float32)
    tied = float(np.mean((affs == 0) | (affs == 1)))
    runs = {"mws": mws_runs, "gasp": gasp_runs, "agglomeration": agglomeration_runs}[method](affs, offsets)
    rows = []
    for name, run in runs:
        start = time.perf_counter()
        result = run()
        seconds = time.perf_counter() - start
        s = best_threshold(result, labels) if method == "agglomeration" else evaluate(result, labels)
        rows.append({"input": spec + (" (uint8)" if uint8 else ""), "saturated": tied, "method": name,
                     "seconds": seconds, **s})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=("mws", "gasp", "agglomeration"), default="mws",
                        help="what to order ties of (default: the Mutex Watershed)")
    parser.add_argument("--input", nargs="+", type=check_spec, default=["curves:0"], metavar="SPEC", help=INPUT_HELP)
    parser.add_argument("--uint8", action="store_true", help="round the affinities to 1/255 first")
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="generated shape / crop (z y x)")
    args = parser.parse_args()
    print("| input | exactly 0 or 1 | ties | VOI split | VOI merge | VOI | ARAND | time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.input:
        for r in score_rows(spec, args.method, args.uint8, args.shape):
            name = r["method"] + (f" (best threshold {r['threshold']:.2f})" if "threshold" in r else "")
            print(f"| {r['input']} | {r['saturated']:.0%} | {name} | {r['voi_split']:.3f} | "
                  f"{r['voi_merge']:.3f} | {r['voi_split'] + r['voi_merge']:.3f} | {r['arand']:.3f} | "
                  f"{r['seconds']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
