"""The ``affseg`` command line: synth, segment, evaluate, train, predict, demo."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .demo import DEFAULT_THRESHOLDS, cmd_demo
from .errors import AffsegError, InputError, OutputExists
from .learn.examples import EXAMPLE_NAMES


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


# ------------------------------------------------------------------ synth


def cmd_synth(args) -> int:
    from .io import write_volume
    from .synthetic import make_volume

    out = Path(args.output)
    if out.suffix.lower() not in (".zarr", ".h5", ".hdf5"):
        raise InputError(f"output {out} must be a .zarr or .h5 container")
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
    thresholds, names, offsets, output location (not an input, writable)."""
    from ._checks import as_thresholds
    from .io import check_output_writable, parse_address

    method, options = _method_options(args)
    single = not method.thresholded(options)
    thresholds = [] if single else [float(t) for t in as_thresholds(args.thresholds, name="--thresholds")]
    out = args.output.rstrip("/")
    names = ["segmentation"] if single else [threshold_name(t) for t in thresholds]
    if method.uses_fragments(options):
        names = ["fragments"] + names
    container, group, _ = parse_address(f"{out}/{names[0]}")
    group = group.rpartition("/")[0]
    inputs = [args.affs] + ([args.mask] if args.mask else [])
    for address in inputs:
        source = parse_address(address)
        if source[0].resolve() == container.resolve():
            clash = [n for n in names if "/".join(filter(None, [group, n])) == source[1]]
            if clash or source[1] == group:
                raise InputError(f"the output {out} would replace the input {address}; choose another output")
    check_output_writable(container)
    return {"method": method, "options": options, "single": single, "thresholds": thresholds, "names": names,
            "out": out, "container": container, "group": group, "offsets": _offsets(args.offsets)}


def _digest(array: np.ndarray) -> str:
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16).hexdigest()


def _segment_identity(args, plan: dict, affs: np.ndarray, offsets, mask) -> dict:
    """What makes two segment runs the same: input (address, shape, dtype, content hash),
    offsets, mask, method and every option."""
    return {"input": {"address": str(args.affs), "shape": list(affs.shape), "dtype": str(affs.dtype),
                      "blake2b": _digest(affs)},
            "mask": None if mask is None else {"address": str(args.mask), "blake2b": _digest(mask)},
            "offsets": offsets.tolist(), "method": plan["method"].name, "thresholds": plan["thresholds"],
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
    """``segment --blockwise``: the method's blockwise stages on Dask workers (mala and cc so far)."""
    from .blockwise.engine import Engine
    from .blockwise.pipeline import connected_components_to_zarr, mala_to_zarr

    method = plan["method"].name
    if method not in ("mala", "cc"):
        raise InputError(f"--blockwise runs --method mala or cc so far, not {method}")
    if args.block_shape is None:
        raise InputError("--blockwise needs --block-shape Z,Y,X (a multiple of the affinities' chunks is fastest)")
    engine = Engine(workers=args.workers, scheduler=args.scheduler, progress=True)
    with engine:
        if engine.dashboard:
            print(f"Dask dashboard: {engine.dashboard}")
        if method == "cc":
            written = []
            for t, name in zip(plan["thresholds"], plan["names"]):
                written.append(connected_components_to_zarr(
                    args.affs, f"{plan['out']}/{name}", plan["offsets"], threshold=t, block_shape=args.block_shape,
                    engine=engine, mask_address=args.mask, overwrite=args.overwrite))
            print(f"wrote {len(written)} segmentations to {plan['out']}/threshold_*")
            return 0
        options = dict(plan["options"])
        merge_function = options.pop("merge_function")
        context = args.context if args.context is not None else [min(b, 2 * options["min_seed_distance"])
                                                                  for b in args.block_shape]
        summary = mala_to_zarr(args.affs, plan["out"], plan["offsets"], thresholds=plan["thresholds"],
                               block_shape=args.block_shape, context=context, engine=engine,
                               merge_function=merge_function, fragment_options=options,
                               mask_address=args.mask, store=args.db, overwrite=args.overwrite)
    print(f"wrote {plan['out']}/fragments ({summary['fragments']} fragments, {summary['edges']} edges, "
          f"{summary['blocks']} blocks) and {len(summary['datasets']) - 1} segmentations")
    return 0


def cmd_segment(args) -> int:
    from ._checks import as_offsets
    from .io import output_lock, read_group_record, read_volume, volume_exists, write_group_record, write_volume
    from .io.volumes import check_replaceable, remove_volume
    from .pipeline import segment

    plan = _segment_plan(args)
    if args.blockwise:
        return cmd_segment_blockwise(args, plan)
    out, container, group = plan["out"], plan["container"], plan["group"]
    targets = {name: f"{out}/{name}" for name in plan["names"]}
    with output_lock(container):
        _clean_output_group(container, group)
        affs, offsets, meta = _read_affs(args.affs)
        if plan["offsets"] is not None:
            offsets = plan["offsets"]
        offsets = as_offsets(offsets, affs.ndim - 1, channels=affs.shape[0])
        mask = read_volume(args.mask)[0] != 0 if args.mask else None
        identity = _segment_identity(args, plan, affs, offsets, mask)
        record = read_group_record(container, group, SEGMENT_RECORD)
        existing = [name for name, address in targets.items() if volume_exists(address)]
        resume = record is not None and record.get("identity") == identity and not args.overwrite
        if not resume:
            earlier = [n for n in (record or {}).get("datasets", []) if n not in targets
                       and volume_exists(f"{out}/{n}")]
            if (existing or earlier) and record is not None and not args.overwrite:
                raise OutputExists(f"{out} holds a segmentation of another input or with other options; rerun "
                                   "with --overwrite to replace it, or choose another output")
            for name in existing:
                check_replaceable(targets[name], overwrite=args.overwrite)
            for name in earlier:  # outputs of the replaced run that this one does not write
                check_replaceable(f"{out}/{name}", overwrite=True)
            for name in earlier:
                remove_volume(f"{out}/{name}")
            existing = []
        todo = [name for name in plan["names"] if name not in existing]
        if not todo:
            print(f"{out} is complete already (same input and options); nothing to do")
            return 0
        if resume:
            print(f"resuming {out}: {len(existing)} of {len(targets)} datasets were written before")
        fragments = read_volume(targets["fragments"])[0] if "fragments" in existing else None
        bar = _progress(len(todo) + 1, "segment")
        result = segment(affs, offsets, method=plan["method"].name, thresholds=plan["thresholds"] or None,
                         mask=mask, voxel_size=meta.voxel_size, fragments=fragments, **plan["options"])
        bar.update()
        # the record goes first: datasets without it would look like another run's
        write_group_record(container, group, SEGMENT_RECORD, {"identity": identity, "datasets": plan["names"],
                                                              "complete": False})
        spatial = dict(voxel_size=meta.voxel_size, offset=meta.offset, overwrite=True)
        segmentations = [n for n in plan["names"] if n != "fragments"]
        for name in todo:
            attrs = {"method": plan["method"].name, **plan["options"]}
            if name == "fragments":
                data = result.fragments
            else:
                index = segmentations.index(name)
                data = result.segmentation(index)
                if not plan["single"]:
                    attrs["threshold"] = plan["thresholds"][index]
            write_volume(targets[name], data, attrs=attrs, **spatial)
            bar.update()
        bar.close()
        write_group_record(container, group, SEGMENT_RECORD, {"identity": identity, "datasets": plan["names"],
                                                              "complete": True})
    print(f"wrote {out}/segmentation" if plan["single"] else
          f"wrote {len(segmentations)} segmentations to {out}/threshold_*")
    return 0


# ------------------------------------------------------------------ evaluate


def _segmentations_under(address: str) -> list[tuple[float | None, str]]:
    """A dataset, or what ``segment`` wrote into a group: its ``threshold_*`` datasets (in
    increasing threshold) or its one ``segmentation``. Warns when that run did not finish."""
    from .io import read_group_record, volume_exists
    from .io.volumes import group_members

    if volume_exists(address):
        return [(None, address)]
    address = str(address).rstrip("/")
    container, group, names = group_members(address)
    record = read_group_record(container, group, SEGMENT_RECORD)
    if record is not None and not record.get("complete"):
        done = [n for n in record.get("datasets", []) if n in names]
        print(f"warning: {address} is incomplete ({len(done)} of {len(record.get('datasets', []))} datasets "
              "written; the segment run was interrupted): rerun the same segment command to finish it",
              file=sys.stderr)
    found = sorted((float(n.split("_", 1)[1]), n) for n in names if n.startswith("threshold_"))
    if not found and "segmentation" in names:
        found = [(None, "segmentation")]
    if not found:
        raise InputError(f"{address} is neither a dataset nor a group with threshold_* datasets or a "
                         "segmentation dataset")
    return [(threshold, f"{address}/{name}") for threshold, name in found]


def print_table(rows: list[dict], title: str = "") -> None:
    cols = ["threshold", "voi_split", "voi_merge", "voi", "arand", "cremi_score"]
    if title:
        print(title)
    print("  ".join(f"{c:>11}" for c in cols))
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c)
            cells.append(f"{'-':>11}" if v is None else f"{v:>11.4f}")
        print("  ".join(cells))


def cmd_evaluate(args) -> int:
    from .evaluation import best_threshold, evaluate, plot_split_merge
    from .io import check_output_writable, check_writable, read_volume, write_json

    for path, suffix in ((args.json, ".json"), (args.plot, ".png")):
        if not path:
            continue
        if Path(path).suffix.lower() != suffix:  # so that --overwrite can never replace a volume or other file
            raise InputError(f"{path} must end in {suffix}")
        check_writable(path, overwrite=args.overwrite)
        check_output_writable(path)
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
        best = best_threshold(rows)
        print(f"best threshold {best['threshold']}: VOI {best['voi']:.4f}, CREMI score {best['cremi_score']:.4f}")
    if args.json:
        write_json(args.json, rows, overwrite=True)
    if args.plot:
        plot_split_merge({Path(args.segmentation).name: rows}, args.plot)
    return 0


# ------------------------------------------------------------------ train / predict


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
    output = Path(args.output) if args.output else Path(args.config).with_suffix("")
    try:
        result = train(cfg, output, overwrite=args.overwrite, progress=True, config_path=args.config)
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(f"trained {result.iterations} iterations; last checkpoint {result.last_checkpoint}; log {result.log}")
    return 0


def cmd_predict(args) -> int:
    from .learn.predict import predict

    written = predict(args.checkpoint, args.raw, args.output, tile=args.tile, device=args.device,
                      overwrite=args.overwrite, progress=True)
    print("wrote " + ", ".join(written.values()))
    return 0


# ------------------------------------------------------------------ main


def _add_method_flags(parser) -> None:
    """--method and one flag per option of any registered method (the registry says which)."""
    from .methods import methods

    registry = methods()
    parser.add_argument("--method", choices=list(registry), default="mala",
                        help="; ".join(f"{m.name}: {m.summary}" for m in registry.values()))
    seen: dict[str, tuple] = {}
    for method in registry.values():
        for option in method.options:
            seen.setdefault(option.name, (option, []))[1].append(method.name)
    for name, (option, users) in seen.items():
        default = "" if option.default in (None, False) else f"; default {option.default}"
        help_text = f"{option.help} [{', '.join(users)}{default}]"
        kwargs = {"dest": name, "default": None, "help": help_text}
        if option.kind == "bool":
            parser.add_argument(option.flag, action="store_true", **kwargs)
        elif option.kind == "ints":
            parser.add_argument(option.flag, type=int, nargs="+", **kwargs)
        else:
            kind = {"int": int, "float": float, "str": str}[option.kind]
            parser.add_argument(option.flag, type=kind, choices=option.choices, **kwargs)
    # the spelling of earlier versions
    parser.add_argument("--fragments-in-xy", dest="in_plane", action="store_true", default=None,
                        help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="affseg", description="Affinity-based segmentation of EM volumes.")
    p.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic dataset (raw, labels, affs)")
    s.add_argument("output", help="container, e.g. synth.zarr")
    s.add_argument("--shape", type=int, nargs="+", default=[32, 128, 128])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--anisotropic", action="store_true", help="voxels of (4, 1, 1)")
    s.add_argument("--defects", action="store_true", help="a missing and a low-contrast section")
    s.add_argument("--offsets", help="JSON list of offsets (default nearest neighbours)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=cmd_synth)

    g = sub.add_parser("segment", help="affinities -> segmentations (one per threshold, or one)",
                       description="Segment affinities with one of the registered methods. Each method's options "
                                   "are listed below with the methods that take them (docs/methods.md).")
    g.add_argument("affs", help="affinities dataset, e.g. synth.zarr/affs")
    g.add_argument("output", help="output group, e.g. out.zarr/seg (writes fragments, threshold_* or segmentation)")
    _add_method_flags(g)
    g.add_argument("--thresholds", type=float, nargs="+", default=DEFAULT_THRESHOLDS,
                   help="thresholds of the methods that have them (mala: on the merge score; cc: on the "
                        f"affinity; rw with fragment seeds); default {' '.join(map(str, DEFAULT_THRESHOLDS))}")
    g.add_argument("--offsets", help="JSON offsets (default: the dataset's 'offsets' attribute)")
    g.add_argument("--mask", help="mask dataset (non-zero = segment here); voxels outside get 0")
    g.add_argument("--overwrite", action="store_true", help="replace an earlier segment output (affseg's own only)")
    b = g.add_argument_group("blockwise (volumes larger than memory; zarr outputs; methods mala and cc)")
    b.add_argument("--blockwise", action="store_true", help="segment block by block on Dask workers")
    b.add_argument("--block-shape", type=_int_list, help="write shape of a block, e.g. 64,256,256 (the output chunks)")
    b.add_argument("--context", type=_int_list, help="voxels read around each block (fragments); default "
                                                      "2 x min-seed-distance per axis, at most the block")
    b.add_argument("--workers", type=int, help="worker processes of the embedded Dask cluster (default: the CPU "
                                               "count; 0 = in this process)")
    b.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786 (a cluster)")
    b.add_argument("--db", help="graph store: a SQLite path or postgresql://user@host/db (default: "
                                "<output container>.graph.sqlite); it records finished blocks, so a rerun resumes")
    g.set_defaults(func=cmd_segment)

    e = sub.add_parser("evaluate", help="segmentation(s) vs ground truth -> table, JSON, curve PNG")
    e.add_argument("segmentation", help="a dataset, or a group with threshold_* datasets")
    e.add_argument("ground_truth", help="ground-truth dataset (0 = unlabelled)")
    e.add_argument("--json", help="write the scores here")
    e.add_argument("--plot", help="write the split/merge curve PNG here")
    e.add_argument("--overwrite", action="store_true")
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
    r.add_argument("--device", default="cpu")
    r.add_argument("--overwrite", action="store_true")
    r.set_defaults(func=cmd_predict)

    d = sub.add_parser("demo", help="synthesize, train, predict, segment, evaluate, plot")
    d.add_argument("--output", default="affseg-demo")
    d.add_argument("--shape", type=int, nargs=3, default=[48, 160, 160], help="held-out test volume")
    d.add_argument("--train-shape", type=int, nargs=3, default=[48, 160, 160])
    d.add_argument("--iterations", type=int, default=400, help="training iterations (about 0.3 s each on 2 cores)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--merge-function", default="hist_quant_75")
    d.add_argument("--min-seed-distance", type=int, default=10)
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a command; affseg's errors become one line on stderr and exit code 2 (tracebacks only
    with ``--debug``), Ctrl-C exit code 130."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"\ninterrupted; rerun the same command to resume ({args.command} keeps what it finished)",
              file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        if e.name not in ("torch", "yaml") or args.debug:
            raise
        print(f"error: {args.command} needs {e.name}; install the train extra: "
              f"pip install -c constraints.txt -e '.[train]'", file=sys.stderr)
        return 2
    except (AffsegError, ValueError, FileNotFoundError, FileExistsError, PermissionError) as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
