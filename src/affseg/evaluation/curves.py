"""Split/merge curves over agglomeration thresholds, and their plot (MALA, Fig. 7)."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InputError
from .metrics import evaluate

__all__ = ["BEST_BY", "best_threshold", "decimal_threshold", "plot_split_merge", "split_merge_curve"]

BEST_BY = {"voi": "voi", "cremi": "cremi_score", "arand": "arand"}
"""The criteria for the best threshold (lowest is best): name -> the score of :func:`~affseg.evaluate`.
VOI (``voi_split + voi_merge``, in bits) is the default, as in the MALA and waterz papers; CREMI
is ``sqrt(VOI * ARAND)``, the CREMI challenge's ranking; ARAND the adapted Rand error."""

CRITERION_NAMES = {"voi": "VOI", "cremi": "CREMI score", "arand": "ARAND"}


def decimal_threshold(threshold: float) -> float:
    """The decimal a threshold stands for: float32 thresholds (as kernels return them) become
    the shortest decimal that rounds to them (``np.float32(0.1)`` -> ``0.1``, not
    ``0.10000000149011612``); other floats are returned as they are.

    Parameters
    ----------
    threshold : float
        A threshold, float32 or float64.

    Returns
    -------
    threshold : float
        A Python float that prints as the decimal the user typed (``repr`` gives ``0.1``).
    """
    value = float(threshold)
    single = np.float32(value)
    if np.isfinite(single) and float(single) == value:
        return float(np.format_float_positional(single, unique=True, trim="-"))
    return value


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
        Per threshold, in the given order: ``threshold`` (float, the decimal it stands for: see
        :func:`decimal_threshold`) and the scores of :func:`~affseg.evaluate`.

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
        row = {"threshold": decimal_threshold(threshold)}
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
        The score to minimise: a criterion of :data:`BEST_BY` (``voi``, ``cremi``, ``arand``) or
        any score of the rows (e.g. ``cremi_score``).

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
    key = BEST_BY.get(key, key)
    return min(rows, key=lambda r: r[key])


def new_figure(**kwargs):
    """A matplotlib Figure with the Agg canvas, made without pyplot: no global backend switch,
    nothing registered with a GUI, garbage-collected like any object."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def plot_split_merge(curves: dict[str, Sequence[dict]], path: str | Path, *, title: str = "split / merge",
                     best_by: str = "voi") -> Path:
    """Draw VOI merge over VOI split, and Rand merge over Rand split, per method as a PNG.

    ``curves`` maps a method name to its rows from :func:`split_merge_curve`, one point per
    threshold, each labelled with its threshold. The best threshold of each method by
    ``best_by`` is circled (the legend says by which criterion). The file is written atomically.

    Parameters
    ----------
    curves : dict of str to sequence of dict
        Method name to its rows (each with ``voi_split``, ``voi_merge``, ``voi``, ``rand_split``,
        ``rand_merge``, the score ``best_by`` names, and optionally ``threshold``, which labels
        the point).
    path : str or Path
        The PNG file to write (replaced if it exists).
    title : str
        Title of the VOI panel.
    best_by : str
        The criterion of the circled point: ``voi``, ``cremi`` or ``arand`` (:data:`BEST_BY`).

    Returns
    -------
    path : Path
        The file written.

    Raises
    ------
    InputError
        If a method has no rows, or ``best_by`` is not a criterion.
    """
    from ..io.atomic import atomic_path

    fig = split_merge_figure(curves, title=title, best_by=best_by)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def split_merge_figure(curves: dict[str, Sequence[dict]], *, title: str = "split / merge", best_by: str = "voi"):
    """The matplotlib Figure that :func:`plot_split_merge` writes (same arguments, no file)."""
    if best_by not in BEST_BY:
        raise InputError(f"best_by must be one of {sorted(BEST_BY)}, got {best_by!r}")
    fig = new_figure(figsize=(10, 4.5))
    axes = fig.subplots(1, 2)
    circled = False
    for name, rows in curves.items():
        if not rows:
            raise InputError(f"no scores to plot for {name!r}")
        points = {"voi": ([r["voi_split"] for r in rows], [r["voi_merge"] for r in rows]),
                  "rand": ([r["rand_split"] for r in rows], [r["rand_merge"] for r in rows])}
        line = axes[0].plot(*points["voi"], "o-", label=name, markersize=3)[0]
        color = line.get_color()
        axes[1].plot(*points["rand"], "o-", label=name, markersize=3, color=color)
        if len(rows) < 2:
            continue
        best = best_threshold(rows, best_by)
        for ax, (x, y) in zip(axes, (("voi_split", "voi_merge"), ("rand_split", "rand_merge"))):
            ax.plot(best[x], best[y], "o", mfc="none", ms=10, color=color,
                    label=None if circled else f"best by {CRITERION_NAMES[best_by]}")
            for row in rows:  # each point with its threshold
                if row.get("threshold") is not None:
                    ax.annotate(f"{decimal_threshold(row['threshold'])!r}", (row[x], row[y]), fontsize=7,
                                xytext=(3, 3), textcoords="offset points", color=color)
        circled = True
    axes[0].set(xlabel="VOI split (bits)", ylabel="VOI merge (bits)", title=title)
    axes[1].set(xlabel="Rand split", ylabel="Rand merge", title="Rand (1 = perfect)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig
