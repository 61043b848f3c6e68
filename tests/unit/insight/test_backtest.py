"""Tests for the backtest of the customer models."""

from __future__ import annotations

import json
import math
from datetime import datetime

import numpy as np
import pytest

from nudge.insight import FitError
from nudge.insight.backtest import auc, backtest, report_rows
from tests.unit.insight.test_profiles import synthetic_frames, tiny_lines

CALIBRATION_END = datetime(2024, 4, 1)


def test_auc_counts_ties_as_half() -> None:
    labels = np.array([True, False, True, False])
    assert auc(labels, np.array([0.9, 0.1, 0.4, 0.4])) == pytest.approx(3.5 / 4)
    assert auc(labels, np.array([1.0, 0.0, 1.0, 0.0])) == 1.0
    assert auc(np.array([True, True]), np.array([0.3, 0.4])) is None


def test_tiny_shop_backtest_by_hand() -> None:
    report = backtest(tiny_lines(), CALIBRATION_END, 91)

    # Customers who bought before 1 April: ann, cat, dan, gus and hal; bob and
    # fay first bought in the holdout and are left out.
    assert report.customers == 5
    assert report.repeat_buyers == 2
    assert report.scores.model == "heuristic"
    # In the holdout ann bought on 20 June (twice, one day, worth 20) and dan
    # on 1 June (60); ann's order at exactly 1 July is after the holdout.
    assert report.scores.purchases_actual == 2
    assert report.scores.revenue_actual == pytest.approx(80.0)
    assert report.buyers_in_holdout == 2

    # Shop gap: median of ann's 51 and cat's 31 days; gap = (t_x + 2 * 41) /
    # (x + 2); expected purchases exp(-recency / (2 * gap)) * 91 / gap.
    gaps = {"ann": 133 / 3, "cat": 113 / 3, "dan": 41.0, "gus": 41.0, "hal": 41.0}
    recency = {"ann": 31, "cat": 244, "dan": 456, "gus": 122, "hal": 122}
    spend = {"ann": 25.0, "cat": 250.0, "dan": 50.0, "gus": 1000.0, "hal": 5.0}
    actual = {"ann": 1, "cat": 0, "dan": 1, "gus": 0, "hal": 0}
    predicted = {
        name: math.exp(-recency[name] / (2 * gap)) * 91 / gap
        for name, gap in gaps.items()
    }
    assert report.scores.purchases_predicted == pytest.approx(sum(predicted.values()))
    mae = sum(abs(predicted[n] - actual[n]) for n in gaps) / 5
    assert report.scores.mae == pytest.approx(mae)
    revenue = sum(predicted[n] * spend[n] for n in gaps)
    assert report.scores.revenue_predicted == pytest.approx(revenue)
    assert report.scores == report.baseline


def test_json_has_the_promised_keys() -> None:
    data = backtest(tiny_lines(), CALIBRATION_END, 91).as_json()

    for key in ("customers", "purchases", "mae", "correlation", "auc", "revenue"):
        assert key in data
    assert set(data["purchases"]) == {"predicted", "actual"}
    assert set(data["revenue"]) == {"predicted", "actual"}
    assert data["calibration_end"] == "2024-04-01T00:00:00"
    assert data["holdout_days"] == 91
    json.dumps(data)


def test_synthetic_shop_backtest_prefers_bgnbd_and_predicts_well() -> None:
    lines, _, _ = synthetic_frames()
    report = backtest(lines, datetime(2026, 9, 1), 90)
    scores = report.scores

    assert scores.model == "bgnbd"
    assert report.baseline.model == "heuristic"
    assert 0.6 < scores.purchases_predicted / scores.purchases_actual < 1.6
    assert scores.correlation is not None and scores.correlation > 0.4
    assert scores.auc is not None and scores.auc > 0.7
    assert 0.5 < scores.revenue_predicted / scores.revenue_actual < 2.0
    assert [row[0] for row in report_rows(report)][:2] == [
        "purchases predicted",
        "purchases actual",
    ]


def test_backtest_refuses_an_empty_calibration_and_a_bad_holdout() -> None:
    with pytest.raises(FitError, match="no customer bought anything before"):
        backtest(tiny_lines(), datetime(2020, 1, 1), 30)
    with pytest.raises(ValueError, match="at least one day"):
        backtest(tiny_lines(), CALIBRATION_END, 0)
