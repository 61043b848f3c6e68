"""SMTP: full MIME (text and HTML), one-click unsubscribe headers, STARTTLS, auth.

The Message-ID comes from the send id, and every Message-ID the server accepted
is written to a journal before the next message goes: a retried batch finds it
there (or in the send ledger) and is not sent again. SMTP cannot be asked what it
already has, so a message whose answer was lost in a dropped connection is the
one case the journal cannot know about.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import threading
from collections.abc import Mapping, Sequence
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from nudge.delivery.base import (
    Accepted,
    Adapter,
    ErrorKind,
    EspError,
    Outcome,
    Outgoing,
    Rejected,
)
from nudge.delivery.esp.outbox import build_mime, default_sender
from nudge.render.mime import MessageError, message_id
from nudge.settings import Settings

MAX_MESSAGE_BYTES = 10 * 1024 * 1024


class SmtpAdapter(Adapter):
    """Send each message to an SMTP server over one kept-open connection."""

    name = "smtp"
    batch_size = 100

    def __init__(
        self,
        host: str,
        port: int = 25,
        *,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 30.0,
        journal: Path | str | None = None,
        max_bytes: int = MAX_MESSAGE_BYTES,
        tls_context: ssl.SSLContext | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.host = host
        self.port = port
        self.sender = sender
        self.envelope_from = parseaddr(sender)[1]
        self.username = username
        self.password = password
        self.starttls = starttls
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.tls_context = tls_context
        self.journal = Path(journal) if journal is not None else None
        self._sent: dict[str, str] | None = None
        self._journal_lock = threading.Lock()
        self._smtp: smtplib.SMTP | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> SmtpAdapter:
        """Return an adapter for the configured server, journaling under var/."""
        options.setdefault("sender", default_sender(settings))
        options.setdefault(
            "journal", settings.path(settings.var_dir) / "smtp-message-ids.tsv"
        )
        password = settings.smtp_password
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            username=settings.smtp_username,
            password=password.get_secret_value() if password else None,
            starttls=settings.smtp_starttls,
            **options,
        )

    # -------------------------------------------------------------- hooks

    def check(self, message: Outgoing) -> str | None:
        """Refuse a message over the configured size before the server does."""
        size = len(message.message.html) + len(message.message.text)
        if size > self.max_bytes:
            return (
                f"message too large: {size / 1_048_576:.1f} MiB; at most "
                f"{self.max_bytes / 1_048_576:.1f} MiB are sent"
            )
        return None

    def sent_before(self, messages: Sequence[Outgoing]) -> Mapping[str, str | None]:
        """Return the sends whose Message-ID the journal says a server accepted."""
        sent = self._journaled()
        return {m.send_id: sent[m.send_id] for m in messages if m.send_id in sent}

    def send(self, chunk: Sequence[Outgoing]) -> Mapping[str, Outcome]:
        """Send each message in turn; a server that stops answering stops the chunk."""
        outcomes: dict[str, Outcome] = {}
        for n, message in enumerate(chunk):
            try:
                raw = build_mime(message.message, self.sender, message.email)
            except MessageError as err:
                outcomes[message.send_id] = Rejected(str(err))
                continue
            ident = self._message_id(message)
            try:
                self.call("smtp", self._send_one, message.email, raw)
            except EspError as err:
                if err.retryable or err.kind == "auth":
                    # The server is gone or refuses us: the rest would only wait
                    # through the same retries.
                    for rest in chunk[n:]:
                        outcomes[rest.send_id] = Rejected(
                            err.reason, permanent=err.kind == "auth"
                        )
                    return outcomes
                outcomes[message.send_id] = Rejected(err.reason)
                continue
            self._record(message.send_id, ident)
            outcomes[message.send_id] = Accepted(ident)
        return outcomes

    def translate(self, err: Exception) -> EspError:
        """Return the `EspError` for what smtplib raised, by SMTP reply code."""
        self._drop()
        if isinstance(err, smtplib.SMTPRecipientsRefused):
            code, text = next(iter(err.recipients.values()))
            return _reply(code, text, "recipient refused")
        if isinstance(err, smtplib.SMTPAuthenticationError):
            return EspError(
                self.name,
                f"login refused: {err.smtp_code} {_text(err.smtp_error)}",
                status=err.smtp_code,
                kind="auth",
                protocol="SMTP",
            )
        if isinstance(err, smtplib.SMTPResponseException):
            return _reply(err.smtp_code, err.smtp_error, "refused")
        if isinstance(err, smtplib.SMTPServerDisconnected):
            return EspError(self.name, f"server disconnected: {err}")
        if isinstance(err, socket.timeout | TimeoutError):
            return EspError(self.name, f"no answer within {self.timeout:g} s")
        if isinstance(err, smtplib.SMTPException | OSError):
            return EspError(self.name, f"connection failed: {err}")
        return super().translate(err)

    def close(self) -> None:
        """Say goodbye to the server."""
        if self._smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()
            self._smtp = None

    # -------------------------------------------------------------- the wire

    def _message_id(self, message: Outgoing) -> str:
        for key, value in message.message.headers.items():
            if key.lower() == "message-id":
                return value
        domain = self.envelope_from.rpartition("@")[2] or "nudge"
        return message_id(message.send_id, domain)

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is None:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            try:
                smtp.ehlo()
                if self.starttls:
                    smtp.starttls(
                        context=self.tls_context or ssl.create_default_context()
                    )
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self.password or "")
            except BaseException:
                smtp.close()
                raise
            self._smtp = smtp
        return self._smtp

    def _send_one(self, recipient: str, raw: bytes) -> None:
        smtp = self._connection()
        smtp.sendmail(self.envelope_from, [recipient], raw)

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None

    # -------------------------------------------------------------- journal

    def _journaled(self) -> dict[str, str]:
        with self._journal_lock:
            if self._sent is None:
                self._sent = {}
                if self.journal is not None and self.journal.is_file():
                    for line in self.journal.read_text(encoding="utf-8").splitlines():
                        send_id, _, ident = line.partition("\t")
                        if send_id:
                            self._sent[send_id] = ident
            return self._sent

    def _record(self, send_id: str, ident: str) -> None:
        sent = self._journaled()
        with self._journal_lock:
            sent[send_id] = ident
            if self.journal is not None:
                self.journal.parent.mkdir(parents=True, exist_ok=True)
                with self.journal.open("a", encoding="utf-8") as handle:
                    handle.write(f"{send_id}\t{ident}\n")


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _reply(code: int, text: bytes | str, what: str) -> EspError:
    # 4xx replies are temporary by definition (RFC 5321); 5xx are final. 552 is
    # "exceeded storage allocation", which servers use for a message too large.
    reason = f"{what}: {code} {_text(text)}"
    if code == 552:
        reason = f"message too large: {code} {_text(text)}"
    kind: ErrorKind = "transient" if 400 <= code < 500 else "payload"
    return EspError("smtp", reason, status=code, kind=kind, protocol="SMTP")
