"""nudge's own tracked links and open pixel, for e-mails the outbox or SMTP sends.

A token carries its kind, the send id and (for a click) the target link,
base64url-encoded JSON, followed by an HMAC-SHA256 signature made with
``settings.signing_secret`` over the kind and the encoded body, so a click
token never passes as an open token, nor as an unsubscribe signature. An HTTP
endpoint verifies the token, records the event here and redirects to the
target or answers the pixel.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import html
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import quote

from sqlalchemy import Engine, select

from nudge.feedback import machine, store
from nudge.feedback.events import (
    CLICK,
    OPEN,
    Engagement,
    FeedbackError,
    PullReport,
    digest,
    utc_naive,
    utcnow,
)
from nudge.render.links import Secret, sign, verify
from nudge.render.model import RenderedMessage
from nudge.settings import Settings, signing_key
from nudge.store.send_models import Send

CLICK_PATH = "/nudge/c"
OPEN_PATH = "/nudge/o"
DEFAULT_ESP = "outbox"
Kind = Literal["click", "open"]


class TokenError(FeedbackError, ValueError):
    """A tracking token is malformed or its signature does not match."""


@dataclass(frozen=True, slots=True)
class Token:
    """What a verified tracking token says."""

    kind: Kind
    send_key: str
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Recorded:
    """A recorded click or open: the redirect target, and whether it was new."""

    token: Token
    stored: bool
    linked: bool
    machine_open: bool = False

    @property
    def redirect(self) -> str | None:
        """Return where a click should send the browser (None for an open)."""
        return self.token.url


def _secret(settings: Settings) -> Secret:
    return signing_key(settings)


def _signed(kind: str, body: str) -> str:
    return f"nudge-{kind}:{body}"


def make_token(
    kind: Kind, send_key: str, secret: Secret, url: str | None = None
) -> str:
    """Return a signed token of a click (with its target) or an open."""
    if kind == CLICK and not url:
        raise ValueError("a click token needs the target link")
    data = json.dumps([kind, send_key, url], separators=(",", ":"))
    body = base64.urlsafe_b64encode(data.encode()).rstrip(b"=").decode()
    return f"{body}.{sign(_signed(kind, body), secret)}"


def verify_token(token: str, secret: Secret, kind: Kind | None = None) -> Token:
    """Return what a token says; raise `TokenError` unless its signature matches."""
    body, dot, sig = token.strip().partition(".")
    if not dot or not body or not sig:
        raise TokenError("tracking token is malformed: expected body.signature")
    try:
        padded = body + "=" * (-len(body) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        found, send_key, url = decoded
    except (ValueError, TypeError, binascii.Error, UnicodeError) as err:
        raise TokenError("tracking token is malformed: unreadable body") from err
    if found not in (CLICK, OPEN) or not isinstance(send_key, str):
        raise TokenError("tracking token is malformed: unknown kind")
    if not verify(_signed(found, body), sig, secret):
        raise TokenError("tracking token has a bad signature")
    if kind is not None and found != kind:
        raise TokenError(f"tracking token is for {found}s, not {kind}s")
    if found == CLICK and not isinstance(url, str):
        raise TokenError("tracking token is malformed: a click without a link")
    return Token(found, send_key, url if isinstance(url, str) else None)


def _base(settings: Settings) -> str:
    return (settings.tracking_url or settings.shop_url).rstrip("/")


def click_url(settings: Settings, send_key: str, target: str) -> str:
    """Return nudge's tracked link that records a click and redirects to target."""
    token = make_token("click", send_key, _secret(settings), target)
    return f"{_base(settings)}{CLICK_PATH}?t={quote(token, safe='.')}"


def open_url(settings: Settings, send_key: str) -> str:
    """Return the URL of nudge's open pixel for a send."""
    token = make_token("open", send_key, _secret(settings))
    return f"{_base(settings)}{OPEN_PATH}?t={quote(token, safe='.')}"


# Links of a send carry its id (see `nudge.render.links`); the unsubscribe
# link carries ``sid`` instead and is never wrapped.
_HREF = re.compile(r'href="([^"]*[?&](?:amp;)?nudge_sid=[^"]*)"')
_TEXT_LINK = re.compile(r'https?://[^\s<>"]*[?&]nudge_sid=[^\s<>"]*')


def track_message(message: RenderedMessage, settings: Settings) -> RenderedMessage:
    """Return an outbox/SMTP message whose links record clicks, with an open pixel.

    Every link of the send (HTML and text) becomes nudge's signed click link
    that redirects to it; a 1×1 image at the end of the body records opens.
    """
    send_key = message.send_id

    def wrapped(match: re.Match[str]) -> str:
        target = html.unescape(match.group(1))
        return f'href="{html.escape(click_url(settings, send_key, target))}"'

    body = _HREF.sub(wrapped, message.html)
    pixel = (
        f'<img src="{html.escape(open_url(settings, send_key))}" width="1" '
        'height="1" alt="" style="display:block;border:0;width:1px;height:1px" />'
    )
    end = body.rfind("</body>")
    body = body[:end] + pixel + body[end:] if end >= 0 else body + pixel
    text = _TEXT_LINK.sub(
        lambda m: click_url(settings, send_key, m.group(0)), message.text
    )
    return dataclasses.replace(message, html=body, text=text)


def record_click(
    engine: Engine,
    settings: Settings,
    token: str,
    *,
    at: datetime | None = None,
    user_agent: str | None = None,
    ip: str | None = None,
) -> Recorded:
    """Verify a click token and store the click; return where to redirect."""
    verified = verify_token(token, _secret(settings), "click")
    return _record(engine, verified, at, user_agent, ip)


def record_open(
    engine: Engine,
    settings: Settings,
    token: str,
    *,
    at: datetime | None = None,
    user_agent: str | None = None,
    ip: str | None = None,
) -> Recorded:
    """Verify an open token and store the open (flagged when a proxy made it)."""
    verified = verify_token(token, _secret(settings), "open")
    return _record(engine, verified, at, user_agent, ip)


def _record(
    engine: Engine,
    token: Token,
    at: datetime | None,
    user_agent: str | None,
    ip: str | None,
) -> Recorded:
    now = utcnow()
    when = utc_naive(at) if at is not None else now
    with engine.connect() as conn:
        esp = conn.execute(
            select(Send.esp).where(Send.send_key == token.send_key)
        ).scalar_one_or_none()
    proxy = machine.proxy_sign(user_agent=user_agent, ip=ip)
    event = Engagement(
        esp=esp or DEFAULT_ESP,
        kind=token.kind,
        # The same request twice (a retried redirect) is one event.
        esp_event_id=digest(
            token.kind, token.send_key, token.url, when.isoformat(), ip, user_agent
        ),
        occurred_at=when,
        raw={
            "kind": token.kind,
            "send_id": token.send_key,
            "url": token.url,
            "user_agent": user_agent,
            "ip": ip,
        },
        send_key=token.send_key,
        url=token.url,
        machine_open=token.kind == OPEN and proxy is not None,
    )
    report = PullReport()
    store.save(engine, [event], report, now=now)
    return Recorded(
        token,
        stored=report.total_stored == 1,
        linked=report.linked == 1,
        machine_open=report.machine_opens > 0,
    )
