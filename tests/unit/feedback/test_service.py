"""`pull` over every configured ESP, and `nudge feedback pull` on top of it."""

from __future__ import annotations

import json
from datetime import UTC, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from nudge.cli.app import App
from nudge.cli.feedback import feedback
from nudge.delivery.doubles import KlaviyoDouble, MailchimpDouble
from nudge.errors import ConfigError
from nudge.feedback import service
from nudge.feedback.events import FeedbackError
from nudge.settings import Settings

from .conftest import (
    FAST,
    LIST,
    NOW,
    SENT,
    Ledger,
    klaviyo_settings,
    mailchimp_settings,
)


@pytest.fixture
def both(
    settings: Settings, klaviyo: KlaviyoDouble, mailchimp: MailchimpDouble
) -> Settings:
    """Settings with Klaviyo and Mailchimp pointed at their doubles."""
    return mailchimp_settings(klaviyo_settings(settings, klaviyo), mailchimp)


def test_every_configured_esp_is_pulled_and_an_unsubscribe_stops_all_of_them(
    engine: Engine,
    ledger: Ledger,
    both: Settings,
    klaviyo: KlaviyoDouble,
    mailchimp: MailchimpDouble,
) -> None:
    ann = ledger.customer("ann@example.com")
    campaign = mailchimp.add_campaign(LIST)
    ledger.send(ann, "mailchimp", job=campaign)
    ledger.send(ann, "klaviyo")
    klaviyo.add_event(
        "Opened Email",
        (SENT + timedelta(hours=1)).replace(tzinfo=UTC),
        email="ann@example.com",
    )
    when = (SENT + timedelta(hours=2)).replace(tzinfo=UTC)
    mailchimp.unsubscribe(LIST, "ann@example.com", when, campaign_id=campaign)

    report = service.pull(engine, both, now=NOW, adapter_options=FAST)

    assert report.esps == ["klaviyo", "mailchimp"] and report.ok
    assert report.stored == {"open": 1, "unsubscribe": 1}
    # Unsubscribed in Mailchimp: the store, which every ESP's send checks, knows.
    assert ledger.customer_row(ann).unsubscribed_at == when.replace(tzinfo=None)
    assert report.missing_metrics  # the double's account has no e-mail metrics yet


def test_nothing_configured_or_tracked_esps_pull_nothing(
    engine: Engine, settings: Settings
) -> None:
    assert service.pull(engine, settings, now=NOW).notes == [
        "no ESP is configured; nothing to pull"
    ]
    outbox = service.pull(engine, settings, "outbox", now=NOW)
    assert outbox.esps == [] and "tracked links" in outbox.notes[0]


def test_an_unknown_or_unconfigured_esp_is_a_clear_error(
    engine: Engine, settings: Settings
) -> None:
    with pytest.raises(FeedbackError, match="no feedback source named 'sendgrid'"):
        service.pull(engine, settings, "sendgrid")
    with pytest.raises(ConfigError, match="NUDGE_KLAVIYO_API_KEY"):
        service.pull(engine, settings, "klaviyo")


def test_the_cli_prints_a_table_or_json(
    engine: Engine, ledger: Ledger, both: Settings, klaviyo: KlaviyoDouble
) -> None:
    ledger.customer("ann@example.com")
    klaviyo.add_event(
        "Opened Email",
        (SENT + timedelta(hours=1)).replace(tzinfo=UTC),
        email="ann@example.com",
    )
    runner = CliRunner()
    app = App(both)

    shown = runner.invoke(feedback, ["pull", "--esp", "klaviyo"], obj=app)
    again = runner.invoke(
        feedback,
        ["pull", "--esp", "klaviyo", "--json", "--since", "2026-01-01"],
        obj=app,
    )

    assert shown.exit_code == 0, shown.output
    assert "feedback pulled from klaviyo" in shown.output
    assert "new open" in shown.output and "metrics not in the account" in shown.output
    assert again.exit_code == 0, again.output
    data = json.loads(again.output)
    assert data["stored"]["open"] == 0 and data["duplicates"] == 1 and data["ok"]


def test_the_cli_fails_with_one_line_when_a_pull_fails(
    engine: Engine, both: Settings, klaviyo: KlaviyoDouble
) -> None:
    klaviyo.revoke_key()
    result = CliRunner().invoke(feedback, ["pull", "--esp", "klaviyo"], obj=App(both))
    assert isinstance(result.exception, FeedbackError)
    assert str(result.exception).startswith(
        "pull from klaviyo failed: klaviyo HTTP 401"
    )
