"""Cron schedules of scheduled campaigns, read in the shop's time zone.

Five fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or
jan-dec) and day of week (0-7 or sun-sat, 0 and 7 both Sunday). Each field is
``*``, a number, a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a list of
those separated by commas. When both day fields are restricted a day matches
either, as in Vixie cron. ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``
and ``@yearly`` are accepted too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun"]
_MONTHS += ["jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# name, lowest, highest, names (numbered from lowest)
_FIELDS: tuple[tuple[str, int, int, list[str]], ...] = (
    ("minute", 0, 59, []),
    ("hour", 0, 23, []),
    ("day of month", 1, 31, []),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)


class CronError(ValueError):
    """A cron expression cannot be read."""


def _number(text: str, name: str, low: int, high: int, names: list[str]) -> int:
    """Read one value of a field, by number or by name."""
    lowered = text.lower()
    if lowered in names:
        return names.index(lowered) + low
    if not text.isdigit():
        raise CronError(f"{name} {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise CronError(f"{name} {value} is out of range {low}-{high}")
    return value


def _field(text: str, name: str, low: int, high: int, names: list[str]) -> set[int]:
    """Read one field into the set of values it allows."""
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{name} has an empty list item")
        spread, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{name} step {step_text!r} is not a positive number")
            step = int(step_text)
        if spread == "*":
            first, last = low, high
        elif "-" in spread:
            a, _, b = spread.partition("-")
            first = _number(a, name, low, high, names)
            last = _number(b, name, low, high, names)
            if first > last:
                raise CronError(f"{name} range {spread!r} runs backwards")
        else:
            first = _number(spread, name, low, high, names)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return values


@dataclass(frozen=True)
class Cron:
    """A parsed cron schedule."""

    source: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        """Parse a five-field cron expression or a macro such as @daily."""
        expression = MACROS.get(text.strip().lower(), text)
        fields = expression.split()
        if len(fields) != 5:
            raise CronError(
                f"expected 5 fields (minute hour day month weekday), got {len(fields)}"
            )
        parsed = [_field(f, *spec) for f, spec in zip(fields, _FIELDS, strict=True)]
        return cls(
            source=text,
            minutes=tuple(sorted(parsed[0])),
            hours=tuple(sorted(parsed[1])),
            days=frozenset(parsed[2]),
            months=frozenset(parsed[3]),
            weekdays=frozenset(d % 7 for d in parsed[4]),
            any_day=fields[2] == "*",
            any_weekday=fields[4] == "*",
        )

    def matches_day(self, day: date) -> bool:
        """Tell whether the schedule fires on a calendar day."""
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return by_date and by_weekday
        return by_date or by_weekday

    def firings(
        self, start: datetime, end: datetime, zone: ZoneInfo
    ) -> Iterator[datetime]:
        """Yield each firing in [start, end) as naive UTC, fields read in a zone."""
        begin, stop = _aware(start), _aware(end)
        day = begin.astimezone(zone).date()
        last = stop.astimezone(zone).date()
        while day <= last:
            if self.matches_day(day):
                for hour in self.hours:
                    for minute in self.minutes:
                        local = datetime(
                            day.year, day.month, day.day, hour, minute, tzinfo=zone
                        )
                        moment = local.astimezone(UTC)
                        if begin <= moment < stop:
                            yield moment.replace(tzinfo=None)
            day += timedelta(days=1)

    def next_after(
        self, start: datetime, zone: ZoneInfo, days: int = 400
    ) -> datetime | None:
        """Return the first firing at or after start within a number of days."""
        end = _aware(start) + timedelta(days=days)
        return next(self.firings(start, end, zone), None)


def _aware(moment: datetime) -> datetime:
    """Read a naive datetime as UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
