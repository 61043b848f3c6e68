"""The beat schedule, built in one place from the settings and the campaign files.

Each enabled scheduled campaign fires `run_campaign` at its own cron times,
read in the shop's time zone (the Celery app's time zone); beside them run the
periodic jobs: the scan for due sends every ``jobs_dispatch_seconds``, the
triggered campaigns and the feedback pull every 15 minutes, and the nightly
insight refresh and recommender fit before the morning's campaigns.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from celery.schedules import crontab

from nudge.campaigns.cron import Cron
from nudge.campaigns.schema import Campaign
from nudge.settings import Settings

# Task names, shared by the tasks, the schedule and whoever sends them by name.
RUN_CAMPAIGN = "nudge.run_campaign"
DELIVER_CHUNK = "nudge.deliver_chunk"
DISPATCH_DUE = "nudge.dispatch_due"
PLAN_TRIGGERED = "nudge.plan_triggered"
HANDLE_EVENT = "nudge.handle_event"
REFRESH_INSIGHT = "nudge.refresh_insight"
RETRAIN_RECOMMENDERS = "nudge.retrain_recommenders"
PULL_FEEDBACK = "nudge.pull_feedback"

TRIGGERED_EVERY = timedelta(minutes=15)
FEEDBACK_EVERY = timedelta(minutes=15)
# Nightly, shop time: profiles first, then the models the campaigns use.
REFRESH_AT = crontab(minute="0", hour="2")
RETRAIN_AT = crontab(minute="0", hour="3")
# A campaign run that starts later than this after its firing is dropped
# (it would plan the next firing instead); the next firing runs as usual.
LATE_START = timedelta(hours=1)

_ALL = {
    "minute": set(range(60)),
    "hour": set(range(24)),
    "day_of_month": set(range(1, 32)),
    "month_of_year": set(range(1, 13)),
    "day_of_week": set(range(7)),
}


def beat_schedule(settings: Settings, campaigns: Iterable[Campaign]) -> dict[str, Any]:
    """Return Celery's ``beat_schedule``: one entry per scheduled campaign, and jobs."""
    schedule: dict[str, Any] = {}
    for campaign in campaigns:
        cron = campaign.trigger.cron
        if not campaign.enabled or cron is None:
            continue
        for suffix, fields in _crontab_fields(cron):
            schedule[f"campaign {campaign.name}{suffix}"] = {
                "task": RUN_CAMPAIGN,
                "schedule": crontab(**fields),
                "args": (campaign.name,),
                "options": {"expires": LATE_START.total_seconds()},
            }

    # A scan that starts late is superseded by the next one.
    every = settings.jobs_dispatch_seconds
    schedule["dispatch due sends"] = {
        "task": DISPATCH_DUE,
        "schedule": timedelta(seconds=every),
        "options": {"expires": float(every)},
    }
    schedule["plan triggered campaigns"] = {
        "task": PLAN_TRIGGERED,
        "schedule": TRIGGERED_EVERY,
        "options": {"expires": TRIGGERED_EVERY.total_seconds()},
    }
    schedule["pull feedback"] = {
        "task": PULL_FEEDBACK,
        "schedule": FEEDBACK_EVERY,
        "options": {"expires": FEEDBACK_EVERY.total_seconds()},
    }
    schedule["refresh insight"] = {"task": REFRESH_INSIGHT, "schedule": REFRESH_AT}
    schedule["retrain recommenders"] = {
        "task": RETRAIN_RECOMMENDERS,
        "schedule": RETRAIN_AT,
    }
    return schedule


def _crontab_fields(cron: Cron) -> list[tuple[str, dict[str, str]]]:
    """Return crontab keyword arguments for a cron schedule, with a name suffix.

    Cron fires on a day that matches either day field when both are
    restricted, while Celery's crontab needs both to match: such a schedule
    becomes two entries, one per day field (a day matching both plans the
    same occurrence twice, which the send ledger keeps once).
    """
    values = {
        "minute": set(cron.minutes),
        "hour": set(cron.hours),
        "day_of_month": set(cron.days),
        "month_of_year": set(cron.months),
        "day_of_week": set(cron.weekdays),
    }
    fields = {name: _text(name, found) for name, found in values.items()}
    if cron.any_day or cron.any_weekday:
        return [("", fields)]
    return [
        (" (by date)", {**fields, "day_of_week": "*"}),
        (" (by weekday)", {**fields, "day_of_month": "*"}),
    ]


def _text(name: str, values: set[int]) -> str:
    """Return one crontab field: ``*`` for every value, else a sorted list."""
    if values >= _ALL[name]:
        return "*"
    return ",".join(str(v) for v in sorted(values))


def latest_firing(
    cron: Cron, now: datetime, zone: ZoneInfo, late: timedelta = LATE_START
) -> datetime | None:
    """Return the schedule's last firing in ``(now - late, now]`` (naive UTC).

    A run started by beat plans as of its firing, not as of the moment a
    worker took it: the planner plans the first firing at or after its
    moment, which a few seconds late would be the next one.
    """
    tick = timedelta(microseconds=1)
    firings = list(cron.firings(now - late + tick, now + tick, zone))
    return firings[-1] if firings else None
