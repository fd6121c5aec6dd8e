"""Fragments on real shapes: affseg's fragment floods against a boundary-map watershed, all
agglomerated to the best threshold (``hist_quant_75``).

    python benchmarks/bench_fragments.py --input neuroproof:0:low neuroproof:0:medium neuroproof:0:high
    python benchmarks/bench_fragments.py --input pred.zarr/affs,labels=pred.zarr/labels

Rows per input:

- ``affseg flood=boundary`` (the default) and ``affseg flood=distance`` (the MALA/lsd recipe):
  ``affseg.extract_fragments`` + ``affseg.agglomerate``;
- ``boundary-map watershed + waterz``: scikit-image's watershed on ``1 - mean nearest-neighbour
  affinity`` from lsd-style seeds (plateaus of maxima of the boundary distance, maximum filter
  10, as ``lsd.post.fragments``), every voxel assigned, then ``waterz.agglomerate``.

Scores: VOI split / merge (bits) and ARAND against the labels at the threshold of lowest VOI
among 0.05, 0.10, ..., 0.95, and the fragments' own VOI split. Untimed: speed is in
bench_segmentation.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_segmentation import waterz_segmentations
from inputs import INPUT_HELP, NEAREST, check_spec, load_input

THRESHOLDS = [round(0.05 * k, 2) for k in range(1, 20)]
MERGE_FUNCTION = "hist_quant_75"  # bench_segmentation.MERGE_FUNCTION


def boundary_watershed(affs: np.ndarray) -> np.ndarray:
    from scipy.ndimage import distance_transform_edt, label, maximum_filter
    from skimage.segmentation import watershed

    mean = affs.mean(axis=0)
    distances = distance_transform_edt(mean > 0.5)
    seeds, _ = label((maximum_filter(distances, 10) == distances) & (distances > 0))
    return watershed(1.0 - mean, seeds).astype(np.uint64)


def affseg_segmentations(affs, fragments):
    from affseg import agglomerate

    result = agglomerate(affs, fragments, thresholds=THRESHOLDS, merge_function=MERGE_FUNCTION)
    for i in range(len(THRESHOLDS)):
        yield result.segmentation(i)


def best_row(name, fragments, segmentations, labels) -> dict:
    from affseg import evaluate

    rows = [(t, evaluate(seg, labels)) for t, seg in zip(THRESHOLDS, segmentations)]
    t, s = min(rows, key=lambda r: r[1]["voi_split"] + r[1]["voi_merge"])
    return {"method": name, "fragments": len(np.unique(fragments)), "fragment_split": evaluate(fragments, labels)["voi_split"],
            "threshold": t, **s}


def compare(spec: str) -> list[dict]:
    from affseg import extract_fragments

    affs, labels, _, _ = load_input(spec, NEAREST)
    if labels is None:
        raise SystemExit(f"{spec}: the input has no labels to score against")
    affs = np.ascontiguousarray(affs)
    rows = []
    for flood in ("boundary", "distance"):
        fragments = extract_fragments(affs, flood=flood)
        rows.append(best_row(f"affseg flood={flood}", fragments, affseg_segmentations(affs, fragments), labels))
    fragments = boundary_watershed(affs)
    rows.append(best_row("boundary-map watershed + waterz", fragments, waterz_segmentations(affs, fragments, THRESHOLDS, MERGE_FUNCTION),
                           labels))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", type=check_spec, default=["neuroproof:0:medium"], metavar="SPEC",
                        help=INPUT_HELP)
    args = parser.parse_args()
    print("| input | method | fragments | fragments' VOI split | best threshold | VOI split | VOI merge | VOI | ARAND |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in args.input:
        for r in compare(spec):
            print(f"| {spec} | {r['method']} | {r['fragments']} | {r['fragment_split']:.2f} | {r['threshold']} | "
                  f"{r['voi_split']:.3f} | {r['voi_merge']:.3f} | {r['voi_split'] + r['voi_merge']:.3f} | "
                  f"{r['arand']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
