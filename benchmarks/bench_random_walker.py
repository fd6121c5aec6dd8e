"""Random-walker benchmarks: affseg against scikit-image on the same weights and seeds, and the
Learned Random Walker's exact (adjoint) backward against the paper's sampled one.

    python benchmarks/bench_random_walker.py                 # everything (about 25 min on 2 cores)
    python benchmarks/bench_random_walker.py --solver        # affseg vs skimage, 256x256x64, 50 labels
    python benchmarks/bench_random_walker.py --gradient      # forward/backward 256^2 and 64^3

Each solver runs in its own process (peak memory from /proc VmHWM). skimage and pyamg are single
threaded; affseg is reported on one core (pinned) and on all cores of the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_segmentation import _status_mb, pin_to_one_core


def problem(shape, n_labels: int, seed: int = 0, min_size: int | None = 500):
    """A synthetic EM image in [0, 1] and one 3x5x5 seed blob in each of ``n_labels`` objects,
    drawn among the objects over ``min_size`` voxels (``None``: among the ``2 n_labels`` largest,
    for small images)."""
    from affseg.synthetic import make_volume

    vol = make_volume(shape, seed=seed)
    image = vol.raw.astype(np.float64) / 255
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int64)
    ids, sizes = np.unique(vol.labels, return_counts=True)
    candidates = ids[np.argsort(sizes)[::-1][:2 * n_labels]] if min_size is None else ids[sizes > min_size]
    for k, obj in enumerate(rng.choice(candidates, n_labels, replace=False), start=1):
        where = np.argwhere(vol.labels == obj)
        z, y, x = where[rng.integers(len(where))]
        seeds[max(z - 1, 0):z + 2, max(y - 2, 0):y + 3, max(x - 2, 0):x + 3] = k
    return image, seeds


def run_one(method: str, shape, n_labels: int, tol: float, one_core: bool) -> dict:
    if one_core:
        pin_to_one_core()
    image, seeds = problem(shape, n_labels)
    start = time.perf_counter()
    if method.startswith("skimage"):
        from skimage.segmentation import random_walker as skimage_random_walker

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probs = skimage_random_walker(image, seeds, beta=130, mode=method.split(":")[1], tol=tol,
                                          return_full_prob=True)
    else:
        from affseg.graph.random_walker import image_weights, random_walker

        _, probs = random_walker(image_weights(image, beta=130), seeds, solver=method.split(":")[1], tol=tol,
                                 return_probabilities=True)
    seconds = time.perf_counter() - start
    np.save(os.environ["RW_BENCH_OUT"], probs.astype(np.float32))
    return {"method": method, "seconds": seconds, "peak_mb": _status_mb("VmHWM")}


ALL_RUNS = ("affseg:cg:1", "affseg:cg:all", "skimage:cg_mg:1", "skimage:cg_j:1")


def bench_solver(shape=(64, 256, 256), n_labels: int = 50, tol: float = 1e-3, runs=ALL_RUNS) -> list[dict]:
    """affseg vs skimage (cg_mg: pyamg Ruge-Stuben; cg_j: Jacobi, skimage's default)."""
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {}
        runs = [(run.rsplit(":", 1)[0], run.endswith(":1")) for run in runs]
        # warm the numba cache so that compilation is not timed
        subprocess.run([sys.executable, __file__, "--one", "affseg:cg", "--shape", "8", "32", "32",
                        "--labels", "3", "--tol", str(tol)], check=True, env={**os.environ, "RW_BENCH_OUT": f"{tmp}/warm.npy"},
                       stdout=subprocess.DEVNULL)
        for method, one_core in runs:
            out = f"{tmp}/{method.replace(':', '_')}_{int(one_core)}.npy"
            cmd = [sys.executable, __file__, "--one", method, "--shape", *map(str, shape), "--labels", str(n_labels),
                   "--tol", str(tol)] + (["--one-core"] if one_core else [])
            done = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                  env={**os.environ, "RW_BENCH_OUT": out})
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row["cores"] = 1 if one_core else len(os.sched_getaffinity(0))
            outputs[(method, one_core)] = out
            rows.append(row)
            print(f"{method:<15} {row['cores']} core(s): {row['seconds']:7.2f} s, peak {row['peak_mb']:7.0f} MB", flush=True)
        ours = np.load(outputs[("affseg:cg", True)])
        for method in [m for m, one in outputs if m.startswith("skimage")]:
            diff = float(np.abs(np.load(outputs[(method, True)]) - ours).max())
            print(f"max |p_affseg - p_{method.split(':')[1]}| at tol {tol}: {diff:.2e}")
    base = {r["method"]: r for r in rows if r["cores"] == 1}
    for ref in [m for m in base if m.startswith("skimage")]:
        print(f"speed-up over {ref} (one core each): {base[ref]['seconds'] / base['affseg:cg']['seconds']:.2f}x, "
              f"memory ratio {base['affseg:cg']['peak_mb'] / base[ref]['peak_mb']:.2f}")
    return rows


def bench_gradient(samples_2d: int = 1000, samples_3d: int = 100) -> None:
    """Forward, exact backward and the paper's sampled backward; cosine similarity of the two."""
    import torch

    from affseg.learn.random_walker import random_walker_probabilities

    for shape, n_labels, samples in (((256, 256), 20, samples_2d), ((64, 64, 64), 20, samples_3d)):
        image, seeds = problem((1,) + shape if len(shape) == 2 else shape, n_labels, seed=1, min_size=None)
        if len(shape) == 2:
            image, seeds = image[0], seeds[0]
        from affseg.graph.random_walker import image_weights

        weights = torch.from_numpy(image_weights(image, beta=130))[None]
        seeds_t = torch.from_numpy(seeds)[None]
        target = torch.from_numpy(np.random.default_rng(0).integers(0, n_labels, size=(1,) + shape))
        grads, times = {}, {}
        for mode in ("exact", "sampled"):
            w = weights.clone().requires_grad_()
            t0 = time.perf_counter()
            probs = random_walker_probabilities(w, seeds_t, gradient=mode, num_samples=samples, seed=0,
                                                num_labels=n_labels, tol=1e-8)
            t1 = time.perf_counter()
            loss = torch.nn.functional.nll_loss(torch.log(probs + 1e-6), target)
            loss.backward()
            t2 = time.perf_counter()
            grads[mode], times[mode] = w.grad.reshape(-1).numpy(), (t1 - t0, t2 - t1)
        exact, sampled = grads["exact"], grads["sampled"]
        on = sampled != 0
        cosine = float(exact @ sampled / (np.linalg.norm(exact) * np.linalg.norm(sampled)))
        cosine_on = float(exact[on] @ sampled[on] / (np.linalg.norm(exact[on]) * np.linalg.norm(sampled[on])))
        print(f"{'x'.join(map(str, shape))}, {n_labels} labels: forward {times['exact'][0]:.2f} s; backward exact "
              f"{times['exact'][1]:.2f} s, sampled ({samples} voxels) {times['sampled'][1]:.2f} s; cosine(sampled, exact) "
              f"{cosine:.3f} over all edges, {cosine_on:.3f} on the sampled edges", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solver", action="store_true")
    parser.add_argument("--gradient", action="store_true")
    parser.add_argument("--runs", nargs="+", default=list(ALL_RUNS),
                        help="method:cores pairs (cores 1 = pinned to one core, all = the machine)")
    parser.add_argument("--samples-2d", type=int, default=1000, help="sampled gradient: voxels (256x256)")
    parser.add_argument("--samples-3d", type=int, default=100, help="sampled gradient: voxels (64^3)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, nargs="+", default=[64, 256, 256])
    parser.add_argument("--labels", type=int, default=50)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--one-core", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, tuple(args.shape), args.labels, args.tol, args.one_core)))
        return
    both = not (args.solver or args.gradient)
    if args.solver or both:
        bench_solver(tuple(args.shape), args.labels, args.tol, args.runs)
    if args.gradient or both:
        bench_gradient(args.samples_2d, args.samples_3d)


if __name__ == "__main__":
    main()
