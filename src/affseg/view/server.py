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
    """``OPEN_PATH + TOKEN?state=JSON``: show a report entry in the viewer, then send the browser there.

    The links of an error report come here: neuroglancer's Python viewer opened with a ``#!``
    state in its URL does not connect to its server (its event stream is refused), so the entry
    is applied here on the server instead and the viewer opens connected. Any page the browser
    visits can send this request, so only a report's few settings are taken (:func:`apply_link`):
    the view moves and the served layers are shown, hidden or given segments; nothing is added
    or removed."""

    def get(self, token: str) -> None:
        viewer = ng_server.global_server.viewers.get(token) if ng_server.global_server else None
        if viewer is None:
            raise tornado.web.HTTPError(404, reason=f"no viewer {token!r} here")
        try:
            link = json.loads(self.get_query_argument("state"))
            apply_link(viewer, link)
        except (tornado.web.MissingArgumentError, InputError, ValueError) as e:
            raise tornado.web.HTTPError(400, reason=f"not a report entry: {e}"[:200]) from None
        self.redirect(f"/v/{token}/")  # relative: the host the browser used


_LINK_KEYS = {"dimensions", "position", "crossSectionScale", "layout", "layers", "selectedLayer"}


def apply_link(viewer, link) -> None:
    """Apply a report entry's state (:func:`affseg.evaluation.report.neuroglancer_state`) to a
    viewer: its position, zoom, layout and coordinate space; the viewer's layers whose source
    the entry names are shown (segmentations with the entry's segments), the others hidden.
    InputError, with nothing changed, for anything else: other keys, a source the viewer does not
    serve, segments that are not ids, a position of the wrong length."""
    if not isinstance(link, dict) or not set(link) <= _LINK_KEYS:
        raise InputError(f"a report entry holds only {sorted(_LINK_KEYS)}")
    state = viewer.state
    names = {layer.source[0].url: layer.name for layer in state.layers if len(layer.source)}
    shown: dict[str, list[int] | None] = {}
    layers = link.get("layers", [])
    if not isinstance(layers, list):
        raise InputError("layers must be a list")
    for entry in layers:
        if not isinstance(entry, dict) or entry.get("source") not in names:
            raise InputError("each layer must name a source this viewer serves")
        segments = entry.get("segments")
        if segments is not None:
            if not isinstance(segments, list) or not all(str(k).isdigit() and int(k) < 2**64 for k in segments):
                raise InputError("segments must be a list of ids")
            segments = [int(k) for k in segments]
        shown[names[entry["source"]]] = segments
    dims = link.get("dimensions", state.dimensions.to_json())
    if not isinstance(dims, dict) or set(dims) != set(state.dimensions.names):
        raise InputError(f"dimensions must be {list(state.dimensions.names)}")
    dimensions = ng.CoordinateSpace(dims)
    position = link.get("position", [float(p) for p in state.position])
    if not isinstance(position, list) or len(position) != len(dims) or \
            not all(isinstance(p, (int, float)) and np.isfinite(p) for p in position):
        raise InputError(f"position must be {len(dims)} numbers")
    zoom = link.get("crossSectionScale", state.cross_section_scale)
    if not isinstance(zoom, (int, float)) or not 0 < zoom < 1e9:
        raise InputError("crossSectionScale must be a positive number")
    layout = link.get("layout", state.layout.type if hasattr(state.layout, "type") else state.layout)
    if layout not in ("4panel", "xy"):
        raise InputError("layout must be 4panel or xy")
    with viewer.txn() as s:
        s.dimensions = dimensions
        s.position = position
        s.cross_section_scale = float(zoom)
        s.layout = layout
        for layer in s.layers:
            layer.visible = layer.name in shown
            if shown.get(layer.name) is not None:
                layer.segments = shown[layer.name]
        first = next((name for name, segments in shown.items() if segments is not None), None)
        if first is not None:
            s.selected_layer.layer = first


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
