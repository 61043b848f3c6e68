"""Backtest: fit on purchases before a date, predict a holdout, compare with reality.

Customers are those with a purchase before ``calibration_end``; newcomers in the
holdout are left out, since nothing could be predicted for them. A purchase
counts as in ``profiles`` (placed lines, value above zero); the holdout counts
purchase days in ``[calibration_end, calibration_end + holdout_days)``.
Predictions come from the models ``fit_shop_models`` chooses (BG/NBD and
Gamma-Gamma, or the gap heuristic on small shops); the heuristic's figures are
always reported beside them as a baseline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from nudge.insight._common import FitError, FloatArray
from nudge.insight.config import InsightConfig
from nudge.insight.profiles import (
    ShopModels,
    customer_history,
    fit_shop_models,
    heuristic_p_alive,
    naive_utc,
    on_distinct,
    purchases,
    repeat_spend,
    shop_gap_days,
    typical_gaps,
)


@dataclass(frozen=True)
class Scores:
    """How one set of predictions compares with the holdout."""

    model: str
    purchases_predicted: float
    purchases_actual: float
    mae: float
    correlation: float | None
    auc: float | None
    revenue_predicted: float
    revenue_actual: float

    def as_json(self) -> dict[str, Any]:
        """Return the figures in the backtest's JSON shape."""
        return {
            "model": self.model,
            "purchases": {
                "predicted": self.purchases_predicted,
                "actual": self.purchases_actual,
            },
            "mae": self.mae,
            "correlation": self.correlation,
            "auc": self.auc,
            "revenue": {
                "predicted": self.revenue_predicted,
                "actual": self.revenue_actual,
            },
        }


@dataclass(frozen=True)
class BacktestReport:
    """The outcome of one backtest: the chosen model's scores and the baseline's."""

    calibration_end: datetime
    holdout_days: int
    customers: int
    repeat_buyers: int
    buyers_in_holdout: int
    last_order_at: datetime | None
    reason: str
    scores: Scores
    baseline: Scores

    @property
    def holdout_end(self) -> datetime:
        """Return the end of the holdout (exclusive)."""
        return self.calibration_end + timedelta(days=self.holdout_days)

    def as_json(self) -> dict[str, Any]:
        """Return the report as JSON-ready data, the chosen model's figures on top."""
        return {
            "calibration_end": self.calibration_end.isoformat(),
            "holdout_days": self.holdout_days,
            "holdout_end": self.holdout_end.isoformat(),
            "last_order_at": (
                self.last_order_at.isoformat() if self.last_order_at else None
            ),
            "customers": self.customers,
            "repeat_buyers": self.repeat_buyers,
            "buyers_in_holdout": self.buyers_in_holdout,
            "reason": self.reason,
            **self.scores.as_json(),
            "baseline": self.baseline.as_json(),
        }


def backtest(
    lines: pd.DataFrame,
    calibration_end: datetime,
    holdout_days: int,
    config: InsightConfig | None = None,
) -> BacktestReport:
    """Fit on purchases before ``calibration_end`` and score the holdout."""
    config = config or InsightConfig()
    if holdout_days < 1:
        raise ValueError(f"holdout must be at least one day, got {holdout_days}")
    start = naive_utc(calibration_end)
    end = start + timedelta(days=holdout_days)

    history = customer_history(lines, start).frame
    if history.empty:
        raise FitError(f"no customer bought anything before {start:%Y-%m-%d}")
    actual_count, actual_value = _holdout(lines, start, end, history.index)

    # The chosen models, then the heuristic as a baseline beside them.
    models = fit_shop_models(history, config)
    predicted = _predict_models(models, history, holdout_days, config)
    baseline = _predict_heuristic(history, holdout_days, config)
    scores = _score(models.name, *predicted, actual_count, actual_value)
    return BacktestReport(
        calibration_end=start,
        holdout_days=holdout_days,
        customers=len(history),
        repeat_buyers=models.repeat_buyers,
        buyers_in_holdout=int(np.count_nonzero(actual_count)),
        last_order_at=_last_order(lines),
        reason=models.reason,
        scores=scores,
        baseline=_score("heuristic", *baseline, actual_count, actual_value),
    )


def auc(labels: np.ndarray[Any, Any], scores: FloatArray) -> float | None:
    """Return the ROC AUC of scores for boolean labels (None if one class only).

    It is the Mann-Whitney statistic: the chance that a random positive scores
    above a random negative, ties counting half.
    """
    positive = np.asarray(labels, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _holdout(
    lines: pd.DataFrame, start: datetime, end: datetime, customers: pd.Index
) -> tuple[FloatArray, FloatArray]:
    """Return each calibration customer's purchase days and value in the holdout."""
    bought = purchases(lines, end)
    bought = bought[bought["ordered_at"] >= start]
    per_customer = bought.groupby("customer_id").agg(
        days=("day", "nunique"), value=("value", "sum")
    )
    per_customer = per_customer.reindex(customers, fill_value=0)
    return (
        per_customer["days"].to_numpy(np.float64),
        per_customer["value"].to_numpy(np.float64),
    )


def _predict_models(
    models: ShopModels, history: pd.DataFrame, days: int, config: InsightConfig
) -> tuple[FloatArray, FloatArray]:
    """Return expected purchases and spend per purchase from the fitted models."""
    if models.bgnbd is None or models.gammagamma is None:
        return _predict_heuristic(history, days, config)
    bgnbd, gammagamma = models.bgnbd, models.gammagamma
    x, t_x, T = (history[c].to_numpy(np.float64) for c in ("x", "t_x", "T"))

    def expected(x: FloatArray, t_x: FloatArray, T: FloatArray) -> Any:
        return bgnbd.expected_purchases(float(days), x, t_x, T)

    count = on_distinct(expected, x, t_x, T)
    spend = gammagamma.conditional_expected_average_profit(x, repeat_spend(history))
    return count, np.asarray(spend, dtype=np.float64)


def _predict_heuristic(
    history: pd.DataFrame, days: int, config: InsightConfig
) -> tuple[FloatArray, FloatArray]:
    """Return the gap heuristic's expected purchases and spend per purchase."""
    gaps = typical_gaps(history, shop_gap_days(history, config), config)
    recency = (history["T"] - history["t_x"]).to_numpy(np.float64)
    count = heuristic_p_alive(recency, gaps, config) * days / gaps
    spend = (history["monetary"] / history["days"]).to_numpy(np.float64)
    return np.asarray(count, dtype=np.float64), spend


def _score(
    model: str,
    count: FloatArray,
    spend: FloatArray,
    actual_count: FloatArray,
    actual_value: FloatArray,
) -> Scores:
    """Compare predicted purchases and revenue with what happened."""
    correlation = None
    if np.std(count) > 0 and np.std(actual_count) > 0:
        correlation = float(np.corrcoef(count, actual_count)[0, 1])
    return Scores(
        model=model,
        purchases_predicted=float(count.sum()),
        purchases_actual=float(actual_count.sum()),
        mae=float(np.mean(np.abs(count - actual_count))),
        correlation=correlation,
        auc=auc(actual_count > 0, count),
        revenue_predicted=float(np.sum(count * spend)),
        revenue_actual=float(actual_value.sum()),
    )


def _last_order(lines: pd.DataFrame) -> datetime | None:
    """Return the time of the last order line given, to warn of a short holdout."""
    if lines.empty:
        return None
    return pd.Timestamp(lines["ordered_at"].max()).to_pydatetime()


def report_rows(report: BacktestReport) -> list[tuple[str, str, str]]:
    """Return (figure, chosen model, baseline) rows for printing a table."""
    rows = []
    for name, key in (
        ("purchases predicted", "purchases_predicted"),
        ("purchases actual", "purchases_actual"),
        ("MAE per customer", "mae"),
        ("correlation", "correlation"),
        ("AUC (buys again)", "auc"),
        ("revenue predicted", "revenue_predicted"),
        ("revenue actual", "revenue_actual"),
    ):
        chosen, base = asdict(report.scores)[key], asdict(report.baseline)[key]
        rows.append((name, _shown(chosen), _shown(base)))
    return rows


def _shown(value: float | None) -> str:
    """Format a figure for a table: counts and money with separators."""
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3f}"
