"""Tests for summarize_transactions."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nudge.insight import summarize_transactions


def _orders(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """Build a transaction frame from (customer, date, value) tuples."""
    frame = pd.DataFrame(rows, columns=["customer", "ordered_at", "value"])
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"], format="ISO8601")
    return frame


@pytest.fixture
def orders() -> pd.DataFrame:
    return _orders(
        [
            ("ann", "2024-01-01 09:00", 10.0),
            ("ann", "2024-01-01 17:30", 5.0),
            ("ann", "2024-01-08", 20.0),
            ("ann", "2024-01-15 08:00", 30.0),
            ("ann", "2024-01-15 20:00", 10.0),
            ("bob", "2024-01-05", 50.0),
            ("cat", "2024-01-10", 7.0),
            ("cat", "2024-01-20", 0.0),
            ("cat", "2024-01-24", -4.0),
        ]
    )


def test_counts_repeat_days_and_measures_days(orders: pd.DataFrame) -> None:
    summary = summarize_transactions(
        orders, "customer", "ordered_at", "value", observation_end="2024-01-31"
    )

    assert list(summary.index) == ["ann", "bob", "cat"]
    assert summary.index.name == "customer"
    assert summary["frequency"].tolist() == [2, 0, 2]
    assert summary["recency"].tolist() == [14.0, 0.0, 14.0]
    assert summary["T"].tolist() == [30.0, 26.0, 21.0]
    assert summary["frequency"].dtype == np.int64


def test_same_day_orders_are_one_period_with_summed_value(
    orders: pd.DataFrame,
) -> None:
    summary = summarize_transactions(orders, "customer", "ordered_at", "value")

    # Ann's repeat days are worth 20 and 30 + 10; her first day (15) is left out.
    assert summary.loc["ann", "monetary_value"] == pytest.approx(30.0)


def test_single_order_customer_has_zero_everything(orders: pd.DataFrame) -> None:
    summary = summarize_transactions(orders, "customer", "ordered_at", "value")

    assert summary.loc["bob", "frequency"] == 0
    assert summary.loc["bob", "recency"] == 0.0
    assert summary.loc["bob", "monetary_value"] == 0.0


def test_zero_and_negative_values_count_in_the_mean(orders: pd.DataFrame) -> None:
    summary = summarize_transactions(orders, "customer", "ordered_at", "value")

    assert summary.loc["cat", "monetary_value"] == pytest.approx(-2.0)


def test_rows_after_observation_end_are_ignored(orders: pd.DataFrame) -> None:
    summary = summarize_transactions(
        orders, "customer", "ordered_at", "value", observation_end="2024-01-08"
    )

    assert list(summary.index) == ["ann", "bob"]
    assert summary.loc["ann", "frequency"] == 1
    assert summary.loc["ann", "recency"] == 7.0
    assert summary.loc["ann", "T"] == 7.0
    assert summary.loc["ann", "monetary_value"] == pytest.approx(20.0)


def test_observation_end_defaults_to_last_date(orders: pd.DataFrame) -> None:
    summary = summarize_transactions(orders, "customer", "ordered_at")

    assert summary.loc["bob", "T"] == 19.0
    assert summary.loc["cat", "T"] == 14.0


def test_weeks_are_days_over_seven(orders: pd.DataFrame) -> None:
    days = summarize_transactions(orders, "customer", "ordered_at", "value")
    weeks = summarize_transactions(orders, "customer", "ordered_at", "value", freq="W")

    np.testing.assert_allclose(weeks["recency"], days["recency"] / 7)
    np.testing.assert_allclose(weeks["T"], days["T"] / 7)
    assert weeks["frequency"].tolist() == days["frequency"].tolist()
    assert weeks.loc["cat", "T"] == pytest.approx(2.0)


def test_without_value_column_there_is_no_spend(orders: pd.DataFrame) -> None:
    summary = summarize_transactions(orders, "customer", "ordered_at")

    assert list(summary.columns) == ["frequency", "recency", "T"]


def test_accepts_date_strings() -> None:
    frame = pd.DataFrame(
        {"c": [1, 1, 2], "d": ["2024-03-01", "2024-03-04", "2024-03-02"]}
    )

    summary = summarize_transactions(frame, "c", "d")

    assert summary.loc[1, "recency"] == 3.0
    assert summary.loc[2, "T"] == 2.0


def test_time_zone_aware_dates_work_with_a_naive_end() -> None:
    frame = _orders([("a", "2024-01-01", 1.0), ("a", "2024-01-03", 2.0)])
    frame["ordered_at"] = frame["ordered_at"].dt.tz_localize("Europe/Paris")

    summary = summarize_transactions(
        frame, "customer", "ordered_at", observation_end="2024-01-05"
    )

    assert summary.loc["a", "T"] == 4.0


@pytest.mark.parametrize("value_col", [None, "value"])
def test_empty_input_gives_empty_frame_with_columns(value_col: str | None) -> None:
    empty = pd.DataFrame(
        {
            "customer": pd.Series([], dtype=object),
            "ordered_at": pd.Series([], dtype="datetime64[ns]"),
            "value": pd.Series([], dtype=float),
        }
    )

    summary = summarize_transactions(empty, "customer", "ordered_at", value_col)

    expected = ["frequency", "recency", "T"] + (["monetary_value"] if value_col else [])
    assert summary.empty
    assert list(summary.columns) == expected
    assert summary.index.name == "customer"
    assert summary["frequency"].dtype == np.int64


def test_everything_after_observation_end_gives_empty_frame(
    orders: pd.DataFrame,
) -> None:
    summary = summarize_transactions(
        orders, "customer", "ordered_at", "value", observation_end="2023-12-31"
    )

    assert summary.empty
    assert "monetary_value" in summary.columns


def test_bad_freq_is_refused(orders: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match=r"freq must be 'D'.*got 'M'"):
        summarize_transactions(orders, "customer", "ordered_at", freq="M")


def test_missing_column_is_named(orders: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="amount"):
        summarize_transactions(orders, "customer", "ordered_at", "amount")


def test_numeric_dates_are_refused() -> None:
    frame = pd.DataFrame({"c": [1, 1], "d": [19970101, 19970118]})

    with pytest.raises(ValueError, match="holds numbers, not dates"):
        summarize_transactions(frame, "c", "d")


def test_missing_values_are_refused(orders: pd.DataFrame) -> None:
    orders.loc[2, "value"] = np.nan

    with pytest.raises(ValueError, match="missing values"):
        summarize_transactions(orders, "customer", "ordered_at", "value")


_days = st.integers(min_value=0, max_value=60)
_rows = st.lists(
    st.tuples(st.sampled_from("abcde"), _days, st.floats(-10, 100)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rows=_rows, end=_days)
def test_summary_invariants(rows: list[tuple[str, int, float]], end: int) -> None:
    start = pd.Timestamp("2024-01-01")
    frame = pd.DataFrame(
        {
            "c": [c for c, _, _ in rows],
            "d": [start + pd.Timedelta(days=d) for _, d, _ in rows],
            "v": [v for _, _, v in rows],
        }
    )

    summary = summarize_transactions(
        frame, "c", "d", "v", observation_end=start + pd.Timedelta(days=end)
    )

    kept = frame[frame["d"] <= start + pd.Timedelta(days=end)]
    assert set(summary.index) == set(kept["c"])
    assert (summary["recency"] <= summary["T"]).all()
    assert (summary["recency"] >= 0).all()
    assert (summary["recency"][summary["frequency"] == 0] == 0).all()
    days_per_customer = kept.groupby("c")["d"].nunique()
    assert (summary["frequency"] == days_per_customer - 1).all()
