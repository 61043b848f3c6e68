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

When the account has Klaviyo's "Placed Order" metric, its events are a stream
too: each becomes an order in the shop's tables (`nudge.feedback.orders`), so
that attribution and training count it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Engine

from nudge.delivery.base import EspError
from nudge.delivery.esp.klaviyo import KlaviyoAdapter, cursor
from nudge.feedback import machine, orders, store
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
# Klaviyo's standard e-commerce metric, and where its events name things.
ORDER_METRIC = "Placed Order"
ORDER_ID_KEYS = ("OrderId", "order_id")
CURRENCY_KEYS = ("Currency", "currency", "$currency_code")
PRODUCT_KEYS = ("ProductID", "SKU")


def pull(
    engine: Engine,
    adapter: KlaviyoAdapter,
    report: PullReport,
    *,
    since: datetime | None,
    overlap: timedelta,
    now: datetime,
    page_size: int = PAGE_SIZE,
    currency: str,
) -> None:
    """Read every e-mail metric's new events, and placed orders, into the store.

    ``currency`` is the shop's, for orders whose events name none.
    """
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
                expression=_filter(engine, stream, found[name], since, overlap),
                now=now,
                page_size=page_size,
            )
        except EspError as err:
            _failed(engine, report, stream, err, now)
            continue
        store.advance(engine, ESP, stream, newest, now=now)

    # Orders are the shop's to track in Klaviyo or not: none is no gap.
    if ORDER_METRIC not in found:
        report.notes.append(f"{ESP}: no {ORDER_METRIC!r} metric; no orders read")
        return
    stream = f"metric:{ORDER_METRIC}"
    expression = _filter(engine, stream, found[ORDER_METRIC], since, overlap)
    try:
        newest, stored = _pull_orders(
            engine, adapter, report, stream, expression, now, page_size, currency
        )
    except EspError as err:
        _failed(engine, report, stream, err, now)
        return
    store.advance(engine, ESP, stream, newest, now=now)
    report.notes.append(f"{ESP}: {stored:,} new orders from {ORDER_METRIC!r}")


def _failed(
    engine: Engine, report: PullReport, stream: str, err: EspError, now: datetime
) -> None:
    report.failures[f"{ESP} {stream}"] = str(err)
    store.failed(engine, ESP, stream, str(err), now=now)


def _filter(
    engine: Engine,
    stream: str,
    metric_id: str,
    since: datetime | None,
    overlap: timedelta,
) -> str:
    """Return the filter of a metric's events later than the stream's watermark."""
    start = since
    if start is None:
        mark = store.watermark(engine, ESP, stream)
        start = mark - overlap if mark is not None else None
    terms = [f'equals(metric_id,"{metric_id}")']
    if start is not None:
        terms.append(f"greater-than(datetime,{start.isoformat()}+00:00)")
    return f"and({','.join(terms)})"


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
    expression: str,
    now: datetime,
    page_size: int,
) -> datetime | None:
    """Read one metric's events the filter names; return the newest time."""
    metric_id, name, kind = metric
    newest: datetime | None = None
    for document in _pages(adapter, expression, page_size):
        data = _data(document)
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


def _pull_orders(
    engine: Engine,
    adapter: KlaviyoAdapter,
    report: PullReport,
    stream: str,
    expression: str,
    now: datetime,
    page_size: int,
    currency: str,
) -> tuple[datetime | None, int]:
    """Store the placed orders the filter names; return the newest time and count."""
    newest: datetime | None = None
    stored = 0
    for document in _pages(adapter, expression, page_size):
        data = _data(document)
        report.read(f"{ESP} {stream}", len(data))
        included = _included(document.get("included"))
        found = []
        for resource in data:
            order = placed_order(resource, included, report, currency)
            if order is not None:
                found.append(order)
                if newest is None or order.ordered_at > newest:
                    newest = order.ordered_at
        stored += orders.save(engine, found, report, now=now)
    return newest, stored


def placed_order(
    resource: Any,
    included: Mapping[tuple[str, str], dict[str, Any]],
    report: PullReport,
    currency: str,
) -> orders.PlacedOrder | None:
    """Return one "Placed Order" event as an order, or None (counted)."""
    if not isinstance(resource, dict) or not isinstance(resource.get("id"), str):
        report.skip("order_malformed")
        return None
    attributes = resource.get("attributes")
    if not isinstance(attributes, dict):
        report.skip("order_malformed")
        return None
    occurred = _time(attributes)
    properties = attributes.get("event_properties")
    if not isinstance(properties, dict) or occurred is None:
        report.skip("order_malformed")
        return None
    items = properties.get("Items")
    if not isinstance(items, list):
        report.skip("order_malformed")
        return None

    ident = _text(*(properties.get(k) for k in ORDER_ID_KEYS))
    external_id = ident or f"{ESP}-{resource['id']}"
    if len(external_id) > orders.ID_LENGTH:
        report.skip("order_malformed")
        return None
    named = _text(*(properties.get(k) for k in CURRENCY_KEYS))
    if named is None or len(named) != 3 or not named.isalpha():
        named = currency

    profile_id = _related_id(resource.get("relationships"), "profile")
    profile = (included.get(("profile", profile_id or ""), {}) or {}).get(
        "attributes"
    ) or {}
    return orders.PlacedOrder(
        external_id=external_id,
        ordered_at=occurred,
        currency=named.upper(),
        items=[i for i in (_item(entry, report) for entry in items) if i is not None],
        customer_ref=_text(profile.get("external_id")),
        email=_text(profile.get("email")),
    )


def _item(entry: Any, report: PullReport) -> orders.Item | None:
    """Return one entry of an order's ``Items`` as an item, or None (counted)."""
    if not isinstance(entry, dict):
        report.skip("order_malformed_item")
        return None
    refs = tuple(
        ref
        for ref in (_text(entry.get(k)) for k in PRODUCT_KEYS)
        if ref is not None and len(ref) <= orders.ID_LENGTH
    )
    quantity = _quantity(entry.get("Quantity"))
    price = _money(entry.get("ItemPrice"))
    if not refs or quantity is None or price is None:
        report.skip("order_malformed_item")
        return None
    return orders.Item(refs=refs, quantity=quantity, unit_price=price)


def _quantity(value: Any) -> int | None:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if value >= 1 else None


def _money(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


def _text(*values: Any) -> str | None:
    """Return the first value that is a non-empty text or a whole number, as text."""
    for value in values:
        if isinstance(value, bool):
            continue
        if isinstance(value, int) or (isinstance(value, str) and value.strip()):
            return str(value).strip()
    return None


def _data(document: Mapping[str, Any]) -> list[Any]:
    data = document.get("data")
    if not isinstance(data, list):
        raise EspError(ESP, "events answer without a data list", kind="garbage")
    return data


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
        customer_ref=_text(profile.get("external_id")),
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
