"""``affseg view`` and ``affseg demo --view``: the command-line side of the viewer (it prints)."""
from __future__ import annotations

import argparse
import sys


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """``--bind`` and ``--port`` of the viewer's server."""
    parser.add_argument("--bind", default="127.0.0.1",
                        help="address the viewer listens on (default 127.0.0.1: this machine only; 0.0.0.0: every "
                             "interface, anyone who reaches the machine can read the volumes)")
    parser.add_argument("--port", type=int, default=0, help="TCP port of the viewer (default 0: any free port)")
    parser.add_argument("--token", metavar="NAME",
                        help="the viewer's name in its URL (http://HOST:PORT/v/NAME/); default a random one. With a "
                             "fixed --port and --token the URL is the same at every start, so error-report links "
                             "(affseg evaluate --report --viewer-url URL) keep working")


def add_view_parser(sub) -> None:
    """The ``view`` subcommand."""
    v = sub.add_parser("view", help="show volumes in a local neuroglancer viewer in the browser (Ctrl-C stops it)",
                       description="Serve volumes (zarr or HDF5, read chunk by chunk) in a neuroglancer viewer and "
                                   "print its URL. Raw data become images, affinities RGB images (channels 0, 1, 2), "
                                   "integer labels segmentations; volumes are aligned by their voxel_size and offset "
                                   "metadata. Needs the view extra. See docs/viewing.md.")
    v.add_argument("volumes", nargs="*", metavar="ADDRESS",
                   help="datasets (out.zarr/seg/segmentation, data.h5/raw), or containers and groups: every "
                        "dataset directly inside")
    v.add_argument("--segmentation", action="append", default=[], metavar="ADDRESS",
                   help="show this dataset as a segmentation whatever its dtype (integer labels only); repeatable")
    v.add_argument("--image", action="append", default=[], metavar="ADDRESS",
                   help="show this dataset as an image whatever its dtype; repeatable")
    add_server_options(v)
    v.set_defaults(func=cmd_view)


def add_demo_view_options(parser: argparse.ArgumentParser) -> None:
    """``demo --view`` and its server options."""
    parser.add_argument("--view", action="store_true",
                        help="after the demo, show raw, ground truth, predicted affinities and the best segmentation "
                             "in neuroglancer until Ctrl-C (needs the view extra)")
    add_server_options(parser)


def serve(args, addresses, *, segmentation=(), image=()) -> int:
    """Start the viewer, print its URL and layers, serve until Ctrl-C (run_command's exit 130)."""
    from . import view

    server = view(*addresses, segmentation=segmentation, image=image, bind=args.bind, port=args.port,
                  token=args.token)
    args.interrupt_note = lambda: "the viewer stopped"
    try:
        print(f"neuroglancer: {server.url}")
        print("layers: " + ", ".join(f"{layer.name} ({layer.kind})" for layer in server.layers))
        print("Ctrl-C stops the viewer", flush=True)
        server.wait()
    except BaseException:  # Ctrl-C: stop here, in an except block, where a second SIGINT lets the clean-up finish
        server.stop()
        raise
    server.stop()
    return 0


def neuroglancer_missing(what: str) -> bool:
    """Whether neuroglancer is missing; if so, the one-line error naming the extra is printed."""
    from . import require_neuroglancer

    try:
        require_neuroglancer(what)
    except ModuleNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return True
    return False


def cmd_view(args) -> int:
    if neuroglancer_missing("affseg view"):
        return 2
    return serve(args, args.volumes, segmentation=args.segmentation, image=args.image)
