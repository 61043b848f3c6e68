"""The beat schedule built from the shipped campaign files and the settings."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from celery.schedules import crontab

from nudge.campaigns.cron import Cron
from nudge.campaigns.schema import load_campaigns
from nudge.jobs.celery_app import make_app
from nudge.jobs.schedule import (
    DISPATCH_DUE,
    PLAN_TRIGGERED,
    PULL_FEEDBACK,
    REFRESH_INSIGHT,
    RETRAIN_RECOMMENDERS,
    RUN_CAMPAIGN,
    beat_schedule,
    latest_firing,
)
from nudge.settings import Settings
from tests.unit.campaigns.helpers import campaign

REPO = Path(__file__).resolve().parents[3]
SHIPPED = [f.campaign for f in load_campaigns(REPO / "config" / "campaigns")]
LONDON = ZoneInfo("Europe/London")
EVERY_DAY = set(range(1, 32))


def fields(schedule: crontab) -> tuple[set[int], ...]:
    """Return a crontab's minute, hour, day of week, day of month and month."""
    return (
        schedule.minute,
        schedule.hour,
        schedule.day_of_week,
        schedule.day_of_month,
        schedule.month_of_year,
    )


def test_each_scheduled_campaign_runs_at_its_cron_times() -> None:
    schedule = beat_schedule(Settings(), SHIPPED)

    runs = {k: v for k, v in schedule.items() if v["task"] == RUN_CAMPAIGN}
    # cart_abandonment and cross_sell are triggered by events, not by beat.
    assert sorted(runs) == [
        "campaign buy_again",
        "campaign new_arrivals",
        "campaign picked_for_you",
        "campaign winback",
    ]
    assert runs["campaign buy_again"]["args"] == ("buy_again",)
    every_month = set(range(1, 13))
    expected = {
        "buy_again": ({0}, {8}, set(range(7)), EVERY_DAY, every_month),
        "new_arrivals": ({0}, {9}, {1, 4}, EVERY_DAY, every_month),
        "picked_for_you": ({0}, {11}, {1}, EVERY_DAY, every_month),
        "winback": ({0}, {10}, {1}, EVERY_DAY, every_month),
    }
    for name, cron_fields in expected.items():
        entry = runs[f"campaign {name}"]
        assert fields(entry["schedule"]) == cron_fields, name
        assert entry["options"] == {"expires": 3600.0}


def test_the_periodic_jobs_are_scheduled_from_the_settings() -> None:
    schedule = beat_schedule(Settings(jobs_dispatch_seconds=30), SHIPPED)

    jobs = {v["task"]: v for v in schedule.values() if v["task"] != RUN_CAMPAIGN}
    assert sorted(jobs) == sorted(
        [
            DISPATCH_DUE,
            PLAN_TRIGGERED,
            PULL_FEEDBACK,
            REFRESH_INSIGHT,
            RETRAIN_RECOMMENDERS,
        ]
    )
    assert jobs[DISPATCH_DUE]["schedule"] == timedelta(seconds=30)
    assert jobs[DISPATCH_DUE]["options"] == {"expires": 30.0}
    assert jobs[PLAN_TRIGGERED]["schedule"] == timedelta(minutes=15)
    assert jobs[PULL_FEEDBACK]["schedule"] == timedelta(minutes=15)
    # Nightly, profiles before the models, both before the first campaign.
    assert fields(jobs[REFRESH_INSIGHT]["schedule"])[:2] == ({0}, {2})
    assert fields(jobs[RETRAIN_RECOMMENDERS]["schedule"])[:2] == ({0}, {3})


def test_a_disabled_campaign_is_not_scheduled() -> None:
    schedule = beat_schedule(Settings(), [campaign("paused", enabled=False)])

    assert not [k for k in schedule if k.startswith("campaign")]


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("30 6 * * 7", ({30}, {6}, {0}, EVERY_DAY)),
        ("@daily", ({0}, {0}, set(range(7)), EVERY_DAY)),
        ("*/20 9-10 1,15 * *", ({0, 20, 40}, {9, 10}, set(range(7)), {1, 15})),
    ],
)
def test_cron_fields_become_crontab_fields(
    cron: str, expected: tuple[set[int], ...]
) -> None:
    schedule = beat_schedule(Settings(), [campaign("c", trigger={"schedule": cron})])

    assert fields(schedule["campaign c"]["schedule"])[:4] == expected


def test_both_day_fields_restricted_fire_on_either_day() -> None:
    # Cron fires on the 1st and on every Monday; crontab needs two entries.
    schedule = beat_schedule(
        Settings(), [campaign("c", trigger={"schedule": "0 9 1 * mon"})]
    )

    by_date = schedule["campaign c (by date)"]["schedule"]
    by_weekday = schedule["campaign c (by weekday)"]["schedule"]
    assert fields(by_date)[2:4] == (set(range(7)), {1})
    assert fields(by_weekday)[2:4] == ({1}, EVERY_DAY)


def test_beat_reads_crons_in_the_shop_time_zone() -> None:
    settings = Settings(
        home=REPO, shop_timezone="America/New_York", broker_url="memory://localhost/"
    )
    app = make_app(settings)
    entry = app.conf.beat_schedule["campaign buy_again"]["schedule"]
    entry.app = app

    assert app.conf.timezone == "America/New_York"
    assert entry.tz == ZoneInfo("America/New_York")


def test_a_run_started_late_plans_its_firing() -> None:
    cron = Cron.parse("0 10 * * mon")
    monday = datetime(2026, 11, 30, 10, 0)  # 10:00 in London is 10:00 UTC

    assert latest_firing(cron, monday, LONDON) == monday
    assert latest_firing(cron, monday + timedelta(minutes=59), LONDON) == monday
    # Over an hour late, or on another day: no firing to plan.
    assert latest_firing(cron, monday + timedelta(minutes=61), LONDON) is None
    assert latest_firing(cron, monday - timedelta(seconds=1), LONDON) is None
    assert latest_firing(cron, monday + timedelta(days=1), LONDON) is None


def test_the_firing_is_read_in_the_shop_time_zone() -> None:
    cron = Cron.parse("0 10 * * *")
    summer = datetime(2026, 7, 1, 9, 0, 30)  # 10:00:30 in London (BST)

    assert latest_firing(cron, summer, LONDON) == datetime(2026, 7, 1, 9, 0)
