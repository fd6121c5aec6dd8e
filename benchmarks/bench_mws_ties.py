"""Mutex Watershed tie orders: the scores of affseg's ``ties`` choices and mwatershed's on inputs
with many exactly equal weights (saturated or uint8 affinities).

    python benchmarks/bench_mws_ties.py --input curves:0 neuroproof:0:low neuroproof:0:high
    python benchmarks/bench_mws_ties.py --input pred.zarr/affs,labels=pred.zarr/labels --uint8

Generators get the 6 offsets of bench_signed_graphs.py; a file is segmented with all its
channels (their ``offsets`` attribute). ``--uint8`` rounds the affinities to 1/255 first (lsd
stores predictions as uint8). VOI (bits) and ARAND against the labels; time of the call, one
process (the machine's load shows in it: compare times in bench_signed_graphs.py).
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

TIE_ORDERS = ("agreement", "hash", "repulsive-first", "attractive-first")


def score_row(spec: str, uint8: bool, shape) -> list[dict]:
    from affseg import evaluate
    from affseg.graph.signed.mutex import mutex_watershed

    is_file = "/" in spec
    affs, labels, offsets, _ = load_input(spec, None if is_file else OFFSETS, shape=shape)
    if labels is None:
        raise SystemExit(f"{spec}: the input has no labels to score against")
    if uint8:
        affs = (np.round(affs * 255) / 255).astype(np.float32)
    tied = float(np.mean((affs == 0) | (affs == 1)))
    rows = []
    for method in (*TIE_ORDERS, "mwatershed"):
        start = time.perf_counter()
        if method == "mwatershed":
            seg = singletons_apart(mwatershed_labels(affs.astype(np.float64) - BIAS, offsets))
        else:
            seg = mutex_watershed(affs, offsets, bias=BIAS, ties=method)
        seconds = time.perf_counter() - start
        s = evaluate(seg, labels)
        rows.append({"input": spec + (" (uint8)" if uint8 else ""), "saturated": tied, "method": method,
                     "seconds": seconds, **s})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", type=check_spec, default=["curves:0"], metavar="SPEC", help=INPUT_HELP)
    parser.add_argument("--uint8", action="store_true", help="round the affinities to 1/255 first")
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="generated shape / crop (z y x)")
    args = parser.parse_args()
    print("| input | exactly 0 or 1 | ties | VOI split | VOI merge | VOI | ARAND | time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.input:
        for r in score_row(spec, args.uint8, args.shape):
            print(f"| {r['input']} | {r['saturated']:.0%} | {r['method']} | {r['voi_split']:.3f} | "
                  f"{r['voi_merge']:.3f} | {r['voi_split'] + r['voi_merge']:.3f} | {r['arand']:.3f} | "
                  f"{r['seconds']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
