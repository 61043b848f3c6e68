"""Build the MIME message for the outbox and SMTP paths (ESPs build their own)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr, parseaddr

from nudge.errors import NudgeError
from nudge.render.model import RenderedMessage

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]")
# RFC 5322 line ends, and headers left whole: a folded List-Unsubscribe URL is
# valid but some receivers read it back with a leading space.
_WIRE = compat32.clone(linesep="\r\n", max_line_length=998)


class MessageError(NudgeError, ValueError):
    """A message cannot be built from the addresses or headers given."""


def message_id(send_id: str, domain: str) -> str:
    """Return the Message-ID of a send, stable so that a retry reuses it."""
    local = _UNSAFE_ID.sub(lambda m: f"={ord(m.group()):02X}", send_id)
    return f"<{local}@{domain}>"


def date_header(when: datetime) -> str:
    """Format a send time as an RFC 5322 date (naive times are taken as UTC)."""
    return format_datetime(when if when.tzinfo else when.replace(tzinfo=UTC))


def _address(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise MessageError(f"address contains a line break: {value!r}")
    if value.isascii():
        return value
    name, addr = parseaddr(value)
    return formataddr((name, addr), charset="utf-8")


def to_mime(message: RenderedMessage, sender: str, recipient: str) -> bytes:
    """Return the message as MIME bytes (CRLF line ends), text and HTML alternatives."""
    msg = MIMEMultipart("alternative")
    subject = message.subject
    msg["Subject"] = subject if subject.isascii() else Header(subject, "utf-8").encode()
    msg["From"] = _address(sender)
    msg["To"] = _address(recipient)

    # Render time sets Message-ID and Date for these paths; fill them in when a
    # message comes from elsewhere so that every built message has both.
    for name, value in message.headers.items():
        if "\r" in value or "\n" in value:
            raise MessageError(f"header {name} contains a line break")
        msg[name] = value
    if "Message-ID" not in msg:
        domain = parseaddr(sender)[1].rpartition("@")[2] or "nudge"
        msg["Message-ID"] = message_id(message.send_id, domain)
    if "Date" not in msg:
        msg["Date"] = date_header(datetime.now(UTC))

    msg.attach(MIMEText(message.text, "plain", "utf-8"))
    msg.attach(MIMEText(message.html, "html", "utf-8"))
    return msg.as_bytes(policy=_WIRE)
