"""Send windows, quiet hours and cron schedules in the right time zones."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from nudge.campaigns.cron import Cron, CronError
from nudge.campaigns.windows import build_rules, known_zone, next_allowed, parse_span

LONDON = ZoneInfo("Europe/London")


def moved(when: datetime, zone: str, **rules: str | list[str] | None) -> datetime:
    """Move one naive UTC time by the rules and return the new naive UTC time."""
    built = build_rules(
        rules.get("days"),  # type: ignore[arg-type]
        rules.get("hours"),  # type: ignore[arg-type]
        rules.get("quiet"),  # type: ignore[arg-type]
    )
    times, _ = next_allowed(np.array([np.datetime64(when, "ns")]), [zone], built)
    return datetime.fromisoformat(str(times[0].astype("datetime64[s]")))


def test_spans() -> None:
    assert parse_span("21:00-08:00") == (1260, 480)
    assert parse_span("09:00-24:00") == (540, 1440)
    for bad in ("9-5", "25:00-08:00", "10:00-10:00", "08:60-09:00"):
        with pytest.raises(ValueError):
            parse_span(bad)


def test_quiet_hours_defer_to_the_morning_in_the_customers_zone() -> None:
    # 10:00 UTC is 21:00 in Sydney: quiet until 08:00 there, 21:00 UTC.
    when = datetime(2026, 11, 30, 10, 0)

    assert moved(when, "Australia/Sydney", quiet="21:00-08:00") == datetime(
        2026, 11, 30, 21, 0
    )
    assert moved(when, "Europe/London", quiet="21:00-08:00") == when


def test_a_send_window_moves_to_the_next_allowed_day() -> None:
    # Saturday 10:00 London, weekdays only: Monday 09:00 London.
    saturday = datetime(2026, 11, 28, 10, 0)

    found = moved(saturday, "Europe/London", days=["mon", "tue"], hours="09:00-17:00")

    assert found == datetime(2026, 11, 30, 9, 0)


def test_an_overnight_window_belongs_to_the_day_it_starts() -> None:
    friday_late = datetime(2026, 11, 28, 1, 0)  # Saturday 01:00 London
    assert (
        moved(friday_late, "Europe/London", days=["fri"], hours="22:00-02:00")
        == friday_late
    )


def test_the_wall_clock_holds_across_daylight_saving() -> None:
    # Saturday 28 March 2026 23:30 London (GMT); the clocks go forward that
    # night, so 08:00 on Sunday is 07:00 UTC.
    when = datetime(2026, 3, 28, 23, 30)

    assert moved(when, "Europe/London", quiet="21:00-08:00") == datetime(
        2026, 3, 29, 7, 0
    )


def test_the_reason_says_which_rule_moved_a_send() -> None:
    rules = build_rules(["mon"], "09:00-17:00", "21:00-08:00")
    times = np.array(
        [
            np.datetime64("2026-11-30T06:00", "ns"),  # Monday, quiet
            np.datetime64("2026-11-30T18:00", "ns"),  # Monday, after the window
            np.datetime64("2026-11-30T10:00", "ns"),  # allowed
        ]
    )

    _, why = next_allowed(times, ["Europe/London"] * 3, rules)

    assert why.tolist() == ["quiet_hours", "send_window", ""]


def test_unknown_zones_fall_back_to_the_shop() -> None:
    assert known_zone("Mars/Olympus", "Europe/London") == "Europe/London"
    assert known_zone(None, "Europe/London") == "Europe/London"
    assert known_zone(float("nan"), "Europe/London") == "Europe/London"
    assert known_zone("Asia/Tokyo", "Europe/London") == "Asia/Tokyo"


def test_cron_fires_in_the_shops_zone() -> None:
    cron = Cron.parse("0 10 * * mon")
    found = list(cron.firings(datetime(2026, 6, 29), datetime(2026, 7, 7), LONDON))

    # 10:00 British Summer Time is 09:00 UTC.
    assert found == [datetime(2026, 6, 29, 9, 0), datetime(2026, 7, 6, 9, 0)]


def test_cron_fields_ranges_steps_and_names() -> None:
    cron = Cron.parse("*/30 8-9 1,15 jan-mar *")
    found = list(
        cron.firings(datetime(2026, 1, 1), datetime(2026, 1, 2), ZoneInfo("UTC"))
    )

    assert [f.strftime("%H:%M") for f in found] == ["08:00", "08:30", "09:00", "09:30"]
    assert Cron.parse("@daily").hours == (0,)
    # Both day fields restricted: either matches.
    either = Cron.parse("0 0 13 * fri")
    assert either.matches_day(datetime(2026, 2, 13).date())  # a Friday the 13th
    assert either.matches_day(datetime(2026, 2, 6).date())  # a Friday
    assert either.matches_day(datetime(2026, 3, 13).date())  # the 13th


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 10 * *", "expected 5 fields"),
        ("61 10 * * *", "minute 61 is out of range 0-59"),
        ("0 10 * * funday", "day of week 'funday' is not a number"),
        ("0 10-8 * * *", "runs backwards"),
        ("*/0 * * * *", "step '0' is not a positive number"),
        ("0 10 ,1 * *", "empty list item"),
    ],
)
def test_bad_cron_expressions(text: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        Cron.parse(text)
