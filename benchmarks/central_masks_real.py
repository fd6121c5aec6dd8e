"""Real data: sparse affinities (SNB) vs encoded central-instance masks (ENB) vs both (SNB+ENB).

Trains three identical small U-Nets (same seed and data stream) per data set, on a CPU budget
given as iterations, predicts the held-out part and segments it with the Mutex Watershed on the
affinity head (SNB, SNB+ENB), on the masks' centre read-out and on MaskAggr (ENB, SNB+ENB), and
with GASP (average linkage) on the affinity head and on MaskAggr. Prints VOI split / merge,
ARAND and CREMI score (gt label 0 ignored) as a markdown table.

- neuroproof: ../shared/data/neuroproof_train.h5, train z 0-99, test z 100-149 cropped to
  y, x < 128 (50 x 128 x 128), 3D, 8 offsets (nearest, 4 and 8 voxels); branches 3 x 5 x 5 at
  full resolution and 5 x 7 x 7 at (2, 4, 4).
- isbi: ../shared/data/isbi2012.h5 `labels_2d` (0 = membrane), 2D on sections 0-19, test
  sections 25-29 (each 512 x 512), 6 offsets; branches 5 x 5 at full resolution and 7 x 7 at 4.

    python benchmarks/central_masks_real.py --data neuroproof isbi --iterations 300 --output /tmp/cm
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TYPES = ("snb", "enb", "snb+enb")
SETS = {
    "neuroproof": {
        "file": DATA / "neuroproof_train.h5", "labels": "labels", "train_roi": [[0, 0, 0], [100, 250, 250]],
        "test": (slice(100, 150), slice(0, 128), slice(0, 128)),
        "offsets": [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-4, 0, 0], [0, -4, 0], [0, 0, -4], [0, -8, 0], [0, 0, -8]],
        "branches": [{"window": [3, 5, 5], "factor": [1, 1, 1]}, {"window": [5, 7, 7], "factor": [2, 4, 4]}],
        "downsample": [[2, 2, 2], [2, 2, 2]], "output_shape": [20, 40, 40],
    },
    "isbi": {
        "file": DATA / "isbi2012.h5", "labels": "labels_2d", "train_sections": range(0, 20),
        "test": (slice(25, 30), slice(None), slice(None)),
        "offsets": [[-1, 0], [0, -1], [-4, 0], [0, -4], [-12, 0], [0, -12]],
        "branches": [{"window": [5, 5], "factor": [1, 1]}, {"window": [7, 7], "factor": [4, 4]}],
        "downsample": [[2, 2], [2, 2]], "output_shape": [64, 64],
    },
}


def sources(name: str, out: Path) -> list[dict]:
    from affseg import read_volume, write_volume

    spec = SETS[name]
    if "train_roi" in spec:
        return [{"raw": f"{spec['file']}/raw", "labels": f"{spec['file']}/{spec['labels']}",
                 "roi": spec["train_roi"]}]
    raw, _ = read_volume(f"{spec['file']}/raw")
    labels, _ = read_volume(f"{spec['file']}/{spec['labels']}")
    found = []
    for z in spec["train_sections"]:  # the 2D sampler crops 2D sources
        group = out / "sections.zarr" / f"z{z:02d}"
        write_volume(group / "raw", raw[z], overwrite=True)
        write_volume(group / "labels", labels[z], overwrite=True)
        found.append({"raw": str(group / "raw"), "labels": str(group / "labels")})
    return found


def config(name: str, model_type: str, srcs: list[dict], args) -> dict:
    spec = SETS[name]
    return {
        "data": {"train": srcs, "min_labelled": 0.5, "num_workers": 0},
        "model": {"num_fmaps": 8, "fmap_inc_factor": 3, "downsample_factors": spec["downsample"],
                  "output_shape": spec["output_shape"], "type": model_type},
        "targets": {"offsets": spec["offsets"]},
        "masks": {"branches": spec["branches"], "centres": 64, "boundary_margin": args.boundary_margin},
        "augment": {} if name == "neuroproof" else {"elastic_sigma": 0.0},
        "train": {"iterations": args.iterations, "learning_rate": 5e-4, "checkpoint_every": args.iterations,
                  "loss": "mse", "seed": args.seed, "device": "cpu"},
    }


def scores(seg: np.ndarray, gt: np.ndarray) -> dict:
    from affseg import evaluate

    return {k: float(v) for k, v in evaluate(seg, gt).items()
            if k in ("voi_split", "voi_merge", "arand", "cremi_score")}


def segment_all(affs: np.ndarray, offsets, gt: np.ndarray, two_d: bool) -> dict:
    from affseg import gasp, mutex_watershed

    def per_section(fn):
        if not two_d:
            return fn(affs)
        return np.stack([fn(affs[:, z]) + np.uint64(z << 32) for z in range(affs.shape[1])])

    with contextlib.redirect_stdout(io.StringIO()):
        mws = per_section(lambda a: mutex_watershed(a, offsets))
        average = per_section(lambda a: gasp(a, offsets, linkage="mean"))
    return {"mws": scores(mws, gt), "gasp": scores(average, gt)}


def run(name: str, model_type: str, args) -> list[dict]:
    from affseg import open_volume, read_volume
    from affseg.learn.predict import predict
    from affseg.learn.train import train

    spec = SETS[name]
    out = Path(args.output) / name / model_type.replace("+", "_")
    start = time.perf_counter()
    ckpt = train(config(name, model_type, sources(name, out), args), out / "run", overwrite=True).last_checkpoint
    minutes = (time.perf_counter() - start) / 60
    raw, _ = read_volume(f"{spec['file']}/raw")
    gt, _ = read_volume(f"{spec['file']}/{spec['labels']}")
    raw, gt = raw[spec["test"]], gt[spec["test"]]
    two_d = name == "isbi"
    rows = []
    readouts = ["aggregate", "centre"] if model_type != "snb" else [None]
    for readout in readouts:
        written = predict(ckpt, raw, out / f"pred_{readout}.zarr", overwrite=True, readout=readout)
        kinds = {"affs": "affinity head"} if readout != "centre" and "affs" in written else {}
        kinds.update({"mask_affs": f"masks, {readout}"} if "mask_affs" in written else {})
        for head, label in kinds.items():
            affs, _ = read_volume(written[head])
            offsets = np.array(open_volume(written[head]).data.attrs["offsets"])
            if two_d:  # a 2D net over a stack writes 3D offsets, with a z channel: segment each section
                in_plane = offsets[:, 0] == 0
                affs, offsets = affs[in_plane], offsets[in_plane][:, 1:]
            results = segment_all(affs, offsets, gt, two_d)
            for method, s in results.items():
                if method == "gasp" and readout == "centre":
                    continue
                rows.append({"data": name, "model": model_type.upper(), "affinities": label, "method": method,
                             "train_minutes": minutes, **s})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", choices=sorted(SETS), default=sorted(SETS))
    p.add_argument("--types", nargs="+", choices=TYPES, default=list(TYPES))
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--boundary-margin", type=int, nargs="+", default=[2],
                   help="masks.boundary_margin: one int or one per axis (e.g. 0 1 1)")
    p.add_argument("--output", required=True)
    args = p.parse_args()
    args.boundary_margin = args.boundary_margin[0] if len(args.boundary_margin) == 1 else args.boundary_margin
    rows = []
    for name in args.data:
        for model_type in args.types:
            rows += run(name, model_type, args)
            Path(args.output).mkdir(parents=True, exist_ok=True)
            (Path(args.output) / "rows.json").write_text(json.dumps(rows, indent=1))
    print(f"| data | model | affinities | method | VOI split | VOI merge | ARAND | CREMI | train (min) |  "
          f"seed {args.seed}, {args.iterations} iterations, boundary margin {args.boundary_margin}")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['data']} | {r['model']} | {r['affinities']} | {r['method']} | {r['voi_split']:.3f} | "
              f"{r['voi_merge']:.3f} | {r['arand']:.3f} | {r['cremi_score']:.3f} | {r['train_minutes']:.1f} |")


if __name__ == "__main__":
    main()
