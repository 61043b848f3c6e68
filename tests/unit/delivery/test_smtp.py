"""SMTP against a real local SMTP server process (aiosmtpd)."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from nudge.delivery import Adapter, Outgoing, RetryPolicy
from nudge.delivery.doubles.smtp import SmtpServer
from nudge.delivery.esp.smtp import SmtpAdapter
from nudge.delivery.limits import Limiter
from nudge.render.model import Esp
from nudge.settings import Settings

from .conftest import MessageFactory
from .contract import AdapterContract

pytest.importorskip("aiosmtpd", reason="the SMTP tests need aiosmtpd (a dev extra)")

SENDER = "Demo Shop <hello@demo-shop.example>"


def _fast(**options: Any) -> dict[str, Any]:
    options.setdefault("limiter", Limiter({}))
    options.setdefault("sleep", lambda seconds: None)
    return options


class SmtpBackend:
    esp: Esp = "smtp"

    def __init__(self, server: SmtpServer, folder: Path) -> None:
        self.server = server
        self.journal = folder / "journal.tsv"

    def adapter(self, **options: Any) -> Adapter:
        options.setdefault("max_bytes", 200_000)
        return SmtpAdapter(
            "127.0.0.1",
            self.server.port,
            sender=SENDER,
            username="nudge",
            password="secret",
            journal=self.journal,
            **_fast(**options),
        )

    def held(self) -> list[str]:
        return [str(m["X-Nudge-Send-Id"]) for m in self.server.messages()]

    def refuse(self, message: Outgoing) -> Outgoing:
        self.server.reject(message.email)
        return message

    def oversize(self, message: Outgoing) -> Outgoing:
        rendered = dataclasses.replace(message.message, html="x" * 300_000)
        return dataclasses.replace(message, message=rendered)

    def settings(self, base: Settings) -> tuple[Settings, dict[str, Any]]:
        configured = base.model_copy(
            update={
                "smtp_host": "127.0.0.1",
                "smtp_port": self.server.port,
                "smtp_username": "nudge",
                "smtp_password": SecretStr("secret"),
            }
        )
        return configured, {"journal": self.journal}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SmtpServer]:
    """A real SMTP server process with a login, stopped after the test."""
    with SmtpServer(
        tmp_path / "mail", username="nudge", password="secret", size_limit=500_000
    ) as running:
        yield running


class TestSmtpContract(AdapterContract):
    @pytest.fixture
    def backend(self, server: SmtpServer, tmp_path: Path) -> SmtpBackend:
        return SmtpBackend(server, tmp_path)


def test_the_server_gets_full_mime_and_unsubscribe_headers(
    server: SmtpServer, tmp_path: Path, messages: MessageFactory
) -> None:
    [message] = messages("smtp", 1)
    [result] = SmtpBackend(server, tmp_path).adapter().deliver([message])

    [received] = server.messages()
    assert result.esp_id == received["Message-ID"]
    assert received["Message-ID"] == message.message.headers["Message-ID"]
    assert received["List-Unsubscribe"] == f"<{message.message.unsubscribe_url}>"
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html, text = received.get_body(("html",)), received.get_body(("plain",))
    assert html is not None and html.get_content() == message.message.html
    assert text is not None and text.get_content() == message.message.text


def test_a_resend_checks_the_message_id_journal_first(
    server: SmtpServer, tmp_path: Path, messages: MessageFactory
) -> None:
    batch = messages("smtp", 3)
    backend = SmtpBackend(server, tmp_path)
    first = backend.adapter().deliver(batch[:2])

    # A new process (a new adapter) reads the journal before sending.
    again = backend.adapter().deliver(batch)
    assert [r.duplicate for r in again] == [True, True, False]
    assert [r.esp_id for r in again[:2]] == [r.esp_id for r in first]
    assert len(server.messages()) == 3


def test_the_server_size_limit_is_a_readable_permanent_failure(
    server: SmtpServer, tmp_path: Path, messages: MessageFactory
) -> None:
    batch = messages("smtp", 2)
    big = dataclasses.replace(batch[0].message, html="<p>x</p>" * 80_000)
    batch[0] = dataclasses.replace(batch[0], message=big)
    results = SmtpBackend(server, tmp_path).adapter(max_bytes=10**7).deliver(batch)

    assert results[0].permanent and "552" in (results[0].error or "")
    assert "too large" in (results[0].error or "")
    assert results[1].ok


def test_a_wrong_password_fails_every_message_as_permanent(
    server: SmtpServer, tmp_path: Path, messages: MessageFactory
) -> None:
    adapter = SmtpAdapter(
        "127.0.0.1",
        server.port,
        sender=SENDER,
        username="nudge",
        password="wrong",
        **_fast(),
    )
    results = adapter.deliver(messages("smtp", 2))

    assert all(r.status == "failed" and r.permanent for r in results)
    assert "login refused: 535" in (results[0].error or "")
    assert server.messages() == []


def test_no_server_is_a_transient_failure_after_retries(
    messages: MessageFactory,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleeps: list[float] = []
    adapter = SmtpAdapter(
        "127.0.0.1",
        port,
        sender=SENDER,
        timeout=1.0,
        retry=RetryPolicy(attempts=3, initial=0.5, jitter=0.0),
        **_fast(sleep=sleeps.append),
    )
    results = adapter.deliver(messages("smtp", 2))

    assert all(r.status == "failed" and not r.permanent for r in results)
    assert "connection failed" in (results[0].error or "")
    assert results[0].attempts == 3
    assert sleeps == [0.5, 1.0]
