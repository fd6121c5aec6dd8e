"""Real data, 2D: the Learned Random Walker against a random walker on a boundary map.

Trains three identical small 2D U-Nets on sections 0-19 of ../shared/data/isbi2012.h5
(`labels_2d`, 0 = membrane = unlabelled): with the random-walker loss alone (affinities are the
diffusivities, oracle seeds: one blob per cell, cross-entropy), with the random-walker loss plus
balanced MSE (`train.rw_affinity_weight: 1`), and with balanced MSE on the affinities alone.
Held-out sections 25-29 are segmented by a random walker with the same oracle seeds:

- LRW: the LRW networks' affinities as diffusivities;
- boundary map: scikit-image's weights ``exp(-beta b^2 / (10 std b))`` of the MSE network's
  boundary map ``b = 1 - mean affinity`` (the standard random walker on a predicted boundary map);
- MSE affinities: the MSE network's affinities as diffusivities.

and VOI / ARAND (membranes, label 0, ignored) are printed as a markdown table.

    python benchmarks/lrw_isbi.py --iterations 600 --output /tmp/lrw
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isbi2012.h5"
TRAIN, TEST = range(0, 20), range(25, 30)
OFFSETS = [[-1, 0], [0, -1]]


def write_sections(out: Path) -> list[dict]:
    """Each training section as its own 2D volume (the sampler crops 2D sources for a 2D net)."""
    from affseg import read_volume, write_volume

    raw, _ = read_volume(f"{DATA}/raw")
    labels, _ = read_volume(f"{DATA}/labels_2d")
    sources = []
    for z in TRAIN:
        group = out / "sections.zarr" / f"z{z:02d}"
        write_volume(group / "raw", raw[z], voxel_size=(4, 4), overwrite=True)
        write_volume(group / "labels", labels[z], voxel_size=(4, 4), overwrite=True)
        sources.append({"raw": str(group / "raw"), "labels": str(group / "labels")})
    return sources


def config(sources, args, loss: str, affinity_weight: float = 0.0) -> dict:
    return {
        "data": {"train": sources, "min_labelled": 0.5},
        "model": {"num_fmaps": args.fmaps, "fmap_inc_factor": 3, "downsample_factors": [[2, 2], [2, 2]],
                  "output_shape": [args.crop, args.crop]},
        "targets": {"offsets": OFFSETS, "rw_seed_radius": 2},
        "augment": {"elastic_sigma": 0.0},
        "train": {"iterations": args.iterations, "learning_rate": args.lr, "checkpoint_every": args.iterations,
                  "loss": loss, "seed": 0, "device": "cpu", "batch_size": 1,
                  **({"rw_affinity_weight": affinity_weight} if loss == "random_walker" else {})},
    }


def predict_sections(ckpt, out: Path) -> np.ndarray:
    from affseg import read_volume
    from affseg.learn.predict import predict

    raw, _ = read_volume(f"{DATA}/raw")
    affs = []
    for z in TEST:
        written = predict(ckpt, raw[z], out / f"pred_z{z}.zarr", overwrite=True)
        affs.append(read_volume(written["affs"])[0])
    return np.stack(affs)


def segment_with_oracle_seeds(weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from affseg.graph.random_walker import random_walker
    from affseg.learn.targets import oracle_seeds

    seeds, _target = oracle_seeds(labels, radius=2)
    seg = random_walker(weights, seeds, OFFSETS)
    return seg


def main() -> None:
    from affseg import evaluate, read_volume
    from affseg.graph.random_walker import image_weights
    from affseg.learn.train import train

    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--fmaps", type=int, default=12)
    p.add_argument("--crop", type=int, default=92)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--beta", type=float, default=130.0)
    p.add_argument("--output", default="/tmp/lrw_isbi")
    args = p.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    sources = write_sections(out)
    labels, _ = read_volume(f"{DATA}/labels_2d")
    preds, seconds = {}, {}
    runs = {"lrw": ("random_walker", 0.0), "lrw+mse": ("random_walker", 1.0), "mse": ("mse", 0.0)}
    for name, (loss, weight) in runs.items():
        start = time.perf_counter()
        run = train(config(sources, args, loss, weight), out / name, overwrite=True, progress=True)
        seconds[name] = time.perf_counter() - start
        preds[name] = predict_sections(run.last_checkpoint, out / name)
    variants = {
        "LRW, RW loss only (learned diffusivities)": lambda i: np.maximum(preds["lrw"][i], 1e-6),
        "LRW, RW loss + balanced MSE (learned diffusivities)": lambda i: np.maximum(preds["lrw+mse"][i], 1e-6),
        f"boundary map of the MSE net, skimage weights (beta {args.beta:g})":
            lambda i: image_weights(1 - preds["mse"][i].mean(axis=0), beta=args.beta),
        "MSE net's affinities as diffusivities": lambda i: np.maximum(preds["mse"][i], 1e-6),
    }
    results = {}
    for name, weights in variants.items():
        # ids offset per section: labels_2d objects are per section, and so are the seeds
        segs = [np.where(s > 0, s + np.uint64(i << 32), s) for i, s in
                ((i, segment_with_oracle_seeds(weights(i), labels[z])) for i, z in enumerate(TEST))]
        scores = evaluate(np.stack(segs), labels[list(TEST)])
        results[name] = {k: float(scores[k]) for k in ("voi_split", "voi_merge", "arand", "cremi_score")}
    print(f"\nISBI 2012, train z {TRAIN.start}-{TRAIN.stop - 1}, test z {TEST.start}-{TEST.stop - 1}, "
          f"{args.iterations} iterations each (" + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + "), "
          "oracle seeds (one blob per cell)\n")
    print("| random walker weights | VOI split | VOI merge | ARAND | CREMI score |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['voi_split']:.3f} | {r['voi_merge']:.3f} | {r['arand']:.3f} | {r['cremi_score']:.3f} |")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "seconds": seconds, "results": results}, indent=1))


if __name__ == "__main__":
    main()
