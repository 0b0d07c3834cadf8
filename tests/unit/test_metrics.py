"""Metrics of docs/models.md section 6 on small hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.metrics import (
    bin_left_open,
    classification_metrics,
    format_metric_line,
    mosi_regression_metrics,
    pearson,
    sims_regression_metrics,
)


def test_mosi_regression_hand_computed() -> None:
    y = [2.6, -0.5, 0.0, 1.5, -3.4]
    p = [2.4, 0.5, -0.2, 2.5, -2.6]
    m = mosi_regression_metrics(p, y)
    assert m["mae"] == pytest.approx(3.2 / 5)  # unclipped: 0.2 + 1 + 0.2 + 1 + 0.8
    # clip to [-3,3], np.round half-to-even: p -> 2,0,-0,2,-3 ; y -> 3,-0,0,2,-3
    assert m["acc7"] == pytest.approx(4 / 5)
    # clip to [-2,2]: p -> 2,0,0,2,-2 ; y -> 2,0,0,2,-2
    assert m["acc5"] == pytest.approx(1.0)
    # has0: y>=0 T,F,T,T,F vs p>=0 T,T,F,T,F
    assert m["acc2_has0"] == pytest.approx(3 / 5)
    assert m["f1_has0"] == pytest.approx((3 * (2 / 3) + 2 * 0.5) / 5)
    # non0 drops y == 0: y>0 T,F,T,F vs p>0 T,T,T,F
    assert m["acc2_non0"] == pytest.approx(3 / 4)
    assert m["f1_non0"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["n"] == 5


def test_round_half_to_even_matters() -> None:
    # 0.5 and 2.5 round to 0 and 2 (half-to-even), so these are exact Acc-7 hits
    m = mosi_regression_metrics([0.5, 2.5, -1.5], [0.0, 2.0, -2.0])
    assert m["acc7"] == pytest.approx(1.0)


def test_pearson() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [3, 2, 1]) == 0.0  # undefined -> 0.0
    a, b = np.array([0.3, -1.2, 2.0, 0.1]), np.array([0.0, -1.0, 1.5, 0.5])
    assert pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1])


def test_sims_hand_computed() -> None:
    y = [-1.0, -0.1, 0.0, 0.1, 0.8, 1.5]
    p = [-0.8, -0.05, 0.05, 0.3, 0.6, 2.0]
    m = sims_regression_metrics(p, y)
    assert m["mae"] == pytest.approx(0.7 / 6)  # after clipping 1.5 and 2.0 to 1.0
    assert m["acc2"] == pytest.approx(5 / 6)  # 0.0 counts as negative
    assert m["acc3"] == pytest.approx(4 / 6)
    assert m["acc5"] == pytest.approx(3 / 6)
    assert m["f1"] == pytest.approx((0.8 + 6 / 7) / 2)


def test_bins_left_open_right_closed() -> None:
    x = np.array([-1.0, -0.7, -0.69, -0.1, 0.1, 0.11, 0.7, 1.0])
    assert bin_left_open(x, (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01)).tolist() == [0, 0, 1, 1, 2, 3, 3, 4]


def test_classification_hand_computed() -> None:
    y = [0, 0, 1, 1, 2, 2]
    p = [0, 1, 1, 1, 2, 0]
    m = classification_metrics(p, y, labels=("neg", "neu", "pos"))
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["recall_weighted"] == pytest.approx(m["accuracy"])  # weighted recall == accuracy
    assert m["precision_weighted"] == pytest.approx((0.5 + 2 / 3 + 1.0) / 3)
    assert m["f1_weighted"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["f1_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert (m["recall_neg"], m["recall_neu"], m["recall_pos"]) == pytest.approx((0.5, 1.0, 0.5))
    scores = np.eye(3)[p] + 0.01
    assert classification_metrics(scores, y, labels=("neg", "neu", "pos"))["accuracy"] == m["accuracy"]


def test_format_metric_line() -> None:
    m = {
        "acc2_has0": 0.8341,
        "acc2_non0": 0.8526,
        "f1_has0": 0.8339,
        "f1_non0": 0.8532,
        "mae": 0.705,
        "corr": 0.813,
        "acc7": 0.4582,
        "acc5": 0.5,
        "acc3": 0.6,
        "n": 686.0,
    }
    assert format_metric_line(m) == ("Acc-2 83.41/85.26 F1 83.39/85.32 MAE 0.705 Corr 0.813 Acc-7 45.82 Acc-5 50.00")
    c = classification_metrics([0, 1], [0, 1], labels=("a", "b"))
    assert format_metric_line(c).startswith("Acc 100.00 wF1 100.00 mF1 100.00")
    s = sims_regression_metrics([0.5, -0.5], [0.4, -0.6])
    assert format_metric_line(s).startswith("Acc-2 100.00 Acc-3 100.00 Acc-5")
