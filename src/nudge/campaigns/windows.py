"""Quiet hours and send windows, applied in each customer's own time zone.

A campaign may send on some weekdays between two local times (its send
window) and never inside its quiet hours (or the planner's default ones). A
send time that falls outside is moved to the next allowed minute in the
customer's time zone (the shop's when the customer has none or an unknown
one), and the planner records it as deferred with the rule that moved it.

Rules are a table of the 10,080 minutes of a week (Monday 00:00 first): for
each minute, whether sending is allowed and how many minutes remain until it
is. Moving a whole audience is then one conversion to local time per zone
and one table lookup per customer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt
import pandas as pd

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_MINUTES = 1440
WEEK_MINUTES = 7 * DAY_MINUTES

QUIET_HOURS = "quiet_hours"
SEND_WINDOW = "send_window"

_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
TimeArray = npt.NDArray[np.datetime64]


def parse_span(text: str) -> tuple[int, int]:
    """Parse "HH:MM-HH:MM" into start and end minutes of the day (end may be 24:00)."""
    found = _SPAN.match(text)
    if found is None:
        raise ValueError("expected HH:MM-HH:MM such as 21:00-08:00")
    start_h, start_m, end_h, end_m = (int(g) for g in found.groups())
    for hour, minute, last in ((start_h, start_m, 23), (end_h, end_m, 24)):
        if hour > last or minute > 59 or (hour == 24 and minute):
            raise ValueError(f"{hour:02d}:{minute:02d} is not a time of day")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start == end % DAY_MINUTES:
        raise ValueError("the span starts where it ends")
    return start, end


def _daily(span: tuple[int, int]) -> BoolArray:
    """Return the minutes of one day inside a span, wrapping past midnight."""
    start, end = span
    minute = np.arange(DAY_MINUTES)
    if start < end:
        inside: BoolArray = (minute >= start) & (minute < end)
    else:
        inside = (minute >= start) | (minute < end)
    return inside


@dataclass(frozen=True, eq=False)
class SendRules:
    """When a campaign may send, as allowed minutes of the week."""

    allowed: BoolArray
    quiet: BoolArray
    wait: IntArray

    @property
    def always(self) -> bool:
        """Tell whether every minute of the week is allowed."""
        return bool(self.allowed.all())


def build_rules(
    days: Sequence[str] | None = None,
    hours: str | None = None,
    quiet_hours: str | None = None,
) -> SendRules:
    """Build the week's minute table from send days, send hours and quiet hours."""
    week_days = np.zeros(7, dtype=bool)
    for name in days if days else WEEKDAYS:
        week_days[WEEKDAYS.index(name)] = True
    quiet_day = (
        _daily(parse_span(quiet_hours))
        if quiet_hours and quiet_hours.strip()
        else np.zeros(DAY_MINUTES, bool)
    )

    # The send window's hours belong to the day they start on, so a window
    # of 22:00-02:00 on Fridays runs into Saturday morning.
    window = np.zeros(WEEK_MINUTES, dtype=bool)
    start, end = parse_span(hours) if hours else (0, DAY_MINUTES)
    for day in np.flatnonzero(week_days).tolist():
        first = day * DAY_MINUTES
        if start < end:
            window[first + start : first + end] = True
        else:
            window[first + start : first + DAY_MINUTES] = True
            after = ((day + 1) % 7) * DAY_MINUTES
            window[after : after + end] = True
    quiet = np.tile(quiet_day, 7)
    allowed = window & ~quiet
    if not allowed.any():
        raise ValueError("the send window and quiet hours leave no time to send")
    return SendRules(allowed=allowed, quiet=quiet, wait=_waits(allowed))


def _waits(allowed: BoolArray) -> IntArray:
    """Return the minutes from each minute of the week to the next allowed one."""
    positions = np.flatnonzero(allowed)
    minute = np.arange(WEEK_MINUTES)
    index = np.searchsorted(positions, minute)
    wrapped = index == len(positions)
    following = np.where(
        wrapped, positions[0] + WEEK_MINUTES, positions[index % len(positions)]
    )
    waits: IntArray = (following - minute).astype(np.int64)
    return waits


@lru_cache(maxsize=512)
def known_zone(name: object, fallback: str) -> str:
    """Return an IANA zone name that exists, the fallback for unknown ones."""
    if not isinstance(name, str) or not name.strip():
        return fallback
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return fallback
    return name


def next_allowed(
    times: TimeArray, zones: Sequence[str], rules: SendRules
) -> tuple[TimeArray, npt.NDArray[np.object_]]:
    """Move naive UTC times to the next allowed minute in each one's time zone.

    Returns the new times (naive UTC) and, per time, the rule that moved it
    (``quiet_hours`` or ``send_window``) or an empty string.
    """
    moved = np.asarray(times, dtype="datetime64[ns]").copy()
    why = np.full(len(moved), "", dtype=object)
    if rules.always or len(moved) == 0:
        return moved, why
    zone_of = pd.Series(np.asarray(zones, dtype=object))
    for zone, rows in zone_of.groupby(zone_of, sort=False).indices.items():
        moved[rows], why[rows] = _move_in_zone(moved[rows], str(zone), rules)
    return moved, why


def _move_in_zone(
    times: TimeArray, zone: str, rules: SendRules
) -> tuple[TimeArray, npt.NDArray[np.object_]]:
    """Apply the rules to times that share one time zone."""
    local = pd.DatetimeIndex(times).tz_localize("UTC").tz_convert(zone)
    minute = (
        local.day_of_week.to_numpy() * DAY_MINUTES
        + local.hour.to_numpy() * 60
        + local.minute.to_numpy()
    )
    wait = rules.wait[minute]
    late = wait > 0
    why = np.where(
        late, np.where(rules.quiet[minute], QUIET_HOURS, SEND_WINDOW), ""
    ).astype(object)
    if not late.any():
        return np.asarray(times, dtype="datetime64[ns]"), why

    # Move in local wall time, then back to UTC: the next allowed 08:00 is
    # 08:00 on the customer's clock even across a daylight-saving change.
    wall = local.tz_localize(None)[late].floor("min") + pd.to_timedelta(
        wait[late], unit="min"
    )
    back = (
        wall.tz_localize(
            zone, ambiguous=np.zeros(len(wall), dtype=bool), nonexistent="shift_forward"
        )
        .tz_convert("UTC")
        .tz_localize(None)
    )
    result = np.asarray(times, dtype="datetime64[ns]").copy()
    result[late] = back.to_numpy(dtype="datetime64[ns]")
    return result, why
