"""Learning benchmarks: constrained MALIS weights, a training iteration's time split, prediction
throughput (CPU; and GPU where one is present).

    python benchmarks/bench_learning.py            # all three
    python benchmarks/bench_learning.py --malis    # only the MALIS weights (one core)
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
from bench_segmentation import pin_to_one_core


def bench_malis(repeats: int = 5) -> None:
    from affseg.graph.malis import constrained_malis_weights, malis_pair_counts
    from affseg.synthetic import make_volume

    vol = make_volume((64, 128, 128), seed=0)  # 1 megavoxel, 3 offsets
    constrained_malis_weights(vol.affs[:, :8, :16, :16], vol.labels[:8, :16, :16])  # compile
    for name, fn in (("constrained MALIS weights (2 passes)", constrained_malis_weights),
                     ("MALIS pair counts (1 pass)", malis_pair_counts)):
        times, cpu_times = [], []
        for _ in range(repeats):
            t, cpu = time.perf_counter(), time.process_time()
            fn(vol.affs, vol.labels)
            times.append(time.perf_counter() - t)
            cpu_times.append(time.process_time() - cpu)
        # wall time, and the process's CPU time, which a process sharing the core does not inflate
        print(f"{name}, 64x128x128, 3 offsets, {int(vol.labels.max())} objects, one core: "
              f"median {statistics.median(times):.3f} s of {repeats} (runs {min(times):.3f}-{max(times):.3f} s), "
              f"CPU {statistics.median(cpu_times):.3f} s")


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
    args = p.parse_args()
    if args.malis:
        pin_to_one_core()
        bench_malis()
        return
    checkpoint = bench_training(args.iterations, args.device)
    bench_prediction(checkpoint, args.device)


if __name__ == "__main__":
    main()
