"""Tracked links: tokens signed, verified, refused when tampered, and recorded."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from nudge.feedback import tracking
from nudge.feedback.tracking import TokenError, make_token, verify_token
from nudge.render.links import sign
from nudge.settings import Settings

from .conftest import SECRET, SENT, Ledger

TARGET = "https://demo-shop.example/p/7?utm_source=nudge&nudge_sid=sk1"


@pytest.fixture
def signed(settings: Settings) -> Settings:
    """Settings with a signing secret."""
    return settings.model_copy(update={"signing_secret": SecretStr(SECRET)})


def token_of(url: str) -> str:
    """Return the token of a tracked URL."""
    return parse_qs(urlsplit(url).query)["t"][0]


def test_a_click_url_carries_a_token_of_the_send_and_target(signed: Settings) -> None:
    url = tracking.click_url(signed, "sk1", TARGET)

    assert url.startswith("https://demo-shop.example/nudge/c?t=")
    token = verify_token(token_of(url), SECRET, "click")
    assert token == tracking.Token("click", "sk1", TARGET)


def test_an_open_url_carries_an_open_token(signed: Settings) -> None:
    url = tracking.open_url(signed, "sk1")
    assert url.startswith("https://demo-shop.example/nudge/o?t=")
    assert verify_token(token_of(url), SECRET) == tracking.Token("open", "sk1", None)


def test_a_tampered_token_is_refused() -> None:
    token = make_token("click", "sk1", SECRET, TARGET)
    body, sig = token.split(".")
    data = json.dumps(["click", "sk1", "https://evil.example/"], separators=(",", ":"))
    forged = base64.urlsafe_b64encode(data.encode()).rstrip(b"=").decode()

    with pytest.raises(TokenError, match="bad signature"):
        verify_token(f"{forged}.{sig}", SECRET)
    with pytest.raises(TokenError, match="bad signature"):
        verify_token(token, "another secret")
    with pytest.raises(TokenError, match="bad signature"):
        verify_token(f"{body}.{sig[:-2]}é", SECRET)
    with pytest.raises(TokenError, match="malformed"):
        verify_token("no-signature-here", SECRET)
    with pytest.raises(TokenError, match="malformed"):
        verify_token(f"!!!.{sig}", SECRET)


def test_a_token_of_one_kind_never_passes_as_another() -> None:
    open_token = make_token("open", "sk1", SECRET)
    with pytest.raises(TokenError, match="for opens, not clicks"):
        verify_token(open_token, SECRET, "click")
    # An unsubscribe signature of the same body is not a tracking signature.
    body = open_token.split(".")[0]
    with pytest.raises(TokenError, match="bad signature"):
        verify_token(f"{body}.{sign(body, SECRET)}", SECRET)


def test_without_a_secret_links_are_signed_with_the_stores_own_key(
    settings: Settings,
) -> None:
    # The embedded default keeps one random key under var/, made on first use.
    url = tracking.click_url(settings, "sk1", TARGET)
    key = (settings.path(settings.var_dir) / "signing.key").read_text().strip()
    assert len(key) >= 40
    assert tracking.verify_token(token_of(url), key, "click").url == TARGET
    assert tracking.click_url(settings, "sk1", TARGET) == url


def test_a_click_is_recorded_once_and_linked(
    engine: Engine, ledger: Ledger, signed: Settings
) -> None:
    ann = ledger.customer("ann@example.com")
    send_id, key = ledger.send(ann, "outbox")
    token = token_of(tracking.click_url(signed, key, TARGET))
    when = SENT + timedelta(hours=2)

    first = tracking.record_click(engine, signed, token, at=when, ip="203.0.113.9")
    again = tracking.record_click(engine, signed, token, at=when, ip="203.0.113.9")

    assert first.redirect == TARGET and first.stored and first.linked
    assert not again.stored
    [row] = ledger.events()
    assert (row.esp, row.kind, row.send_id, row.customer_id) == (
        "outbox",
        "click",
        send_id,
        ann,
    )
    assert row.url == TARGET and row.occurred_at == when


def test_an_open_by_a_privacy_proxy_is_a_machine_open(
    engine: Engine, ledger: Ledger, signed: Settings
) -> None:
    ann = ledger.customer("ann@example.com")
    _, key = ledger.send(ann, "smtp")
    token = token_of(tracking.open_url(signed, key))

    proxy = tracking.record_open(
        engine, signed, token, at=SENT + timedelta(hours=1), user_agent="Mozilla/5.0"
    )
    person = tracking.record_open(
        engine,
        signed,
        token,
        at=SENT + timedelta(hours=5),
        user_agent="Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) Thunderbird/115",
    )

    assert proxy.machine_open and not person.machine_open
    assert proxy.redirect is None
    assert [(r.esp, r.machine_open) for r in ledger.events()] == [
        ("smtp", True),
        ("smtp", False),
    ]


def test_a_click_token_cannot_record_an_open(engine: Engine, signed: Settings) -> None:
    token = token_of(tracking.click_url(signed, "sk1", TARGET))
    with pytest.raises(TokenError):
        tracking.record_open(engine, signed, token)
