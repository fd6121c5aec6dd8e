"""MaskAggr throughput and peak memory: affinities for 12 offsets from 5 x 7 x 7 central-instance
masks (affseg.central_masks), the centre read-out beside it.

    python benchmarks/bench_mask_aggregation.py --input synthetic:0 neuroproof:0 --shape 32x128x128

The latent maps and the decoder are a stand-in for a trained network (a random 32-d code per
object of the input's labels plus noise; a linear decoder with a sigmoid): the affinities code
sees what it sees with a trained decoder (soft masks decoded tile by tile, never all at once; its
loops do the same work whatever the values) and the decoder's time is measured apart, so that
the figure is the aggregation's. Peak memory includes the decoder's work per tile. No other
implementation of MaskAggr exists (the authors' code reads the centre mask only), so the figures
are absolute; each configuration runs in a fresh process (peak resident memory above the
process's memory after loading the labels, VmHWM), interleaved over the repeats, medians reported.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_segmentation import _status_mb, run_in_process
from inputs import INPUT_HELP, check_spec, load_input

WINDOW = (5, 7, 7)
OFFSETS = [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-2, 0, 0], [0, -3, 0], [0, 0, -3],
           [0, -3, -3], [0, 3, -3], [-1, -2, -2], [-2, -3, 0], [0, -2, 3], [-1, 0, -3]]
CONFIGS = ("aggregate:1", "aggregate:all", "centre:1")


LATENT = 32


def latents_and_decoder(labels: np.ndarray, seed: int = 0):
    """A stand-in for a trained network: a random 32-d code per object plus noise at every voxel,
    and a linear decoder with a sigmoid; it counts its own time."""
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(labels, return_inverse=True)
    codes = rng.normal(size=(inverse.max() + 1, LATENT)).astype(np.float32)
    latents = codes[inverse.reshape(-1)] + 0.3 * rng.normal(size=(labels.size, LATENT)).astype(np.float32)
    latents = np.ascontiguousarray(latents.T.reshape((LATENT,) + labels.shape))
    weights = (rng.normal(size=(LATENT, int(np.prod(WINDOW)))) / np.sqrt(LATENT)).astype(np.float32)
    spent = [0.0]

    def decode(batch: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = 1 / (1 + np.exp(-(batch @ weights)))
        spent[0] += time.perf_counter() - start
        return out.reshape((len(batch),) + WINDOW)

    return latents, decode, spent


def worker(config: str, spec: str, shape: tuple[int, ...]) -> dict:
    readout, threads = config.split(":")
    if threads == "1":
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import numba

    from affseg.central_masks import affinities_from_latents

    numba.set_num_threads(1 if threads == "1" else numba.config.NUMBA_NUM_THREADS)
    _, labels, _, _ = load_input(spec, shape=shape)
    latents, decode, spent = latents_and_decoder(labels)
    affinities_from_latents(latents[:, :6, :20, :20], decode, OFFSETS, window=WINDOW, readout=readout)  # compile
    spent[0] = 0.0
    rss_before = _status_mb("VmRSS")
    start = time.perf_counter()
    affinities_from_latents(latents, decode, OFFSETS, window=WINDOW, readout=readout)
    seconds = time.perf_counter() - start
    return {"config": config, "seconds": seconds, "decode_seconds": spent[0], "voxels": int(labels.size),
            "peak_increase_mb": _status_mb("VmHWM") - rss_before, "threads": numba.get_num_threads()}


def benchmark(spec: str, shape: tuple[int, ...], repeats: int) -> None:
    runs = {c: [] for c in CONFIGS}
    for _ in range(repeats):  # interleaved: load drifts hit every configuration alike
        for config in CONFIGS:
            runs[config].append(run_in_process(["--worker", config, spec, "x".join(map(str, shape))],
                                               env_extra={"NUMBA_NUM_THREADS": str(len(os.sched_getaffinity(0)))},
                                               script=__file__))
    voxels = runs[CONFIGS[0]][0]["voxels"]
    print(f"\n{spec}, {'x'.join(map(str, shape))} ({voxels / 1e6:.2f} MV), {len(OFFSETS)} offsets, "
          f"{'x'.join(map(str, WINDOW))} masks, median of {repeats}")
    print(f"{'readout:threads':<18}{'total (s)':>10}{'decoder (s)':>12}{'affinities (s)':>15}{'MV/s':>8}"
          f"{'peak-start (MB)':>16}{'masks in RAM (MB)':>18}")
    for config, rows in runs.items():
        total = float(np.median([r["seconds"] for r in rows]))
        decode = float(np.median([r["decode_seconds"] for r in rows]))
        own = float(np.median([r["seconds"] - r["decode_seconds"] for r in rows]))
        peak = max(r["peak_increase_mb"] for r in rows)
        all_masks = voxels * int(np.prod(WINDOW)) * 4 / 2**20
        label = f"{config.split(':')[0]}:{rows[0]['threads']}"
        print(f"{label:<18}{total:>10.2f}{decode:>12.2f}{own:>15.2f}{voxels / own / 1e6:>8.2f}{peak:>16.0f}"
              f"{all_masks:>18.0f}")
    print("(MV/s: grid voxels per second of the affinities code, decoder time excluded; 'masks in RAM': what "
          "holding every mask of the volume would take, for comparison with the peak)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        config, spec, shape = sys.argv[2:5]
        print(json.dumps(worker(config, spec, tuple(int(n) for n in shape.split("x")))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", type=check_spec, default=["synthetic:0", "neuroproof:0"],
                        help=INPUT_HELP + " (only the labels are used)")
    parser.add_argument("--shape", default="32x128x128", help="crop of the input, ZxYxX (default 32x128x128)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shape = tuple(int(n) for n in args.shape.split("x"))
    for spec in args.input:
        benchmark(spec, shape, args.repeats)


if __name__ == "__main__":
    main()
