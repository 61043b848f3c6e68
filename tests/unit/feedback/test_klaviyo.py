"""Klaviyo engagement through the real SDK against the double: pages, repeats, links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from nudge.delivery.doubles import KlaviyoDouble
from nudge.delivery.esp.klaviyo import KlaviyoAdapter
from nudge.feedback import klaviyo as feed
from nudge.feedback import service, store
from nudge.feedback.events import PullReport
from nudge.render import Renderer
from nudge.settings import Settings
from tests.unit.delivery.conftest import make_messages

from .conftest import FAST, NOW, SENT, Ledger, klaviyo_settings

REPO = Path(__file__).resolve().parents[3]
OPENED, CLICKED = "Opened Email", "Clicked Email"
ALL_METRICS = [*feed.METRICS, "Nudge Recommendation"]


def at(minutes: float) -> datetime:
    """Return an aware time `minutes` after the sends went out."""
    return (SENT + timedelta(minutes=minutes)).replace(tzinfo=UTC)


def pull(engine: Engine, settings: Settings, **options: object) -> PullReport:
    """Pull Klaviyo in pages of 10 as of NOW."""
    options.setdefault("now", NOW)
    return service.pull(
        engine,
        settings,
        "klaviyo",
        page_size=10,
        adapter_options=FAST,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def configured(settings: Settings, klaviyo: KlaviyoDouble) -> Settings:
    """Settings pointing at the double, whose account knows every e-mail metric."""
    for name in ALL_METRICS:
        klaviyo.add_metric(name)
    return klaviyo_settings(settings, klaviyo)


def event_requests(klaviyo: KlaviyoDouble, metric: str) -> list[dict[str, str]]:
    """Return the query of each events request made for a metric."""
    metric_id = klaviyo.metrics[metric]
    found = []
    for request in klaviyo.recorded("GET", r"^/api/events"):
        query = {k: v[0] for k, v in request.query.items()}
        if metric_id in query.get("filter", ""):
            found.append(query)
    return found


def test_every_page_is_read_and_each_event_linked_to_its_send(
    engine: Engine, ledger: Ledger, configured: Settings, klaviyo: KlaviyoDouble
) -> None:
    people = [ledger.customer(f"c{n}@example.com") for n in range(25)]
    sends = [ledger.send(c, "klaviyo") for c in people]
    for n, (customer, (_, key)) in enumerate(zip(people, sends, strict=True)):
        email = f"c{n}@example.com"
        klaviyo.add_event("Received Email", at(1 + n / 60), email=email)
        klaviyo.add_event(OPENED, at(30 + n), email=email, external_id=str(customer))
        if n % 5 == 0:
            url = f"https://demo-shop.example/p/{n}?utm_source=nudge&nudge_sid={key}"
            klaviyo.add_event(CLICKED, at(40 + n), email=email, properties={"URL": url})

    report = pull(engine, configured)

    assert report.ok and report.failures == {}
    assert report.stored == {"received": 25, "open": 25, "click": 5}
    assert report.streams["klaviyo metric:Opened Email"] == 25
    assert report.linked == 55 and report.unlinked == 0
    assert report.linked_by == {"nearest": 50, "send_key": 5}
    # Three pages of opens, each after the first asked for by the `next` cursor.
    pages = event_requests(klaviyo, OPENED)
    assert [p.get("page[cursor]") for p in pages] == [None, "c10", "c20"]
    assert {p["sort"] for p in pages} == {"datetime"}
    by_send = {
        send_id: customer for (send_id, _), customer in zip(sends, people, strict=True)
    }
    for row in ledger.events():
        assert by_send[row.send_id] == row.customer_id
    clicks = ledger.events(kind="click")
    assert clicks[0].url.startswith("https://demo-shop.example/p/0?")
    assert all(c.linked_by == "send_key" for c in clicks)


def test_a_second_pull_reads_from_the_watermark_and_stores_nothing_again(
    engine: Engine, ledger: Ledger, configured: Settings, klaviyo: KlaviyoDouble
) -> None:
    ann = ledger.customer("ann@example.com")
    ledger.send(ann, "klaviyo")
    for n in range(12):
        klaviyo.add_event(OPENED, at(60 + n), email="ann@example.com")

    first = pull(engine, configured)
    second = pull(engine, configured, now=NOW + timedelta(hours=1))

    assert first.stored["open"] == 12
    assert second.total_stored == 0 and second.duplicates == 12
    assert len(ledger.events()) == 12
    mark = store.watermark(engine, "klaviyo", "metric:Opened Email")
    assert mark == (at(71)).replace(tzinfo=None)
    # The second read starts two hours (the overlap) before the newest event.
    last = event_requests(klaviyo, OPENED)[-1]["filter"]
    since = (mark - service.OVERLAP).isoformat()
    assert f"greater-than(datetime,{since}+00:00)" in last


def test_late_and_out_of_order_events_are_taken_once(
    engine: Engine, ledger: Ledger, configured: Settings, klaviyo: KlaviyoDouble
) -> None:
    ann = ledger.customer("ann@example.com")
    send_id, _ = ledger.send(ann, "klaviyo")
    klaviyo.add_event(OPENED, at(300), email="ann@example.com", event_id="E-new")
    pull(engine, configured)

    # Recorded by Klaviyo after the pull, but stamped before its watermark.
    klaviyo.add_event(OPENED, at(250), email="ann@example.com", event_id="E-late")
    klaviyo.add_event(OPENED, at(100), email="ann@example.com", event_id="E-later")
    # Too old for the overlap: only a pull with --since finds it.
    klaviyo.add_event(OPENED, at(-500), email="ann@example.com", event_id="E-ancient")
    again = pull(engine, configured)
    assert again.stored["open"] == 1 and again.duplicates == 1

    mark = store.watermark(engine, "klaviyo", "metric:Opened Email")
    back = pull(engine, configured, since=(SENT - timedelta(days=1)))

    assert back.stored["open"] == 2 and back.duplicates == 2
    assert store.watermark(engine, "klaviyo", "metric:Opened Email") == mark
    ids = [r.esp_event_id for r in ledger.events()]
    assert ids == ["E-ancient", "E-later", "E-late", "E-new"]
    # The oldest open came before the send: it cannot be linked to it.
    assert [r.send_id for r in ledger.events()] == [None, send_id, send_id, send_id]


def test_unknown_sends_customers_and_malformed_payloads_never_stop_a_pull(
    engine: Engine, ledger: Ledger, configured: Settings, klaviyo: KlaviyoDouble
) -> None:
    ann = ledger.customer("ann@example.com")
    ledger.send(ann, "klaviyo")
    url = "https://demo-shop.example/p?nudge_sid=sk-from-another-shop"
    klaviyo.add_event(CLICKED, at(5), email="ann@example.com", properties={"URL": url})
    klaviyo.add_event(OPENED, at(6), email="nobody@example.com")
    stamp = int(at(7).timestamp())
    klaviyo.add_event(
        OPENED,
        None,
        email="ann@example.com",
        attributes={"timestamp": stamp, "datetime": "yesterday", "event_properties": 7},
    )
    klaviyo.add_event(
        OPENED, None, email="ann@example.com", attributes={"datetime": None}
    )
    malformed: Any = "not an object"
    klaviyo.add_event(OPENED, None, attributes=malformed)

    report = pull(engine, configured)

    assert report.ok
    assert report.stored == {"click": 1, "open": 2}
    assert report.skipped == {"no_time": 1, "malformed": 1}
    assert report.flagged["unknown_send"] == 1
    assert report.flagged["unknown_customer"] == 1
    click, stranger, stamped = ledger.events()
    assert (click.customer_id, click.send_id) == (ann, None)
    assert (stranger.customer_id, stranger.send_id) == (None, None)
    assert stamped.occurred_at == at(7).replace(tzinfo=None)
    assert stamped.raw["attributes"]["event_properties"] == 7


def test_metrics_the_account_lacks_are_reported_not_fatal(
    engine: Engine, ledger: Ledger, settings: Settings, klaviyo: KlaviyoDouble
) -> None:
    for n in range(15):
        klaviyo.add_metric(f"Other metric {n}")  # the lookup reads two pages
    klaviyo.add_event(OPENED, at(3), email="ann@example.com")

    report = pull(engine, klaviyo_settings(settings, klaviyo))

    assert report.ok and report.stored == {"open": 1}
    assert "klaviyo: Clicked Email" in report.missing_metrics
    assert "klaviyo: Unsubscribed from Email Marketing" not in report.missing_metrics
    assert len(klaviyo.recorded("GET", r"^/api/metrics")) == 2


def test_an_event_of_a_metric_nobody_asked_for_is_kept_as_unknown() -> None:
    report = PullReport()
    resource = {
        "type": "event",
        "id": "E1",
        "attributes": {"datetime": "2026-11-29T12:00:00+01:00"},
        "relationships": {"metric": {"data": {"type": "metric", "id": "MX"}}},
    }
    included = {("metric", "MX"): {"attributes": {"name": "Viewed Product"}}}

    event = feed.normalize(resource, {"MO": ("Opened Email", "open")}, included, report)

    assert event is not None and event.kind == "unknown"
    assert event.occurred_at == datetime(2026, 11, 29, 11, 0)
    assert event.raw["metric"] == "Viewed Product" and not event.nearest


def test_unsubscribes_spam_and_bounces_suppress_the_customer(
    engine: Engine, ledger: Ledger, configured: Settings, klaviyo: KlaviyoDouble
) -> None:
    cases = [
        ("Unsubscribed", None, "unsubscribe"),
        ("Marked Email as Spam", None, "spam_complaint"),
        ("Bounced Email", "Hard bounce", "bounce_hard"),
    ]
    people = {}
    for metric, bounce, kind in cases:
        people[kind] = ledger.customer(f"{kind}@example.com")
        properties = {"Bounce Type": bounce} if bounce else {}
        klaviyo.add_event(
            metric, at(20), email=f"{kind}@example.com", properties=properties
        )

    report = pull(engine, configured)

    assert report.stored == {"unsubscribe": 1, "spam_complaint": 1, "bounce_hard": 1}
    assert report.suppressed == 3
    for customer in people.values():
        row = ledger.customer_row(customer)
        assert row.unsubscribed_at == at(20).replace(tzinfo=None)
    assert store.suppressed(engine, people.values()) == {
        customer: kind for kind, customer in people.items()
    }


def test_the_soft_bounce_is_not_a_suppression(
    engine: Engine, ledger: Ledger, configured: Settings, klaviyo: KlaviyoDouble
) -> None:
    bob = ledger.customer("bob@example.com")
    klaviyo.add_event(
        "Bounced Email",
        at(2),
        email="bob@example.com",
        properties={"Bounce Type": "Soft"},
    )
    report = pull(engine, configured)
    assert report.stored == {"bounce_soft": 1} and report.suppressed == 0
    assert ledger.customer_row(bob).unsubscribed_at is None


def test_proxy_opens_are_flagged_from_their_properties(
    engine: Engine, ledger: Ledger, configured: Settings, klaviyo: KlaviyoDouble
) -> None:
    ledger.customer("ann@example.com")
    klaviyo.add_event(
        OPENED,
        at(90),
        email="ann@example.com",
        properties={"User Agent": "Mozilla/5.0"},
    )
    klaviyo.add_event(
        OPENED,
        at(95),
        email="ann@example.com",
        properties={"User Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) Mobile"},
    )
    report = pull(engine, configured)
    assert [r.machine_open for r in ledger.events()] == [True, False]
    assert report.machine_opens == 1


def test_nudges_own_events_link_by_their_unique_id(
    engine: Engine, ledger: Ledger, configured: Settings, klaviyo: KlaviyoDouble
) -> None:
    renderer = Renderer(REPO / "email_templates", signing_secret="test-secret")
    messages = make_messages(renderer, "klaviyo", 3, prefix="snd")
    people = [ledger.customer(m.email) for m in messages]
    rows = [
        ledger.send(c, "klaviyo", key=m.send_id, submitted=NOW - timedelta(minutes=5))
        for c, m in zip(people, messages, strict=True)
    ]
    KlaviyoAdapter(klaviyo.api_key, base_url=klaviyo.url, sleep=lambda s: None).deliver(
        messages
    )

    report = pull(engine, configured)

    assert report.stored == {"triggered": 3}
    assert report.linked_by == {"send_key": 3}
    linked = sorted((r.send_id, r.customer_id) for r in ledger.events())
    assert linked == sorted(
        (send_id, c) for (send_id, _), c in zip(rows, people, strict=True)
    )


def test_opens_of_the_shops_own_klaviyo_campaigns_are_not_guessed_as_nudges(
    engine: Engine, ledger: Ledger, configured: Settings, klaviyo: KlaviyoDouble
) -> None:
    ann = ledger.customer("ann@example.com")
    send_id, _ = ledger.send(ann, "klaviyo")
    flow = {"$flow": "F1", "$message": "M1"}
    klaviyo.add_event(OPENED, at(5), email="ann@example.com", properties=flow)
    klaviyo.add_event(
        OPENED, at(6), email="ann@example.com", properties={"$message": "CAMPAIGN"}
    )

    pull(engine, configured)

    assert [(r.send_id, r.customer_id) for r in ledger.events()] == [
        (send_id, ann),
        (None, ann),
    ]


def test_a_refused_key_fails_the_pull_and_is_counted(
    engine: Engine, configured: Settings, klaviyo: KlaviyoDouble
) -> None:
    klaviyo.revoke_key()

    first = pull(engine, configured)
    second = pull(engine, configured)

    assert not second.ok and "klaviyo" in second.failures
    assert "401" in first.failures["klaviyo"]
    assert store.failed(engine, "klaviyo", "pull", "again", now=NOW) == 3
