"""Random-walker benchmarks: affseg against scikit-image on the same weights and seeds, and the
Learned Random Walker's exact (adjoint) backward against the paper's sampled one.

    python benchmarks/bench_random_walker.py                 # everything (about 25 min on 2 cores)
    python benchmarks/bench_random_walker.py --solver        # affseg vs skimage, 256x256x64, 50 labels
    python benchmarks/bench_random_walker.py --gradient      # forward/backward 256^2 and 64^3
    python benchmarks/bench_random_walker.py --solver --input neuroproof --shape 64 128 128
    python benchmarks/bench_random_walker.py --solver --shape 32 128 128 --labels 20 \
        --seeds voxels --seed-count 400 --runs affseg:cg:1 skimage:cg_mg:1 --repeats 3

Each solver runs in its own process (peak memory from /proc VmHWM). skimage and pyamg are single
threaded; affseg is reported on one core (pinned) and on all cores of the machine. The image and
the seeds are made once by the parent and handed to each solver's process as .npy files, untimed.

Input. Without --input: the raw of affseg.synthetic.make_volume (--shape, seed 0; the published
figures). With --input SPEC (benchmarks/inputs.py): the image is the mean of the input's
nearest-neighbour affinities (a boundary map, dark on membranes as EM raw is), float64 in [0, 1];
the seed blobs go into its label objects (other than 0), or, for a file without labels, into
affseg's fragments of its affinities. --shape then sets the generated shape (synthetic, curves)
or crops the input from its corner; --gradient crops the 2D problem from section 0 (256 x 256)
and the 3D one from the corner (64 x 64 x 64).
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
from inputs import NEAREST, add_input_argument, load_input


def problem(shape, n_labels: int, seed: int = 0, min_size: int | None = 500, kind: str = "blobs",
            count: int | None = None):
    """A synthetic EM image in [0, 1] and seeds in ``n_labels`` objects, drawn among the objects
    over ``min_size`` voxels (``None``: among the ``2 n_labels`` largest, for small images): one
    3x5x5 blob in each (``kind="blobs"``) or ``count`` single voxels spread over them
    (``kind="voxels"``, see :func:`seed_voxels`)."""
    from affseg.synthetic import make_volume

    vol = make_volume(shape, seed=seed)
    image = vol.raw.astype(np.float64) / 255
    return image, make_seeds(vol.labels, n_labels, kind, count, seed, min_size)


def make_seeds(labels: np.ndarray, n_labels: int, kind: str = "blobs", count: int | None = None, seed: int = 0,
               min_size: int | None = 500) -> np.ndarray:
    """:func:`seed_blobs` or :func:`seed_voxels` of ``labels``."""
    if kind == "blobs":
        return seed_blobs(labels, n_labels, seed, min_size)
    if kind == "voxels":
        return seed_voxels(labels, n_labels, 20 * n_labels if count is None else count, seed, min_size)
    raise ValueError(f"unknown seed kind {kind!r}; choose blobs or voxels")


def _seed_objects(labels: np.ndarray, n_labels: int, rng, min_size: int | None) -> np.ndarray:
    """``n_labels`` random object ids of ``labels`` among those over ``min_size`` voxels (``None``, or
    too few of them: among the ``2 n_labels`` largest)."""
    ids, sizes = np.unique(labels, return_counts=True)
    ids, sizes = ids[ids != 0], sizes[ids != 0]
    candidates = None if min_size is None else ids[sizes > min_size]
    if candidates is None or len(candidates) < n_labels:
        candidates = ids[np.argsort(sizes)[::-1][:2 * n_labels]]
    if len(candidates) < n_labels:
        print(f"only {len(candidates)} objects in the input: {len(candidates)} seed labels instead of {n_labels}",
              file=sys.stderr)
        n_labels = len(candidates)
    return rng.choice(candidates, n_labels, replace=False)


def seed_blobs(labels: np.ndarray, n_labels: int, seed: int = 0, min_size: int | None = 500) -> np.ndarray:
    """One 3x5x5 seed blob (ids 1..n_labels) around a random voxel of each of ``n_labels`` random
    objects of ``labels`` (3D; 0 is no object), drawn among the objects over ``min_size`` voxels
    (``None``, or too few of them: among the ``2 n_labels`` largest)."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(labels.shape, np.int64)
    for k, obj in enumerate(_seed_objects(labels, n_labels, rng, min_size), start=1):
        where = np.argwhere(labels == obj)
        z, y, x = where[rng.integers(len(where))]
        seeds[max(z - 1, 0):z + 2, max(y - 2, 0):y + 3, max(x - 2, 0):x + 3] = k
    return seeds


def seed_voxels(labels: np.ndarray, n_labels: int, count: int, seed: int = 0, min_size: int | None = 500) -> np.ndarray:
    """``count`` single-voxel seeds (ids 1..n_labels), ``count // n_labels`` (one more for the first
    ``count % n_labels``) at distinct random voxels of each of ``n_labels`` random objects of
    ``labels``, drawn as in :func:`seed_blobs`; an object smaller than its share gets all its voxels."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(labels.shape, np.int64)
    flat_labels, flat_seeds = labels.reshape(-1), seeds.reshape(-1)
    objects = _seed_objects(labels, n_labels, rng, min_size)
    for k, obj in enumerate(objects, start=1):
        where = np.flatnonzero(flat_labels == obj)
        share = count // len(objects) + (k <= count % len(objects))
        flat_seeds[rng.choice(where, min(share, where.size), replace=False)] = k
    return seeds


def input_image(spec: str, seed: int = 0, shape=None) -> tuple[np.ndarray, np.ndarray, str]:
    """The image (mean nearest-neighbour affinity, float64) and objects of an input spec: its labels,
    or affseg's fragments of its affinities for a file without labels."""
    affs, labels, offsets, desc = load_input(spec, NEAREST, seed=seed, shape=shape)
    if labels is None:
        from affseg import extract_fragments

        labels = extract_fragments(affs, offsets)
        desc += "; seeds in affseg's fragments"
    return affs.mean(axis=0, dtype=np.float64), labels, desc + "; image = mean affinity"


def run_one(method: str, data_dir: Path, tol: float, one_core: bool) -> dict:
    if one_core:
        pin_to_one_core()
    image, seeds = np.load(data_dir / "image.npy"), np.load(data_dir / "seeds.npy")
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


def save_problem(data_dir: Path, image: np.ndarray, seeds: np.ndarray) -> Path:
    data_dir.mkdir(exist_ok=True)
    np.save(data_dir / "image.npy", image)
    np.save(data_dir / "seeds.npy", seeds)
    return data_dir


def bench_solver(shape=(64, 256, 256), n_labels: int = 50, tol: float = 1e-3, runs=ALL_RUNS, spec: str | None = None,
                 seed: int = 0, kind: str = "blobs", count: int | None = None, repeats: int = 1) -> list[dict]:
    """affseg vs skimage (cg_mg: pyamg Ruge-Stuben; cg_j: Jacobi, skimage's default), each run in a
    fresh process; with ``repeats`` > 1 the runs are interleaved (A, B, A, B, ...) and the medians
    of the times and of the paired ratios are reported."""
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if spec is None:
            image, seeds = problem(shape, n_labels, kind=kind, count=count)
            desc = f"synthetic EM image {' x '.join(map(str, shape))} (affseg.synthetic raw, seed 0)"
        else:
            image, labels, desc = input_image(spec, seed, shape)
            seeds = make_seeds(labels, n_labels, kind, count)
            del labels
        what = "3x5x5 blobs" if kind == "blobs" else f"{int(np.count_nonzero(seeds))} single-voxel seeds"
        print(f"input: {desc}; {int(seeds.max())} seed labels ({what}), beta 130, tol {tol}", flush=True)
        data_dir = save_problem(Path(tmp) / "input", image, seeds)
        del image, seeds
        warm_dir = save_problem(Path(tmp) / "warm", *problem((8, 32, 32), 3))
        outputs = {}
        runs = [(run.rsplit(":", 1)[0], run.endswith(":1")) for run in runs]
        # warm the numba cache so that compilation is not timed
        subprocess.run([sys.executable, __file__, "--one", "affseg:cg", "--data", str(warm_dir), "--tol", str(tol)],
                       check=True, env={**os.environ, "RW_BENCH_OUT": f"{tmp}/warm.npy"}, stdout=subprocess.DEVNULL)
        for repeat in range(repeats):
            for method, one_core in runs:
                out = f"{tmp}/{method.replace(':', '_')}_{int(one_core)}.npy"
                cmd = [sys.executable, __file__, "--one", method, "--data", str(data_dir),
                       "--tol", str(tol)] + (["--one-core"] if one_core else [])
                done = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                      env={**os.environ, "RW_BENCH_OUT": out})
                row = json.loads(done.stdout.strip().splitlines()[-1])
                row["cores"] = 1 if one_core else len(os.sched_getaffinity(0))
                row["repeat"] = repeat
                outputs[(method, one_core)] = out
                rows.append(row)
                print(f"{method:<15} {row['cores']} core(s): {row['seconds']:7.2f} s, peak {row['peak_mb']:7.0f} MB",
                      flush=True)
        if ("affseg:cg", True) in outputs:
            ours = np.load(outputs[("affseg:cg", True)])
            for method in [m for m, one in outputs if m.startswith("skimage")]:
                theirs = np.load(outputs[(method, True)])
                diff = float(np.abs(theirs - ours).max())
                agree = float(np.mean(theirs.argmax(axis=0) == ours.argmax(axis=0)))
                print(f"max |p_affseg - p_{method.split(':')[1]}| at tol {tol}: {diff:.2e}; "
                      f"labels agree on {100 * agree:.2f} % of the voxels")
    summarise(rows)
    return rows


def summarise(rows: list[dict]) -> None:
    """Per method the median time (range) and peak memory; per skimage mode the median of the
    paired (same repeat) ratios of its one-core time to affseg's, and the memory ratio."""
    def key(row):
        return row["method"], row["cores"]

    for k in dict.fromkeys(key(r) for r in rows):
        times = [r["seconds"] for r in rows if key(r) == k]
        peaks = [r["peak_mb"] for r in rows if key(r) == k]
        print(f"{k[0]:<15} {k[1]} core(s), {len(times)} run(s): median {np.median(times):7.2f} s "
              f"[{min(times):.2f}, {max(times):.2f}], peak memory median {np.median(peaks):.0f} MB "
              f"[{min(peaks):.0f}, {max(peaks):.0f}]")
    ours = {r["repeat"]: r for r in rows if key(r) == ("affseg:cg", 1)}
    for ref in dict.fromkeys(r["method"] for r in rows if r["method"].startswith("skimage") and r["cores"] == 1):
        pairs = [(r, ours[r["repeat"]]) for r in rows if key(r) == (ref, 1) and r["repeat"] in ours]
        if not pairs:
            continue
        speed = [a["seconds"] / b["seconds"] for a, b in pairs]
        memory = [b["peak_mb"] / a["peak_mb"] for a, b in pairs]
        print(f"speed-up over {ref} (one core each, {len(pairs)} paired runs): median {np.median(speed):.2f}x "
              f"[{min(speed):.2f}, {max(speed):.2f}]; memory ratio affseg / {ref.split(':')[1]} median "
              f"{np.median(memory):.2f} [{min(memory):.2f}, {max(memory):.2f}]")


def bench_gradient(samples_2d: int = 1000, samples_3d: int = 100, spec: str | None = None, seed: int = 0) -> None:
    """Forward, exact backward and the paper's sampled backward; cosine similarity of the two."""
    import torch

    from affseg.learn.random_walker import random_walker_probabilities

    if spec is not None:
        full_image, full_labels, desc = input_image(spec, seed)
        print(f"input: {desc}; problems cropped from it", flush=True)
    for shape, n_labels, samples in (((256, 256), 20, samples_2d), ((64, 64, 64), 20, samples_3d)):
        if spec is None:
            image, seeds = problem((1,) + shape if len(shape) == 2 else shape, n_labels, seed=1, min_size=None)
        else:
            crop = (slice(0, 1),) + tuple(slice(0, s) for s in shape) if len(shape) == 2 else \
                tuple(slice(0, s) for s in shape)
            image = np.ascontiguousarray(full_image[crop])
            seeds = seed_blobs(full_labels[crop], n_labels, seed=1, min_size=None)
            shape = image.shape[1:] if len(shape) == 2 else image.shape
            n_labels = int(seeds.max())
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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solver", action="store_true")
    parser.add_argument("--gradient", action="store_true")
    parser.add_argument("--runs", nargs="+", default=list(ALL_RUNS),
                        help="method:cores pairs (cores 1 = pinned to one core, all = the machine)")
    parser.add_argument("--samples-2d", type=int, default=1000, help="sampled gradient: voxels (256x256)")
    parser.add_argument("--samples-3d", type=int, default=100, help="sampled gradient: voxels (64^3)")
    add_input_argument(parser, default=None, default_text="default: the raw of affseg.synthetic, see above")
    parser.add_argument("--seed", type=int, default=0, help="the input's seed where SPEC gives none")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, nargs=3, default=None,
                        help="solver problem shape (default 64 256 256; with --input: generated shape or crop)")
    parser.add_argument("--labels", type=int, default=50)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--seeds", choices=("blobs", "voxels"), default="blobs",
                        help="solver seeds: one 3x5x5 blob per label (default), or single voxels spread over "
                             "each label's object")
    parser.add_argument("--seed-count", type=int, default=None,
                        help="--seeds voxels: seed voxels in all (default 20 per label)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="solver runs per method, interleaved (A, B, A, B, ...); medians of times and paired ratios")
    parser.add_argument("--one-core", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.labels < 1:
        parser.error(f"--labels must be at least 1, got {args.labels}")
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.seed_count is not None:
        if args.seeds != "voxels":
            parser.error(f"--seed-count {args.seed_count} applies to --seeds voxels only, not --seeds {args.seeds}")
        if args.seed_count < args.labels:
            parser.error(f"--seed-count must be at least the number of labels ({args.labels}) so that every "
                         f"label gets a seed, got {args.seed_count}")
    if args.one:
        print(json.dumps(run_one(args.one, args.data, args.tol, args.one_core)))
        return
    both = not (args.solver or args.gradient)
    if args.solver or both:
        shape = tuple(args.shape) if args.shape else (None if args.input else (64, 256, 256))
        bench_solver(shape, args.labels, args.tol, args.runs, spec=args.input, seed=args.seed, kind=args.seeds,
                     count=args.seed_count, repeats=args.repeats)
    if args.gradient or both:
        bench_gradient(args.samples_2d, args.samples_3d, spec=args.input, seed=args.seed)


if __name__ == "__main__":
    main()
