"""End to end at scale: a synthetic volume written blockwise, then MALA blockwise, killed halfway
and resumed, on this machine's cores.

    python benchmarks/bench_gigavoxel.py /big/disk/gv.zarr                         # 256 x 2048 x 2048
    python benchmarks/bench_gigavoxel.py small.zarr --shape 64 512 512              # a quick look
    python benchmarks/bench_gigavoxel.py gv.zarr --reuse --mala-mode hierarchical   # lsd's agglomeration

Three ``affseg`` commands, each a fresh process (``--workers`` Dask worker processes):
``synth --blockwise`` (labels, raw, uint8 affinities), then ``segment --blockwise`` (MALA,
thresholds 0.3 0.5 0.7), SIGKILLed once about half of its fragment blocks are recorded done, then
the same ``segment`` command again, which resumes. Printed per command: wall time, the peak
resident memory of the largest process (the client or a worker: ``ru_maxrss`` of the children)
and the blocks computed; at the end the disk use and the resumed run's counts. The volume is
left in place (delete it yourself); an existing one is reused by ``--reuse``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

THRESHOLDS = ["0.3", "0.5", "0.7"]


def affseg(*args) -> list[str]:
    return [sys.executable, "-m", "affseg.cli", *map(str, args)]


def peak_children_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def run(command: list[str], label: str) -> float:
    """Run to the end; print wall time and the children's peak RSS so far."""
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    print(f"{label:<34} {seconds:8.1f} s   peak RSS of the largest process so far {peak_children_mb():7.0f} MB",
          flush=True)
    return seconds


def done_blocks(store: Path, stage: str) -> int:
    from affseg.blockwise.store import open_store

    try:
        with open_store(store) as s:
            return len(s.done_blocks(stage)) if stage in s.stages() else 0
    except Exception:  # not created yet
        return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("container", type=Path, help="the zarr container to write (e.g. /big/disk/gv.zarr)")
    p.add_argument("--shape", type=int, nargs=3, default=[256, 2048, 2048])
    p.add_argument("--block-shape", default="64,256,256")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--reuse", action="store_true", help="keep an existing synthetic volume")
    p.add_argument("--mala-mode", choices=["exact", "hierarchical"], default="exact",
                   help="segment --mala-mode: the agglomeration of the whole graph, or lsd's block by block")
    args = p.parse_args()
    from affseg.blockwise.layout import BlockLayout

    block = [int(v) for v in args.block_shape.split(",")]
    n_blocks = len(BlockLayout(tuple(args.shape), tuple(block)))
    voxels = args.shape[0] * args.shape[1] * args.shape[2]
    print(f"volume {tuple(args.shape)} = {voxels / 1e9:.3f} gigavoxels, blocks {tuple(block)}: {n_blocks}; "
          f"{args.workers} workers; MALA {args.mala_mode}", flush=True)
    container = args.container
    if not (args.reuse and (container / "affs").exists()):
        run(affseg("synth", container, "--shape", *args.shape, "--blockwise", "--block-shape", args.block_shape,
                   "--workers", args.workers, "--overwrite"), "synth --blockwise")
    seg = container / "seg"
    store = Path(f"{container}.graph.sqlite")
    command = affseg("segment", container / "affs", seg, "--method", "mala", "--thresholds", *THRESHOLDS,
                     "--blockwise", "--block-shape", args.block_shape, "--workers", args.workers,
                     "--mala-mode", args.mala_mode, "--overwrite")
    stage = "mala:seg:fragments"
    started = time.perf_counter()
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while job.poll() is None and done_blocks(store, stage) < n_blocks // 2:
        time.sleep(1)
    os.killpg(job.pid, signal.SIGKILL)  # the client and its Dask workers
    job.wait()
    killed = time.perf_counter() - started
    at_kill = done_blocks(store, stage)
    print(f"{'segment, killed':<34} {killed:8.1f} s   {at_kill} of {n_blocks} fragment blocks done", flush=True)
    resumed = command[:-1]  # the same command without --overwrite resumes
    started = time.perf_counter()
    out = subprocess.run(resumed, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    print(f"{'segment, resumed':<34} {seconds:8.1f} s   peak RSS of the largest process so far "
          f"{peak_children_mb():7.0f} MB", flush=True)
    print(out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "")
    record = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) / 1e9
              for p in container.iterdir() if p.is_dir()}
    print("disk (GB):", json.dumps({k: round(v, 2) for k, v in sorted(record.items())}))
    print(f"total segment time (killed + resumed): {killed + seconds:.1f} s; "
          f"free disk {shutil.disk_usage(container).free / 1e9:.0f} GB")


if __name__ == "__main__":
    main()
