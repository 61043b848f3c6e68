"""Klaviyo engagement: its e-mail metrics' events, pulled by metric and time.

Metrics are looked up by name (Klaviyo's metric list cannot be filtered by
name); each metric is a stream whose watermark is the time of the newest event
read. A pull asks the Events API for the metric's events later than the
watermark less an overlap, oldest first, and follows the cursor of each
page's ``links.next`` by hand (``klaviyo-api`` 25.0.0 reads only ``https://``
links). Events the overlap reads again are stored once: Klaviyo's event id is
unique.

A click's link carries the send id (``nudge_sid``); nudge's own metric event
carries it as ``$event_id`` (its ``unique_id``) and ``send_id``. Opens and
other e-mail events of the flow name no send: they are linked to the
customer's latest earlier Klaviyo send (``linked_by`` "nearest"), unless they
are of a Klaviyo campaign (a ``$message`` without a ``$flow``), which nudge
never sends.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from nudge.delivery.base import EspError
from nudge.delivery.esp.klaviyo import KlaviyoAdapter, cursor
from nudge.feedback import machine, store
from nudge.feedback.events import (
    BOUNCE_HARD,
    BOUNCE_SOFT,
    CLICK,
    OPEN,
    RECEIVED,
    SPAM_COMPLAINT,
    TRIGGERED,
    UNKNOWN,
    UNSUBSCRIBE,
    Engagement,
    PullReport,
    parse_time,
    send_key_in_url,
)

ESP = "klaviyo"
PAGE_SIZE = 200  # Klaviyo answers at most 200 events a page
# Klaviyo's e-mail metrics and the kind each becomes, in the order they are
# pulled: deliveries before opens, so that opens find their delivery time.
METRICS: dict[str, str] = {
    "Received Email": RECEIVED,
    "Opened Email": OPEN,
    "Clicked Email": CLICK,
    "Bounced Email": BOUNCE_HARD,
    "Marked Email as Spam": SPAM_COMPLAINT,
    "Unsubscribed": UNSUBSCRIBE,
    "Unsubscribed from Email Marketing": UNSUBSCRIBE,
}
SEND_KEYS = ("send_id", "nudge_sid", "Send ID")
URL_KEYS = ("URL", "url", "Url")


def pull(
    engine: Engine,
    adapter: KlaviyoAdapter,
    report: PullReport,
    *,
    since: datetime | None,
    overlap: timedelta,
    now: datetime,
    page_size: int = PAGE_SIZE,
) -> None:
    """Read every e-mail metric's new events into the store."""
    kinds = {adapter.metric: TRIGGERED, **METRICS}
    found = metric_ids(adapter)
    # A kind is missing when none of its metric names is in the account.
    present = {kind for name, kind in kinds.items() if name in found}
    missing: dict[str, str] = {}
    for name, kind in kinds.items():
        missing.setdefault(kind, name)
    report.missing_metrics.extend(
        f"{ESP}: {name}" for kind, name in missing.items() if kind not in present
    )

    for name, kind in kinds.items():
        if name not in found:
            continue
        stream = f"metric:{name}"
        try:
            newest = _pull_metric(
                engine,
                adapter,
                report,
                stream=stream,
                metric=(found[name], name, kind),
                since=since,
                overlap=overlap,
                now=now,
                page_size=page_size,
            )
        except EspError as err:
            report.failures[f"{ESP} {stream}"] = str(err)
            store.failed(engine, ESP, stream, str(err), now=now)
            continue
        store.advance(engine, ESP, stream, newest, now=now)


def metric_ids(adapter: KlaviyoAdapter) -> dict[str, str]:
    """Return every metric of the account by name, reading every page."""
    found: dict[str, str] = {}
    page: str | None = None
    while True:
        document = _document(
            adapter.call(
                "metrics",
                adapter.client.Metrics.get_metrics,
                page_cursor=page,
                _request_timeout=adapter.timeout,
            )
        )
        for resource in document.get("data") or []:
            name = (resource.get("attributes") or {}).get("name")
            if isinstance(name, str) and isinstance(resource.get("id"), str):
                found.setdefault(name, resource["id"])
        page = cursor(document.get("links"))
        if page is None:
            return found


def _pull_metric(
    engine: Engine,
    adapter: KlaviyoAdapter,
    report: PullReport,
    *,
    stream: str,
    metric: tuple[str, str, str],
    since: datetime | None,
    overlap: timedelta,
    now: datetime,
    page_size: int,
) -> datetime | None:
    """Read one metric's events later than the watermark; return the newest time."""
    metric_id, name, kind = metric
    start = since
    if start is None:
        mark = store.watermark(engine, ESP, stream)
        start = mark - overlap if mark is not None else None
    terms = [f'equals(metric_id,"{metric_id}")']
    if start is not None:
        terms.append(f"greater-than(datetime,{start.isoformat()}+00:00)")

    newest: datetime | None = None
    for document in _pages(adapter, f"and({','.join(terms)})", page_size):
        data = document.get("data")
        if not isinstance(data, list):
            raise EspError(ESP, "events answer without a data list", kind="garbage")
        report.read(f"{ESP} {stream}", len(data))
        included = _included(document.get("included"))
        events = []
        for resource in data:
            event = normalize(resource, {metric_id: (name, kind)}, included, report)
            if event is not None:
                events.append(event)
                if newest is None or event.occurred_at > newest:
                    newest = event.occurred_at
        store.save(engine, events, report, now=now)
    return newest


def _pages(
    adapter: KlaviyoAdapter, expression: str, page_size: int
) -> Iterator[dict[str, Any]]:
    page: str | None = None
    while True:
        document = _document(
            adapter.call(
                "events",
                adapter.client.Events.get_events,
                filter=expression,
                sort="datetime",
                include=["metric", "profile"],
                fields_profile=["email", "external_id"],
                page_cursor=page,
                page_size=page_size,
                _request_timeout=adapter.timeout,
            )
        )
        yield document
        page = cursor(document.get("links"))
        if page is None:
            return


def normalize(
    resource: Any,
    metrics: Mapping[str, tuple[str, str]],
    included: Mapping[tuple[str, str], dict[str, Any]],
    report: PullReport,
) -> Engagement | None:
    """Return one Klaviyo event resource as an `Engagement`, or None (counted)."""
    if not isinstance(resource, dict) or not isinstance(resource.get("id"), str):
        report.skip("malformed")
        return None
    attributes = resource.get("attributes")
    if not isinstance(attributes, dict):
        report.skip("malformed")
        return None
    occurred = _time(attributes)
    if occurred is None:
        report.skip("no_time")
        return None

    relations = resource.get("relationships")
    metric_id = _related_id(relations, "metric")
    name, kind = metrics.get(metric_id or "", (None, UNKNOWN))
    if name is None and metric_id is not None:
        # A metric this pull did not ask for: keep it, as unknown.
        named = included.get(("metric", metric_id), {}).get("attributes") or {}
        name = named.get("name")
    properties = attributes.get("event_properties")
    if not isinstance(properties, dict):
        properties = {}
    if kind == BOUNCE_HARD and "soft" in str(properties.get("Bounce Type", "")).lower():
        kind = BOUNCE_SOFT

    profile_id = _related_id(relations, "profile")
    profile = (included.get(("profile", profile_id or ""), {}) or {}).get(
        "attributes"
    ) or {}
    url = next(
        (properties[k] for k in URL_KEYS if isinstance(properties.get(k), str)), None
    )
    return Engagement(
        esp=ESP,
        kind=kind,
        esp_event_id=resource["id"],
        occurred_at=occurred,
        raw={"metric": name, **resource},
        send_key=_send_key(properties, kind, url),
        esp_profile_id=profile_id,
        customer_ref=_number(profile.get("external_id")),
        email=profile.get("email") if isinstance(profile.get("email"), str) else None,
        url=url if kind == CLICK else None,
        machine_open=kind == OPEN and machine.sign_in(properties) is not None,
        nearest=kind not in (TRIGGERED, UNKNOWN) and not _campaign_email(properties),
    )


def _campaign_email(properties: Mapping[str, Any]) -> bool:
    """Tell whether an event is of a Klaviyo campaign's e-mail, never nudge's.

    nudge's e-mails go out through a flow, whose events name it in ``$flow``;
    an event naming a message but no flow is of the shop's own campaigns.
    """
    return bool(properties.get("$message")) and not properties.get("$flow")


def _time(attributes: Mapping[str, Any]) -> datetime | None:
    for key in ("datetime", "timestamp"):
        value = attributes.get(key)
        if value is None:
            continue
        try:
            return parse_time(value)
        except (ValueError, OverflowError, OSError):
            continue
    return None


def _send_key(properties: Mapping[str, Any], kind: str, url: str | None) -> str | None:
    for key in SEND_KEYS:
        value = properties.get(key)
        if isinstance(value, str) and value:
            return value
    if kind == TRIGGERED and isinstance(properties.get("$event_id"), str):
        return str(properties["$event_id"])
    return send_key_in_url(url)


def _related_id(relations: Any, name: str) -> str | None:
    if not isinstance(relations, dict):
        return None
    data = (relations.get(name) or {}).get("data")
    ident = data.get("id") if isinstance(data, dict) else None
    return ident if isinstance(ident, str) else None


def _number(value: Any) -> int | None:
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None


def _included(entries: Any) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            found[(str(entry.get("type")), entry["id"])] = entry
    return found


def _document(answer: Any) -> dict[str, Any]:
    if isinstance(answer, dict):
        return answer
    to_dict = getattr(answer, "to_dict", None)
    if callable(to_dict):
        result: dict[str, Any] = to_dict()
        return result
    raise EspError(ESP, f"answered with {type(answer).__name__}", kind="garbage")
