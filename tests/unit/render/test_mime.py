"""MIME for the outbox and SMTP paths: both parts, the headers mail clients use."""

from __future__ import annotations

import dataclasses
import email
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from nudge.render import (
    MessageError,
    RenderedMessage,
    Renderer,
    fixture_request,
    message_id,
    to_mime,
)

REPO = Path(__file__).resolve().parents[3]
SENDER = "Demo Shop <hello@demo-shop.example>"


@pytest.fixture(scope="module")
def message() -> RenderedMessage:
    """An outbox message rendered from the shipped winback template."""
    renderer = Renderer(REPO / "email_templates", signing_secret="s")
    return renderer.render(fixture_request("winback"))


def parse(raw: bytes) -> EmailMessage:
    """Parse MIME bytes the way a modern mail client would."""
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_both_parts_and_every_header(message: RenderedMessage) -> None:
    raw = to_mime(message, SENDER, "ada@example.com")
    parsed = parse(raw)

    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["Subject"] == message.subject
    assert parsed["From"] == SENDER
    assert parsed["To"] == "ada@example.com"
    assert parsed["Message-ID"] == "<snd_01HZX3Q8W6FIXTURE@demo-shop.example>"
    assert parsed["Date"] == "Sun, 01 Mar 2026 09:30:00 +0000"
    assert parsed["List-Unsubscribe"] == f"<{message.unsubscribe_url}>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content() == message.text
    assert html.get_content() == message.html


def test_non_ascii_subject_and_names_survive(message: RenderedMessage) -> None:
    accented = dataclasses.replace(message, subject="Zoë, 20 % off — this week")
    raw = to_mime(accented, "Café Zoë <hi@cafe.example>", "Zoë <zoe@example.com>")
    parsed = parse(raw)

    assert raw.isascii()
    assert parsed["Subject"] == "Zoë, 20 % off — this week"
    assert parsed["From"].addresses[0].display_name == "Café Zoë"
    assert parsed["To"].addresses[0].addr_spec == "zoe@example.com"


def test_a_message_from_an_esp_path_gets_an_id_and_date(
    message: RenderedMessage,
) -> None:
    bare = dataclasses.replace(message, headers={})
    parsed = parse(to_mime(bare, SENDER, "ada@example.com"))

    assert parsed["Message-ID"] == "<snd_01HZX3Q8W6FIXTURE@demo-shop.example>"
    assert parsed["Date"] is not None
    assert parsed["List-Unsubscribe"] is None


def test_line_breaks_cannot_inject_headers(message: RenderedMessage) -> None:
    with pytest.raises(MessageError, match="line break"):
        to_mime(message, SENDER, "ada@example.com\nBcc: all@example.com")


def test_message_id_keeps_odd_send_ids_valid() -> None:
    assert message_id("a b@c<d>", "shop.example") == "<a=20b=40c=3Cd=3E@shop.example>"
