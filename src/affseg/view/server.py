"""The neuroglancer viewer: volumes served chunk by chunk from this process to the browser.

Imports ``neuroglancer`` (the ``view`` extra); :mod:`affseg.view` imports this module only when a
viewer starts.
"""
from __future__ import annotations

import errno
import json
import re
import socket
import threading

import neuroglancer as ng
import numpy as np
import tornado.web
from neuroglancer import local_volume
from neuroglancer import server as ng_server

from ..errors import InputError
from .layers import OPEN_PATH, Layer, close_layers, display_dtype, display_range, volume_token

GRAY_SHADER = """#uicontrol invlerp normalized
void main() {
  emitGrayscale(normalized());
}
"""

# affinities: channels 0, 1, 2 (z, y, x nearest neighbours by default) as red, green, blue
RGB_SHADER = """void main() {
  emitRGB(vec3(toNormalized(getDataValue(0)), toNormalized(getDataValue(1)), toNormalized(getDataValue(2))));
}
"""
RG_SHADER = """void main() {
  emitRGB(vec3(toNormalized(getDataValue(0)), toNormalized(getDataValue(1)), 0.0));
}
"""
ONE_CHANNEL_SHADER = """void main() {
  emitGrayscale(toNormalized(getDataValue(0)));
}
"""

# canonical voxels per screen pixel at most when the view opens (larger volumes open zoomed in)
MAX_OPENING_ZOOM = 16.0
PANEL_PIXELS = 300  # the view opens with the union of the volumes fitted into about this many pixels


class _ChunkReader:
    """The array neuroglancer reads: each request reads only the chunks it touches, in the dtype served."""

    def __init__(self, layer: Layer):
        self._volume = layer.volume
        self.shape = tuple(layer.volume.shape)
        self.dtype = display_dtype(layer)

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self._volume[key]).astype(self.dtype, copy=False)


class _Source(ng.LocalVolume):
    """A LocalVolume without meshes: neuroglancer's mesher reads the whole volume into memory at once."""

    def get_object_mesh(self, object_id):
        raise local_volume.MeshesNotSupportedForVolume()


def _spatial_names(n: int) -> list[str]:
    return ["z", "y", "x"][-n:]


def layer_source(layer: Layer) -> ng.LocalVolume:
    """The neuroglancer data source of a layer: lazy reads, voxel size in nm, offset in voxels."""
    names = _spatial_names(len(layer.axes))
    scales = list(layer.voxel_size)
    units = ["nm"] * len(names)
    offset = list(layer.voxel_offset)
    if layer.channels:
        names, scales, units, offset = ["c^"] + names, [1.0] + scales, [""] + units, [0] + offset
    dimensions = ng.CoordinateSpace(names=names, units=units, scales=scales)
    volume_type = "segmentation" if layer.kind == "segmentation" else "image"
    source = _Source(_ChunkReader(layer), dimensions=dimensions, voxel_offset=offset, volume_type=volume_type)
    source.token = volume_token(layer.address)  # stable, so that report links name it (layers.viewer_source)
    return source


def make_layer(layer: Layer, source: ng.LocalVolume):
    """The neuroglancer layer (ImageLayer or SegmentationLayer) of a planned layer and its source."""
    if layer.kind == "segmentation":
        return ng.SegmentationLayer(source=source)
    if layer.kind == "affinities":
        shader = {1: ONE_CHANNEL_SHADER, 2: RG_SHADER}.get(layer.channels, RGB_SHADER)
        return ng.ImageLayer(source=source, shader=shader)
    low, high = display_range(layer)
    return ng.ImageLayer(source=source, shader=GRAY_SHADER, shader_controls={"normalized": {"range": [low, high]}})


def fill_state(state, layers: list[Layer]) -> dict[str, ng.LocalVolume]:
    """Put the layers into a neuroglancer ViewerState: global axes x, y(, z) at the finest voxel
    size, the position at the centre of the volumes, a zoom that fits them, one segmentation shown.
    Returns the data source of each layer by name."""
    n = len(layers[0].axes)
    finest = np.min([layer.voxel_size for layer in layers], axis=0)  # zyx
    state.dimensions = ng.CoordinateSpace(names=_spatial_names(n)[::-1], units="nm", scales=finest[::-1].tolist())
    starts, stops = zip(*(layer.world_box() for layer in layers))
    start, stop = np.min(starts, axis=0), np.max(stops, axis=0)
    state.position = ((start + stop) / 2 / finest)[::-1].tolist()
    extent = (stop - start) / finest  # in global voxels
    state.cross_section_scale = float(min(MAX_OPENING_ZOOM, max(extent[-2:]) / PANEL_PIXELS))
    state.projection_scale = float(max(extent) * 1.3)  # the 3D panel's height, in global voxels
    state.layout = "4panel" if n == 3 else "xy"
    last_segmentation = max((i for i, layer in enumerate(layers) if layer.kind == "segmentation"), default=None)
    has_image = any(layer.kind == "image" for layer in layers)
    sources = {}
    for i, layer in enumerate(layers):
        sources[layer.name] = layer_source(layer)
        state.layers[layer.name] = make_layer(layer, sources[layer.name])
        if layer.kind == "segmentation":
            state.layers[layer.name].visible = i == last_segmentation
        elif layer.kind == "affinities":
            state.layers[layer.name].visible = not has_image
    return sources


class _OpenStateHandler(tornado.web.RequestHandler):
    """``OPEN_PATH + TOKEN?state=JSON``: set the viewer's state and send the browser to the viewer.

    The links of an error report come here: neuroglancer's Python viewer opened with a ``#!``
    state in its URL does not connect to its server (its event stream is refused), so the state
    is set here on the server instead and the viewer opens connected."""

    def get(self, token: str) -> None:
        viewer = ng_server.global_server.viewers.get(token) if ng_server.global_server else None
        if viewer is None:
            raise tornado.web.HTTPError(404, reason=f"no viewer {token!r} here")
        try:
            state = json.loads(self.get_query_argument("state"))
            if not isinstance(state, dict):
                raise ValueError("not a JSON object")
            viewer.set_state(ng.ViewerState(state))
        except (tornado.web.MissingArgumentError, ValueError, TypeError, KeyError) as e:
            raise tornado.web.HTTPError(400, reason=f"not a neuroglancer state: {e}"[:200]) from None
        self.redirect(f"/v/{token}/")  # relative: the host the browser used


def _add_open_route() -> None:
    running = ng_server.global_server
    if not getattr(running, "_affseg_open_route", False):
        running.app.add_handlers(r".*", [(f"^{re.escape(OPEN_PATH)}([A-Za-z0-9_-]+)$", _OpenStateHandler)])
        running._affseg_open_route = True


def _start_server(bind: str, port: int) -> None:
    """Start neuroglancer's server (one per process) on ``bind:port``; a port in use, or an address
    this machine does not have, is an InputError."""
    running = ng_server.global_server
    if running is not None:
        if running._bind_address == bind and port in (0, running.port):
            return
        if len(running.viewers):
            raise InputError(f"neuroglancer's server of this process already serves other viewers at "
                             f"{running.server_url}; stop them first, or ask for that address and port")
        ng.stop()
    ng.set_server_bind_address(bind, port)
    try:
        ng_server.start()
    except OSError as e:
        ng_server.global_server = None
        if e.errno == errno.EADDRINUSE:
            raise InputError(f"port {port} on {bind} is in use; choose another port, or 0 for any free one") from None
        if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
            raise InputError(f"cannot listen on address {bind!r}: {e.strerror or e}") from None
        raise


class ViewServer:
    """A running neuroglancer viewer of affseg volumes (made by :func:`affseg.view`).

    ``url`` opens it in a browser; ``sources`` are the layers' ``neuroglancer.LocalVolume`` by
    name (their ``dimensions``, ``voxel_offset``, ``volume_type``); :meth:`stop` (or leaving a ``with`` block) stops serving and
    closes the volumes; :meth:`wait` blocks until :meth:`stop` or Ctrl-C.
    """

    def __init__(self, layers: list[Layer], *, bind: str, port: int, token: str | None = None):
        self.layers = layers
        self._stopped = threading.Event()
        _start_server(bind, port)
        if token is not None and token in ng_server.global_server.viewers:
            self._stopped.set()
            raise InputError(f"a viewer of this process already has the token {token!r}; stop it or choose another")
        self.viewer = ng.Viewer(token=token)
        try:
            _add_open_route()
            with self.viewer.txn() as state:
                self.sources = fill_state(state, layers)
            self.url = self.viewer.get_viewer_url()
        except BaseException:
            self.stop()
            raise

    @property
    def state(self):
        """The viewer's current neuroglancer ViewerState."""
        return self.viewer.state

    def wait(self) -> None:
        """Block until :meth:`stop` is called (from another thread) or Ctrl-C (KeyboardInterrupt)."""
        while not self._stopped.wait(0.5):
            pass

    def stop(self) -> None:
        """Stop serving: the viewer's URL stops working, neuroglancer's server stops when it serves
        no other viewer of this process, and the volumes are closed."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        running = ng_server.global_server
        if running is not None:
            running.viewers.pop(self.viewer.token, None)
            if not len(running.viewers):
                ng.stop()
        close_layers(self.layers)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped.is_set() else self.url
        return f"<affseg ViewServer {state}: {', '.join(f'{layer.name} ({layer.kind})' for layer in self.layers)}>"
