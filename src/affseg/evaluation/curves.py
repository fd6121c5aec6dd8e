"""Split/merge curves over agglomeration thresholds, and their plot (MALA, Fig. 7)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError
from .metrics import evaluate

__all__ = ["best_threshold", "plot_split_merge", "split_merge_curve"]


def split_merge_curve(segmentations: Iterable[np.ndarray], ground_truth: ArrayLike,
                      thresholds: Sequence[float]) -> list[dict]:
    """Scores of each segmentation (one per threshold) against ``ground_truth``.

    Returns one :func:`~affseg.evaluate` dict per threshold, with ``threshold`` added.

    Parameters
    ----------
    segmentations : iterable of int arrays, each the shape of ``ground_truth``
        One segmentation per threshold (e.g. a ``(T, z, y, x)`` array or a generator).
    ground_truth : int array
        Object ids; 0 is ignored (see :func:`~affseg.evaluate`).
    thresholds : sequence of float
        The threshold of each segmentation, as many as there are segmentations.

    Returns
    -------
    rows : list of dict
        Per threshold, in the given order: ``threshold`` (float) and the scores of
        :func:`~affseg.evaluate`.

    Raises
    ------
    ValueError
        If ``segmentations`` and ``thresholds`` differ in length.
    InputError
        If a segmentation or the ground truth is refused by :func:`~affseg.evaluate`.
    """
    rows = []
    thresholds = list(thresholds)
    for threshold, seg in zip(thresholds, segmentations, strict=True):
        row = {"threshold": float(threshold)}
        row.update(evaluate(seg, ground_truth))
        rows.append(row)
    return rows


def best_threshold(rows: Sequence[dict], key: str = "voi") -> dict:
    """The row with the lowest ``key`` (default total VOI).

    Parameters
    ----------
    rows : sequence of dict
        Rows of :func:`split_merge_curve`.
    key : str
        The score to minimise.

    Returns
    -------
    row : dict
        The first row with the lowest ``row[key]`` (the row itself, not a copy).

    Raises
    ------
    InputError
        If ``rows`` is empty.
    KeyError
        If a row lacks ``key``.
    """
    if not rows:
        raise InputError("no scores to choose from")
    return min(rows, key=lambda r: r[key])


def new_figure(**kwargs):
    """A matplotlib Figure with the Agg canvas, made without pyplot: no global backend switch,
    nothing registered with a GUI, garbage-collected like any object."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def plot_split_merge(curves: dict[str, Sequence[dict]], path: str | Path, *, title: str = "split / merge") -> Path:
    """Draw VOI merge over VOI split per method (one point per threshold) as a PNG.

    ``curves`` maps a method name to its rows from :func:`split_merge_curve`. The best threshold
    (lowest total VOI) of each method is circled. The file is written atomically.

    Parameters
    ----------
    curves : dict of str to sequence of dict
        Method name to its rows (each with ``voi_split``, ``voi_merge``, ``voi``, ``rand_split``,
        ``rand_merge`` and optionally ``threshold``, which labels the point).
    path : str or Path
        The PNG file to write (replaced if it exists).
    title : str
        Title of the VOI panel.

    Returns
    -------
    path : Path
        The file written.

    Raises
    ------
    InputError
        If a method has no rows.
    """
    from ..io.atomic import atomic_path

    fig = new_figure(figsize=(10, 4.5))
    axes = fig.subplots(1, 2)
    for name, rows in curves.items():
        split = [r["voi_split"] for r in rows]
        merge = [r["voi_merge"] for r in rows]
        line = axes[0].plot(split, merge, "o-", label=name, markersize=3)[0]
        best = best_threshold(rows)
        axes[0].plot(best["voi_split"], best["voi_merge"], "o", mfc="none", ms=10, color=line.get_color())
        for row in rows if len(rows) > 1 else []:  # label each point with its threshold
            if row.get("threshold") is not None:
                axes[0].annotate(f"{row['threshold']:g}", (row["voi_split"], row["voi_merge"]), fontsize=7,
                                 xytext=(3, 3), textcoords="offset points", color=line.get_color())
        axes[1].plot([r["rand_split"] for r in rows], [r["rand_merge"] for r in rows], "o-",
                     label=name, markersize=3, color=line.get_color())
    axes[0].set(xlabel="VOI split (bits)", ylabel="VOI merge (bits)", title=title)
    axes[1].set(xlabel="Rand split", ylabel="Rand merge", title="Rand (1 = perfect)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path
