"""Pull engagement from the ESPs nudge sends through: the CLI's and the task's entry.

`pull` reads each configured ESP (or the one named) from its streams'
watermarks, stores every event once, applies suppressions and returns what it
counted. A failing ESP or stream is recorded (its watermark row counts
consecutive failures for the alerts) and the others are still read; the pull
itself never raises for what an ESP answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from nudge.delivery import registry
from nudge.delivery.base import DeliveryError
from nudge.feedback import store
from nudge.feedback.events import FeedbackError, PullReport, utc_naive, utcnow
from nudge.logging import get_logger
from nudge.settings import Settings

log = get_logger(__name__)

PULLED = ("klaviyo", "mailchimp")
# Feedback of these arrives through nudge's own tracked links, not a pull.
TRACKED = ("outbox", "smtp")
# Events are read again from this long before the watermark: ESPs record
# some events late, and each is stored once however often it is read.
OVERLAP = timedelta(hours=2)
WHOLE = "pull"


def configured(settings: Settings) -> list[str]:
    """Return the ESPs whose credentials the settings hold."""
    names = []
    if settings.klaviyo_api_key is not None:
        names.append("klaviyo")
    if settings.mailchimp_api_key is not None and settings.mailchimp_list_id:
        names.append("mailchimp")
    return names


def pull(
    engine: Engine,
    settings: Settings,
    esp: str | None = None,
    since: datetime | None = None,
    *,
    now: datetime | None = None,
    overlap: timedelta = OVERLAP,
    page_size: int | None = None,
    adapter_options: Mapping[str, Any] | None = None,
) -> PullReport:
    """Read new engagement from one ESP or every configured one into the store.

    ``since`` reads from that time instead of the watermarks (which still only
    move forward). ``adapter_options`` go to the ESP adapters (tests pass a
    sleep that does not wait).
    """
    now = utc_naive(now) if now is not None else utcnow()
    since = utc_naive(since) if since is not None else None
    report = PullReport(started_at=now)
    if esp in TRACKED:
        report.notes.append(
            f"{esp} feedback arrives through nudge's tracked links; nothing to pull"
        )
        report.finished_at = utcnow()
        return report
    if esp is not None and esp not in PULLED:
        known = ", ".join(PULLED + TRACKED)
        raise FeedbackError(f"no feedback source named {esp!r} (known: {known})")

    names = [esp] if esp is not None else configured(settings)
    if not names:
        report.notes.append("no ESP is configured; nothing to pull")
    for name in names:
        report.esps.append(name)
        _pull_one(
            engine,
            settings,
            name,
            report,
            since=since,
            now=now,
            overlap=overlap,
            page_size=page_size,
            options=dict(adapter_options or {}),
        )
    report.finished_at = utcnow()
    log.info(
        "feedback pulled",
        esps=report.esps,
        stored=report.total_stored,
        duplicates=report.duplicates,
        skipped=sum(report.skipped.values()),
        linked=report.linked,
        unlinked=report.unlinked,
        suppressed=report.suppressed,
        failures=len(report.failures),
    )
    return report


def _pull_one(
    engine: Engine,
    settings: Settings,
    name: str,
    report: PullReport,
    *,
    since: datetime | None,
    now: datetime,
    overlap: timedelta,
    page_size: int | None,
    options: dict[str, Any],
) -> None:
    # A missing key or SDK is the user's to fix: it raises, one line.
    adapter = registry.create(name, settings, **options)
    sizes: dict[str, Any] = {} if page_size is None else {"page_size": page_size}
    failures = len(report.failures)
    try:
        if name == "klaviyo":
            from nudge.delivery.esp.klaviyo import KlaviyoAdapter
            from nudge.feedback import klaviyo

            if not isinstance(adapter, KlaviyoAdapter):
                raise FeedbackError(f"{name} is not the Klaviyo adapter")
            klaviyo.pull(
                engine,
                adapter,
                report,
                since=since,
                overlap=overlap,
                now=now,
                currency=settings.shop_currency,
                **sizes,
            )
        else:
            from nudge.delivery.esp.mailchimp import MailchimpAdapter
            from nudge.feedback import mailchimp

            if not isinstance(adapter, MailchimpAdapter):
                raise FeedbackError(f"{name} is not the Mailchimp adapter")
            mailchimp.pull(
                engine, adapter, report, since=since, overlap=overlap, now=now, **sizes
            )
    except DeliveryError as err:
        # The ESP refused the pull as a whole (a revoked key, an outage).
        report.failures[name] = str(err)
        count = store.failed(engine, name, WHOLE, str(err), now=now)
        log.warning("feedback pull failed", esp=name, failures=count, error=str(err))
        return
    finally:
        adapter.close()
    if len(report.failures) == failures:
        store.advance(engine, name, WHOLE, None, now=now)
