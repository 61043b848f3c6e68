"""Turn a transaction log into the per-customer inputs of the customer models."""

import numpy as np
import pandas as pd

from nudge.insight._common import period_days

SUMMARY_COLUMNS = ("frequency", "recency", "T")
MONETARY_COLUMN = "monetary_value"


def summarize_transactions(
    df: pd.DataFrame,
    customer_col: str,
    date_col: str,
    value_col: str | None = None,
    *,
    freq: str = "D",
    observation_end: str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Summarise transactions into frequency, recency, T (and spend) per customer.

    A purchase period is a calendar day: orders on the same day count once and
    their values are summed. ``frequency`` is the number of periods after the
    first, ``recency`` the time from the first to the last period and ``T`` the
    time from the first period to ``observation_end`` (default: the last date),
    in days for ``freq="D"`` or days / 7 for ``freq="W"``. Rows after
    ``observation_end`` are ignored. ``monetary_value`` is the mean value of the
    repeat periods, zero and negative values (refunds) included, and 0 for
    customers without repeat periods.
    """
    unit_days = period_days(freq)
    frame = _checked_columns(df, customer_col, date_col, value_col)
    value = value_col if value_col is not None else "__value"
    if value_col is None:
        frame[value] = 0.0

    frame[date_col] = _as_days(frame[date_col], date_col)
    end = _observation_end(frame[date_col], observation_end)
    frame = frame[frame[date_col] <= end]
    if frame.empty:
        return _empty_summary(df, customer_col, value_col is not None)

    periods = frame.groupby([customer_col, date_col], sort=True)[value].sum()
    per_customer = periods.reset_index().groupby(customer_col, sort=True)
    first = per_customer[date_col].min()
    last = per_customer[date_col].max()
    frequency = per_customer[date_col].size() - 1

    summary = pd.DataFrame(
        {
            "frequency": frequency.astype(np.int64),
            "recency": _elapsed_days(first, last) / unit_days,
            "T": _elapsed_days(first, end) / unit_days,
        }
    )
    if value_col is not None:
        # Rows are sorted by date within a customer, so first() is the first day.
        repeat_total = per_customer[value].sum() - per_customer[value].first()
        spend = repeat_total / frequency.where(frequency > 0)
        summary[MONETARY_COLUMN] = spend.fillna(0.0).astype(np.float64)
    return summary


def _checked_columns(
    df: pd.DataFrame, customer_col: str, date_col: str, value_col: str | None
) -> pd.DataFrame:
    """Return a copy of the needed columns, refusing missing columns or values."""
    wanted = [customer_col, date_col] + ([value_col] if value_col is not None else [])
    absent = [name for name in wanted if name not in df.columns]
    if absent:
        raise ValueError(f"transactions have no column(s) {absent}")

    frame = df[wanted].copy()
    blanks = frame.isna().sum()
    if blanks.any():
        counts = ", ".join(f"{k}: {v}" for k, v in blanks.items() if v)
        raise ValueError(f"transactions have missing values ({counts})")

    if value_col is not None and not pd.api.types.is_numeric_dtype(frame[value_col]):
        raise ValueError(f"column {value_col!r} must be numeric")
    return frame


def _as_days(dates: pd.Series, date_col: str) -> pd.Series:
    """Parse a date column and truncate every timestamp to its calendar day."""
    # Integers such as 19970101 would silently parse as nanoseconds since 1970.
    if pd.api.types.is_numeric_dtype(dates):
        raise ValueError(
            f"column {date_col!r} holds numbers, not dates; parse it first, "
            "e.g. pd.to_datetime(df[col].astype(str), format='%Y%m%d')"
        )
    try:
        parsed = pd.to_datetime(dates)
    except (TypeError, ValueError) as err:
        raise ValueError(f"column {date_col!r} does not hold dates: {err}") from err
    return parsed.dt.normalize()


def _observation_end(
    days: pd.Series, observation_end: str | pd.Timestamp | None
) -> pd.Timestamp:
    """Return the last day observed, matching the time zone of the dates."""
    if observation_end is None:
        return pd.Timestamp(days.max())

    end = pd.Timestamp(observation_end).normalize()
    zone = getattr(days.dt, "tz", None)
    if zone is not None and end.tzinfo is None:
        end = end.tz_localize(zone)
    return end


def _elapsed_days(start: pd.Series, stop: pd.Series | pd.Timestamp) -> pd.Series:
    """Return the whole days from each start to stop, as floats."""
    return (stop - start).dt.days.astype(np.float64)


def _empty_summary(
    df: pd.DataFrame, customer_col: str, with_value: bool
) -> pd.DataFrame:
    """Return a summary with no customers but the usual columns and types."""
    columns: dict[str, pd.Series] = {
        "frequency": pd.Series([], dtype=np.int64),
        "recency": pd.Series([], dtype=np.float64),
        "T": pd.Series([], dtype=np.float64),
    }
    if with_value:
        columns[MONETARY_COLUMN] = pd.Series([], dtype=np.float64)
    index = pd.Index([], dtype=df[customer_col].dtype, name=customer_col)
    return pd.DataFrame(columns).set_axis(index)
