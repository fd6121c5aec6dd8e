"""Look at volumes: a local neuroglancer viewer in the browser, and napari layer data.

``affseg.view("out.zarr/raw", "out.zarr/seg/segmentation")`` serves the volumes (zarr or HDF5,
read chunk by chunk as the browser asks for them) and returns a :class:`ViewServer` whose
``url`` opens the viewer; the ``affseg view`` command does the same until Ctrl-C. The module is
itself callable (``affseg.view(...)`` is :func:`view`). neuroglancer is the ``view`` extra
(``pip install -c constraints.txt -e ".[view]"``), imported only when a viewer starts;
:func:`napari_layers` needs neither neuroglancer nor napari. See docs/viewing.md.
"""
from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .._checks import as_int
from ..errors import InputError
from .layers import KINDS, VIEWER_TOKEN, Layer, plan_layers
from .napari import napari_layers

if TYPE_CHECKING:
    from .server import ViewServer

__all__ = ["KINDS", "Layer", "napari_layers", "view"]


def view(*addresses: str | os.PathLike, segmentation: Iterable[str | os.PathLike] = (),
         image: Iterable[str | os.PathLike] = (), bind: str = "127.0.0.1", port: int = 0,
         token: str | None = None) -> ViewServer:
    """Serve volumes in a local neuroglancer viewer; returns the running :class:`ViewServer`.

    Each volume becomes a layer: raw data an image, affinities (a channel axis) an RGB image of
    channels 0, 1, 2, integer labels a segmentation (see :mod:`affseg.view.layers` for the rules;
    ``segmentation=`` and ``image=`` decide for a volume). Volumes are placed in world units by their
    ``voxel_size`` and ``offset`` metadata, so volumes of different shapes and voxel sizes are shown
    aligned. Nothing is read until the browser asks for it, chunk by chunk. The viewer opens
    centred on the volumes, one segmentation shown (the last), affinities hidden beside raw data;
    neuroglancer's layer bar shows the others. No 3D meshes are made (the 3D panel shows the
    sections): the volumes may be any size.

    Parameters
    ----------
    *addresses : str or path-like
        Datasets (``out.zarr/seg/segmentation``, ``data.h5/raw``), or containers or groups: every
        dataset directly inside them.
    segmentation : iterable of str or path-like
        Datasets to show as segmentations whatever their dtype says (integer dtypes only; a float
        volume is an InputError); added to the view if not in ``addresses``.
    image : iterable of str or path-like
        Datasets to show as images whatever their dtype says; added if not in ``addresses``.
    bind : str
        Address the server listens on: ``127.0.0.1`` (default) is this machine only; ``0.0.0.0``
        every interface (anyone who can reach the machine can then read the volumes).
    port : int
        TCP port; 0 (default) picks a free one. A port in use is an InputError.
    token : str, optional
        The viewer's name in its URL (``http://HOST:PORT/v/TOKEN/``; letters, digits, ``_`` and
        ``-``). Default: a random one, which also keeps others on the network from guessing the
        URL. A fixed token and port give the same URL at every start, so the links of an error
        report (``affseg evaluate --report --viewer-url``) keep working after a restart.

    Returns
    -------
    server : ViewServer
        ``url`` (open it in a browser), ``viewer`` (the ``neuroglancer.Viewer``), ``layers``,
        ``stop()``, ``wait()``; a context manager that stops on exit.

    Raises
    ------
    InputError
        No volume, a bad port or token, a port in use, a token another viewer of this process has, a float volume forced as segmentation, 2D and 3D
        volumes together, a unit that is not a length, an offset that is not a whole number of
        voxels. All but the port are checked before the server starts.
    VolumeNotFound, CorruptInput
        As for :func:`affseg.open_volume`.
    ModuleNotFoundError
        Without the ``neuroglancer`` package (the ``view`` extra).
    """
    port = as_int(port, name="port", minimum=0, maximum=65535)
    if not isinstance(bind, str) or not bind.strip():
        raise InputError(f"bind must be an address such as '127.0.0.1', got {bind!r}")
    if token is not None and (not isinstance(token, str) or not VIEWER_TOKEN.match(token)):
        raise InputError(f"token must be 1 to 64 letters, digits, '_' or '-', got {token!r}")
    require_neuroglancer("affseg.view")
    layers = plan_layers(addresses, segmentation=segmentation, image=image)
    from .server import ViewServer

    try:
        return ViewServer(layers, bind=bind.strip(), port=port, token=token)
    except BaseException:
        from .layers import close_layers

        close_layers(layers)
        raise


def require_neuroglancer(what: str) -> None:
    """ModuleNotFoundError naming the ``view`` extra where neuroglancer is not installed."""
    import importlib.util

    if importlib.util.find_spec("neuroglancer") is None:
        raise ModuleNotFoundError(f"{what} needs the neuroglancer package; install the view extra: "
                                  "pip install -c constraints.txt -e '.[view]'", name="neuroglancer")


def __getattr__(name: str):
    if name == "ViewServer":  # the neuroglancer-side class, imported on first use
        from .server import ViewServer

        return ViewServer
    raise AttributeError(f"module 'affseg.view' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """``affseg.view`` is a module and the function :func:`view` at once."""

    def __call__(self, *addresses, **options):
        return view(*addresses, **options)


sys.modules[__name__].__class__ = _CallableModule
