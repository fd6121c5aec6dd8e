"""Error report: the largest merges and splits of a segmentation, ranked by their share of VOI.

The VOI terms split exactly into one share per segment and per ground-truth object:

* ``VOI merge = H(gt | seg) = sum_s p(s) H(gt | seg = s)``: segment ``s`` contributes
  ``p(s) H(gt | seg = s)`` bits, non-zero only if it covers several objects (a merge);
* ``VOI split = H(seg | gt) = sum_g p(g) H(seg | gt = g)``: object ``g`` contributes
  ``p(g) H(seg | gt = g)`` bits, non-zero only if it is cut into several segments (a split).

Probabilities are over the voxels whose ground truth is labelled (gt 0 is ignored, as in
:func:`~affseg.evaluate`), so the shares of all merges add up to ``voi_merge`` and those of all
splits to ``voi_split``. Each entry carries a neuroglancer state (JSON, built here without the
``neuroglancer`` package) that shows the entry's ids at its bounding box, and a link when a viewer
URL is given.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
from numpy.typing import ArrayLike

from .._checks import as_int, as_spacing
from ..errors import InputError
from .metrics import NO_LABELLED_VOXEL, _check_ndim, compact_pair, scores_from_sums

__all__ = ["REPORT_SUFFIXES", "error_report", "neuroglancer_state", "neuroglancer_url", "write_report"]

REPORT_SUFFIXES = (".html", ".json")
"""The report formats, chosen by the file's suffix."""

_URL_SAFE = "~@$&()*!+=:;,.?/'"  # left unquoted in the state, as neuroglancer's own links do
_LAYERS = {"raw": "raw", "segmentation": "segmentation", "ground_truth": "ground truth"}  # key -> layer name, drawn in this order
_NEEDED_SOURCES = {"segmentation", "ground_truth"}


def _contingency(g: np.ndarray, s: np.ndarray, n_s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zero cells of the contingency table of ``(g, s)`` over the voxels with ``g > 0``.

    Returns ``(gi, si, count)``, int64, sorted by ``gi`` then ``si``; ``n_s`` bounds ``s``.
    """
    labelled = g > 0
    gl = g[labelled].astype(np.int64)
    sl = s[labelled].astype(np.int64)
    width = n_s + 1
    if (int(gl.max()) + 1) * width < 2**63:  # one int64 key per pair
        keys, count = np.unique(gl * width + sl, return_counts=True)
        return keys // width, keys % width, count.astype(np.int64)
    pairs, count = np.unique(np.stack([gl, sl]), axis=1, return_counts=True)
    return pairs[0], pairs[1], count.astype(np.int64)


def _xlogx(x: np.ndarray) -> np.ndarray:
    """``x log2 x`` of counts (0 for 0)."""
    x = np.asarray(x, dtype=np.float64)
    return x * np.log2(np.where(x > 0, x, 1.0))


def _bounding_boxes(index: np.ndarray, wanted: Sequence[int]) -> dict[int, tuple[list[int], list[int]]]:
    """Voxel bounding boxes ``(start, stop)`` (stop exclusive) of the labels ``wanted`` of an
    index volume (0 = none), in one pass."""
    from scipy import ndimage

    if not wanted:
        return {}
    slices = ndimage.find_objects(index, max_label=max(wanted))
    return {k: ([sl.start for sl in slices[k - 1]], [sl.stop for sl in slices[k - 1]]) for k in wanted}


def neuroglancer_state(layers: dict[str, dict], *, position: Sequence[float], voxel_size: Sequence[float],
                       units: Sequence[str] | None = None, extent: float | None = None) -> dict:
    """A neuroglancer viewer state (plain JSON data) that centres the view on ``position``.

    Built by hand, without the ``neuroglancer`` package: layers with their sources (segmentation
    layers with the segments to show), a global coordinate space of one voxel per step (named
    ``x, y, z``, neuroglancer's order, from affseg's ``z, y, x``) and the position.

    Parameters
    ----------
    layers : dict of str to dict
        Layer name to ``{"source": str, "segments": list of int}`` (a segmentation layer) or
        ``{"source": str, "type": "image"}``; drawn in this order, the last on top.
    position : sequence of float
        The centre, in voxels (``z, y, x`` or ``y, x``), global: the offset (in voxels) included.
    voxel_size : sequence of float
        World size of a voxel per axis (``z, y, x`` or ``y, x``).
    units : sequence of str, optional
        Unit of each axis: ``nm`` or another SI length (``um``, ``m``...), or a name neuroglancer
        does not take (``nanometer``, ``micron``), which is converted to nm; default none (unitless).
    extent : float, optional
        The in-plane size (voxels) to fit in view; sets the zoom.

    Returns
    -------
    state : dict
        ``dimensions``, ``position``, ``crossSectionScale`` (with ``extent``), ``layers``,
        ``selectedLayer`` and ``layout``.
    """
    ndim = len(position)
    names = ("z", "y", "x")[-ndim:]
    scales, units = _neuroglancer_units(voxel_size, units)
    order = list(range(ndim))[::-1]  # x, y(, z)
    state = {
        "dimensions": {names[i]: [scales[i], units[i]] for i in order},
        "position": [float(position[i]) for i in order],
        "layers": [_state_layer(name, spec) for name, spec in layers.items()],
        "layout": "4panel" if ndim == 3 else "xy",
    }
    if extent is not None:  # the extent (at least 16 voxels) across about 250 screen pixels
        state["crossSectionScale"] = max(float(extent), 16.0) / 250.0
    shown = [layer["name"] for layer in state["layers"] if layer["type"] == "segmentation"] or \
        [layer["name"] for layer in state["layers"]]
    if shown:
        state["selectedLayer"] = {"layer": shown[0]}  # the side panel stays closed: the data get the window
    return state


def _state_layer(name: str, spec: dict) -> dict:
    kind = spec.get("type", "segmentation")
    if kind == "image":
        return {"type": "image", "source": spec["source"], "name": name}
    if kind != "segmentation":
        raise InputError(f"layer {name!r}: type must be 'segmentation' or 'image', got {kind!r}")
    return {"type": "segmentation", "source": spec["source"], "name": name,
            "segments": [str(int(k)) for k in spec["segments"]]}


def _neuroglancer_units(voxel_size: Sequence[float], units: Sequence[str] | None) -> tuple[list[float], list[str]]:
    """Scales and units neuroglancer takes: SI lengths as they are, other length names in nm (as
    ``affseg view`` shows them), anything else unitless."""
    from ..view.layers import NEUROGLANCER_LENGTHS, nm_per_unit

    scales = [float(v) for v in voxel_size]
    if not units:
        return scales, [""] * len(scales)
    units = [str(u).strip() for u in units]
    if all(u in NEUROGLANCER_LENGTHS for u in units):
        return scales, units
    try:
        factors = nm_per_unit(units, "the report")
    except InputError:
        return scales, [""] * len(scales)
    return [v * f for v, f in zip(scales, factors)], ["nm"] * len(scales)


def neuroglancer_url(state: dict, viewer_url: str) -> str:
    """The link that opens ``state`` in the neuroglancer at ``viewer_url``: ``viewer_url#!`` +
    the state as URL-quoted JSON (neuroglancer's own URL format), or, for an ``affseg view``
    viewer (``http://HOST:PORT/v/TOKEN/``), ``http://HOST:PORT/affseg/open/TOKEN?state=`` + the
    state: that viewer's server applies it and sends the browser on to the viewer, which stays
    connected to the server (neuroglancer's Python viewer runs cut off from its server when
    opened with a state in the URL). Any ``/v/TOKEN/`` address is taken to be ``affseg view``'s:
    the viewer of a plain ``neuroglancer`` Python server has no such route.

    Parameters
    ----------
    state : dict
        A viewer state, e.g. from :func:`neuroglancer_state`.
    viewer_url : str
        The viewer's address (``http://`` or ``https://``), e.g. what ``affseg view`` prints;
        anything after a ``#`` in it is replaced.

    Returns
    -------
    url : str
        The link.
    """
    from ..view.layers import is_viewer_url, viewer_link

    text = json.dumps(state, separators=(",", ":"))
    if is_viewer_url(viewer_url):
        return viewer_link(viewer_url, text)
    base = _check_viewer_url(viewer_url).split("#", 1)[0]
    return base + "#!" + quote(text, safe=_URL_SAFE)


def _check_viewer_url(viewer_url) -> str:
    if not isinstance(viewer_url, str) or not viewer_url.startswith(("http://", "https://")):
        raise InputError(f"viewer_url must be an http:// or https:// address, got {viewer_url!r}")
    return viewer_url


def _spatial(values, ndim: int, name: str, default: float) -> list[float]:
    if values is None:
        return [default] * ndim
    try:
        values = [float(v) for v in np.ravel(values)]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {ndim} finite numbers (one per spatial axis), got {values!r}") from None
    if len(values) != ndim or not all(math.isfinite(v) for v in values):
        raise InputError(f"{name} must be {ndim} finite numbers (one per spatial axis), got {values}")
    return values


def error_report(segmentation: ArrayLike, ground_truth: ArrayLike, *, top: int = 20, overlaps: int = 5,
                 voxel_size: Sequence[float] | None = None, offset: Sequence[float] | None = None,
                 units: Sequence[str] | None = None, sources: dict[str, str] | None = None,
                 viewer_url: str | None = None) -> dict:
    """The largest merges and splits of ``segmentation``, ranked by their share of VOI.

    A merge is a segment that covers several ground-truth objects; its share of VOI merge is
    ``p(s) H(gt | seg = s)``. A split is an object cut into several segments; its share of VOI
    split is ``p(g) H(seg | gt = g)``. The shares of all merges add up to ``voi_merge``, those of
    all splits to ``voi_split`` (of :func:`~affseg.evaluate`; voxels whose ground truth is 0
    are ignored, segment 0 is a segment like any other).

    Parameters
    ----------
    segmentation : int array, 2D (y, x) or 3D (z, y, x)
        Segment ids (non-negative, up to 2**64 - 1).
    ground_truth : int array, shape of ``segmentation``
        Object ids; 0 is unlabelled (ignored).
    top : int
        How many merges and how many splits to list (the largest), at least 1.
    overlaps : int
        How many overlapping ids to list per entry (the largest overlaps), at least 1.
    voxel_size, offset : sequence of float, optional
        World size of a voxel and world position of voxel 0 (``z, y, x``), for the world
        bounding boxes and the neuroglancer coordinates; default 1 and 0.
    units : sequence of str, optional
        Unit of each axis (e.g. ``("nm", "nm", "nm")``).
    sources : dict, optional
        neuroglancer layer sources, ``{"segmentation": ..., "ground_truth": ...}`` and optionally
        ``"raw"`` (an image layer under the others): what a neuroglancer server serves the volumes
        as, e.g. :func:`affseg.view.layers.viewer_source` for the ``affseg view`` viewer at
        ``viewer_url``. Without them the entries carry no neuroglancer state.
    viewer_url : str, optional
        A neuroglancer viewer's address (``http(s)://``): each entry then carries a link to it.

    Returns
    -------
    report : dict of plain data (JSON-ready)
        ``scores`` (those of :func:`~affseg.evaluate`), ``shape``, ``voxel_size``, ``offset``,
        ``units``, ``n_merges`` and ``n_splits`` (how many there are in all), ``merges`` and
        ``splits``: lists of at most ``top`` entries, largest share first (ties: larger size,
        then smaller id). A merge entry has ``rank``, ``segment`` (its id), ``size`` (its voxels
        with labelled ground truth), ``share`` (bits), ``fraction`` (of ``voi_merge``),
        ``n_objects``, ``objects`` (the ``overlaps`` largest: ``id``, ``overlap`` and ``size``
        in voxels), ``bbox`` (``start`` and exclusive ``stop`` in voxels, zyx, of the segment's
        scored voxels), ``bbox_world`` (``offset + bbox * voxel_size``) and, with ``sources``,
        ``neuroglancer`` (``state``, and ``url`` with ``viewer_url``). A split entry has
        ``object``, ``n_segments`` and ``segments`` in place of ``segment``, ``n_objects`` and
        ``objects``; its share is of ``voi_split``.

    Raises
    ------
    InputError
        If the labels are refused by :func:`~affseg.evaluate` or are 1D, the ground truth has no
        labelled voxel, ``top``/``overlaps`` are not positive integers, ``voxel_size``/
        ``offset`` do not have one finite number per axis, or ``viewer_url`` is not http(s).
    """
    top = as_int(top, name="top", minimum=1)
    overlaps = as_int(overlaps, name="overlaps", minimum=1)
    if viewer_url is not None:
        _check_viewer_url(viewer_url)
    if sources is not None and not _NEEDED_SOURCES <= set(sources) <= set(_LAYERS):
        raise InputError(f"sources must have the keys {sorted(_NEEDED_SOURCES)} and may have 'raw', "
                         f"got {sorted(sources)}")
    _check_ndim(segmentation, ground_truth)
    ndim = np.ndim(segmentation)
    if ndim not in (2, 3):
        raise InputError(f"the error report needs 2D (y, x) or 3D (z, y, x) volumes, got shape {np.shape(segmentation)}")
    voxel_size = [1.0] * ndim if voxel_size is None else as_spacing(voxel_size, ndim, name="voxel_size").tolist()
    offset = _spatial(offset, ndim, "offset", 0.0)
    units = [str(u) for u in units] if units is not None else [""] * ndim
    if len(units) != ndim:
        raise InputError(f"units must be {ndim} strings (one per spatial axis), got {units}")

    g, gids, s, sids, shape = compact_pair(segmentation, ground_truth)
    if not np.any(g):
        raise InputError(NO_LABELLED_VOXEL)
    gi, si, count = _contingency(g, s, len(sids) - 1)
    n = int(count.sum())
    plogp = _xlogx(count)
    size_g = np.bincount(gi, weights=count, minlength=len(gids)).astype(np.int64)
    size_s = np.bincount(si, weights=count, minlength=len(sids)).astype(np.int64)
    sums = (n, float(np.dot(count, count.astype(np.float64))), float(plogp.sum()),
            float(np.dot(size_g, size_g.astype(np.float64))), float(_xlogx(size_g).sum()),
            float(np.dot(size_s, size_s.astype(np.float64))), float(_xlogx(size_s).sum()))
    # p(s) H(gt | s) = (b_s log b_s - sum_g p_gs log p_gs) / n; likewise per object
    merge_share = (_xlogx(size_s) - np.bincount(si, weights=plogp, minlength=len(sids))) / n
    split_share = (_xlogx(size_g) - np.bincount(gi, weights=plogp, minlength=len(gids))) / n
    parts_s = np.bincount(si, minlength=len(sids))
    parts_g = np.bincount(gi, minlength=len(gids))

    merges = _ranked(merge_share, parts_s, size_s, sids, top)
    splits = _ranked(split_share, parts_g, size_g, gids, top)
    boxes_s = _bounding_boxes(np.where(g > 0, s, 0).reshape(shape), merges)
    boxes_g = _bounding_boxes(g.reshape(shape), splits)
    scores = scores_from_sums(*sums)
    geometry = {"voxel_size": voxel_size, "offset": offset, "units": units}
    entries = {}
    for kind, ranked, own, other, boxes, term in (
            ("merges", merges, (si, sids, size_s), (gi, gids, size_g), boxes_s, "voi_merge"),
            ("splits", splits, (gi, gids, size_g), (si, sids, size_s), boxes_g, "voi_split")):
        share = merge_share if kind == "merges" else split_share
        entries[kind] = [
            _entry(kind, rank, k, float(share[k]), scores[term], own, other, count, overlaps, boxes[k],
                   geometry, sources, viewer_url)
            for rank, k in enumerate(ranked, 1)]
    return {
        "scores": scores,
        "shape": [int(v) for v in shape],
        **geometry,
        "n_merges": int(np.count_nonzero(parts_s > 1)),
        "n_splits": int(np.count_nonzero(parts_g > 1)),
        "merges": entries["merges"],
        "splits": entries["splits"],
    }


def _ranked(share: np.ndarray, parts: np.ndarray, size: np.ndarray, ids: np.ndarray, top: int) -> list[int]:
    """Indices of the ``top`` largest shares among those with more than one part; ties: larger
    size, then smaller id."""
    candidates = np.flatnonzero(parts > 1)
    order = np.lexsort((ids[candidates], -size[candidates], -share[candidates]))
    return [int(k) for k in candidates[order[:top]]]


def _entry(kind, rank, k, share, term, own, other, count, overlaps, box, geometry, sources, viewer_url) -> dict:
    own_index, own_ids, own_size = own
    other_index, other_ids, other_size = other
    cells = np.flatnonzero(own_index == k)
    order = np.lexsort((other_ids[other_index[cells]], -count[cells]))[:overlaps]
    listed = [{"id": int(other_ids[other_index[c]]), "overlap": int(count[c]),
               "size": int(other_size[other_index[c]])} for c in cells[order]]
    one, many = ("segment", "objects") if kind == "merges" else ("object", "segments")
    start, stop = box
    voxel_size, offset = geometry["voxel_size"], geometry["offset"]
    entry = {
        "rank": rank,
        one: int(own_ids[k]),
        "size": int(own_size[k]),
        "share": share,
        "fraction": share / term if term > 0 else 0.0,
        f"n_{many}": int(cells.size),
        many: listed,
        "bbox": {"start": [int(v) for v in start], "stop": [int(v) for v in stop]},
        "bbox_world": {"start": [o + a * v for o, a, v in zip(offset, start, voxel_size)],
                       "stop": [o + b * v for o, b, v in zip(offset, stop, voxel_size)]},
    }
    if sources is not None:
        own_layer, other_layer = ("segmentation", "ground_truth") if kind == "merges" else ("ground_truth", "segmentation")
        segments = {own_layer: [entry[one]], other_layer: [o["id"] for o in listed]}
        layers = {name: {"source": sources[key], "segments": segments[key]} if key in segments else
                  {"source": sources[key], "type": "image"} for key, name in _LAYERS.items() if key in sources}
        position = [o / v + (a + b) / 2 for o, v, a, b in zip(offset, voxel_size, start, stop)]
        extent = max(b - a for a, b in zip(start[-2:], stop[-2:]))
        state = neuroglancer_state(layers, position=position, voxel_size=voxel_size, units=geometry["units"],
                                   extent=extent)
        entry["neuroglancer"] = {"state": state}
        if viewer_url is not None:
            entry["neuroglancer"]["url"] = neuroglancer_url(state, viewer_url)
    return entry


# ------------------------------------------------------------------ files


def write_report(report: dict, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write an :func:`error_report` as JSON (``.json``) or as a page that opens offline (``.html``).

    The page holds the scores, the split/merge curve when ``report["curve"]`` holds the rows of
    several thresholds (as from :func:`~affseg.evaluation.split_merge_curve`; drawn as an embedded
    PNG), and the merges and splits with their neuroglancer links (or states, to paste into
    neuroglancer's state editor, when the report has no viewer URL). Nothing in it is fetched
    from the network. The file is written atomically.

    Parameters
    ----------
    report : dict
        From :func:`error_report`, optionally with ``curve`` (rows), ``best_by``, ``threshold``
        and the input addresses ``segmentation`` and ``ground_truth`` added.
    path : str or path-like
        Ending in ``.html`` or ``.json``.
    overwrite : bool
        Whether an existing file may be replaced.

    Returns
    -------
    path : Path
        The file written.

    Raises
    ------
    InputError
        If ``path`` ends in neither ``.html`` nor ``.json``.
    OutputExists
        If ``path`` exists and ``overwrite`` is false.
    """
    from ..io.atomic import atomic_path, check_writable, write_json

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in REPORT_SUFFIXES:
        raise InputError(f"the report {path} must end in .html or .json")
    if suffix == ".json":
        return write_json(path, report, overwrite=overwrite)
    check_writable(path, overwrite=overwrite)
    page = report_html(report)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; vertical-align: top; }
th { background: #f0f0f0; }
td.ids, td.link { text-align: left; }
pre { white-space: pre-wrap; word-break: break-all; max-width: 40em; font-size: 0.8em; }
.note { color: #555; max-width: 60em; }
img { max-width: 100%; }
"""


def report_html(report: dict) -> str:
    """The page :func:`write_report` writes for ``.html`` (a string; no external resources)."""
    e = html.escape
    scores = report["scores"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>affseg error report</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>affseg error report</h1>",
    ]
    facts = [(k, report[k]) for k in ("segmentation", "ground_truth", "threshold", "best_by") if report.get(k) is not None]
    facts += [("shape (zyx)", report["shape"]), ("voxel size", report["voxel_size"]),
              ("offset", report["offset"]), ("units", report["units"])]
    parts.append("<table>" + "".join(f"<tr><th>{e(str(k))}</th><td class='ids'>{e(_text(v))}</td></tr>"
                                     for k, v in facts) + "</table>")
    names = ["voi_split", "voi_merge", "voi", "arand", "rand_split", "rand_merge", "cremi_score", "n_voxels"]
    parts.append("<h2>Scores</h2><table><tr>" + "".join(f"<th>{n}</th>" for n in names) + "</tr><tr>"
                 + "".join(f"<td>{_number(scores[n])}</td>" for n in names) + "</tr></table>")
    curve = report.get("curve")
    if curve and len(curve) > 1:
        parts.append("<h2>Split / merge curve</h2>")
        parts.append(f'<img alt="split/merge curve" src="data:image/png;base64,{_curve_png(report)}">')
    parts.append(
        "<p class='note'>Each merge's share is p(s)·H(gt | seg = s) and each split's p(g)·H(seg | gt = g), in bits, "
        "over the voxels with labelled ground truth: the shares of all merges add up to VOI merge, those of all "
        "splits to VOI split. Bounding boxes are zyx, start inclusive, stop exclusive, of the entry's voxels "
        "with labelled ground truth.</p>")
    viewer = report.get("viewer")
    if viewer:
        command = "affseg view " + " ".join(map(shlex.quote, viewer["volumes"]))
        parts.append(f"<p class='note'>The links open in the viewer at <code>{e(viewer['url'])}</code> while it "
                     f"shows these volumes (<code>{e(command)}</code>, with the port and token of that URL: "
                     "<code>--port PORT --token TOKEN</code>).</p>")
    for kind, one, many, term in (("merges", "segment", "objects", "voi_merge"),
                                  ("splits", "object", "segments", "voi_split")):
        listed = report[kind]
        total = report[f"n_{kind}"]
        parts.append(f"<h2>Largest {kind} ({len(listed)} of {total}; {term} {scores[term]:.4f} bits)</h2>")
        if not listed:
            parts.append(f"<p>No {kind}.</p>")
            continue
        parts.append(f"<table><tr><th>rank</th><th>{one}</th><th>size</th><th>share (bits)</th>"
                     f"<th>% of {term}</th><th>{many} (id: overlap / size)</th><th>bbox (voxels, zyx)</th>"
                     "<th>bbox (world)</th><th>neuroglancer</th></tr>")
        for entry in listed:
            overlaps = ", ".join(f"{o['id']}: {o['overlap']} / {o['size']}" for o in entry[many])
            if entry[f"n_{many}"] > len(entry[many]):
                overlaps += f", ... ({entry[f'n_{many}']} in all)"
            parts.append(
                f"<tr><td>{entry['rank']}</td><td>{entry[one]}</td><td>{entry['size']}</td>"
                f"<td>{entry['share']:.4f}</td><td>{100 * entry['fraction']:.1f}</td>"
                f"<td class='ids'>{e(overlaps)}</td><td class='ids'>{_box(entry['bbox'])}</td>"
                f"<td class='ids'>{_box(entry['bbox_world'])}</td><td class='link'>{_link(entry)}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _text(value) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, list) else str(value)


def _number(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _box(box: dict) -> str:
    def fmt(values):
        return ", ".join(f"{v:g}" for v in values)
    return f"[{fmt(box['start'])}] – [{fmt(box['stop'])}]"


def _link(entry: dict) -> str:
    ng = entry.get("neuroglancer")
    if ng is None:
        return ""
    if "url" in ng:
        return f'<a href="{html.escape(ng["url"], quote=True)}">open</a>'
    return f"<details><summary>state</summary><pre>{html.escape(json.dumps(ng['state']))}</pre></details>"


def _curve_png(report: dict) -> str:
    """The split/merge curve of ``report["curve"]`` as base64 PNG."""
    from .curves import split_merge_figure

    reported = Path(str(report.get("segmentation") or "segmentation"))
    name = reported.parent.name if report.get("threshold") is not None else reported.name  # a group's name
    fig = split_merge_figure({name: report["curve"]}, best_by=report.get("best_by") or "voi")
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=90, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
