"""Learning benchmarks: constrained MALIS weights, a training iteration's time split, prediction
throughput (CPU; and GPU where one is present).

    python benchmarks/bench_learning.py            # all three
    python benchmarks/bench_learning.py --malis    # only the MALIS weights (one core)
    python benchmarks/bench_learning.py --malis --input curves --shape 64 128 128   # on another input
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from bench_segmentation import pin_to_one_core
from inputs import add_input_argument, load_input


def bench_malis(repeats: int = 5, spec: str = "synthetic", shape=(64, 128, 128)) -> None:
    """Constrained MALIS weights and MALIS pair counts on ``spec`` (benchmarks/inputs.py) at
    ``shape`` (generated, or cropped from the corner), 3 nearest-neighbour offsets."""
    from affseg.graph.malis import constrained_malis_weights, malis_pair_counts

    affs, labels, _, desc = load_input(spec, shape=shape)
    if labels is None:
        raise SystemExit(f"--malis needs labels: {spec!r} has none")
    constrained_malis_weights(affs[:, :8, :16, :16], labels[:8, :16, :16])  # compile
    print(f"input: {desc}; {len(np.unique(labels[labels > 0]))} objects, {labels.size / 1e6:.2f} MV, "
          f"{np.mean((affs == 0) | (affs == 1)):.1%} of the affinities exactly 0 or 1")
    for name, fn in (("constrained MALIS weights (2 passes)", constrained_malis_weights),
                     ("MALIS pair counts (1 pass)", malis_pair_counts)):
        times, cpu_times = [], []
        for _ in range(repeats):
            t, cpu = time.perf_counter(), time.process_time()
            fn(affs, labels)
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - cpu)
        # wall time, and the process's CPU time, which a process sharing the core does not inflate
        print(f"{name}, one core: median {statistics.median(times):.3f} s of {repeats} "
              f"(runs {min(times):.3f}-{max(times):.3f} s), CPU {statistics.median(cpu_times):.3f} s")


def bench_training(iterations: int, device: str) -> Path:
    from affseg.demo import demo_config
    from affseg.io import write_volume
    from affseg.learn.train import train
    from affseg.synthetic import make_volume

    tmp = Path(tempfile.mkdtemp())
    vol = make_volume((48, 160, 160), seed=0)
    write_volume(tmp / "d.zarr" / "raw", vol.raw)
    write_volume(tmp / "d.zarr" / "labels", vol.labels)
    cfg = demo_config(tmp / "d.zarr", iterations, 0)
    cfg["train"]["device"] = device
    run = train(cfg, tmp / "run")
    rows = list(csv.DictReader(run.log.open()))[5:]  # skip warm-up
    parts = ["time_data", "time_forward", "time_loss", "time_backward"]
    means = {p: statistics.mean(float(r[p]) for r in rows) for p in parts}
    total = sum(means.values())
    model = cfg["model"]
    print(f"training iteration (demo U-Net: {model['num_fmaps']} fmaps, factors {model['downsample_factors']}, "
          f"output {'x'.join(map(str, model['output_shape']))}, {len(cfg['targets']['offsets'])} offsets, "
          f"{device}): {total * 1000:.0f} ms = "
          + ", ".join(f"{p[5:]} {means[p] * 1000:.0f} ms" for p in parts))
    # the MALIS phase: loss time with constrained MALIS instead of MSE
    cfg["train"]["malis_start"] = 1
    cfg["train"]["iterations"] = max(10, iterations // 4)
    run = train(cfg, tmp / "malis")
    rows = list(csv.DictReader(run.log.open()))[3:]
    print(f"  with constrained MALIS: loss {statistics.mean(float(r['time_loss']) for r in rows) * 1000:.0f} ms")
    return run.last_checkpoint


def bench_prediction(checkpoint: Path, device: str) -> None:
    from affseg.learn.predict import predict
    from affseg.synthetic import make_volume

    raw = make_volume((48, 256, 256), seed=2).raw
    out = Path(tempfile.mkdtemp()) / "p.zarr"
    t = time.perf_counter()
    predict(checkpoint, raw, out, device=device)
    seconds = time.perf_counter() - t
    print(f"prediction ({device}), 48x256x256 = {raw.size / 1e6:.1f} MV: {seconds:.1f} s, "
          f"{raw.size / 1e6 / seconds:.2f} MV/s")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--malis", action="store_true")
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--device", default="cpu")
    add_input_argument(p)
    p.add_argument("--shape", type=int, nargs=3, default=[64, 128, 128], help="--malis: the input's shape (zyx)")
    args = p.parse_args()
    if args.malis:
        pin_to_one_core()
        bench_malis(spec=args.input, shape=args.shape)
        return
    checkpoint = bench_training(args.iterations, args.device)
    bench_prediction(checkpoint, args.device)


if __name__ == "__main__":
    main()
