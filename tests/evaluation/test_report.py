"""The error report: merges and splits ranked by their share of VOI, shares that add up to the VOI
terms, neuroglancer states and links, an HTML page that opens offline, JSON that round-trips."""
from __future__ import annotations

import json
import math
from collections import Counter
from html.parser import HTMLParser
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from affseg import evaluate
from affseg.errors import InputError, OutputExists
from affseg.evaluation.report import error_report, neuroglancer_url, write_report

VIEWER = "http://127.0.0.1:9000/v/affseg/"
SOURCES = {"segmentation": "out.zarr/seg", "ground_truth": "data.zarr/labels"}


def constructed_case():
    """The issue's case: objects 1 and 2 merged into segment 20, object 3 split into segments 31,
    32, 33 (of 12, 8 and 4 columns), object 4 right (segment 40), an unlabelled band (gt 0)."""
    gt = np.zeros((3, 10, 30), np.uint64)
    seg = np.zeros_like(gt)
    gt[:, 0:4, 0:10] = 1
    gt[:, 0:4, 10:16] = 2
    seg[:, 0:4, 0:16] = 20
    gt[:, 5:9, 0:24] = 3
    seg[:, 5:9, 0:12] = 31
    seg[:, 5:9, 12:20] = 32
    seg[:, 5:9, 20:24] = 33
    gt[:, 0:4, 20:30] = 4
    seg[:, 0:4, 20:30] = 40
    seg[:, 9, :] = 20  # segment 20 also covers unlabelled voxels: they are not scored
    return seg, gt


def entropy(counts) -> float:
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts if c)


def test_constructed_case_lists_exactly_its_merge_and_split():
    seg, gt = constructed_case()
    report = error_report(seg, gt, voxel_size=(40, 4, 4), offset=(400, 0, 8), units=("nm",) * 3)
    n = int(np.count_nonzero(gt))
    assert report["n_merges"] == 1 and report["n_splits"] == 1
    [merge] = report["merges"]
    [split] = report["splits"]
    assert merge["segment"] == 20 and merge["size"] == 3 * 4 * 16 and merge["n_objects"] == 2
    assert [(o["id"], o["overlap"], o["size"]) for o in merge["objects"]] == [(1, 120, 120), (2, 72, 72)]
    assert merge["share"] == pytest.approx(merge["size"] / n * entropy([120, 72]), abs=1e-12)
    assert split["object"] == 3 and split["size"] == 3 * 4 * 24 and split["n_segments"] == 3
    assert [o["id"] for o in split["segments"]] == [31, 32, 33]  # largest overlap first
    assert [o["overlap"] for o in split["segments"]] == [144, 96, 48]
    assert split["share"] == pytest.approx(split["size"] / n * entropy([144, 96, 48]), abs=1e-12)
    # the shares add up to the VOI terms of affseg.evaluate
    scores = evaluate(seg, gt)
    assert merge["share"] == pytest.approx(scores["voi_merge"], abs=1e-9)
    assert split["share"] == pytest.approx(scores["voi_split"], abs=1e-9)
    assert merge["fraction"] == pytest.approx(1.0) and split["fraction"] == pytest.approx(1.0)
    # bounding boxes of the scored voxels (gt > 0), zyx, stop exclusive; world = offset + voxels * size
    assert merge["bbox"] == {"start": [0, 0, 0], "stop": [3, 4, 16]}
    assert merge["bbox_world"] == {"start": [400.0, 0.0, 8.0], "stop": [520.0, 16.0, 72.0]}
    assert split["bbox"] == {"start": [0, 5, 0], "stop": [3, 9, 24]}
    assert "neuroglancer" not in merge  # no sources: no state


def test_merges_and_splits_are_ranked_by_share():
    """Three merges and two splits of known, different shares come out largest first."""
    gt = np.zeros((40, 40), np.uint64)
    seg = np.zeros_like(gt)
    # merges: segment 100 covers objects 1, 2 (10 + 10 px), segment 200 covers 3, 4 (30 + 30),
    # segment 300 covers 5, 6 (20 + 2): shares (n_s / n) H(...)
    gt[0, 0:10], gt[1, 0:10], seg[0:2, 0:10] = 1, 2, 100
    gt[2, 0:30], gt[3, 0:30], seg[2:4, 0:30] = 3, 4, 200
    gt[4, 0:20], gt[5, 0:2], seg[4, 0:20], seg[5, 0:2] = 5, 6, 300, 300
    # splits: object 7 in two halves of 20 (segments 701, 702), object 8 in 1 + 39 (801, 802)
    gt[10, :], seg[10, :20], seg[10, 20:] = 7, 701, 702
    gt[12, :], seg[12, :1], seg[12, 1:] = 8, 801, 802
    report = error_report(seg, gt)
    n = int(np.count_nonzero(gt))
    expected_merges = sorted([(60 * entropy([30, 30]) / n, 200), (20 * entropy([10, 10]) / n, 100),
                              (22 * entropy([20, 2]) / n, 300)], reverse=True)
    assert [m["segment"] for m in report["merges"]] == [k for _, k in expected_merges]
    assert [m["share"] for m in report["merges"]] == pytest.approx([s for s, _ in expected_merges], abs=1e-12)
    assert [s["object"] for s in report["splits"]] == [7, 8]
    assert [m["rank"] for m in report["merges"]] == [1, 2, 3]
    top1 = error_report(seg, gt, top=1, overlaps=1)
    assert [m["segment"] for m in top1["merges"]] == [200] and top1["n_merges"] == 3
    assert len(top1["merges"][0]["objects"]) == 1 and top1["merges"][0]["n_objects"] == 2


def brute_force_shares(seg: np.ndarray, gt: np.ndarray):
    """p(s) H(gt | s) per segment and p(g) H(seg | g) per object, from Python counters."""
    pairs = Counter((int(a), int(b)) for a, b in zip(seg.ravel(), gt.ravel()) if b != 0)
    n = sum(pairs.values())
    by_s, by_g = {}, {}
    for (s, g), c in pairs.items():
        by_s.setdefault(s, []).append(c)
        by_g.setdefault(g, []).append(c)
    merge = {s: sum(cs) / n * entropy(cs) for s, cs in by_s.items() if len(cs) > 1}
    split = {g: sum(cs) / n * entropy(cs) for g, cs in by_g.items() if len(cs) > 1}
    return merge, split


labels_2d_3d = st.one_of(st.tuples(st.integers(1, 6), st.integers(1, 6)),
                         st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)))


@given(shape=labels_2d_3d, data=st.data())
def test_shares_add_up_to_the_voi_terms(shape, data):
    seg = data.draw(arrays(np.uint64, shape, elements=st.sampled_from([0, 1, 2, 3, 2**64 - 1])))
    gt = data.draw(arrays(np.uint64, shape, elements=st.integers(0, 4)))
    if not gt.any():
        with pytest.raises(InputError, match="no labelled voxel"):
            error_report(seg, gt)
        return
    report = error_report(seg, gt, top=10**6)
    scores = evaluate(seg, gt)
    assert sum(m["share"] for m in report["merges"]) == pytest.approx(scores["voi_merge"], abs=1e-9)
    assert sum(s["share"] for s in report["splits"]) == pytest.approx(scores["voi_split"], abs=1e-9)
    assert report["scores"] == pytest.approx(scores, abs=1e-9)
    merge, split = brute_force_shares(seg, gt)
    assert {m["segment"]: m["share"] for m in report["merges"]} == pytest.approx(merge, abs=1e-12)
    assert {s["object"]: s["share"] for s in report["splits"]} == pytest.approx(split, abs=1e-12)
    shares = [m["share"] for m in report["merges"]]
    assert shares == sorted(shares, reverse=True)


def test_neuroglancer_state_and_link_jump_to_the_entry():
    seg, gt = constructed_case()
    report = error_report(seg, gt, voxel_size=(40, 4, 4), offset=(400, 0, 8), units=("nm",) * 3,
                          sources=SOURCES, viewer_url=VIEWER)
    merge, split = report["merges"][0], report["splits"][0]
    state = merge["neuroglancer"]["state"]
    assert state["dimensions"] == {"x": [4.0, "nm"], "y": [4.0, "nm"], "z": [40.0, "nm"]}
    # the bbox centre in global voxels (offset / voxel size added), in x, y, z order
    assert state["position"] == [2 + 8.0, 2.0, 10 + 1.5]
    layers = {layer["name"]: layer for layer in state["layers"]}
    assert layers["segmentation"] == {"type": "segmentation", "source": "out.zarr/seg", "name": "segmentation",
                                      "segments": ["20"]}
    assert layers["ground truth"]["source"] == "data.zarr/labels" and layers["ground truth"]["segments"] == ["1", "2"]
    split_layers = {layer["name"]: layer["segments"] for layer in split["neuroglancer"]["state"]["layers"]}
    assert split_layers == {"segmentation": ["31", "32", "33"], "ground truth": ["3"]}
    # an affseg view viewer: its server takes the state and sends the browser on to the viewer
    url = urlsplit(merge["neuroglancer"]["url"])
    assert url.scheme + "://" + url.netloc == "http://127.0.0.1:9000" and url.path == "/affseg/open/affseg"
    assert json.loads(parse_qs(url.query, strict_parsing=True)["state"][0]) == state
    # any other neuroglancer: the state after #! (an old state in the base is replaced)
    other = "https://neuroglancer-demo.appspot.com/"
    base, fragment = neuroglancer_url(state, other + "#!old").split("#!", 1)
    assert base == other and json.loads(unquote(fragment)) == state


def test_neuroglancer_units_and_the_raw_layer():
    seg, gt = constructed_case()
    # SI lengths as they are; other length names in nm (as affseg view shows them); others unitless
    for voxel_size, units, unit, scales in (((40, 4, 4), " nanometer", "nm", (4, 40)),
                                            ((0.04, 0.004, 0.004), "um", "um", (0.004, 0.04)),
                                            ((0.04, 0.004, 0.004), "micrometer", "nm", (4, 40)),
                                            ((0.04, 0.004, 0.004), "pixel", "", (0.004, 0.04))):
        report = error_report(seg, gt, voxel_size=voxel_size, units=(units,) * 3, sources=SOURCES)
        dims = report["merges"][0]["neuroglancer"]["state"]["dimensions"]
        assert list(dims) == ["x", "y", "z"] and {u for _, u in dims.values()} == {unit}, units
        assert [dims[a][0] for a in "xyz"] == pytest.approx([scales[0], scales[0], scales[1]]), units
    report = error_report(seg, gt, sources={**SOURCES, "raw": "data.zarr/raw"})
    state = report["splits"][0]["neuroglancer"]["state"]
    assert [(layer["name"], layer["type"]) for layer in state["layers"]] == [
        ("raw", "image"), ("segmentation", "segmentation"), ("ground truth", "segmentation")]
    assert "segments" not in state["layers"][0] and state["selectedLayer"]["layer"] == "segmentation"


class _Resources(HTMLParser):
    """Every src/href of a page, with its tag, and the text of its style elements."""

    def __init__(self):
        super().__init__()
        self.refs, self.styles, self._in_style = [], [], False

    def handle_starttag(self, tag, attrs):
        self._in_style = tag == "style"
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data") or (name == "style" and "url(" in (value or "")):
                self.refs.append((tag, name, value))

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)

    def handle_endtag(self, tag):
        self._in_style = False


def test_html_opens_offline_and_json_round_trips(tmp_path):
    seg, gt = constructed_case()
    report = error_report(seg, gt, sources=SOURCES, viewer_url=VIEWER)
    rows = [dict(evaluate(seg, gt), threshold=t) for t in (0.1, 0.5)]
    report.update(segmentation="out.zarr/seg/threshold_0.5", ground_truth="data.zarr/labels", threshold=0.5,
                  best_by="voi", curve=rows)
    page = write_report(report, tmp_path / "report.html").read_text()
    parser = _Resources()
    parser.feed(page)
    loaded = [(tag, name, value) for tag, name, value in parser.refs if tag != "a"]
    assert loaded == [("img", "src", loaded[0][2])] and loaded[0][2].startswith("data:image/png;base64,")
    # the only links are the entries' neuroglancer links (navigation, not resources the page loads)
    links = [value for tag, name, value in parser.refs if tag == "a"]
    assert links == [report["merges"][0]["neuroglancer"]["url"], report["splits"][0]["neuroglancer"]["url"]]
    assert not any(word in "".join(parser.styles) for word in ("url(", "@import", "@font-face"))
    assert "<script" not in page.lower()
    # without a viewer URL the page holds the states to paste, and no link at all
    report_no_url = error_report(seg, gt, sources=SOURCES)
    page = write_report(report_no_url, tmp_path / "states.html").read_text()
    parser = _Resources()
    parser.feed(page)
    assert parser.refs == [] and "&quot;segments&quot;: [&quot;20&quot;]" in page
    # JSON: the same report back
    path = write_report(report, tmp_path / "report.json")
    assert json.loads(path.read_text()) == report
    with pytest.raises(OutputExists):
        write_report(report, path)
    write_report(report, path, overwrite=True)


def test_bad_input_is_refused_before_any_work(tmp_path):
    seg, gt = constructed_case()
    with pytest.raises(InputError, match="2D"):
        error_report(seg.ravel(), gt.ravel())
    with pytest.raises(InputError, match="top"):
        error_report(seg, gt, top=0)
    with pytest.raises(InputError, match="viewer_url"):
        error_report(seg, gt, viewer_url="127.0.0.1:9000")
    for voxel_size in [(4, 4), (0, 4, 4), (-40, 4, 4), ("a", 4, 4)]:
        with pytest.raises(InputError, match=r"voxel_size must hold 3 positive numbers"):
            error_report(seg, gt, voxel_size=voxel_size, sources={"segmentation": "s", "ground_truth": "g"})
    with pytest.raises(InputError, match=r"offset must be 3 finite numbers"):
        error_report(seg, gt, offset=("a", 0, 0))
    with pytest.raises(InputError, match="sources must have the keys"):
        error_report(seg, gt, sources={"segmentation": "s"})
    with pytest.raises(InputError, match="units must be 3 strings"):
        error_report(seg, gt, units=["nm"])
    with pytest.raises(InputError, match="shape"):
        error_report(seg, gt[:, :, :5])
    with pytest.raises(InputError, match=r"\.html or \.json"):
        write_report(error_report(seg, gt), tmp_path / "report.txt")
    assert list(tmp_path.iterdir()) == []


def test_cli_report_of_a_threshold_group(tmp_path, capsys):
    from affseg.cli import main
    from affseg.io import read_volume, write_volume

    seg, gt = constructed_case()
    write_volume(tmp_path / "data.zarr" / "labels", gt, voxel_size=(40, 4, 4))
    # a group as affseg segment writes it: the best threshold (by VOI) is the right one, 0.5
    write_volume(tmp_path / "out.zarr" / "seg" / "threshold_0.5", seg, voxel_size=(40, 4, 4))
    worse = seg.copy()
    worse[worse == 40] = 20
    write_volume(tmp_path / "out.zarr" / "seg" / "threshold_0.9", worse, voxel_size=(40, 4, 4))
    html_path, json_path = tmp_path / "r.html", tmp_path / "r.json"
    args = ["evaluate", str(tmp_path / "out.zarr" / "seg"), str(tmp_path / "data.zarr" / "labels"),
            "--report", str(html_path), "--report", str(json_path), "--report-top", "5", "--viewer-url", VIEWER]
    assert main(args) == 0
    report = json.loads(json_path.read_text())
    assert report["threshold"] == 0.5 and report["segmentation"].endswith("threshold_0.5")
    assert [r["threshold"] for r in report["curve"]] == [0.5, 0.9]
    assert report["voxel_size"] == [40.0, 4.0, 4.0]
    assert [m["segment"] for m in report["merges"]] == [20] and [s["object"] for s in report["splits"]] == [3]
    # the links name the volumes as the viewer at VIEWER serves them (affseg view out.zarr/seg data.zarr/labels)
    from affseg.view.layers import volume_token

    state = report["merges"][0]["neuroglancer"]["state"]
    sources = {layer["name"]: layer["source"] for layer in state["layers"]}
    assert sources == {"segmentation": f"python://volume/affseg.{volume_token(report['segmentation'])}",
                       "ground truth": f"python://volume/affseg.{volume_token(tmp_path / 'data.zarr' / 'labels')}"}
    assert report["merges"][0]["neuroglancer"]["url"].startswith("http://127.0.0.1:9000/affseg/open/affseg?state=")
    assert report["viewer"] == {"url": VIEWER, "volumes": [report["segmentation"], report["ground_truth"]]}
    assert "affseg view " + report["segmentation"] in html_path.read_text()
    assert "data:image/png;base64," in html_path.read_text()
    assert "wrote" in capsys.readouterr().out
    # an existing report is not replaced without --overwrite; bad options are refused before any work
    assert main(args) == 2
    assert main(args + ["--overwrite"]) == 0
    for bad in (["--report", str(tmp_path / "r.txt")], ["--report-top", "3"],
                ["--report", str(tmp_path / "x.html"), "--viewer-url", "ftp://x"],
                ["--report", str(tmp_path / "x.html"), "--viewer-url", "https://neuroglancer-demo.appspot.com/"],
                ["--report", str(tmp_path / "x.html"), "--raw", str(tmp_path / "data.zarr" / "labels")],
                ["--raw", str(tmp_path / "data.zarr" / "labels")],
                ["--report", str(tmp_path / "x.html"), "--viewer-url", VIEWER, "--raw", str(tmp_path / "no.zarr" / "raw")],
                ["--report", str(tmp_path / "x.html"), "--report-top", "0"],
                ["--report", str(json_path), "--json", str(json_path), "--overwrite"]):
        assert main(args[:3] + bad) == 2
    assert not (tmp_path / "x.html").exists()
    # one dataset: its report, without a curve or a viewer URL (states to paste instead of links)
    single = tmp_path / "single.json"
    assert main(["evaluate", str(tmp_path / "out.zarr" / "seg" / "threshold_0.9"), str(tmp_path / "data.zarr" / "labels"),
                 "--report", str(single)]) == 0
    report = json.loads(single.read_text())
    assert report["threshold"] is None and "curve" not in report
    assert [m["segment"] for m in report["merges"]] == [20] and report["merges"][0]["n_objects"] == 3
    assert "url" not in report["merges"][0]["neuroglancer"]
    assert read_volume(tmp_path / "out.zarr" / "seg" / "threshold_0.5")[0].shape == seg.shape
