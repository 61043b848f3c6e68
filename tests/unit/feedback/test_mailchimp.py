"""Mailchimp engagement through the real SDK against the double, and its webhooks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from nudge.delivery.doubles import MailchimpDouble
from nudge.delivery.esp.mailchimp import subscriber_hash
from nudge.feedback import mailchimp as feed
from nudge.feedback import service, store
from nudge.feedback.events import PullReport
from nudge.settings import Settings

from .conftest import FAST, LIST, NOW, SENT, Ledger, mailchimp_settings


def at(minutes: float) -> datetime:
    """Return an aware time `minutes` after the sends went out."""
    return (SENT + timedelta(minutes=minutes)).replace(tzinfo=UTC)


def naive(minutes: float) -> datetime:
    """Return the store's (naive UTC) time `minutes` after the sends."""
    return SENT + timedelta(minutes=minutes)


def pull(engine: Engine, settings: Settings, **options: object) -> PullReport:
    """Pull Mailchimp in pages of 10 as of NOW."""
    options.setdefault("now", NOW)
    return service.pull(
        engine,
        settings,
        "mailchimp",
        page_size=10,
        adapter_options=FAST,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def configured(settings: Settings, mailchimp: MailchimpDouble) -> Settings:
    """Settings pointing at the Mailchimp double's audience."""
    return mailchimp_settings(settings, mailchimp)


def mailed(ledger: Ledger, campaign: str, count: int) -> list[tuple[int, int, str]]:
    """Store `count` customers mailed by a campaign; return (customer, send, key)."""
    rows = []
    for n in range(count):
        email = f"m{n}@example.com"
        customer = ledger.customer(email)
        send_id, key = ledger.send(
            customer, "mailchimp", job=campaign, esp_id=subscriber_hash(email)
        )
        rows.append((customer, send_id, key))
    return rows


def test_activity_pages_are_read_once_and_linked_by_link_or_member(
    engine: Engine, ledger: Ledger, configured: Settings, mailchimp: MailchimpDouble
) -> None:
    campaign = mailchimp.add_campaign(LIST)
    rows = mailed(ledger, campaign, 25)
    for n, (_, _, key) in enumerate(rows):
        email = f"m{n}@example.com"
        mailchimp.add_activity(campaign, email, "open", at(30 + n))
        if n % 5 == 0:
            url = f"https://demo-shop.example/p/{n}?utm_source=nudge&nudge_sid={key}"
            mailchimp.add_activity(campaign, email, "click", at(40 + n), url=url)
    mailchimp.add_activity(campaign, "m1@example.com", "bounce", at(2), kind="soft")

    report = pull(engine, configured)

    assert report.ok, report.failures
    assert report.stored == {"open": 25, "click": 5, "bounce_soft": 1}
    assert report.linked_by == {"esp_ids": 26, "send_key": 5}
    activity = [
        r
        for r in mailchimp.recorded("GET", r"/email-activity$")
        if "since" not in r.query
    ]
    assert [r.param("offset") for r in activity] == ["0", "10", "20"]
    by_send = {send_id: customer for customer, send_id, _ in rows}
    for row in ledger.events():
        assert by_send[row.send_id] == row.customer_id
    assert {r.url for r in ledger.events(kind="click")} == {
        f"https://demo-shop.example/p/{n}?utm_source=nudge&nudge_sid={rows[n][2]}"
        for n in range(0, 25, 5)
    }


def test_a_second_pull_asks_since_the_watermark_and_takes_late_activity(
    engine: Engine, ledger: Ledger, configured: Settings, mailchimp: MailchimpDouble
) -> None:
    campaign = mailchimp.add_campaign(LIST)
    [(_, send_id, _)] = mailed(ledger, campaign, 1)
    mailchimp.add_activity(campaign, "m0@example.com", "open", at(300))
    pull(engine, configured)

    # Reported late, stamped inside the overlap before the watermark.
    mailchimp.add_activity(campaign, "m0@example.com", "open", at(250))
    again = pull(engine, configured)

    assert again.stored == {"open": 1} and again.duplicates == 1
    assert [r.occurred_at for r in ledger.events()] == [naive(250), naive(300)]
    [last] = mailchimp.recorded("GET", r"/email-activity$")[-1:]
    since = naive(300) - service.OVERLAP
    assert last.param("since") == f"{since.isoformat()}+00:00"
    mark = store.watermark(engine, "mailchimp", f"activity:{campaign}")
    assert mark == naive(300)
    assert {r.send_id for r in ledger.events()} == {send_id}


def test_an_unsubscribe_seen_in_the_report_and_the_audience_is_one_event(
    engine: Engine, ledger: Ledger, configured: Settings, mailchimp: MailchimpDouble
) -> None:
    campaign = mailchimp.add_campaign(LIST)
    (ann, ann_send, _), (bob, _, _), (cat, _, _) = mailed(ledger, campaign, 3)
    mailchimp.unsubscribe(LIST, "m0@example.com", at(45), campaign_id=campaign)
    mailchimp.unsubscribe(
        LIST, "m1@example.com", at(50), reason="Abuse: spam complaint"
    )
    mailchimp.add_activity(campaign, "m2@example.com", "bounce", at(1), kind="hard")
    mailchimp.clean(LIST, "m2@example.com", at(3))

    report = pull(engine, configured)
    again = pull(engine, configured, now=NOW + timedelta(hours=1))

    assert report.stored == {"unsubscribe": 1, "spam_complaint": 1, "bounce_hard": 1}
    assert report.skipped == {"repeated": 2}
    assert report.suppressed == 3 and again.total_stored == 0
    [unsubscribe] = ledger.events(kind="unsubscribe")
    assert (unsubscribe.send_id, unsubscribe.linked_by) == (ann_send, "esp_ids")
    for customer, minutes in ((ann, 45), (bob, 50), (cat, 1)):
        assert ledger.customer_row(customer).unsubscribed_at == naive(minutes)
    assert store.suppressed(engine, [ann, bob, cat]) == {
        ann: "unsubscribe",
        bob: "spam_complaint",
        cat: "bounce_hard",
    }


def test_a_campaign_mailchimp_lost_fails_alone(
    engine: Engine, ledger: Ledger, configured: Settings, mailchimp: MailchimpDouble
) -> None:
    campaign = mailchimp.add_campaign(LIST)
    mailed(ledger, campaign, 1)
    ledger.send(ledger.customer("x@example.com"), "mailchimp", job="gone")
    mailchimp.add_activity(campaign, "m0@example.com", "open", at(5))

    report = pull(engine, configured)

    assert report.stored == {"open": 1}
    assert set(report.failures) == {
        "mailchimp activity:gone",
        "mailchimp unsubscribed:gone",
    }
    assert "404" in report.failures["mailchimp activity:gone"]
    assert store.failed(engine, "mailchimp", "activity:gone", "x", now=NOW) == 2


def test_malformed_activity_is_counted_and_the_rest_stored(
    engine: Engine, ledger: Ledger, configured: Settings, mailchimp: MailchimpDouble
) -> None:
    campaign = mailchimp.add_campaign(LIST)
    mailed(ledger, campaign, 1)
    mailchimp.add_activity(campaign, "m0@example.com", "open", at(5))
    entry = mailchimp.activity[campaign][subscriber_hash("m0@example.com")]
    entry["activity"].extend(
        [{"action": "open", "timestamp": "soon"}, "junk", {"action": "forward"}]
    )
    entry["activity"].append({"action": "forward", "timestamp": at(6).isoformat()})

    report = pull(engine, configured)

    assert report.stored == {"open": 1, "unknown": 1}
    assert report.skipped == {"no_time": 2, "malformed": 1}


def test_activity_entries_without_an_activity_list_are_skipped() -> None:
    report = PullReport()
    assert feed.activity_events("junk", "c1", report) == []
    assert feed.activity_events({"email_id": "x", "activity": None}, "c1", report) == []
    [event] = feed.activity_events(
        {
            "email_address": "ann@example.com",
            "activity": [
                {
                    "action": "open",
                    "timestamp": "2026-11-29T13:00:00+00:00",
                    "ip": "17.58.1.2",
                }
            ],
        },
        "c1",
        report,
    )
    assert report.skipped == {"malformed": 2}
    assert event.machine_open and event.esp_profile_id == subscriber_hash(
        "ann@example.com"
    )


def webhook(kind: str, email: str | None, **data: str) -> dict[str, str]:
    """Return a list webhook's form as Mailchimp posts it."""
    form = {"type": kind, "fired_at": "2026-11-29 13:00:00"}
    fields = {"list_id": LIST, "email_type": "html", **data}
    if email is not None:
        fields["email"] = email
        fields["merges][EMAIL"] = email
    form.update({f"data[{k}]": v for k, v in fields.items()})
    return form


def test_webhooks_unsubscribe_and_clean_members_once(
    engine: Engine, ledger: Ledger
) -> None:
    [(ann, ann_send, _)] = mailed(ledger, "camp1", 1)
    bob = ledger.customer("bob@example.com")
    form = webhook(
        "unsubscribe", "M0@example.com", reason="manual", campaign_id="camp1"
    )

    first = feed.handle_webhook(engine, form, now=NOW)
    second = feed.handle_webhook(engine, form, now=NOW)
    abuse = feed.handle_webhook(
        engine, webhook("cleaned", "bob@example.com", reason="abuse"), now=NOW
    )

    assert first.stored == {"unsubscribe": 1} and first.suppressed == 1
    assert second.total_stored == 0 and second.duplicates == 1
    assert abuse.stored == {"spam_complaint": 1}
    [row] = ledger.events(kind="unsubscribe")
    assert (row.send_id, row.customer_id) == (ann_send, ann)
    assert row.raw["data"]["merges"]["EMAIL"] == "M0@example.com"
    when = datetime(2026, 11, 29, 13, 0)
    assert ledger.customer_row(ann).unsubscribed_at == when
    assert ledger.customer_row(bob).unsubscribed_at == when


def test_other_and_broken_webhooks_are_counted_not_stored(
    engine: Engine, ledger: Ledger
) -> None:
    subscribe = feed.handle_webhook(engine, webhook("subscribe", "a@example.com"))
    no_email = feed.handle_webhook(engine, webhook("unsubscribe", None))
    no_time = feed.handle_webhook(
        engine, {**webhook("cleaned", "a@example.com"), "fired_at": "whenever"}
    )
    nested = feed.handle_webhook(
        engine,
        {"type": "unsubscribe", "fired_at": "2026-11-29 13:00:00", "data": "x"},
    )

    assert subscribe.skipped == {"not_engagement": 1}
    assert no_email.skipped == {"no_recipient": 1}
    assert no_time.skipped == {"no_time": 1}
    assert nested.skipped == {"malformed": 1}
    assert ledger.events() == []
