"""Storing events: once each, linked, suppressing, machine opens, watermarks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select

from nudge.feedback import store
from nudge.feedback.events import Engagement, PullReport, digest, send_key_in_url
from nudge.settings import Settings
from nudge.store.db import make_engine
from nudge.store.feedback_models import Suppression

from .conftest import NOW, SENT, Ledger


def event(kind: str, minutes: float = 60, **fields: Any) -> Engagement:
    """Return an event `minutes` after the send, with an id made of its fields."""
    when = fields.pop("at", SENT + timedelta(minutes=minutes))
    fields.setdefault("esp", "klaviyo")
    ident = fields.pop("ident", None) or digest(kind, when, *sorted(fields.items()))
    return Engagement(
        kind=kind, esp_event_id=ident, occurred_at=when, raw={"k": kind}, **fields
    )


def test_an_event_seen_twice_is_stored_once(engine: Engine, ledger: Ledger) -> None:
    ann = ledger.customer("ann@example.com")
    send_id, key = ledger.send(ann, "klaviyo")
    click = event("click", send_key=key, url=f"https://shop/p?nudge_sid={key}")
    report = PullReport()

    first = store.save(engine, [click, click], report, now=NOW)
    second = store.save(engine, [click], report, now=NOW)

    assert len(first) == 1 and second == []
    assert report.stored["click"] == 1 and report.duplicates == 2
    [row] = ledger.events()
    assert (row.send_id, row.customer_id, row.linked_by) == (send_id, ann, "send_key")
    assert row.url == f"https://shop/p?nudge_sid={key}" and row.raw == {"k": "click"}


def test_events_link_by_key_then_esp_ids_and_count_the_unknown(
    engine: Engine, ledger: Ledger
) -> None:
    ann = ledger.customer("Ann@Example.com")
    bob = ledger.customer("bob@example.com")
    _, ann_key = ledger.send(ann, "mailchimp", job="camp1", esp_id="hash-ann")
    bob_send, _ = ledger.send(bob, "mailchimp", job="camp1", esp_id="hash-bob")
    report = PullReport()
    events = [
        event("click", esp="mailchimp", send_key=ann_key),
        event("open", esp="mailchimp", esp_job_id="camp1", esp_profile_id="hash-bob"),
        # No profile id the ledger knows, but the address names Ann (any case).
        event(
            "open",
            esp="mailchimp",
            esp_job_id="camp1",
            esp_profile_id="other",
            email="ann@example.COM",
        ),
        event("click", esp="mailchimp", send_key="sk-nobody-knows"),
        event("open", esp="mailchimp", email="stranger@example.com"),
    ]

    store.save(engine, events, report, now=NOW)

    linked = [(r.send_id, r.customer_id, r.linked_by) for r in ledger.events()]
    assert len(linked) == 5
    assert linked.count((bob_send, bob, "esp_ids")) == 1
    assert sum(1 for s, c, how in linked if c == ann and how) == 2
    assert report.linked == 3 and report.unlinked == 2
    assert report.linked_by == {"send_key": 1, "esp_ids": 2}
    assert report.flagged["unknown_send"] == 1
    assert report.flagged["unknown_customer"] == 2


def test_nearest_links_to_the_latest_earlier_send_of_that_esp(
    engine: Engine, ledger: Ledger
) -> None:
    ann = ledger.customer("ann@example.com")
    ledger.send(ann, "klaviyo", submitted=SENT - timedelta(days=3))
    latest, _ = ledger.send(ann, "klaviyo", submitted=SENT)
    ledger.send(ann, "mailchimp", submitted=SENT + timedelta(minutes=30))
    ledger.send(ann, "klaviyo", submitted=SENT + timedelta(hours=5))
    report = PullReport()

    store.save(
        engine,
        [
            event("open", 60, email="ann@example.com", nearest=True),
            # Long after any send: left unlinked, though the customer is known.
            event("open", 60 * 24 * 20, email="ann@example.com", nearest=True),
        ],
        report,
        now=NOW + timedelta(days=30),
    )

    first, late = ledger.events()
    assert (first.send_id, first.linked_by) == (latest, "nearest")
    assert (late.send_id, late.customer_id) == (None, ann)


def test_unsubscribe_spam_and_hard_bounce_suppress_at_once(
    engine: Engine, ledger: Ledger
) -> None:
    people = {
        kind: ledger.customer(f"{kind}@example.com")
        for kind in ("unsubscribe", "spam_complaint", "bounce_hard", "bounce_soft")
    }
    report = PullReport()
    events = [
        event(kind, 30, esp="mailchimp", email=f"{kind}@example.com") for kind in people
    ]

    store.save(engine, events, report, now=NOW)

    assert report.suppressed == 3
    for kind, customer in people.items():
        row = ledger.customer_row(customer)
        expected = SENT + timedelta(minutes=30) if kind != "bounce_soft" else None
        assert row.unsubscribed_at == expected, kind
    with engine.connect() as conn:
        query = select(Suppression.customer_id, Suppression.reason)
        reasons = {customer: reason for customer, reason in conn.execute(query)}
    assert reasons == {
        people[k]: k for k in ("unsubscribe", "spam_complaint", "bounce_hard")
    }
    assert store.suppressed(engine, people.values()) == reasons


def test_a_consent_given_after_a_late_unsubscribe_stands(
    engine: Engine, ledger: Ledger
) -> None:
    ann = ledger.customer("ann@example.com", consent_at=SENT + timedelta(days=2))
    done = ledger.customer("dan@example.com", unsubscribed_at=SENT - timedelta(days=9))
    report = PullReport()

    store.save(
        engine,
        [
            event("unsubscribe", 10, email="ann@example.com"),
            event("unsubscribe", 10, email="dan@example.com"),
        ],
        report,
        now=NOW,
    )

    assert report.suppressed == 0 and report.flagged["consent_after_event"] == 1
    assert ledger.customer_row(ann).unsubscribed_at is None
    assert ledger.customer_row(done).unsubscribed_at == SENT - timedelta(days=9)


def test_one_unsubscribe_read_through_two_streams_is_stored_once(
    engine: Engine, ledger: Ledger
) -> None:
    report = PullReport()
    from_report = event(
        "unsubscribe", 10, esp="mailchimp", esp_profile_id="h1", ident="report"
    )
    from_members = event(
        "unsubscribe", 11, esp="mailchimp", esp_profile_id="h1", ident="members"
    )
    a_month_later = event(
        "unsubscribe", 60 * 24 * 30, esp="mailchimp", esp_profile_id="h1", ident="m2"
    )

    store.save(engine, [from_report], report, now=NOW)
    store.save(engine, [from_members, a_month_later], report, now=NOW)

    assert [r.esp_event_id for r in ledger.events()] == ["report", "m2"]
    assert report.skipped == {"repeated": 1}


def test_opens_right_after_delivery_are_machine_opens(
    engine: Engine, ledger: Ledger
) -> None:
    ann = ledger.customer("ann@example.com")
    _, key = ledger.send(ann, "klaviyo")
    report = PullReport()
    received = SENT + timedelta(minutes=2)

    store.save(
        engine,
        [
            event("received", at=received, send_key=key),
            event("open", at=received + timedelta(seconds=3), send_key=key),
            event("open", at=received + timedelta(hours=3), send_key=key),
        ],
        report,
        now=NOW,
    )

    opens = ledger.events(kind="open")
    assert [o.machine_open for o in opens] == [True, False]
    assert report.machine_opens == 1


def test_a_customer_who_opens_everything_at_once_is_a_machine(
    engine: Engine, ledger: Ledger
) -> None:
    ann = ledger.customer("ann@example.com")
    bob = ledger.customer("bob@example.com")
    events = []
    for day in range(3):
        when = SENT - timedelta(days=day)
        _, ann_key = ledger.send(ann, "klaviyo", submitted=when)
        _, bob_key = ledger.send(bob, "klaviyo", submitted=when)
        events.append(event("open", at=when + timedelta(seconds=40), send_key=ann_key))
        events.append(event("open", at=when + timedelta(seconds=40), send_key=bob_key))
        if day == 0:
            # Bob clicked this one: that e-mail was read by a person.
            events.append(
                event("click", at=when + timedelta(minutes=5), send_key=bob_key)
            )
    report = PullReport()

    store.save(engine, events, report, now=NOW)

    assert all(o.machine_open for o in ledger.events(kind="open", customer_id=ann))
    bobs = {
        o.send_id: o.machine_open for o in ledger.events(kind="open", customer_id=bob)
    }
    assert sorted(bobs.values()) == [False, True, True]
    assert report.machine_opens == 5


def test_proxy_signs_in_the_payload_flag_an_open(
    engine: Engine, ledger: Ledger
) -> None:
    report = PullReport()
    store.save(
        engine, [event("open", machine_open=True), event("open", 90)], report, now=NOW
    )
    assert [r.machine_open for r in ledger.events()] == [True, False]


def test_a_time_from_a_skewed_clock_is_kept_and_counted(
    engine: Engine, ledger: Ledger
) -> None:
    report = PullReport()
    ahead = event("open", at=NOW + timedelta(hours=3))
    store.save(engine, [ahead], report, now=NOW)
    assert report.flagged["future_time"] == 1 and report.stored["open"] == 1


def test_watermarks_move_forward_only_and_survive_a_restart(
    engine: Engine, settings: Settings
) -> None:
    assert store.watermark(engine, "klaviyo", "metric:Opened Email") is None
    early, late = NOW - timedelta(hours=3), NOW - timedelta(hours=1)

    store.advance(engine, "klaviyo", "metric:Opened Email", late, now=NOW)
    store.advance(engine, "klaviyo", "metric:Opened Email", early, now=NOW)
    # A clock ahead of ours never carries the mark past now.
    store.advance(
        engine, "klaviyo", "metric:Clicked Email", NOW + timedelta(days=1), now=NOW
    )
    assert store.failed(engine, "klaviyo", "metric:Opened Email", "boom", now=NOW) == 1
    assert store.failed(engine, "klaviyo", "metric:Opened Email", "boom", now=NOW) == 2

    restarted = make_engine(settings.resolved_database_url)
    try:
        assert store.watermark(restarted, "klaviyo", "metric:Opened Email") == late
        assert store.watermark(restarted, "klaviyo", "metric:Clicked Email") == NOW
        store.advance(restarted, "klaviyo", "metric:Opened Email", None, now=NOW)
        assert (
            store.failed(restarted, "klaviyo", "metric:Opened Email", "x", now=NOW) == 1
        )
    finally:
        restarted.dispose()


def test_a_send_key_is_read_from_a_tagged_link() -> None:
    assert (
        send_key_in_url("https://s.example/p?utm_source=nudge&nudge_sid=ab12") == "ab12"
    )
    assert send_key_in_url("https://s.example/p?x=1") is None
    assert send_key_in_url(None) is None
    assert digest("a", None, 1) == digest("a", None, 1) != digest("a", "", 2)
