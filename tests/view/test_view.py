"""affseg.view and affseg view without a browser: layer kinds, placement, lazy chunk reads over
neuroglancer's real HTTP server, bad input, napari layer data (issue #18, parts 1 and 4)."""
from __future__ import annotations

import gc
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from io import BytesIO

import numpy as np
import pytest

import affseg
from affseg.errors import InputError, VolumeNotFound
from affseg.io import write_volume
from affseg.synthetic import make_volume
from affseg.view import napari_layers
from affseg.view.layers import auto_kind, plan_layers


@pytest.fixture(scope="module")
def synth():
    return make_volume((8, 40, 48), seed=3)


@pytest.fixture
def data(tmp_path, synth):
    """A zarr container as affseg writes it: raw (uint8), labels (uint64), affs (float32, channel axis),
    a float 'probability' volume, and an HDF5 copy of the raw with another voxel size and an offset."""
    root = tmp_path / "s.zarr"
    vs = (40.0, 4.0, 4.0)
    write_volume(root / "raw", synth.raw, voxel_size=vs)
    write_volume(root / "labels", synth.labels, voxel_size=vs)
    write_volume(root / "affs", synth.affs, voxel_size=vs, axes=["c^", "z", "y", "x"],
                 attrs={"offsets": synth.offsets.tolist()})
    write_volume(root / "prob", synth.affs[0], voxel_size=vs)
    # a crop of the raw at half the in-plane resolution, 2 sections and 8 (coarse) voxels in: world (80, 64, 64) nm
    write_volume(tmp_path / "c.h5" / "raw", synth.raw[2:6, ::2, ::2][:, 8:, 8:], voxel_size=(40, 8, 8),
                 offset=(80, 64, 64))
    return tmp_path


def _ng():
    return pytest.importorskip("neuroglancer", reason="affseg view needs the view extra (neuroglancer)")


@pytest.fixture
def served():
    """Servers started by a test, stopped after it (also when it fails)."""
    started = []
    yield started
    for server in started:
        server.stop()


def test_kinds_from_dtype_axes_and_name(data):
    layers = plan_layers([data / "s.zarr"])
    try:
        assert {layer.name: layer.kind for layer in layers} == {
            "raw": "image", "prob": "image", "affs": "affinities", "labels": "segmentation"}
        # images first, then affinities, then segmentations (drawn on top)
        assert [layer.kind for layer in layers] == ["image", "image", "affinities", "segmentation"]
        affs = next(layer for layer in layers if layer.kind == "affinities")
        assert affs.channels == 3 and affs.spatial_shape == (8, 40, 48)
    finally:
        for layer in layers:
            layer.volume.close()
    # uint16 is labels unless the dataset's name says raw
    write_volume(data / "u.zarr" / "raw", np.zeros((4, 5, 6), np.uint16))
    write_volume(data / "u.zarr" / "cells", np.zeros((4, 5, 6), np.uint16))
    with affseg.open_volume(data / "u.zarr" / "raw") as raw, affseg.open_volume(data / "u.zarr" / "cells") as cells:
        assert auto_kind(raw, str(data / "u.zarr" / "raw")) == "image"
        assert auto_kind(cells, str(data / "u.zarr" / "cells")) == "segmentation"


def test_forced_kinds_and_clear_errors(data, synth):
    z = data / "s.zarr"
    layers = plan_layers([z / "raw"], segmentation=[z / "raw"], image=[z / "labels"])
    kinds = {layer.name: layer.kind for layer in layers}
    for layer in layers:
        layer.volume.close()
    assert kinds == {"raw": "segmentation", "labels": "image"}
    with pytest.raises(InputError, match=r"prob has dtype float32: a segmentation must hold integer labels"):
        plan_layers([z / "raw"], segmentation=[z / "prob"])
    write_volume(z / "affs8", (synth.affs * 255).astype(np.uint8), axes=["c^", "z", "y", "x"])
    with pytest.raises(InputError, match=r"affs8 has a channel axis \(axes \['c\^', 'z', 'y', 'x'\]\)"):
        plan_layers([], segmentation=[z / "affs8"])
    with pytest.raises(InputError, match="both as a segmentation and as an image"):
        plan_layers([], segmentation=[z / "raw"], image=[z / "raw"])
    with pytest.raises(InputError, match="no volumes to show"):
        plan_layers([])
    with pytest.raises(VolumeNotFound, match="missing"):
        plan_layers([z / "missing"])


def test_addresses_and_volumes_that_cannot_be_shown_are_named(tmp_path):
    import zarr

    with pytest.raises(InputError, match="is not a volume address"):
        plan_layers([tmp_path / "plain_folder"])
    zarr.open_group(str(tmp_path / "e.zarr"), mode="w").create_group("empty")
    with pytest.raises(InputError, match=r"e\.zarr/empty holds no datasets"):
        plan_layers([tmp_path / "e.zarr" / "empty"])
    with pytest.raises(VolumeNotFound, match="no dataset or group 'nothing' in"):
        plan_layers([tmp_path / "e.zarr" / "nothing"])
    write_volume(tmp_path / "x.zarr" / "complex", np.zeros((4, 5, 6), np.complex64))
    with pytest.raises(InputError, match="complex has dtype complex64, which cannot be shown"):
        plan_layers([tmp_path / "x.zarr" / "complex"])
    write_volume(tmp_path / "x.zarr" / "two_channels", np.zeros((2, 3, 4, 5, 6), np.float32),
                 axes=["c^", "t^", "z", "y", "x"])
    with pytest.raises(InputError, match=r"two_channels has 2 channel axes .* one at most"):
        plan_layers([tmp_path / "x.zarr" / "two_channels"])
    write_volume(tmp_path / "x.zarr" / "four_d", np.zeros((2, 3, 4, 5), np.float32), axes=["t", "z", "y", "x"])
    with pytest.raises(InputError, match=r"four_d has 4 spatial axes .* shows 2D and 3D volumes"):
        plan_layers([tmp_path / "x.zarr" / "four_d"])
    with pytest.raises(InputError, match="bind must be an address"):
        affseg.view(tmp_path / "x.zarr" / "complex", bind=" ")


def test_2d_beside_3d_offsets_off_the_grid_and_strange_units_are_refused(data, tmp_path):
    write_volume(tmp_path / "two.zarr" / "section", np.zeros((40, 48), np.uint8))
    with pytest.raises(InputError, match=r"is 2D .* but .* is 3D"):
        plan_layers([data / "s.zarr" / "raw", tmp_path / "two.zarr" / "section"])
    write_volume(tmp_path / "o.zarr" / "raw", np.zeros((4, 5, 6), np.uint8), voxel_size=(40, 4, 4), offset=(0, 2, 0))
    with pytest.raises(InputError, match=r"offset \(0.0, 2.0, 0.0\) is not a whole number of voxels"):
        plan_layers([tmp_path / "o.zarr" / "raw"])
    write_volume(tmp_path / "p.zarr" / "raw", np.zeros((4, 5, 6), np.uint8), units="pixel")
    with pytest.raises(InputError, match="unit 'pixel' is not a length unit"):
        plan_layers([tmp_path / "p.zarr" / "raw"])
    # a volume far from the first: shown, with a warning naming both
    write_volume(tmp_path / "far.zarr" / "raw", np.zeros((4, 5, 6), np.uint8), voxel_size=(40, 4, 4),
                 offset=(4000, 0, 0))
    with pytest.warns(UserWarning, match="does not overlap"):
        layers = plan_layers([data / "s.zarr" / "raw", tmp_path / "far.zarr" / "raw"])
    for layer in layers:
        layer.volume.close()


def test_units_are_converted_to_nm_and_names_kept_apart(tmp_path):
    write_volume(tmp_path / "a.zarr" / "raw", np.zeros((4, 5, 6), np.uint8), voxel_size=(0.04, 0.004, 0.004),
                 offset=(0.08, 0, 0.004), units="um")
    write_volume(tmp_path / "b.h5" / "raw", np.zeros((4, 5, 6), np.uint8), offset=(100, 0, 5), units="")  # no unit: nm
    layers = plan_layers([tmp_path / "a.zarr" / "raw", tmp_path / "b.h5" / "raw"])
    for layer in layers:
        layer.volume.close()
    assert [layer.name for layer in layers] == ["a.zarr/raw", "b.h5/raw"]
    np.testing.assert_allclose(layers[0].voxel_size, (40, 4, 4))
    np.testing.assert_allclose(layers[0].offset, (80, 0, 4))
    assert layers[0].voxel_offset == (2, 0, 1)
    assert layers[1].voxel_size == (1.0, 1.0, 1.0) and layers[1].offset == (100.0, 0.0, 5.0)


def test_the_viewer_state_has_the_right_layers_voxel_sizes_and_offsets(data, served):
    ng = _ng()
    server = affseg.view(data / "s.zarr", data / "c.h5" / "raw", port=0)
    served.append(server)
    assert server.url.startswith("http://127.0.0.1:") and "/v/" in server.url
    state = server.state
    layers = {layer.name: layer for layer in state.layers}
    assert list(layers) == ["s.zarr/prob", "s.zarr/raw", "c.h5/raw", "s.zarr/affs", "s.zarr/labels"]
    assert layers["s.zarr/labels"].type == "segmentation" and layers["s.zarr/labels"].visible
    assert layers["s.zarr/raw"].type == "image"
    assert layers["s.zarr/affs"].type == "image" and "emitRGB" in layers["s.zarr/affs"].shader
    assert layers["s.zarr/affs"].visible is False  # raw data are shown: the affinities start hidden
    assert layers["s.zarr/raw"].shader_controls["normalized"].range.tolist() == [0.0, 255.0]
    labels = server.sources["s.zarr/labels"]
    assert isinstance(labels, ng.LocalVolume) and labels.volume_type == "segmentation"
    assert labels.data_type == "uint64"
    assert list(labels.dimensions.names) == ["z", "y", "x"]
    np.testing.assert_allclose(labels.dimensions.scales, [40e-9, 4e-9, 4e-9])
    crop = server.sources["c.h5/raw"]
    np.testing.assert_allclose(crop.dimensions.scales, [40e-9, 8e-9, 8e-9])
    assert list(crop.voxel_offset) == [2, 8, 8]  # (80, 64, 64) nm
    affs = server.sources["s.zarr/affs"]
    assert list(affs.dimensions.names) == ["c^", "z", "y", "x"] and list(affs.voxel_offset) == [0, 0, 0, 0]
    # global axes x, y, z at the finest voxel size, the view centred on the volumes
    assert list(state.dimensions.names) == ["x", "y", "z"]
    np.testing.assert_allclose(state.dimensions.scales, [4e-9, 4e-9, 40e-9])
    np.testing.assert_allclose(state.position, [24, 20, 4])
    assert state.layout.type == "4panel"


class _CountingReads:
    """A dataset that records the keys it is read with."""

    def __init__(self, data):
        self._data, self.keys = data, []
        self.shape, self.dtype, self.attrs = data.shape, data.dtype, data.attrs

    def __getitem__(self, key):
        self.keys.append(key)
        return self._data[key]


def test_chunks_are_read_lazily_over_http(data, synth, served):
    _ng()
    server = affseg.view(data / "s.zarr" / "labels", data / "s.zarr" / "affs", data / "c.h5" / "raw")
    served.append(server)
    base = server.url.split("/v/")[0]
    crop = synth.raw[2:6, ::2, ::2][:, 8:, 8:]
    for name, expected, start, end in (("labels", synth.labels, [2, 8, 16], [5, 24, 40]),
                                       ("affs", synth.affs, [0, 1, 0, 4], [3, 3, 40, 20]),
                                       ("raw", crop, [1, 2, 0], [3, 10, 16])):
        layer = next(layer for layer in server.layers if layer.name == name)
        counting = layer.volume.data = _CountingReads(layer.volume.data)
        assert server.state.layers[name].source[0].url.endswith(server.sources[name].token)
        url = f"{base}/neuroglancer/npz/{server.viewer.token}.{server.sources[name].token}/{','.join('1' * len(start))}/" \
              f"{','.join(map(str, start))}/{','.join(map(str, end))}"
        with urllib.request.urlopen(url, timeout=30) as response:
            chunk = np.load(BytesIO(zlib.decompress(response.read())))
        region = tuple(slice(a, b) for a, b in zip(start, end))
        np.testing.assert_array_equal(chunk, expected[region])
        assert counting.keys == [region]  # only the requested region was read


def test_a_port_in_use_and_a_bad_port_are_clear_errors(data):
    _ng()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InputError, match=f"port {port} on 127.0.0.1 is in use"):
            affseg.view(data / "s.zarr" / "raw", port=port)
    with pytest.raises(InputError, match="port"):
        affseg.view(data / "s.zarr" / "raw", port=70000)
    with pytest.raises(InputError, match="cannot listen on address"):
        affseg.view(data / "s.zarr" / "raw", bind="no-such-host.invalid")
    # the refused attempts left no server behind: the next viewer starts
    server = affseg.view(data / "s.zarr" / "raw")
    server.stop()


def test_stop_closes_the_volumes_and_frees_the_port(data):
    _ng()
    server = affseg.view(data / "c.h5" / "raw")
    port = int(server.url.split(":")[2].split("/")[0])
    h5 = server.layers[0].volume
    with server:
        assert h5._file is not None
    assert h5._file is None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # free again


def test_affseg_view_is_a_module_and_a_function_and_import_affseg_stays_light():
    assert callable(affseg.view) and callable(affseg.view)  # twice: still callable once imported
    assert affseg.view.napari_layers is affseg.napari_layers
    code = "import sys, affseg, affseg.cli, affseg.view; assert 'neuroglancer' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_command_line_refuses_bad_input_in_one_line(data, capsys):
    from affseg.cli import main

    assert main(["view", str(data / "s.zarr" / "raw"), "--segmentation", str(data / "s.zarr" / "prob")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "dtype float32" in err and err.count("\n") == 1
    assert main(["view"]) == 2
    assert "no volumes to show" in capsys.readouterr().err


def test_without_neuroglancer_the_command_names_the_extra(data, capsys, monkeypatch):
    import importlib.util

    from affseg.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "neuroglancer" else real(name, *a))
    assert main(["view", str(data / "s.zarr" / "raw")]) == 2
    assert "pip install -c constraints.txt -e '.[view]'" in capsys.readouterr().err


def test_napari_layers(data, synth):
    layers = napari_layers(data / "s.zarr", data / "c.h5" / "raw")
    by_name = {kwargs["name"] if isinstance(kwargs["name"], str) else kwargs["name"][0]: (d, kwargs, kind)
               for d, kwargs, kind in layers}
    labels, kwargs, kind = by_name["s.zarr/labels"]
    assert kind == "labels" and kwargs["scale"] == [40.0, 4.0, 4.0] and kwargs["translate"] == [0.0, 0.0, 0.0]
    np.testing.assert_array_equal(labels[:], synth.labels)
    affs, kwargs, kind = by_name["s.zarr/affs[0]"]
    assert kind == "image" and kwargs["channel_axis"] == 0 and kwargs["colormap"] == ["red", "green", "blue"]
    assert kwargs["name"] == ["s.zarr/affs[0]", "s.zarr/affs[1]", "s.zarr/affs[2]"]
    assert kwargs["scale"] == [40.0, 4.0, 4.0] and affs.shape == synth.affs.shape
    crop, kwargs, kind = by_name["c.h5/raw"]
    assert kind == "image" and kwargs["scale"] == [40.0, 8.0, 8.0] and kwargs["translate"] == [80.0, 64.0, 64.0]
    assert kwargs["contrast_limits"] == [0.0, 255.0]
    del layers, by_name
    gc.collect()
    np.testing.assert_array_equal(crop[:], synth.raw[2:6, ::2, ::2][:, 8:, 8:])  # the HDF5 dataset stays readable
    assert [kind for *_, kind in napari_layers(data / "s.zarr" / "raw", segmentation=[data / "s.zarr" / "raw"])] \
        == ["labels"]


def test_two_viewers_share_the_process_server(data, served):
    from neuroglancer import server as ng_server

    first = affseg.view(data / "s.zarr" / "raw")
    served.append(first)
    second = affseg.view(data / "s.zarr" / "labels")
    served.append(second)
    assert first.url.split("/v/")[0] == second.url.split("/v/")[0] and first.url != second.url
    other_port = int(first.url.split(":")[2].split("/")[0]) + 1
    with pytest.raises(InputError, match="already serves other viewers"):
        affseg.view(data / "s.zarr" / "raw", port=other_port)
    first.stop()
    with urllib.request.urlopen(second.url, timeout=30) as page:  # the other viewer still works
        assert page.status == 200
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(first.url, timeout=30)  # the stopped one is gone
    second.stop()
    assert ng_server.global_server is None


def test_volume_tokens_are_stable_and_viewer_urls_parsed(data, monkeypatch):
    from affseg.view.layers import viewer_link, viewer_source, viewer_token, volume_token

    monkeypatch.chdir(data)
    token = volume_token(data / "s.zarr" / "labels")
    assert volume_token("s.zarr/labels") == volume_token("./s.zarr/labels/") == token  # every spelling
    assert volume_token("s.zarr/raw") != token and volume_token(data / "c.h5" / "raw") != volume_token("s.zarr/raw")
    code = f"from affseg.view.layers import volume_token; print(volume_token({str(data / 's.zarr/labels')!r}))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == token  # the same in every process
    url = "http://127.0.0.1:8787/v/my_view-1/"
    assert viewer_token(url) == viewer_token(url[:-1]) == viewer_token(url + "#!{}") == "my_view-1"
    assert viewer_source(url, "s.zarr/labels") == f"python://volume/my_view-1.{token}"
    link = viewer_link(url, '{"a": [1, "x&y+z"]}')
    assert link.startswith("http://127.0.0.1:8787/affseg/open/my_view-1?state=")
    from urllib.parse import parse_qs, urlsplit

    assert parse_qs(urlsplit(link).query)["state"] == ['{"a": [1, "x&y+z"]}']
    for bad in ("https://neuroglancer-demo.appspot.com/", "127.0.0.1:8787/v/x/", "http://h:1/v/a.b/", None):
        with pytest.raises(InputError, match="is not one that affseg view prints"):
            viewer_token(bad)


def test_a_fixed_token_and_the_open_route_load_a_state_into_the_viewer(data, served):
    _ng()
    import json

    from affseg.view.layers import viewer_link, viewer_source

    for bad in ("a.b", "a/b", "", "x" * 65, 3):
        with pytest.raises(InputError, match="token must be"):
            affseg.view(data / "s.zarr" / "raw", token=bad)
    server = affseg.view(data / "s.zarr" / "raw", data / "s.zarr" / "labels", token="report-view")
    served.append(server)
    assert server.url.endswith("/v/report-view/")
    with pytest.raises(InputError, match="already has the token 'report-view'"):
        affseg.view(data / "s.zarr" / "raw", token="report-view")
    labels = viewer_source(server.url, data / "s.zarr" / "labels")
    assert server.state.layers["labels"].source[0].url == labels  # served under the stable source
    state = {"dimensions": {"x": [4, "nm"], "y": [4, "nm"], "z": [40, "nm"]}, "position": [10, 20, 3],
             "crossSectionScale": 0.5, "layout": "xy",
             "layers": [{"type": "segmentation", "source": labels, "name": "ground truth", "segments": ["7"]}]}
    with urllib.request.urlopen(viewer_link(server.url, json.dumps(state)), timeout=30) as page:
        assert page.status == 200 and page.url == server.url  # redirected to the viewer
    # the entry is applied to the viewer's layers: the named one shown with its segments, the others
    # hidden but still served (a link never drops a volume)
    layers = {layer.name: layer for layer in server.state.layers}
    assert list(layers) == ["raw", "labels"] and not layers["raw"].visible and layers["labels"].visible
    assert list(layers["labels"].segments) == [7]
    assert list(server.state.position) == [10, 20, 3] and server.state.cross_section_scale == 0.5
    base = server.url.split("/v/")[0]
    for name in ("raw", "labels"):
        with urllib.request.urlopen(f"{base}/neuroglancer/info/{server.viewer.token}.{server.sources[name].token}",
                                    timeout=30) as info:
            assert info.status == 200, name
    raw = viewer_source(server.url, data / "s.zarr" / "raw")
    refused = [{}, 5, {"layers": 5}, {"layers": [{"source": "precomputed://https://elsewhere/x"}]},
               {"layers": [{"source": raw, "segments": ["x"]}]}, {"layers": [{"source": raw, "segments": "7"}]},
               {"position": [1, 2]}, {"position": [1, 2, "x"]}, {"dimensions": {"a": [1, "nm"]}},
               {"crossSectionScale": -1}, {"layout": "3d"}, {"shader": "void main() {}"}]
    for bad in refused[1:]:
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(viewer_link(server.url, json.dumps(bad)), timeout=30)
        assert error.value.code == 400, bad
    for url, code in ((f"{base}/affseg/open/report-view?state=%7Bnot%20json", 400),
                      (f"{base}/affseg/open/report-view", 400), (f"{base}/affseg/open/nobody?state=%7B%7D", 404)):
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(url, timeout=30)
        assert error.value.code == code, url
    assert list(server.state.position) == [10, 20, 3] and len(server.state.layers) == 2  # refused: nothing changed
    with urllib.request.urlopen(viewer_link(server.url, json.dumps(refused[0])), timeout=30) as page:
        assert page.status == 200  # an empty entry changes nothing but the visibility
    assert [layer.visible for layer in server.state.layers] == [False, False]
