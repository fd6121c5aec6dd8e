"""Real data: MSE-only against MSE warm-up + constrained MALIS on neuroproof_train.h5.

Trains identical small U-Nets on z 0-119 of ../shared/data/neuroproof_train.h5 (same seed, same
data stream): MSE throughout, MSE then constrained MALIS, and (with ``--malis-mse-share``) MSE
then constrained MALIS plus that share of the MSE. Predicts z 120-149 (held out), segments with
MALA fragments + agglomeration over thresholds 0.05-0.95 and prints VOI / ARAND (best threshold and 0.5)
as a markdown table.

    python benchmarks/train_neuroproof.py --iterations 1000 --malis-start 500 --output /tmp/np
    python benchmarks/train_neuroproof.py --output-shape 20 40 40 --malis-mse-share 1.0
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "neuroproof_train.h5"
SPLIT = 120


def config(args, malis: bool, mse_share: float = 0.0) -> dict:
    return {
        "data": {"train": [{"raw": f"{DATA}/raw", "labels": f"{DATA}/labels",
                            "roi": [[0, 0, 0], [SPLIT, 250, 250]]}], "min_labelled": 0.5,
                 "num_workers": 0},
        "model": {"num_fmaps": args.fmaps, "fmap_inc_factor": 3, "downsample_factors": [[2, 2, 2], [2, 2, 2]],
                  "output_shape": list(args.output_shape)},
        "targets": {"offsets": [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]},
        "augment": {},
        "train": {"iterations": args.iterations, "learning_rate": 5e-4, "checkpoint_every": 250,
                  "loss": "mse", "malis_start": args.malis_start if malis else None,
                  "malis_affinity_weight": mse_share, "seed": args.seed, "device": "cpu"},
    }


def evaluate_run(ckpt, out: Path) -> dict:
    from affseg import agglomerate, evaluate, extract_fragments, read_volume
    from affseg.learn.predict import predict

    raw, _ = read_volume(f"{DATA}/raw")
    labels, _ = read_volume(f"{DATA}/labels")
    raw, labels = raw[SPLIT:], labels[SPLIT:]
    written = predict(ckpt, raw, out / "pred.zarr", overwrite=True)
    affs, _ = read_volume(written["affs"])
    thresholds = [round(0.05 * k, 2) for k in range(1, 20)]  # 0.05 ... 0.95: MALIS's best sits near a cliff
    fragments = extract_fragments(affs)
    with contextlib.redirect_stdout(io.StringIO()):
        result = agglomerate(affs, fragments, thresholds=thresholds)
    rows = [{"threshold": t, **evaluate(result.segmentation(i), labels)} for i, t in enumerate(result.thresholds)]
    best = min(rows, key=lambda r: r["voi_split"] + r["voi_merge"])
    at_half = next(r for r in rows if abs(r["threshold"] - 0.5) < 1e-9)
    return {"best": best, "threshold_0.5": at_half, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--malis-start", type=int, default=500)
    p.add_argument("--fmaps", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="initial weights and data stream (same for all models)")
    p.add_argument("--output-shape", type=int, nargs=3, default=[20, 20, 20], help="output crop (z y x)")
    p.add_argument("--malis-mse-share", type=float, default=None,
                   help="also train MSE then MALIS + this share of the MSE (train.malis_affinity_weight)")
    p.add_argument("--output", default="/tmp/neuroproof-runs")
    args = p.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} is absent (see ../shared/data/README.md)")
    from affseg.learn.train import train

    results = {}
    variants = [("mse", False, 0.0), ("constrained_malis", True, 0.0)]
    if args.malis_mse_share is not None:
        variants.append((f"constrained_malis + {args.malis_mse_share:g} mse", True, args.malis_mse_share))
    for name, malis, share in variants:
        out = Path(args.output) / name.replace(" ", "").replace("+", "_")
        started = time.perf_counter()
        run = train(config(args, malis, share), out / "run", overwrite=False, progress=True)
        seconds = time.perf_counter() - started
        results[name] = {"train_seconds": seconds, **evaluate_run(run.last_checkpoint, out)}
    Path(args.output, "results.json").write_text(json.dumps(results, indent=2, default=float))
    print("| model | best threshold | VOI split | VOI merge | VOI | ARAND | VOI at 0.5 | ARAND at 0.5 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        b, h = r["best"], r["threshold_0.5"]
        print(f"| {name} | {b['threshold']:.2f} | {b['voi_split']:.3f} | {b['voi_merge']:.3f} | "
              f"{b['voi_split'] + b['voi_merge']:.3f} | {b['arand']:.3f} | {h['voi_split'] + h['voi_merge']:.3f} | "
              f"{h['arand']:.3f} |")


if __name__ == "__main__":
    main()
