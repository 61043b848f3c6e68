"""Alert thresholds on a store filled by hand, and the webhook they are POSTed to."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, insert
from structlog.testing import capture_logs

from nudge.feedback.alerts import Alert, check
from nudge.feedback.config import FeedbackConfig
from nudge.settings import Settings
from nudge.store.feedback_models import FeedbackWatermark
from tests.unit.feedback.test_report import Shop

NOW = datetime(2026, 6, 20, 12, 0)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


@pytest.fixture
def shop(engine: Engine) -> Shop:
    """An empty shop over the test's migrated store."""
    return Shop(engine)


def configured(settings: Settings, **values: Any) -> Settings:
    """Return settings whose [feedback] table holds the given values."""
    config = FeedbackConfig(alert_min_sends=20, **values)
    return settings.model_copy(update={"sections": {"feedback": config}})


def mailing(
    shop: Shop, campaign: str, size: int, due: datetime, **events: int
) -> list[int]:
    """Send a campaign to new customers; the first of them get the events."""
    run = shop.run(due, campaign)
    sends = [shop.send(run, campaign, shop.customer(), due=due) for _ in range(size)]
    start = 0
    for kind, count in events.items():
        for send in sends[start : start + count]:
            shop.event(send, kind, due + HOUR)
        start += count
    return sends


def codes(alerts: list[Alert]) -> list[tuple[str, str, str | None]]:
    return [(a.level, a.code, a.campaign) for a in alerts]


def test_a_healthy_or_empty_store_has_no_alerts(shop: Shop, settings: Settings) -> None:
    assert check(shop.engine, configured(settings), NOW) == []
    mailing(shop, "winback", 20, NOW - DAY, click=3)
    assert check(shop.engine, configured(settings), NOW) == []


def test_rates_over_their_maximum(shop: Shop, settings: Settings) -> None:
    mailing(shop, "winback", 20, NOW - DAY, bounce_hard=1, unsubscribe=1)
    mailing(shop, "arrivals", 20, NOW - 2 * DAY, bounce_soft=2, spam_complaint=1)
    mailing(shop, "small", 5, NOW - DAY, bounce_hard=5)  # too few to judge
    mailing(shop, "old", 20, NOW - 9 * DAY, bounce_hard=9)  # before the lookback
    alerts = check(
        shop.engine,
        configured(
            settings,
            bounce_rate_max=0.05,
            unsubscribe_rate_max=0.05,
            spam_complaint_rate_max=0.02,
        ),
        NOW,
    )
    assert codes(alerts) == [
        ("critical", "bounce_rate", "arrivals"),
        ("critical", "spam_complaints", "arrivals"),
        ("warning", "bounce_rate", "winback"),
        ("warning", "unsubscribe_rate", "winback"),
    ]
    bounce = alerts[0]
    assert bounce.value == pytest.approx(0.10)
    assert bounce.threshold == pytest.approx(0.05)
    assert bounce.message == (
        "bounce rate 10.00% over the last 7 days (2 of 20 delivered), maximum 5.00%"
    )


def test_a_ctr_collapse_against_the_trailing_ctr(
    shop: Shop, settings: Settings
) -> None:
    mailing(shop, "weekly", 20, NOW - 10 * DAY, click=10)  # trailing: 50%
    mailing(shop, "weekly", 20, NOW - 3 * DAY, click=2)  # recent: 10%
    mailing(shop, "steady", 20, NOW - 10 * DAY, click=10)
    mailing(shop, "steady", 20, NOW - 3 * DAY, click=8)  # 40%: no collapse
    mailing(shop, "fresh", 20, NOW - 10 * DAY, click=10)
    mailing(shop, "fresh", 20, NOW - 2 * HOUR)  # clicks still coming in

    alerts = check(shop.engine, configured(settings), NOW)
    assert codes(alerts) == [("warning", "ctr_collapse", "weekly")]
    assert alerts[0].value == pytest.approx(0.10)
    assert alerts[0].threshold == pytest.approx(0.25)
    assert alerts[0].message.startswith(
        "CTR 10.00% over the last 7 days against 50.00%"
    )


def test_a_run_that_sent_nothing(shop: Shop, settings: Settings) -> None:
    broken = shop.run(NOW - 6 * HOUR, "winback")
    customers = [shop.customer() for _ in range(12)]
    shop.send(broken, "winback", customers[0], status="failed", due=NOW - 5 * HOUR)
    shop.send(broken, "winback", customers[1], status="planned", due=NOW - 5 * HOUR)
    shop.send(broken, "winback", customers[2], holdout=True, due=NOW - 5 * HOUR)

    consent = shop.run(NOW - 6 * HOUR, "arrivals")
    shop.send(
        consent, "arrivals", customers[3], status="suppressed", due=NOW - 4 * HOUR
    )

    fine = shop.run(NOW - 6 * HOUR, "fine")
    shop.send(fine, "fine", customers[4], due=NOW - 4 * HOUR)
    shop.send(fine, "fine", customers[5], status="failed", due=NOW - 4 * HOUR)

    recent = shop.run(NOW - HOUR, "recent")  # inside the grace time
    shop.send(recent, "recent", customers[6], status="planned", due=NOW - HOUR)

    waiting = shop.run(NOW - 6 * HOUR, "approve", status="awaiting_approval")
    shop.send(
        waiting,
        "approve",
        customers[7],
        status="planned",
        due=NOW - 5 * HOUR,
        approval=True,
    )

    alerts = check(shop.engine, configured(settings), NOW)
    assert codes(alerts) == [
        ("critical", "run_sent_nothing", "winback"),
        ("warning", "run_sent_nothing", "arrivals"),
    ]
    assert alerts[0].message == (
        f"plan run {broken}: 2 e-mails due by "
        f"{NOW - 5 * HOUR:%Y-%m-%d %H:%M} UTC and none accepted (failed 1, planned 1)"
    )


def test_a_feedback_pull_that_keeps_failing(shop: Shop, settings: Settings) -> None:
    with shop.engine.begin() as conn:
        for stream, failures in (("Clicked Email", 3), ("Opened Email", 1)):
            conn.execute(
                insert(FeedbackWatermark).values(
                    esp="klaviyo",
                    stream=stream,
                    updated_at=NOW,
                    failures=failures,
                    last_error="HTTP 503 from Klaviyo\nmore detail",
                )
            )
        conn.execute(
            insert(FeedbackWatermark).values(
                esp="mailchimp", stream="pull", updated_at=NOW, failures=7
            )
        )
    alerts = check(shop.engine, configured(settings), NOW)
    assert codes(alerts) == [
        ("critical", "feedback_pull_failing", None),
        ("warning", "feedback_pull_failing", None),
    ]
    assert alerts[1].message == (
        "feedback pull of klaviyo Clicked Email failed 3 times in a row: "
        "HTTP 503 from Klaviyo"
    )
    assert "mailchimp pull failed 7 times" in alerts[0].message


# ------------------------------------------------------------------ the webhook


class Hook:
    """A local HTTP server that records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        bodies: list[Any] = []
        self.bodies = bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/t0ken"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Hook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    """A webhook receiver on 127.0.0.1, stopped after the test."""
    with Hook() as running:
        yield running


def test_alerts_are_posted_to_the_webhook(
    shop: Shop, settings: Settings, hook: Hook
) -> None:
    mailing(shop, "winback", 20, NOW - DAY, bounce_hard=2)
    hooked = configured(settings).model_copy(
        update={"alert_webhook_url": SecretStr(hook.url)}
    )
    alerts = check(shop.engine, hooked, NOW)
    assert codes(alerts) == [("critical", "bounce_rate", "winback")]
    assert hook.bodies == [
        {
            "source": "nudge",
            "shop": "Demo Shop",
            "alerts": [alerts[0].as_json()],
        }
    ]

    check(shop.engine, hooked, NOW, notify=False)
    assert len(hook.bodies) == 1


def test_a_failing_webhook_is_logged_not_raised(shop: Shop, settings: Settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailing(shop, "winback", 20, NOW - DAY, bounce_hard=2)
    hooked = configured(settings, webhook_timeout_seconds=1).model_copy(
        update={"alert_webhook_url": SecretStr(f"http://127.0.0.1:{port}/s3cret")}
    )
    with capture_logs() as logged:
        alerts = check(shop.engine, hooked, NOW)
    assert len(alerts) == 1
    assert [(e["event"], e["log_level"]) for e in logged] == [
        ("alert", "error"),
        ("alert webhook unreachable", "error"),
    ]
    assert logged[0]["severity"] == "critical"
    assert logged[1]["error"] == "ConnectionRefusedError"
    assert "s3cret" not in repr(logged)


@pytest.mark.integration
def test_checks_run_on_postgres(pg_engine: Engine, settings: Settings) -> None:
    shop = Shop(pg_engine)
    mailing(shop, "winback", 20, NOW - DAY, bounce_hard=2, click=4)
    mailing(shop, "weekly", 20, NOW - 10 * DAY, click=10)
    mailing(shop, "weekly", 20, NOW - 3 * DAY)
    broken = shop.run(NOW - 6 * HOUR, "broken")
    shop.send(broken, "broken", shop.customer(), status="failed", due=NOW - 5 * HOUR)
    alerts = check(pg_engine, configured(settings), NOW)
    assert codes(alerts) == [
        ("critical", "bounce_rate", "winback"),
        ("critical", "run_sent_nothing", "broken"),
        ("warning", "ctr_collapse", "weekly"),
    ]
