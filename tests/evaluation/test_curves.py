"""Split/merge curves: thresholds as the decimals typed, the best threshold by a stated criterion,
and the plot that labels every point with its threshold."""
import json

import numpy as np
import pytest

from affseg.errors import InputError
from affseg.evaluation import BEST_BY, best_threshold, decimal_threshold, plot_split_merge, split_merge_curve
from affseg.evaluation.curves import split_merge_figure


def test_float32_thresholds_are_written_as_the_decimal_they_stand_for():
    thresholds = np.array([0.1, 0.30001, 0.7], np.float32)  # as Agglomeration.thresholds holds them
    assert float(thresholds[0]) == 0.10000000149011612
    assert [decimal_threshold(t) for t in thresholds] == [0.1, 0.30001, 0.7]
    assert decimal_threshold(0.30001) == 0.30001 and decimal_threshold(1 / 3) == 1 / 3  # float64: as it is
    gt = np.repeat(np.arange(1, 5, dtype=np.uint64), 4)
    rows = split_merge_curve([gt, gt, np.ones_like(gt)], gt, thresholds)
    text = json.dumps([r["threshold"] for r in rows])
    assert text == "[0.1, 0.30001, 0.7]"


def _rows():
    # VOI prefers 0.2, the CREMI score 0.3, ARAND 0.4
    scores = {0.2: (1.0, 0.50), 0.3: (1.2, 0.20), 0.4: (2.0, 0.15)}
    return [{"threshold": t, "voi_split": voi / 2, "voi_merge": voi / 2, "voi": voi, "arand": arand,
             "cremi_score": (voi * arand) ** 0.5, "rand_split": 1 - arand, "rand_merge": 1 - arand / 2}
            for t, (voi, arand) in scores.items()]


@pytest.mark.parametrize("criterion,expected", [("voi", 0.2), ("cremi", 0.3), ("arand", 0.4), ("cremi_score", 0.3)])
def test_best_threshold_by_each_criterion(criterion, expected):
    assert best_threshold(_rows(), criterion)["threshold"] == expected
    assert set(BEST_BY) == {"voi", "cremi", "arand"}


def test_best_threshold_of_nothing_is_an_error():
    with pytest.raises(InputError, match="no scores"):
        best_threshold([])


@pytest.mark.parametrize("best_by,circled", [("voi", 0.2), ("arand", 0.4)])
def test_plot_labels_every_point_with_its_threshold_and_circles_the_best(best_by, circled):
    rows = _rows()
    rows[1]["threshold"] = np.float32(0.3)  # labelled 0.3, not 0.30000001192092896
    fig = split_merge_figure({"mala": rows, "mws": [rows[0]]}, best_by=best_by)
    voi, rand = fig.axes
    for ax, (x, y) in ((voi, ("voi_split", "voi_merge")), (rand, ("rand_split", "rand_merge"))):
        labels = {t.get_text(): t.xy for t in ax.texts}
        assert set(labels) == {"0.2", "0.3", "0.4"}  # the one-point curve gets no label
        assert labels["0.4"] == (rows[2][x], rows[2][y])
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == ["mala", f"best by {'VOI' if best_by == 'voi' else 'ARAND'}", "mws"]
        ring = [line for line in ax.lines if line.get_markerfacecolor() == "none"]
        assert len(ring) == 1
        best = next(r for r in rows if float(r["threshold"]) == pytest.approx(circled))
        assert (ring[0].get_xdata()[0], ring[0].get_ydata()[0]) == (best[x], best[y])


def test_plot_is_written_and_refuses_an_unknown_criterion(tmp_path):
    path = plot_split_merge({"mala": _rows()}, tmp_path / "c.png", best_by="cremi")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="best_by"):
        plot_split_merge({"mala": _rows()}, tmp_path / "d.png", best_by="f1")
    with pytest.raises(InputError, match="no scores"):
        plot_split_merge({"mala": []}, tmp_path / "e.png")
    assert not (tmp_path / "d.png").exists()
