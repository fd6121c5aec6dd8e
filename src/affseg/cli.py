"""The ``affseg`` command line: synth, segment, evaluate, train, predict, demo, view."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .demo import DEMO_ITERATIONS, cmd_demo
from .errors import AffsegError, InputError, OutputExists
from .learn.examples import EXAMPLE_NAMES
from .pipeline import AFFINITY_THRESHOLDS
from .view.command import add_demo_view_options, add_view_parser

BEST_BY_CHOICES = ("voi", "cremi", "arand")  # affseg.evaluation.BEST_BY, without importing numba here


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False, disable=None)


def _offsets(text: str | None):
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"--offsets must be JSON like '[[-1,0,0],[0,-1,0],[0,0,-1]]', got {text!r}: {e}") from None


# ------------------------------------------------------------------ blockwise commands


def _refuse_blockwise_flags(args, *extra: tuple[str, object]) -> None:
    """A blockwise-only flag given without --blockwise: InputError naming it."""
    flags = (("--block-shape", args.block_shape), ("--workers", args.workers), ("--scheduler", args.scheduler),
             ("--db", args.db), *extra)
    given = [flag for flag, value in flags if value is not None]
    if given:
        raise InputError(f"{given[0]} needs --blockwise")


@contextlib.contextmanager
def _blockwise_engine(args, out: str):
    """The Dask engine of a blockwise command, entered: Ctrl-C says that the store keeps the
    finished blocks of ``out``; the dashboard's address is printed when there is one, and at the
    end the workers' peak memory (what a block of this shape needs, for sizing a cluster's
    workers)."""
    from .blockwise.engine import Engine

    store = args.db or "the graph store"
    args.interrupt_note = lambda: f"{store} records the finished blocks of {out}: rerun the same command to resume"
    with Engine(workers=args.workers, scheduler=args.scheduler, progress=True, fork_workers=True) as engine:
        if engine.dashboard:
            print(f"Dask dashboard: {engine.dashboard}")
        yield engine
        peaks = engine.worker_peak_memory()
        if peaks:
            print(f"peak memory of the Dask workers: {max(peaks.values()) / 2**20:.0f} MiB (the largest of "
                  f"{len(peaks)}, each since it started)")


# ------------------------------------------------------------------ synth


def cmd_synth_blockwise(args) -> int:
    """``synth --blockwise``: a Worley volume of any size, block by block on Dask workers."""
    from .blockwise.synth import check_synthetic_options, synthetic_to_zarr

    if args.anisotropic or args.defects:
        raise InputError("--blockwise writes the Worley volume (isotropic, no section defects): drop "
                         "--anisotropic and --defects")
    if args.block_shape is None:
        raise InputError("--blockwise needs --block-shape Z,Y,X (the chunks of the datasets, e.g. 64,256,256)")
    options = dict(block_shape=args.block_shape, seed=args.seed, offsets=_offsets(args.offsets),
                   affs_dtype=args.affs_dtype or "uint8", store=args.db, overwrite=args.overwrite)
    check_synthetic_options(args.output, args.shape, **options)  # before the cluster starts
    with _blockwise_engine(args, args.output) as engine:
        summary = synthetic_to_zarr(args.output, args.shape, engine=engine, **options)
    out = summary["container"]
    print(f"wrote {out}/raw, {out}/labels, {out}/affs  (shape {tuple(args.shape)}, {summary['blocks']} blocks, "
          f"{summary['computed']} written now)")
    return 0


def cmd_synth(args) -> int:
    from .io import write_volume
    from .synthetic import make_volume

    if args.blockwise:
        return cmd_synth_blockwise(args)
    _refuse_blockwise_flags(args, ("--affs-dtype", args.affs_dtype))
    out = Path(args.output)
    if out.suffix.lower() not in (".zarr", ".h5", ".hdf5"):
        raise InputError(f"output {out} must be a .zarr or .h5 container")
    args.interrupt_note = lambda: f"{out} may hold some of its datasets: rerun the same command with --overwrite"
    bar = _progress(4, "synth")
    vol = make_volume(tuple(args.shape), seed=args.seed, anisotropic=args.anisotropic,
                      offsets=_offsets(args.offsets), defects=args.defects)
    bar.update()
    names = {"raw": vol.raw, "labels": vol.labels, "affs": vol.affs}
    for name, data in names.items():
        axes = ["c^", "z", "y", "x"][-data.ndim:] if name == "affs" else None
        attrs = {"offsets": vol.offsets.tolist()} if name == "affs" else None
        write_volume(out / name, data, voxel_size=vol.voxel_size, axes=axes, overwrite=args.overwrite,
                     attrs=attrs)
        bar.update()
    bar.close()
    print(f"wrote {out}/raw, {out}/labels, {out}/affs  (shape {vol.labels.shape}, {int(vol.labels.max())} objects)")
    return 0


# ------------------------------------------------------------------ segment


def _read_affs(address: str):
    from .io import open_volume

    with open_volume(address) as vol:
        affs = vol.read()
        offsets = vol.data.attrs.get("offsets")
        return affs, (None if offsets is None else np.asarray(offsets)), vol


def threshold_name(threshold: float) -> str:
    """The dataset name of a threshold: its shortest decimal form, so distinct thresholds never
    share a name (``0.30001`` and ``0.30004`` stay apart; ``0.3`` is ``threshold_0.3``)."""
    return f"threshold_{float(threshold)!r}"


SEGMENT_RECORD = "affseg_segment"  # group attribute: what a segment run writes, and whether it finished


def _method_options(args):
    """The chosen method and its options as given on the command line (checked, defaults filled);
    a flag of another method is an error."""
    from .methods import get_method, methods

    method = get_method(args.method)
    own = {o.name for o in method.options}
    given = {}
    for name in sorted({o.name for m in methods().values() for o in m.options}):
        value = getattr(args, name, None)
        if value is None:
            continue
        if name not in own:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} is not an option of --method {method.name} (its options: "
                             f"{', '.join('--' + o.replace('_', '-') for o in sorted(own)) or 'none'})")
        given[name] = value
    return method, method.resolve(given)


def _segment_plan(args) -> dict:
    """Everything ``segment`` will do, checked before any input is read: method and options,
    thresholds (None: chosen from the data), names, offsets, output location (not an input,
    writable)."""
    from ._checks import as_thresholds
    from .io import check_output_writable, parse_address

    method, options = _method_options(args)
    single = not method.thresholded(options)
    if single:
        thresholds = []
    elif args.thresholds is not None:
        thresholds = [float(t) for t in as_thresholds(args.thresholds, name="--thresholds")]
    elif args.blockwise or not method.uses_fragments(options):
        thresholds = list(AFFINITY_THRESHOLDS)  # cc's thresholds are on the affinity; blockwise has no data at hand
    else:
        thresholds = None  # from the data: pipeline.default_thresholds on the fragments
    out = args.output.rstrip("/")
    container, group, _ = parse_address(f"{out}/fragments")
    group = group.rpartition("/")[0]
    plan = {"method": method, "options": options, "single": single, "thresholds": thresholds, "out": out,
            "container": container, "group": group, "offsets": _offsets(args.offsets)}
    plan["names"] = None if thresholds is None else _dataset_names(plan, thresholds)
    _check_not_an_input(args, plan, plan["names"] or [])
    check_output_writable(container)
    return plan


def _dataset_names(plan: dict, thresholds) -> list[str]:
    """The datasets a segment run writes: fragments (where the method makes them), then one per
    threshold, or the one segmentation."""
    names = ["segmentation"] if plan["single"] else [threshold_name(t) for t in thresholds]
    if plan["method"].uses_fragments(plan["options"]):
        names = ["fragments"] + names
    return names


def _check_not_an_input(args, plan: dict, names: list[str]) -> None:
    """Refuse an output group that is an input, or whose datasets would replace one."""
    from .io import parse_address

    container, group = plan["container"], plan["group"]
    for address in [args.affs] + ([args.mask] if args.mask else []):
        source = parse_address(address)
        if source[0].resolve() == container.resolve():
            clash = [n for n in names if "/".join(filter(None, [group, n])) == source[1]]
            if clash or source[1] == group:
                raise InputError(f"the output {plan['out']} would replace the input {address}; choose another output")


def _digest(array: np.ndarray) -> str:
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16).hexdigest()


def _segment_identity(args, plan: dict, affs: np.ndarray, offsets, mask) -> dict:
    """What makes two segment runs the same: input (address, shape, dtype, content hash),
    offsets, mask, method, thresholds (or "from the data") and every option."""
    return {"input": {"address": str(args.affs), "shape": list(affs.shape), "dtype": str(affs.dtype),
                      "blake2b": _digest(affs)},
            "mask": None if mask is None else {"address": str(args.mask), "blake2b": _digest(mask)},
            "offsets": offsets.tolist(), "method": plan["method"].name,
            "thresholds": "from the data" if plan["thresholds"] is None else plan["thresholds"],
            "options": plan["options"]}


def _clean_output_group(container, group: str) -> None:
    """Remove what killed runs left in the group: dataset temporaries, zarr's partial files."""
    from .io import remove_stale_temporaries

    if container.suffix.lower() in (".zarr", ".zr", ".n5"):
        for folder in {container, container / group}:
            remove_stale_temporaries(folder)
            for partial in folder.glob("zarr.*.partial") if folder.is_dir() else []:
                partial.unlink(missing_ok=True)  # zarr's own temporary metadata (one writer: ours)


def _int_list(text: str) -> list[int]:
    """``Z,Y,X`` (or ``Y,X``) as integers."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, like 64,256,256; got {text!r}") from None


def cmd_segment_blockwise(args, plan: dict) -> int:
    """``segment --blockwise``: the method's blockwise stages on Dask workers (mala, cc and mws so far)."""
    from .blockwise.pipeline import connected_components_to_zarr, mala_to_zarr, mutex_watershed_to_zarr

    method = plan["method"].name
    if method not in ("mala", "cc", "mws"):
        raise InputError(f"--blockwise runs --method mala, cc or mws so far, not {method}")
    if args.block_shape is None:
        raise InputError("--blockwise needs --block-shape Z,Y,X (a multiple of the affinities' chunks is fastest)")
    if method != "mala" and args.mala_mode is not None:
        raise InputError(f"--mala-mode is for --method mala, not {method}")
    if method == "cc" and args.context is not None:
        raise InputError("--context is for --method mala and mws: connected components read no context "
                         "(the blocks are joined exactly across their faces)")
    with _blockwise_engine(args, plan["out"]) as engine:
        if method == "cc":
            written = []
            for t, name in zip(plan["thresholds"], plan["names"]):
                written.append(connected_components_to_zarr(
                    args.affs, f"{plan['out']}/{name}", plan["offsets"], threshold=t, block_shape=args.block_shape,
                    engine=engine, mask_address=args.mask, store=args.db, overwrite=args.overwrite))
            print(f"wrote {len(written)} segmentations to {plan['out']}/threshold_*")
            return 0
        if method == "mws":
            # the runs of neighbouring blocks are compared in the context: a quarter of the block
            context = args.context if args.context is not None else [max(1, b // 4) for b in args.block_shape]
            summary = mutex_watershed_to_zarr(args.affs, f"{plan['out']}/segmentation", plan["offsets"],
                                              block_shape=args.block_shape, context=context, engine=engine,
                                              mask_address=args.mask, store=args.db, overwrite=args.overwrite,
                                              **plan["options"])
            print(f"wrote {summary['dataset']} ({summary['blocks']} blocks; the stitch merged "
                  f"{summary['segments_merged']} block segments into their neighbours')")
            return 0
        options = dict(plan["options"])
        merge_function = options.pop("merge_function")
        context = args.context if args.context is not None else [min(b, 2 * options["min_seed_distance"])
                                                                  for b in args.block_shape]
        summary = mala_to_zarr(args.affs, plan["out"], plan["offsets"], thresholds=plan["thresholds"],
                               block_shape=args.block_shape, context=context, engine=engine,
                               merge_function=merge_function, fragment_options=options,
                               mask_address=args.mask, store=args.db, overwrite=args.overwrite,
                               mode=args.mala_mode or "exact")
    edges = "joined edges" if args.mala_mode == "hierarchical" else "edges"
    print(f"wrote {plan['out']}/fragments ({summary['fragments']} fragments, {summary['edges']} {edges}, "
          f"{summary['blocks']} blocks) and {len(summary['datasets']) - 1} segmentations")
    return 0


def _segment_kept(plan: dict, state: dict) -> str:
    """What an interrupted segment run leaves, for the one line printed on Ctrl-C."""
    names, written = state.get("names"), state.get("written", [])
    if not state.get("recorded"):
        return f"nothing was written to {plan['out']}: rerun the same command to start again"
    return (f"{plan['out']} holds {len(written)} of {len(names)} datasets and is marked incomplete "
            f"(affseg evaluate says so): rerun the same command to resume")


def _replaced_datasets(plan: dict, record: dict | None, names: list[str] | None) -> list[str]:
    """The datasets of the group that a new (not resumed) run replaces: the earlier run's (its
    record's), this run's names where they exist, and, without a record, any segment output."""
    from .io import volume_exists
    from .io.volumes import group_members

    candidates = set((record or {}).get("datasets", [])) | set(names or [])
    if record is None and names is None:
        try:
            members = group_members(plan["out"])[2]
        except FileNotFoundError:
            members = []
        candidates |= {n for n in members if n in ("fragments", "segmentation") or n.startswith("threshold_")}
    return sorted(n for n in candidates if volume_exists(f"{plan['out']}/{n}"))


def cmd_segment(args) -> int:
    from ._checks import as_offsets
    from .io import output_lock, read_group_record, read_volume, volume_exists, write_group_record, write_volume
    from .io.volumes import check_replaceable, remove_volume
    from .pipeline import default_thresholds, segment

    plan = _segment_plan(args)
    if args.blockwise:
        return cmd_segment_blockwise(args, plan)
    _refuse_blockwise_flags(args, ("--context", args.context), ("--mala-mode", args.mala_mode))
    out, container, group = plan["out"], plan["container"], plan["group"]
    state: dict = {}
    args.interrupt_note = lambda: _segment_kept(plan, state)
    with output_lock(container):
        _clean_output_group(container, group)
        affs, offsets, meta = _read_affs(args.affs)
        if plan["offsets"] is not None:
            offsets = plan["offsets"]
        offsets = as_offsets(offsets, affs.ndim - 1, channels=affs.shape[0])
        mask = read_volume(args.mask)[0] != 0 if args.mask else None
        identity = _segment_identity(args, plan, affs, offsets, mask)
        record = read_group_record(container, group, SEGMENT_RECORD)
        resume = record is not None and record.get("identity") == identity and not args.overwrite
        thresholds, names = plan["thresholds"], plan["names"]
        if resume:
            names = record.get("datasets", names)
            thresholds = record.get("thresholds", thresholds)
            written = record.get("written")
            if written is None:  # a record of an earlier version: what exists is what was written
                written = names
            done = [n for n in names if n in written and volume_exists(f"{out}/{n}")]
            if len(done) == len(names):
                if not record.get("complete"):  # killed between its last dataset and the final record
                    write_group_record(container, group, SEGMENT_RECORD, {**record, "written": names,
                                                                          "complete": True})
                print(f"{out} is complete already (same input and options); nothing to do")
                return 0
            print(f"resuming {out}: {len(done)} of {len(names)} datasets were written before")
            replaced = []
        else:
            replaced = _replaced_datasets(plan, record, names)
            if replaced and record is not None and not args.overwrite:
                raise OutputExists(f"{out} holds a segmentation of another input or with other options; rerun "
                                   "with --overwrite to replace it, or choose another output")
            for name in replaced:
                check_replaceable(f"{out}/{name}", overwrite=args.overwrite)
            done = []
        if resume:
            state.update(recorded=True, names=names, written=list(done))
        fragments = read_volume(f"{out}/fragments")[0] if "fragments" in done else None
        if thresholds is None:  # from the data: evenly below the score at which every fragment has merged
            from .methods._shared import fragments_of

            options = plan["options"]
            fragments = fragments_of(affs, offsets, options, mask=mask, voxel_size=meta.voxel_size,
                                     fragments=fragments)
            thresholds = default_thresholds(affs, fragments, offsets, merge_function=options["merge_function"])
            names = _dataset_names(plan, thresholds)
            _check_not_an_input(args, plan, names)
            print(f"thresholds from the data (evenly spaced below the merge score at which every fragment has "
                  f"merged; --thresholds to choose others): {' '.join(map(repr, thresholds))}")
        bar = _progress(1 + len(names) - len(done), "segment")
        result = segment(affs, offsets, method=plan["method"].name, thresholds=thresholds or None, mask=mask,
                         voxel_size=meta.voxel_size, fragments=fragments, **plan["options"])
        bar.update()
        todo = [n for n in names if n not in done]
        record = {"identity": identity, "datasets": names, "thresholds": thresholds, "complete": False,
                  "written": done}
        # the record goes first: datasets without it would look like another run's
        write_group_record(container, group, SEGMENT_RECORD, record)
        state.update(recorded=True, names=names, written=list(done))
        for name in replaced:  # the replaced run's datasets: none may mix into this one
            remove_volume(f"{out}/{name}")
        spatial = dict(voxel_size=meta.voxel_size, offset=meta.offset, overwrite=True)
        segmentations = [n for n in names if n != "fragments"]
        for name in todo:
            attrs = {"method": plan["method"].name, **plan["options"]}
            if name == "fragments":
                data = result.fragments
            else:
                index = segmentations.index(name)
                data = result.segmentation(index)
                if not plan["single"]:
                    attrs["threshold"] = thresholds[index]
            write_volume(f"{out}/{name}", data, attrs=attrs, **spatial)
            state["written"].append(name)
            write_group_record(container, group, SEGMENT_RECORD, {**record, "written": state["written"]})
            bar.update()
        bar.close()
        write_group_record(container, group, SEGMENT_RECORD, {**record, "written": names, "complete": True})
    print(f"wrote {out}/segmentation" if plan["single"] else
          f"wrote {len(segmentations)} segmentations to {out}/threshold_*")
    return 0


# ------------------------------------------------------------------ evaluate


def _segmentations_under(address: str) -> list[tuple[float | None, str]]:
    """A dataset, or what ``segment`` wrote into a group: its ``threshold_*`` datasets (in
    increasing threshold) or its one ``segmentation``.

    A group that an interrupted ``segment`` run left (its record says incomplete) gets a warning
    naming the datasets that are missing; the ones it finished are scored (datasets an earlier,
    replaced run left are not)."""
    from .io import read_group_record, volume_exists
    from .io.volumes import group_members

    if volume_exists(address):
        return [(None, address)]
    address = str(address).rstrip("/")
    container, group, names = group_members(address)
    record = read_group_record(container, group, SEGMENT_RECORD)
    if record is not None and not record.get("complete"):
        planned = record.get("datasets", [])
        written = record.get("written", planned)
        present = [n for n in planned if n in written and n in names]
        missing = [n for n in planned if n not in present]
        print(f"warning: {address} is incomplete: the segment run that writes it was interrupted; "
              f"{len(present)} of {len(planned)} datasets are written, missing {', '.join(missing)} "
              "(scoring what is there; rerun the same segment command to finish it)", file=sys.stderr)
        names = present
    found = sorted((float(n.split("_", 1)[1]), n) for n in names if n.startswith("threshold_"))
    if not found and "segmentation" in names:
        found = [(None, "segmentation")]
    if not found:
        what = ("holds no finished segmentation yet" if record is not None and not record.get("complete")
                else "is neither a dataset nor a group with threshold_* datasets or a segmentation dataset")
        raise InputError(f"{address} {what}")
    return [(threshold, f"{address}/{name}") for threshold, name in found]


def print_table(rows: list[dict], title: str = "") -> None:
    """The scores as a table on stdout, one row per threshold (written as the decimal it stands for)."""
    from .evaluation import decimal_threshold

    cols = ["threshold", "voi_split", "voi_merge", "voi", "arand", "cremi_score"]
    if title:
        print(title)
    print("  ".join(f"{c:>11}" for c in cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            if v is None:
                cells.append(f"{'-':>11}")
            elif c == "threshold":
                cells.append(f"{decimal_threshold(v)!r:>11}")
            else:
                cells.append(f"{v:>11.4f}")
        print("  ".join(cells))


def best_line(rows: list[dict], best_by: str = "voi") -> str:
    """``best by VOI: threshold 0.3 (VOI ..., ARAND ..., CREMI score ...)``: the best row by a
    criterion of :data:`affseg.evaluation.BEST_BY`, and which criterion chose it."""
    from .evaluation import best_threshold, decimal_threshold
    from .evaluation.curves import CRITERION_NAMES

    best = best_threshold(rows, best_by)
    return (f"best by {CRITERION_NAMES[best_by]}: threshold {decimal_threshold(best['threshold'])!r} "
            f"(VOI {best['voi']:.4f} = split {best['voi_split']:.4f} + merge {best['voi_merge']:.4f}, "
            f"ARAND {best['arand']:.4f}, CREMI score {best['cremi_score']:.4f})")


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate, plot_split_merge
    from .evaluation.report import REPORT_SUFFIXES
    from .io import check_output_writable, check_writable, read_volume, write_json

    outputs = [(args.json, (".json",)), (args.plot, (".png",))] + [(p, REPORT_SUFFIXES) for p in args.report or ()]
    for path, suffixes in outputs:
        if not path:
            continue
        if Path(path).suffix.lower() not in suffixes:  # so that --overwrite can never replace a volume or other file
            raise InputError(f"{path} must end in {' or '.join(suffixes)}")
        check_writable(path, overwrite=args.overwrite)
        check_output_writable(path)
    _check_report_options(args, [path for path, _ in outputs if path])
    args.interrupt_note = lambda: "nothing was written: rerun the same command to start again"
    gt, _ = read_volume(args.ground_truth)
    items = _segmentations_under(args.segmentation)
    rows = []
    bar = _progress(len(items), "evaluate")
    for threshold, address in items:
        seg, _ = read_volume(address)
        row = {"threshold": threshold, "segmentation": address}
        row.update(evaluate(seg, gt))
        rows.append(row)
        bar.update()
    bar.close()
    print_table(rows)
    if len(rows) > 1:
        print(best_line(rows, args.best_by))
    if args.json:
        write_json(args.json, rows, overwrite=True)
    if args.plot:
        plot_split_merge({Path(args.segmentation).name: rows}, args.plot, best_by=args.best_by)
    if args.report:
        _write_error_report(args, rows, gt)
    return 0


def _check_report_options(args, paths: list[str]) -> None:
    """--report-top and --viewer-url need --report and sane values; no file named twice."""
    from ._checks import as_int
    from .view.layers import viewer_token

    if not args.report and (args.report_top is not None or args.viewer_url is not None or args.raw is not None):
        raise InputError("--report-top, --viewer-url and --raw need --report")
    if args.raw is not None and args.viewer_url is None:
        raise InputError("--raw is the image under the report's links: it needs --viewer-url")
    if args.report_top is not None:
        as_int(args.report_top, name="--report-top", minimum=1)
    if args.viewer_url is not None:
        viewer_token(args.viewer_url)
    if args.raw is not None:
        from .io import volume_exists

        if not volume_exists(args.raw):
            raise InputError(f"--raw {args.raw} is not a dataset")
    resolved = [Path(p).resolve() for p in paths]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise InputError(f"{paths[i]} is named as two outputs")


def _write_error_report(args, rows: list[dict], gt) -> None:
    """The error report of the segmentation (of a group: its best threshold by --best-by)."""
    from .evaluation import best_threshold
    from .evaluation.report import error_report, write_report
    from .io import read_volume
    from .view.layers import viewer_source

    best = best_threshold(rows, args.best_by) if len(rows) > 1 else rows[0]
    seg, meta = read_volume(best["segmentation"])
    report = {"segmentation": best["segmentation"], "ground_truth": args.ground_truth,
              "threshold": best["threshold"], "best_by": args.best_by if len(rows) > 1 else None}
    addresses = {"segmentation": best["segmentation"], "ground_truth": args.ground_truth}
    if args.raw is not None:
        addresses["raw"] = args.raw
    if args.viewer_url is not None:  # the volumes as affseg view serves them; else their addresses, to edit
        sources = {key: viewer_source(args.viewer_url, address) for key, address in addresses.items()}
        report["viewer"] = {"url": args.viewer_url, "volumes": list(addresses.values())}
    else:
        sources = addresses
    report.update(error_report(seg, gt, top=args.report_top or 20, voxel_size=meta.voxel_size, offset=meta.offset,
                               units=meta.units, viewer_url=args.viewer_url, sources=sources))
    if len(rows) > 1:
        report["curve"] = [dict(row) for row in rows]
    for path in args.report:
        write_report(report, path, overwrite=True)
        print(f"wrote {path} ({report['n_merges']} merges, {report['n_splits']} splits"
              f"{'; scored at threshold ' + repr(best['threshold']) if len(rows) > 1 else ''})")


# ------------------------------------------------------------------ train / predict


def _checkpoint_iteration(path: Path) -> int | None:
    import re

    match = re.fullmatch(r"iteration_(\d+)\.pt", path.name)
    return int(match.group(1)) if match else None


def _train_kept(output: Path) -> str:
    from .learn.train import latest_checkpoint

    checkpoint = latest_checkpoint(output)
    if checkpoint is None:
        return f"no checkpoint was written to {output} yet: rerun the same command to start again"
    return (f"{output} keeps the checkpoint of iteration {_checkpoint_iteration(checkpoint)} ({checkpoint}): "
            "rerun the same command to resume from it")


def cpu_threads(cores: int | None = None, load: float | None = None) -> int:
    """Torch threads for a CPU run of train, predict or the demo: the cores not busy with other
    work, at least 1; ``OMP_NUM_THREADS`` or ``AFFSEG_THREADS`` when set.

    Threads beyond the idle cores spin against the other processes: on the 2-core development
    machine with one core busy, an iteration of the demo's training took 1.6 s with 2 threads
    and 0.7 s with 1 (0.3 s with 2 on idle cores). The busy cores are measured now (their busy
    time over 0.2 s, :func:`busy_cores`), not by the 1-minute load average, which still counts a
    job that ended a minute ago and made a command started after it run on one thread.

    Parameters
    ----------
    cores : int, optional
        Cores this process may use; default its CPU affinity.
    load : float, optional
        Cores busy with other work; default :func:`busy_cores`, or the 1-minute load average
        where that cannot be measured.

    Returns
    -------
    threads : int
        At least 1, at most ``cores``.
    """
    for name in ("AFFSEG_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(name, "").strip().isdigit() and int(os.environ[name]) > 0:
            return int(os.environ[name])
    cores = _usable_cores() if cores is None else cores
    if load is None:
        load = busy_cores()
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


def _affinity() -> set[int]:
    getter = getattr(os, "sched_getaffinity", None)  # (Linux; elsewhere every CPU)
    return set(getter(0)) if getter is not None else set(range(os.cpu_count() or 1))


_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "max 100000" or "200000 100000"
_PROC_STAT = Path("/proc/stat")


def _usable_cores() -> int:
    """This process's cores: its CPU affinity, capped by a cgroup CPU quota (a container's)."""
    import math

    cores = len(_affinity())
    try:
        quota, period = _CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def busy_cores(window: float = 0.2, cpus: Iterable[int] | None = None) -> float | None:
    """How many of this process's cores other work keeps busy now: their busy share of
    ``/proc/stat`` time over ``window`` seconds while this process sleeps; None where there is
    no ``/proc/stat`` (not Linux).

    Parameters
    ----------
    window : float
        Seconds to measure over.
    cpus : iterable of int, optional
        The CPUs to measure; default this process's CPU affinity.

    Returns
    -------
    busy : float or None
        Between 0 and the number of CPUs measured (iowait counts as idle, steal as busy).
    """
    import time

    wanted = {f"cpu{i}" for i in (_affinity() if cpus is None else cpus)}

    def times() -> dict[str, tuple[int, int]]:
        out = {}
        with open(_PROC_STAT) as f:
            for line in f:
                name, *fields = line.split()
                if name in wanted:
                    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                    out[name] = (sum(values), values[3] + values[4])
        return out

    try:
        before = times()
        time.sleep(window)
        after = times()
    except (OSError, ValueError, IndexError):
        return None
    busy = 0.0
    for name, (total, idle) in after.items():
        if name in before and total > before[name][0]:  # (iowait may step back: clamp to [0, 1])
            busy += min(1.0, max(0.0, 1 - (idle - before[name][1]) / (total - before[name][0])))
    return busy if after else None


def use_cpu_threads() -> None:
    """Set torch's thread count to :func:`cpu_threads` (the CPU commands call this first)."""
    import torch

    torch.set_num_threads(cpu_threads())


def cmd_train(args) -> int:
    if args.example:
        from .learn.examples import example_text

        print(example_text(args.example), end="")
        return 0
    if args.config is None:
        raise InputError("affseg train needs a config file (or --example NAME to print one to start from)")
    from .learn.config import load_config
    from .learn.train import TrainingError, train

    cfg = load_config(args.config)
    use_cpu_threads()
    output = Path(args.output) if args.output else Path(args.config).with_suffix("")
    total = cfg["train"]["iterations"]

    def say_resuming(iteration: int, checkpoint: Path) -> None:
        if iteration >= total:
            print(f"{output} has done its {total} iterations already (checkpoint {checkpoint.name}); raise "
                  "train.iterations in the config to train longer")
        else:
            print(f"resuming {output} from iteration {iteration} (checkpoint {checkpoint.name})", flush=True)

    args.interrupt_note = lambda: _train_kept(output)
    try:
        result = train(cfg, output, overwrite=args.overwrite, progress=True, config_path=args.config,
                       on_resume=say_resuming)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(f"trained {result.iterations} iterations; last checkpoint {result.last_checkpoint}; log {result.log}")
    return 0


def cmd_predict_blockwise(args) -> int:
    """``predict --blockwise``: the tiled prediction block by block on Dask workers (one model
    load and one torch thread per worker)."""
    from .blockwise.predict import check_predict_options, predict_to_zarr

    if args.block_shape is None:
        raise InputError("--blockwise needs --block-shape Z,Y,X (a multiple of the tile step, e.g. 64,256,256)")
    options = dict(block_shape=args.block_shape, tile=args.tile, device=args.device)
    check_predict_options(args.checkpoint, args.raw, args.output, **options)  # before the cluster starts
    with _blockwise_engine(args, args.output) as engine:
        if engine.serial:
            use_cpu_threads()  # in this process; the workers of a cluster run one thread each
        summary = predict_to_zarr(args.checkpoint, args.raw, args.output, engine=engine, store=args.db,
                                  overwrite=args.overwrite, **options)
    out = summary["container"]
    print("wrote " + ", ".join(f"{out}/{name}" for name in summary["datasets"]) +
          f"  ({summary['blocks']} blocks, {summary['computed']} predicted now)")
    return 0


def cmd_predict(args) -> int:
    from .learn.predict import predict

    if args.blockwise:
        if args.readout is not None:
            raise InputError("--readout is for models with mask branches, which --blockwise does not predict yet")
        return cmd_predict_blockwise(args)
    _refuse_blockwise_flags(args)
    use_cpu_threads()
    args.interrupt_note = lambda: (f"{args.output} keeps the tiles that were finished: rerun the same command to "
                                   "resume")
    written = predict(args.checkpoint, args.raw, args.output, tile=args.tile, device=args.device,
                      overwrite=args.overwrite, progress=True, readout=args.readout)
    print("wrote " + ", ".join(written.values()))
    return 0


# ------------------------------------------------------------------ main


def _add_method_flags(parser) -> None:
    """--method and one flag per option of any registered method (the registry says which)."""
    from .methods import methods

    registry = methods()
    parser.add_argument("--method", choices=list(registry), default="mala",
                        help="; ".join(f"{m.name}: {m.summary}" for m in registry.values()))
    # one flag per option name; methods may declare the name differently (e.g. --ties: other
    # choices and default per method): each method's own option checks the value it gets
    seen: dict[str, list[tuple]] = {}
    for method in registry.values():
        for option in method.options:
            declared = seen.setdefault(option.name, [])
            users = next((u for o, u in declared if o == option), None)
            if users is None:
                declared.append((option, users := []))
            users.append(method.name)
    for name, declared in seen.items():
        option = declared[0][0]
        helps = []
        for each, users in declared:
            default = "" if each.default is None or each.default is False else f"; default {each.default}"
            helps.append(f"{each.help} [{', '.join(users)}{default}]")
        kwargs = {"dest": name, "default": None, "help": "; ".join(helps)}
        if option.kind == "bool":
            parser.add_argument(option.flag, action="store_true", **kwargs)
        elif option.kind == "ints":
            parser.add_argument(option.flag, type=int, nargs="+", **kwargs)
        else:
            kind = {"int": int, "float": float, "str": str}[option.kind]
            choices = None if any(o.choices is None for o, _ in declared) else \
                list(dict.fromkeys(c for o, _ in declared for c in o.choices))
            parser.add_argument(option.flag, type=kind, choices=choices, **kwargs)
    # the spelling of earlier versions
    parser.add_argument("--fragments-in-xy", dest="in_plane", action=_Deprecated, replacement="--in-plane",
                        help="deprecated spelling of --in-plane (accepted for one release)")


class _Deprecated(argparse.Action):
    """A flag of earlier versions: sets its replacement's value and notes the old spelling, for a
    warning line when the command runs."""

    def __init__(self, option_strings, dest, replacement: str, **kwargs):
        kwargs.setdefault("default", None)
        super().__init__(option_strings, dest, nargs=0, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True)
        notes = list(getattr(namespace, "deprecated", None) or [])
        namespace.deprecated = notes + [f"{option_string} is deprecated: use {self.replacement}"]


def _add_engine_options(group) -> None:
    """--workers, --scheduler and --db of the blockwise commands (segment, synth, predict)."""
    group.add_argument("--workers", type=int, help="worker processes of the embedded Dask cluster (default: the "
                                                   "CPU count; 0 = in this process)")
    group.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786 (a cluster)")
    group.add_argument("--db", help="graph store: a SQLite path or postgresql://user@host/db (default: "
                                    "<output container>.graph.sqlite); it records finished blocks, so a rerun resumes")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="affseg", description="Affinity-based segmentation of EM volumes.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="what to do (affseg COMMAND --help lists its options)")

    s = sub.add_parser("synth", help="write a synthetic dataset (raw, labels, affs)")
    s.add_argument("output", help="container, e.g. synth.zarr")
    s.add_argument("--shape", type=int, nargs="+", default=[32, 128, 128], metavar="N",
                   help="volume shape in voxels, z y x (or y x for 2D); default 32 128 128")
    s.add_argument("--seed", type=int, default=0,
                   help="seed of every random step: the same seed gives the same volume; default 0")
    s.add_argument("--anisotropic", action="store_true", help="voxels of (4, 1, 1)")
    s.add_argument("--defects", action="store_true", help="a missing and a low-contrast section")
    s.add_argument("--offsets", help="JSON list of the affinities' offsets, e.g. '[[-1,0,0],[0,-1,0],[0,0,-1],"
                                     "[0,-4,0],[0,0,-4]]' (default nearest neighbours)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the datasets of an earlier synth output (only datasets affseg wrote)")
    b = s.add_argument_group("blockwise (volumes larger than memory: the Worley volume, zarr, written block by "
                             "block; docs/blockwise.md)")
    b.add_argument("--blockwise", action="store_true", help="write block by block on Dask workers")
    b.add_argument("--block-shape", type=_int_list, help="write shape of a block, e.g. 64,256,256 (the chunks)")
    _add_engine_options(b)
    b.add_argument("--affs-dtype", choices=["uint8", "float32"],
                   help="affinities as 0..255 (default) or float32 in [0, 1]")
    s.set_defaults(func=cmd_synth)

    g = sub.add_parser("segment", help="affinities -> segmentations (one per threshold, or one)",
                       description="Segment affinities with one of the registered methods. Each method's options "
                                   "are listed below with the methods that take them (docs/methods.md).")
    g.add_argument("affs", help="affinities dataset, e.g. synth.zarr/affs")
    g.add_argument("output", help="output group, e.g. out.zarr/seg (writes fragments, threshold_* or segmentation)")
    _add_method_flags(g)
    g.add_argument("--thresholds", type=float, nargs="+", metavar="T",
                   help="thresholds of the methods that have them, one segmentation each, named threshold_<T> "
                        "as typed (mala and rw with fragment seeds: on the merge score, 1 - affinity statistic, "
                        "lower merges less; cc: on the affinity, an edge with a larger affinity joins). Default: "
                        "mala and rw: 9 thresholds from the data, evenly spaced below the merge score at which "
                        "every fragment has merged (affseg.pipeline.default_thresholds); cc and --blockwise: "
                        f"{' '.join(map(str, AFFINITY_THRESHOLDS))}")
    g.add_argument("--offsets", help="JSON offsets (default: the dataset's 'offsets' attribute)")
    g.add_argument("--mask", help="mask dataset (non-zero = segment here); voxels outside get 0")
    g.add_argument("--overwrite", action="store_true", help="replace an earlier segment output (affseg's own only)")
    b = g.add_argument_group("blockwise (volumes larger than memory; zarr outputs; methods mala, cc and mws)")
    b.add_argument("--blockwise", action="store_true", help="segment block by block on Dask workers")
    b.add_argument("--block-shape", type=_int_list, help="write shape of a block, e.g. 64,256,256 (the output chunks)")
    b.add_argument("--mala-mode", choices=["exact", "hierarchical"],
                   help="mala: exact (default) agglomerates the whole region graph at once, equal to one pass on the "
                        "same fragments, holding every edge in memory (about 1.1 KiB each with hist_quant_*); "
                        "hierarchical (lsd's) agglomerates each block with its --context and joins the blocks' "
                        "results, holding only the joined edges (about 100 bytes each): for graphs too large for one "
                        "machine, close to exact at low thresholds, merging more at high ones (docs/blockwise.md)")
    b.add_argument("--context", type=_int_list, help="voxels read around each block, e.g. 8,32,32 (mala: for the "
                                                      "fragments, default 2 x min-seed-distance per axis, at most the "
                                                      "block; mws: where neighbouring runs are compared, default a "
                                                      "quarter of the block)")
    _add_engine_options(b)
    g.set_defaults(func=cmd_segment)

    e = sub.add_parser("evaluate", help="segmentation(s) vs ground truth -> table, JSON, curve PNG")
    e.add_argument("segmentation", help="a dataset, or the output group given to affseg segment (its threshold_* "
                                        "datasets or its segmentation); an interrupted one is scored as far as "
                                        "it was written, with a warning naming what is missing")
    e.add_argument("ground_truth", help="ground-truth dataset (0 = unlabelled)")
    e.add_argument("--best-by", choices=list(BEST_BY_CHOICES), default="voi",
                   help="the criterion of the best threshold (lowest wins): voi = VOI split + merge in bits, as "
                        "the MALA and waterz papers; cremi = CREMI score sqrt(VOI x ARAND), the CREMI "
                        "challenge's ranking; arand = adapted Rand error; default voi")
    e.add_argument("--json", help="write the scores here (a list with one object per threshold)")
    e.add_argument("--plot", help="write the split/merge curves here (PNG; points labelled with their thresholds, "
                                  "the best by --best-by circled)")
    e.add_argument("--report", action="append", metavar="PATH",
                   help="write an error report here: .html (opens offline) or .json (may be given twice, once "
                        "each): the largest merges and splits ranked by their share of VOI merge / split (the "
                        "shares add up to the VOI terms), with ids, sizes, bounding boxes and neuroglancer states; "
                        "of a threshold group, the best threshold by --best-by, with the split/merge curve")
    e.add_argument("--report-top", type=int, metavar="N", help="merges and splits the report lists (default 20)")
    e.add_argument("--viewer-url", metavar="URL",
                   help="the URL 'affseg view' prints (http://HOST:PORT/v/TOKEN/) for a viewer of the segmentation "
                        "(or its group) and the ground truth: each report entry then links there, showing its ids "
                        "at its place (use a fixed 'affseg view --port P --token NAME' for links that last); "
                        "without it each entry holds a neuroglancer state whose sources are the file addresses")
    e.add_argument("--raw", metavar="ADDRESS", help="with --viewer-url: the raw data, shown under the segments in the "
                                                    "report's links (the viewer must show it too)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --json, --plot or --report file")
    e.set_defaults(func=cmd_evaluate)

    t = sub.add_parser("train", help="train a U-Net from a YAML/TOML config (resumes an existing run)")
    t.add_argument("config", nargs="?", help="config file (.yaml, .yml or .toml); see docs/training.md")
    t.add_argument("--example", choices=EXAMPLE_NAMES,
                   help="print an example config to start from and exit, e.g. "
                        "'affseg train --example fibsem > train.yaml' (" + "; ".join(
                            f"{name}: {text}" for name, text in EXAMPLE_NAMES.items()) + ")")
    t.add_argument("--output", help="run folder (default: the config's path without suffix)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing training run written by affseg (never a folder holding other files or the inputs)")
    t.set_defaults(func=cmd_train)

    r = sub.add_parser("predict", help="run a checkpoint over a volume, tile by tile, into zarr")
    r.add_argument("checkpoint", help="a .pt file from affseg train")
    r.add_argument("raw", help="raw dataset, e.g. data.h5/raw")
    r.add_argument("output", help="zarr group for the outputs, e.g. pred.zarr (writes affs, lsds)")
    r.add_argument("--tile", type=int, nargs="+", help="output tile shape (default about 64 per axis)")
    r.add_argument("--device", default="cpu",
                   help="torch device to run the network on: cpu, cuda, cuda:1, ...; default cpu")
    r.add_argument("--overwrite", action="store_true",
                   help="replace the outputs of an earlier prediction (only datasets affseg wrote)")
    r.add_argument("--readout", choices=["aggregate", "centre"],  # affseg.central_masks' READOUTS (torch-free import)
                   help="models with mask branches (model.type enb, snb+enb): affinities from all masks that "
                        "cover an edge, with their variance (aggregate, MaskAggr), or from the mask centred at "
                        "each voxel (centre); default the config's masks.readout (aggregate). Writes mask_affs "
                        "and mask_affs_variance")
    b = r.add_argument_group("blockwise (volumes larger than memory; zarr outputs equal to one process's; "
                             "docs/blockwise.md)")
    b.add_argument("--blockwise", action="store_true",
                   help="predict block by block on Dask workers (one model load per worker)")
    b.add_argument("--block-shape", type=_int_list, help="write shape of a block, e.g. 64,256,256 (the output "
                                                          "chunks): a multiple of the tile step")
    _add_engine_options(b)
    r.set_defaults(func=cmd_predict)

    d = sub.add_parser("demo", help="synthesize, train, predict, segment, evaluate, plot")
    d.add_argument("--output", default="affseg-demo", help="folder the demo writes (default affseg-demo)")
    d.add_argument("--shape", type=int, nargs=3, default=[48, 160, 160], metavar=("Z", "Y", "X"),
                   help="shape of the held-out test volume (default 48 160 160)")
    d.add_argument("--train-shape", type=int, nargs=3, default=[48, 160, 160], metavar=("Z", "Y", "X"),
                   help="shape of the synthetic training volume (default 48 160 160)")
    d.add_argument("--iterations", type=int, default=DEMO_ITERATIONS,
                   help=f"training iterations (default {DEMO_ITERATIONS}; more give better affinities)")
    d.add_argument("--seed", type=int, default=0, help="seed of the synthetic volumes and the training (default 0)")
    d.add_argument("--merge-function", default="hist_quant_75",
                   help="MALA agglomeration score (default hist_quant_75; see affseg segment --help)")
    d.add_argument("--min-seed-distance", type=int, default=10,
                   help="MALA fragments: size of the maximum filter that finds seeds (default 10)")
    d.add_argument("--overwrite", action="store_true", help="replace an earlier demo output (only a folder the demo wrote)")
    add_demo_view_options(d)
    d.set_defaults(func=cmd_demo)

    add_view_parser(sub)  # affseg view: volumes in a local neuroglancer viewer (src/affseg/view/command.py)
    return p


def cli_wording(message: str) -> str:
    """A library message in the command line's words: the keyword ``overwrite=True`` becomes the
    flag ``--overwrite``.

    Parameters
    ----------
    message : str
        An error or warning message of the library.

    Returns
    -------
    message : str
        The message with each API spelling replaced by its flag, once.
    """
    for mixed in ("--overwrite (overwrite=True)", "overwrite=True (--overwrite)"):
        message = message.replace(mixed, "--overwrite")
    return message.replace("overwrite=True", "--overwrite")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line on stderr, ``warning: ...`` (no source line)."""
    print(f"warning: {cli_wording(str(message))}", file=sys.stderr)


class _Interrupts:
    """Ctrl-C (SIGINT) while a command runs: a context manager that installs the handler.

    The first SIGINT raises KeyboardInterrupt, as Python's own handler does, and is remembered.
    Python code that swallows it (an exception raised inside a ctypes callback is only printed:
    numba's compiler runs such callbacks) would keep the command running, so until the command
    reaches its clean-up (``handled``) a watchdog raises it again every second. During the
    clean-up further SIGINTs are ignored, so that the one line on what was kept comes out.
    """

    def __init__(self, delay: float = 1.0):
        self.delay = delay
        self.requested = False
        self.handled = False
        self._timer: threading.Timer | None = None
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            self._previous_hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def __exit__(self, *exc):
        self.handled = True
        if self._timer is not None:
            self._timer.cancel()
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            sys.unraisablehook = self._previous_hook
        return False

    def _unraisable(self, unraisable) -> None:
        """A swallowed KeyboardInterrupt is not printed (the watchdog raises it again)."""
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            return
        self._previous_hook(unraisable)

    def _handler(self, signum, frame):
        if self.handled:
            return
        self.requested = True
        self._arm()
        if isinstance(sys.exc_info()[1], KeyboardInterrupt):
            return  # already unwinding through a clean-up (an except block): let it finish
        raise KeyboardInterrupt

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.delay, self._again)
            self._timer.daemon = True
            self._timer.start()

    def _again(self) -> None:
        self._timer = None
        if self.requested and not self.handled:
            import _thread

            _thread.interrupt_main(signal.SIGINT)  # runs _handler in the main thread again


def _interrupted(args, interrupts: _Interrupts) -> int:
    """Ctrl-C: stop zarr's I/O in flight (its tasks would otherwise be destroyed half-way at exit),
    then one line on what the command keeps."""
    from .io import stop_zarr_io

    interrupts.handled = True
    stop_zarr_io()
    note = getattr(args, "interrupt_note", None)
    try:
        kept = note() if callable(note) else "rerun the same command to start again"
    except Exception:  # the line must come out, whatever state the output is in
        kept = "rerun the same command"
    print(("\n" if sys.stderr.isatty() else "") + f"interrupted; {kept}", file=sys.stderr)
    return 130


def run_command(args) -> int:
    """Run the command ``args.func(args)`` of parsed arguments: affseg's errors become one line on
    stderr and exit code 2 (tracebacks only with ``--debug``), warnings one line each, Ctrl-C one
    line on what was kept and exit code 130.

    Parameters
    ----------
    args : argparse.Namespace
        From :func:`build_parser` (``func``, ``command``, ``debug`` and the command's arguments).

    Returns
    -------
    code : int
        The exit code.
    """
    interrupts = _Interrupts()
    try:
        return _run_command(args, interrupts)
    finally:
        if interrupts.requested:
            # zarr's coroutines that the interrupt cut off are collected after this, outside the
            # command's warning handling: their "never awaited" warnings would follow the one line
            warnings.filterwarnings("ignore", message=r"coroutine .* was never awaited", category=RuntimeWarning)


def _run_command(args, interrupts: _Interrupts) -> int:
    with warnings.catch_warnings(), interrupts:
        warnings.showwarning = _show_warning
        for note in getattr(args, "deprecated", None) or []:
            print(f"warning: {note}", file=sys.stderr)
        try:
            try:
                if getattr(args, "blockwise", False) and args.workers != 0 and args.scheduler is None:
                    from .blockwise.engine import start_worker_server

                    start_worker_server()  # (its loading runs beside the command's checks)
                return args.func(args)
            except Exception as e:  # raised because of the interrupt, e.g. numba's SystemError around it
                if interrupts.requested:
                    raise KeyboardInterrupt from e
                raise
        except KeyboardInterrupt:
            if args.debug:
                raise
            return _interrupted(args, interrupts)
        except ModuleNotFoundError as e:
            if e.name not in ("torch", "yaml") or args.debug:
                raise
            print(f"error: {args.command} needs {e.name}; install the train extra: "
                  f"pip install -c constraints.txt -e '.[train]'", file=sys.stderr)
            return 2
        except (AffsegError, ValueError, FileNotFoundError, FileExistsError, PermissionError) as e:
            if args.debug:
                raise
            print(f"error: {cli_wording(str(e))}", file=sys.stderr)
            return 2


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command (see :func:`run_command`)."""
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
