"""Vectorised parsers from text cells to typed values, each reporting bad cells.

Each parser takes a Series of strings (empty meaning missing) and returns a
`Parsed`: the values (None where missing or bad) and a reason for every bad cell.
Values are parsed once per distinct text, since exports repeat dates and prices.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_OFFSET = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$", re.IGNORECASE)
_TRUE = {"true", "t", "yes", "y", "1", "subscribed", "opted_in"}
_FALSE = {"false", "f", "no", "n", "0", "unsubscribed", "not_subscribed", "opted_out"}
_MAX_TIME = pd.Timestamp("2200-01-01", tz="UTC")
_MIN_TIME = pd.Timestamp("1970-01-01", tz="UTC")


@dataclass(frozen=True)
class Parsed:
    """Typed values of one column and a reason for each bad cell (else None)."""

    values: pd.Series
    reasons: pd.Series


def _by_distinct(
    text: pd.Series, convert: Callable[[str], tuple[Any, str | None]]
) -> Parsed:
    codes, uniques = pd.factorize(text, use_na_sentinel=True)
    pairs = [convert(u) for u in uniques]
    values = np.array([p[0] for p in pairs] + [None], dtype=object)
    reasons = np.array([p[1] for p in pairs] + [None], dtype=object)
    return Parsed(
        pd.Series(values[codes], index=text.index, dtype=object),
        pd.Series(reasons[codes], index=text.index, dtype=object),
    )


def parse_text(text: pd.Series, *, max_length: int = 255) -> Parsed:
    """Keep text as it is (trimmed), rejecting over-long cells."""
    trimmed = text.str.strip()
    too_long = trimmed.str.len() > max_length
    values = trimmed.where(trimmed != "", None).astype(object)
    reasons = pd.Series(None, index=text.index, dtype=object)
    reasons[too_long] = f"longer than {max_length} characters"
    return Parsed(values.where(~too_long, None), reasons)


def parse_id(text: pd.Series) -> Parsed:
    """Parse an identifier: required, at most 128 characters."""
    parsed = parse_text(text, max_length=128)
    missing = parsed.values.isna() & parsed.reasons.isna()
    reasons = parsed.reasons.copy()
    reasons[missing] = "missing"
    return Parsed(parsed.values, reasons)


def parse_email(text: pd.Series) -> Parsed:
    """Parse an e-mail address, lower-casing its domain part only."""

    def convert(cell: str) -> tuple[Any, str | None]:
        cell = cell.strip()
        if not cell:
            return None, None
        if len(cell) > 320 or not _EMAIL.match(cell):
            return None, "not an e-mail address"
        local, _, domain = cell.rpartition("@")
        return f"{local}@{domain.lower()}", None

    return _by_distinct(text, convert)


def parse_decimal(text: pd.Series, *, minimum: Decimal | None = Decimal(0)) -> Parsed:
    """Parse a decimal amount (a dot or a lone comma as the decimal mark)."""

    def convert(cell: str) -> tuple[Any, str | None]:
        cell = cell.strip().replace(" ", "")
        if not cell:
            return None, None
        if "," in cell and "." not in cell and cell.count(",") == 1:
            cell = cell.replace(",", ".")
        try:
            value = Decimal(cell)
        except InvalidOperation:
            return None, "not a number"
        if not value.is_finite():
            return None, "not a number"
        if minimum is not None and value < minimum:
            return None, f"negative ({cell})" if minimum == 0 else f"below {minimum}"
        if abs(value) >= Decimal("1e10"):
            return None, "too large"
        return value.quantize(Decimal("0.0001")).normalize(), None

    return _by_distinct(text, convert)


def parse_int(text: pd.Series, *, minimum: int | None = None) -> Parsed:
    """Parse a whole number ("3" or "3.0"), optionally with a lower bound."""

    def convert(cell: str) -> tuple[Any, str | None]:
        cell = cell.strip()
        if not cell:
            return None, None
        try:
            number = Decimal(cell)
        except InvalidOperation:
            return None, "not a whole number"
        if not number.is_finite() or number != number.to_integral_value():
            return None, "not a whole number"
        value = int(number)
        if minimum is not None and value < minimum:
            return None, f"must be at least {minimum}"
        if abs(value) > 2**31 - 1:
            return None, "too large"
        return value, None

    return _by_distinct(text, convert)


def parse_bool(text: pd.Series) -> Parsed:
    """Parse yes/no style flags."""

    def convert(cell: str) -> tuple[Any, str | None]:
        cell = cell.strip().lower()
        if not cell:
            return None, None
        if cell in _TRUE:
            return True, None
        if cell in _FALSE:
            return False, None
        return None, "not true or false"

    return _by_distinct(text, convert)


def parse_timezone(text: pd.Series) -> Parsed:
    """Parse an IANA time zone name."""

    def convert(cell: str) -> tuple[Any, str | None]:
        cell = cell.strip()
        if not cell:
            return None, None
        try:
            ZoneInfo(cell)
        except (ZoneInfoNotFoundError, ValueError):
            return None, "not an IANA time zone"
        return cell, None

    return _by_distinct(text, convert)


def parse_time(text: pd.Series, shop_tz: str, *, dayfirst: bool = False) -> Parsed:
    """Parse times to naive UTC; a time without an offset is in the shop's zone."""
    zone = ZoneInfo(shop_tz)

    def convert(cell: str) -> tuple[Any, str | None]:
        cell = cell.strip()
        if not cell:
            return None, None
        try:
            stamp = pd.Timestamp(_parse_one(cell, dayfirst))
        except (ValueError, OverflowError, TypeError):
            return None, "not a date or time"
        if pd.isna(stamp):
            return None, "not a date or time"
        if stamp.tzinfo is None:
            try:
                stamp = stamp.tz_localize(
                    zone, ambiguous=True, nonexistent="shift_forward"
                )
            except (ValueError, OverflowError):
                return None, "not a time that exists in the shop's time zone"
        stamp = stamp.tz_convert("UTC")
        if not _MIN_TIME <= stamp < _MAX_TIME:
            return None, "outside 1970-2199"
        return stamp.tz_localize(None).to_pydatetime(), None

    return _by_distinct(text, convert)


def _parse_one(cell: str, dayfirst: bool) -> datetime:
    if _OFFSET.search(cell) or cell[:4].isdigit():
        try:
            return datetime.fromisoformat(cell.replace(" -", "-").replace(" +", "+"))
        except ValueError:
            pass
    with warnings.catch_warnings():
        # pandas warns when it guesses the day-month order; the preset decides.
        warnings.simplefilter("ignore", UserWarning)
        stamp = pd.to_datetime(cell, dayfirst=dayfirst)
    if not isinstance(stamp, pd.Timestamp):
        raise ValueError(cell)
    return stamp.to_pydatetime()
