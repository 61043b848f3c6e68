"""Mailchimp engagement: campaign reports, the audience's unsubscribes, webhooks.

nudge sends one Mailchimp campaign per run and variant; the ledger keeps its id
as ``esp_job_id`` and the member's id (the MD5 of the address) as ``esp_id``.
For each such campaign of the last weeks a pull reads the e-mail activity
report (opens, clicks, bounces) since the stream's watermark less an overlap,
and the campaign's unsubscribes; then the audience's members that became
unsubscribed or cleaned. Mailchimp gives these no event ids, so each event's id
is a hash of its fields, the same whenever it is read again.

A click's link carries the send id (``nudge_sid``); other events are linked by
the campaign and member ids. An unsubscribe seen both in a campaign report and
among the audience's members is stored once.

`handle_webhook` takes a list webhook's form (``unsubscribe`` and ``cleaned``)
for an HTTP endpoint to call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import Engine, func, select

from nudge.delivery.base import EspError
from nudge.delivery.esp.mailchimp import MailchimpAdapter, _answer, subscriber_hash
from nudge.feedback import machine, store
from nudge.feedback.events import (
    BOUNCE_HARD,
    BOUNCE_SOFT,
    CLICK,
    OPEN,
    SPAM_COMPLAINT,
    UNKNOWN,
    UNSUBSCRIBE,
    Engagement,
    PullReport,
    digest,
    parse_time,
    send_key_in_url,
    utc_naive,
    utcnow,
)
from nudge.store.send_models import Send

ESP = "mailchimp"
PAGE_SIZE = 500
# Campaigns sent this long ago or less are read on each pull.
CAMPAIGN_DAYS = 60
ABUSE = ("abuse", "spam")
MEMBER_FIELDS = [
    "members.id",
    "members.email_address",
    "members.status",
    "members.last_changed",
    "members.unsubscribe_reason",
    "members.list_id",
    "total_items",
]
_BRACKETS = re.compile(r"\[([^\]]*)\]")

Reader = Callable[[datetime | None], Iterator[list[Engagement]]]


def pull(
    engine: Engine,
    adapter: MailchimpAdapter,
    report: PullReport,
    *,
    since: datetime | None,
    overlap: timedelta,
    now: datetime,
    page_size: int = PAGE_SIZE,
    campaign_days: int = CAMPAIGN_DAYS,
) -> None:
    """Read the recent campaigns' reports and the audience's unsubscribes."""
    streams: list[tuple[str, Reader]] = []
    for campaign in campaigns(engine, now - timedelta(days=campaign_days)):
        for name, read in (("activity", _activity), ("unsubscribed", _unsubscribed)):
            pages = partial(read, adapter, campaign, report=report, page_size=page_size)
            streams.append((f"{name}:{campaign}", pages))
    for status in ("unsubscribed", "cleaned"):
        members = partial(_members, adapter, status, report=report, page_size=page_size)
        streams.append((f"members:{status}", members))
    for stream, reader in streams:
        _run(engine, report, stream, reader, since=since, overlap=overlap, now=now)


def campaigns(engine: Engine, after: datetime) -> list[str]:
    """Return the Mailchimp campaigns of the ledger's sends since a time."""
    sent = func.coalesce(Send.submitted_at, Send.created_at)
    query = (
        select(Send.esp_job_id)
        .where(Send.esp == ESP, Send.esp_job_id.is_not(None), sent >= after)
        .distinct()
    )
    with engine.connect() as conn:
        return sorted(str(job) for (job,) in conn.execute(query))


def _run(
    engine: Engine,
    report: PullReport,
    stream: str,
    read: Reader,
    *,
    since: datetime | None,
    overlap: timedelta,
    now: datetime,
) -> None:
    """Read one stream from its watermark, store each page, then move the mark."""
    start = since
    if start is None:
        mark = store.watermark(engine, ESP, stream)
        start = mark - overlap if mark is not None else None
    newest: datetime | None = None
    try:
        for events in read(start):
            store.save(engine, events, report, now=now)
            for event in events:
                if newest is None or event.occurred_at > newest:
                    newest = event.occurred_at
    except EspError as err:
        report.failures[f"{ESP} {stream}"] = str(err)
        store.failed(engine, ESP, stream, str(err), now=now)
        return
    store.advance(engine, ESP, stream, newest, now=now)


def _pages(
    adapter: MailchimpAdapter,
    fn: Callable[..., Any],
    key: str,
    *args: Any,
    page_size: int,
    **kwargs: Any,
) -> Iterator[list[Any]]:
    """Yield each page of a collection (``offset`` and ``count``)."""
    offset = 0
    while True:
        page = adapter.call(
            "api", _answer, fn, *args, count=page_size, offset=offset, **kwargs
        )
        entries = page.get(key) if isinstance(page, dict) else None
        if not isinstance(entries, list):
            raise EspError(ESP, f"answer without a {key} list", kind="garbage")
        yield entries
        offset += len(entries)
        if not entries or offset >= int(page.get("total_items") or 0):
            return


def _stamp(when: datetime | None) -> dict[str, str]:
    return {} if when is None else {"since": f"{when.isoformat()}+00:00"}


# ------------------------------------------------------------------ reports


def _activity(
    adapter: MailchimpAdapter,
    campaign: str,
    start: datetime | None,
    *,
    report: PullReport,
    page_size: int,
) -> Iterator[list[Engagement]]:
    reports = adapter.client.reports
    for entries in _pages(
        adapter,
        reports.get_email_activity_for_campaign,
        "emails",
        campaign,
        page_size=page_size,
        **_stamp(start),
    ):
        report.read(f"{ESP} activity", len(entries))
        events: list[Engagement] = []
        for entry in entries:
            events.extend(activity_events(entry, campaign, report))
        yield events


def activity_events(entry: Any, campaign: str, report: PullReport) -> list[Engagement]:
    """Return the events of one member's entry in a campaign's activity report."""
    if not isinstance(entry, dict) or not isinstance(entry.get("activity"), list):
        report.skip("malformed")
        return []
    email = _text(entry.get("email_address"))
    profile = _text(entry.get("email_id")) or (
        subscriber_hash(email) if email else None
    )
    events = []
    for activity in entry["activity"]:
        if not isinstance(activity, dict):
            report.skip("malformed")
            continue
        try:
            occurred = parse_time(activity.get("timestamp"))
        except ValueError:
            report.skip("no_time")
            continue
        action = str(activity.get("action") or "")
        bounce = str(activity.get("type") or "").lower()
        kind = {"open": OPEN, "click": CLICK}.get(action, UNKNOWN)
        if action == "bounce":
            kind = BOUNCE_SOFT if bounce == "soft" else BOUNCE_HARD
        url = _text(activity.get("url"))
        raw = {k: v for k, v in entry.items() if k != "activity"}
        events.append(
            Engagement(
                esp=ESP,
                kind=kind,
                esp_event_id=digest(
                    "activity",
                    campaign,
                    profile or email,
                    action,
                    bounce,
                    activity.get("timestamp"),
                    url,
                ),
                occurred_at=occurred,
                raw={**raw, "activity": activity},
                send_key=send_key_in_url(url),
                esp_job_id=campaign,
                esp_profile_id=profile,
                email=email,
                url=url if kind == CLICK else None,
                machine_open=kind == OPEN
                and machine.proxy_sign(ip=activity.get("ip")) is not None,
            )
        )
    return events


def _unsubscribed(
    adapter: MailchimpAdapter,
    campaign: str,
    start: datetime | None,
    *,
    report: PullReport,
    page_size: int,
) -> Iterator[list[Engagement]]:
    reports = adapter.client.reports
    for entries in _pages(
        adapter,
        reports.get_unsubscribed_list_for_campaign,
        "unsubscribes",
        campaign,
        page_size=page_size,
    ):
        report.read(f"{ESP} unsubscribed", len(entries))
        events = []
        for entry in entries:
            event = _unsubscribe(entry, campaign, report)
            # The report has no `since`: what the watermark passed is stored.
            if event is not None and (start is None or event.occurred_at > start):
                events.append(event)
        yield events


def _unsubscribe(entry: Any, campaign: str, report: PullReport) -> Engagement | None:
    if not isinstance(entry, dict):
        report.skip("malformed")
        return None
    try:
        occurred = parse_time(entry.get("timestamp"))
    except ValueError:
        report.skip("no_time")
        return None
    email = _text(entry.get("email_address"))
    profile = _text(entry.get("email_id")) or (
        subscriber_hash(email) if email else None
    )
    if profile is None:
        report.skip("no_recipient")
        return None
    reason = str(entry.get("reason") or "")
    return Engagement(
        esp=ESP,
        kind=_unsubscribe_kind(reason),
        esp_event_id=digest("unsubscribe", campaign, profile, entry.get("timestamp")),
        occurred_at=occurred,
        raw={k: v for k, v in entry.items() if k != "merge_fields"},
        esp_job_id=campaign,
        esp_profile_id=profile,
        email=email,
    )


def _members(
    adapter: MailchimpAdapter,
    status: str,
    start: datetime | None,
    *,
    report: PullReport,
    page_size: int,
) -> Iterator[list[Engagement]]:
    changed = {} if start is None else {"since_last_changed": _stamp(start)["since"]}
    for entries in _pages(
        adapter,
        adapter.client.lists.get_list_members_info,
        "members",
        adapter.list_id,
        page_size=page_size,
        status=status,
        fields=MEMBER_FIELDS,
        **changed,
    ):
        report.read(f"{ESP} members:{status}", len(entries))
        events = []
        for entry in entries:
            event = _member(entry, adapter.list_id, report)
            if event is not None:
                events.append(event)
        yield events


def _member(entry: Any, list_id: str, report: PullReport) -> Engagement | None:
    if not isinstance(entry, dict):
        report.skip("malformed")
        return None
    status = entry.get("status")
    if status not in ("unsubscribed", "cleaned"):
        report.skip("not_engagement")
        return None
    try:
        occurred = parse_time(entry.get("last_changed"))
    except ValueError:
        report.skip("no_time")
        return None
    email = _text(entry.get("email_address"))
    profile = _text(entry.get("id")) or (subscriber_hash(email) if email else None)
    if profile is None:
        report.skip("no_recipient")
        return None
    reason = str(entry.get("unsubscribe_reason") or "")
    kind = BOUNCE_HARD if status == "cleaned" else _unsubscribe_kind(reason)
    return Engagement(
        esp=ESP,
        kind=kind,
        esp_event_id=digest("member", list_id, profile, status, entry["last_changed"]),
        occurred_at=occurred,
        raw=dict(entry),
        esp_profile_id=profile,
        email=email,
    )


def _unsubscribe_kind(reason: str) -> str:
    lowered = reason.lower()
    return SPAM_COMPLAINT if any(word in lowered for word in ABUSE) else UNSUBSCRIBE


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


# ------------------------------------------------------------------ webhooks


def handle_webhook(
    engine: Engine, payload: Mapping[str, Any], *, now: datetime | None = None
) -> PullReport:
    """Store a Mailchimp list webhook (``unsubscribe``, ``cleaned``) and apply it.

    ``payload`` is the webhook's form as posted (``data[email]`` keys) or the
    same already nested; other webhook types are counted and left out.
    """
    now = utc_naive(now) if now is not None else utcnow()
    report = PullReport(esps=[ESP], started_at=now)
    form = nest(payload)
    event = webhook_event(form, report)
    if event is not None:
        store.save(engine, [event], report, now=now)
    report.read(f"{ESP} webhook", 1)
    report.finished_at = now
    return report


def webhook_event(form: Mapping[str, Any], report: PullReport) -> Engagement | None:
    """Return the event of a nested webhook form, or None (counted)."""
    kind_name = form.get("type")
    data = form.get("data")
    if kind_name not in ("unsubscribe", "cleaned"):
        report.skip("not_engagement")
        return None
    if not isinstance(data, dict):
        report.skip("malformed")
        return None
    email = _text(data.get("email"))
    if email is None:
        report.skip("no_recipient")
        return None
    try:
        occurred = parse_time(form.get("fired_at"))
    except ValueError:
        report.skip("no_time")
        return None
    reason = str(data.get("reason") or "")
    if kind_name == "cleaned":
        kind = SPAM_COMPLAINT if "abuse" in reason.lower() else BOUNCE_HARD
    else:
        kind = _unsubscribe_kind(reason)
    list_id = _text(data.get("list_id"))
    return Engagement(
        esp=ESP,
        kind=kind,
        esp_event_id=digest(
            "webhook", kind_name, list_id, email.lower(), form.get("fired_at")
        ),
        occurred_at=occurred,
        raw=dict(form),
        esp_job_id=_text(data.get("campaign_id")),
        esp_profile_id=subscriber_hash(email),
        email=email,
    )


def nest(form: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a form's ``data[merges][EMAIL]`` keys into nested dictionaries."""
    nested: dict[str, Any] = {}
    for key, value in form.items():
        head, _, rest = str(key).partition("[")
        parts = [head, *_BRACKETS.findall("[" + rest)] if rest else [head]
        target = nested
        for part in parts[:-1]:
            child = target.get(part)
            if not isinstance(child, dict):
                child = target[part] = {}
            target = child
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        target[parts[-1]] = value
    return nested
