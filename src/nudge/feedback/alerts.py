"""Health checks after each run and pull: what an operator must hear about.

`check` reads the store and returns an `Alert` per problem: a campaign's
bounce, unsubscribe or spam-complaint rate over its maximum, its CTR collapsing
against its own trailing CTR, a plan run whose e-mails fell due and none was
accepted, a feedback stream whose pulls keep failing. Each alert is logged;
with a webhook URL in the settings they are also POSTed there as JSON, and a
webhook that fails is logged, never raised.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import pandas as pd
from sqlalchemy import Connection, Engine, select

from nudge.feedback.attribution import read_events, read_sends
from nudge.feedback.config import FeedbackConfig
from nudge.feedback.events import utcnow
from nudge.feedback.report import with_flags
from nudge.logging import get_logger
from nudge.settings import Settings
from nudge.store.campaign_models import PlanRun
from nudge.store.feedback_models import FeedbackWatermark
from nudge.store.send_models import ACCEPTED, FAILED, OPEN_STATUSES, Send

log = get_logger(__name__)

Level = Literal["info", "warning", "critical"]
LEVELS: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
# A rate this many times its maximum is critical, not only a warning.
CRITICAL_FACTOR = 2.0
ERROR_SHOWN = 200
RATE_LABELS = {
    "bounce_rate": "bounce rate",
    "unsubscribe_rate": "unsubscribe rate",
    "spam_complaints": "spam complaint rate",
}


@dataclass(frozen=True, slots=True)
class Alert:
    """One problem: how bad, which check, which campaign, and what to know."""

    level: Level
    code: str
    campaign: str | None
    message: str
    value: float | None = None
    threshold: float | None = None

    @property
    def is_problem(self) -> bool:
        """Tell whether the alert is at warning or worse."""
        return LEVELS[self.level] >= LEVELS["warning"]

    def as_json(self) -> dict[str, Any]:
        """Return the alert as plain JSON values."""
        return {
            "level": self.level,
            "code": self.code,
            "campaign": self.campaign,
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
        }


def check(
    engine: Engine,
    settings: Settings,
    now: datetime | None = None,
    *,
    notify: bool = True,
) -> list[Alert]:
    """Run every check, log each alert, and POST them to the webhook if set.

    ``notify=False`` only logs (what `nudge health` does unless asked).
    """
    config = FeedbackConfig.from_settings(settings)
    alerts = collect(engine, config, now or utcnow())
    for alert in alerts:
        emit = log.error if alert.level == "critical" else log.warning
        if not alert.is_problem:
            emit = log.info
        emit(
            "alert",
            severity=alert.level,
            code=alert.code,
            campaign=alert.campaign,
            message=alert.message,
        )
    url = settings.alert_webhook_url
    if notify and url is not None and alerts:
        post(
            url.get_secret_value(),
            alerts,
            timeout=config.webhook_timeout_seconds,
            shop=settings.shop_name,
        )
    return alerts


def collect(engine: Engine, config: FeedbackConfig, now: datetime) -> list[Alert]:
    """Return the alerts the store shows now, worst first, without side effects."""
    alerts: list[Alert] = []
    with engine.connect() as conn:
        alerts += rate_alerts(conn, config, now)
        alerts += ctr_alerts(conn, config, now)
        alerts += silent_run_alerts(conn, config, now)
        alerts += pull_alerts(conn, config)
    return sorted(alerts, key=lambda a: (-LEVELS[a.level], a.code, a.campaign or ""))


def post(url: str, alerts: list[Alert], *, timeout: float, shop: str) -> bool:
    """POST the alerts as JSON to a webhook; log and return False when it fails."""
    body = json.dumps(
        {
            "source": "nudge",
            "shop": shop,
            "alerts": [a.as_json() for a in alerts],
        }
    ).encode()
    request = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": "application/json", "User-Agent": "nudge"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as err:
        log.error("alert webhook refused", status=err.code, alerts=len(alerts))
        return False
    except (urllib.error.URLError, OSError, ValueError) as err:
        # The URL may hold a token: only the kind of failure is logged.
        reason = getattr(err, "reason", err)
        log.error(
            "alert webhook unreachable", error=type(reason).__name__, alerts=len(alerts)
        )
        return False
    log.info("alert webhook notified", status=status, alerts=len(alerts))
    return True


# ------------------------------------------------------------------ checks


def _mailed(conn: Connection, since: datetime, until: datetime) -> pd.DataFrame:
    """Read the non-holdout sends due in [since, until) with their engagement."""
    sends = read_sends(conn, since=since, until=until)
    sends = sends[~sends["holdout"].astype(bool)].reset_index(drop=True)
    sends = with_flags(sends, read_events(conn, since=since, until=until))
    sends["delivered"] = sends["status"] == ACCEPTED
    return sends


def rate_alerts(conn: Connection, config: FeedbackConfig, now: datetime) -> list[Alert]:
    """Alert on bounce, unsubscribe and spam-complaint rates over their maximum."""
    since = now - timedelta(days=config.alert_lookback_days)
    sends = _mailed(conn, since, now)
    delivered = sends[sends["delivered"]]
    if delivered.empty:
        return []
    rates = (
        delivered.groupby("campaign")[["bounced", "unsubscribed", "complained"]]
        .agg(["sum", "size"])
        .sort_index()
    )
    checks = (
        ("bounced", "bounce_rate", config.bounce_rate_max),
        ("unsubscribed", "unsubscribe_rate", config.unsubscribe_rate_max),
        ("complained", "spam_complaints", config.spam_complaint_rate_max),
    )
    alerts = []
    for campaign, row in rates.iterrows():
        for column, code, maximum in checks:
            count, size = int(row[(column, "sum")]), int(row[(column, "size")])
            if size < config.alert_min_sends:
                continue
            rate = count / size
            if rate < maximum:
                continue
            level: Level = (
                "critical" if rate >= maximum * CRITICAL_FACTOR else "warning"
            )
            alerts.append(
                Alert(
                    level,
                    code,
                    str(campaign),
                    f"{RATE_LABELS[code]} {rate:.2%} over the last "
                    f"{config.alert_lookback_days} days ({count} of {size} "
                    f"delivered), maximum {maximum:.2%}",
                    value=rate,
                    threshold=maximum,
                )
            )
    return alerts


def ctr_alerts(conn: Connection, config: FeedbackConfig, now: datetime) -> list[Alert]:
    """Alert when a campaign's recent CTR fell far below its trailing CTR.

    Recent e-mails are those sent in the last ``ctr_recent_days`` before the
    settling time (clicks on newer ones are still coming in); the trailing
    CTR is the delivered-weighted mean over the ``ctr_trailing_days`` before.
    """
    end = now - timedelta(hours=config.ctr_settle_hours)
    start = end - timedelta(days=config.ctr_recent_days)
    first = start - timedelta(days=config.ctr_trailing_days)
    sends = _mailed(conn, first, end)
    delivered = sends[sends["delivered"]]
    if delivered.empty:
        return []
    recent = delivered["due_at"] >= pd.Timestamp(start)
    alerts = []
    for campaign, rows in delivered.groupby("campaign", sort=True):
        now_rows, before = rows[recent[rows.index]], rows[~recent[rows.index]]
        if min(len(now_rows), len(before)) < config.alert_min_sends:
            continue
        ctr, trailing = now_rows["clicked"].mean(), before["clicked"].mean()
        if trailing <= 0 or ctr >= trailing * config.ctr_collapse_ratio:
            continue
        alerts.append(
            Alert(
                "warning",
                "ctr_collapse",
                str(campaign),
                f"CTR {ctr:.2%} over the last {config.ctr_recent_days} days against "
                f"{trailing:.2%} over the {config.ctr_trailing_days} days before "
                f"(below {config.ctr_collapse_ratio:.0%} of it)",
                value=float(ctr),
                threshold=float(trailing * config.ctr_collapse_ratio),
            )
        )
    return alerts


def silent_run_alerts(
    conn: Connection, config: FeedbackConfig, now: datetime
) -> list[Alert]:
    """Alert on plan runs whose e-mails all fell due and none was accepted.

    A run still waiting for an operator's approval is not silent, it waits.
    """
    grace = timedelta(hours=config.run_grace_hours)
    since = now - timedelta(days=config.alert_lookback_days) - grace
    sends, runs = Send.__table__.c, PlanRun.__table__.c
    query = (
        select(
            sends.plan_run_id,
            sends.campaign,
            sends.status,
            sends.approval_required,
            sends.due_at,
            runs.status.label("run_status"),
        )
        .join_from(Send.__table__, PlanRun.__table__, sends.plan_run_id == runs.id)
        .where(sends.holdout.is_(False), sends.due_at >= since)
    )
    rows = pd.DataFrame(
        [tuple(r) for r in conn.execute(query).all()],
        columns=["run", "campaign", "status", "approval", "due_at", "run_status"],
    )
    alerts = []
    for (run, campaign), group in rows.groupby(["run", "campaign"], sort=True):
        last_due = pd.Timestamp(group["due_at"].max())
        waiting = group["approval"].astype(bool).any() and (
            group["run_status"].iloc[0] == "awaiting_approval"
        )
        if (
            (group["status"] == ACCEPTED).any()
            or last_due + grace > pd.Timestamp(now)
            or waiting
        ):
            continue

        # Failed or still unsent e-mails are an outage; all suppressed (no
        # consent left, say) is only worth a look.
        statuses = group["status"].value_counts().sort_index()
        stuck = group["status"].isin((FAILED, *OPEN_STATUSES)).any()
        shown = ", ".join(f"{k} {v}" for k, v in statuses.items())
        alerts.append(
            Alert(
                "critical" if stuck else "warning",
                "run_sent_nothing",
                str(campaign),
                f"plan run {run}: {len(group)} e-mails due by "
                f"{last_due:%Y-%m-%d %H:%M} UTC and none accepted ({shown})",
                value=0.0,
                threshold=float(len(group)),
            )
        )
    return alerts


def pull_alerts(conn: Connection, config: FeedbackConfig) -> list[Alert]:
    """Alert on feedback streams whose last pulls failed again and again."""
    marks = FeedbackWatermark.__table__.c
    query = (
        select(marks.esp, marks.stream, marks.failures, marks.last_error)
        .where(marks.failures >= config.pull_failures_max)
        .order_by(marks.esp, marks.stream)
    )
    alerts = []
    for esp, stream, failures, error in conn.execute(query).all():
        reason = (error or "no error recorded").strip().splitlines()
        alerts.append(
            Alert(
                "critical" if failures >= 2 * config.pull_failures_max else "warning",
                "feedback_pull_failing",
                None,
                f"feedback pull of {esp} {stream} failed {failures} times in a row: "
                f"{(reason[0] if reason else '')[:ERROR_SHOWN]}",
                value=float(failures),
                threshold=float(config.pull_failures_max),
            )
        )
    return alerts
