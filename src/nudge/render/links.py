"""Absolute, tagged links and the signed unsubscribe link each ESP needs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from functools import lru_cache
from urllib.parse import (
    parse_qsl,
    quote_plus,
    urlencode,
    urljoin,
    urlsplit,
    urlunsplit,
)

from pydantic import SecretStr

from nudge.errors import ConfigError
from nudge.render.model import Esp

UNSUBSCRIBE_PATH = "/nudge/unsubscribe"
ESP_UNSUBSCRIBE_TAGS: dict[str, str] = {
    "klaviyo": "{% unsubscribe_url %}",
    "mailchimp": "*|UNSUB|*",
}
ONE_CLICK = "List-Unsubscribe=One-Click"
TRACKING_KEYS = frozenset(
    {"utm_source", "utm_medium", "utm_campaign", "utm_content", "nudge_sid"}
)

_PLAIN = re.compile(r"[A-Za-z0-9._~-]+")

Secret = str | bytes | SecretStr


def _key(secret: Secret) -> bytes:
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    return secret.encode() if isinstance(secret, str) else secret


def sign(send_id: str, secret: Secret) -> str:
    """Return the url-safe HMAC-SHA256 signature of a send id."""
    digest = hmac.new(_key(secret), send_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verify(send_id: str, sig: str, secret: Secret) -> bool:
    """Tell whether a signature from an unsubscribe link belongs to a send id."""
    # Bytes, because compare_digest refuses non-ASCII text from a tampered link.
    return hmac.compare_digest(sign(send_id, secret).encode(), sig.encode())


def unsubscribe_url(shop_url: str, send_id: str, secret: Secret) -> str:
    """Return nudge's own signed one-click unsubscribe link for a send."""
    query = f"sid={_quoted(send_id)}&sig={sign(send_id, secret)}"
    return f"{shop_url.rstrip('/')}{UNSUBSCRIBE_PATH}?{query}"


def unsubscribe_for(
    esp: Esp, shop_url: str, send_id: str, secret: Secret | None
) -> str:
    """Return the unsubscribe link as the ESP expects it: a merge tag or our own."""
    if esp in ESP_UNSUBSCRIBE_TAGS:
        return ESP_UNSUBSCRIBE_TAGS[esp]
    if secret is None:
        raise ConfigError(
            f"needed to sign unsubscribe links for {esp}; set NUDGE_SIGNING_SECRET",
            key="signing_secret",
        )
    return unsubscribe_url(shop_url, send_id, secret)


def tracking_query(campaign: str, variant: str, send_id: str) -> str:
    """Return the UTM and send-id query string added to every link of a send."""
    return f"{_campaign_query(campaign, variant)}&nudge_sid={_quoted(send_id)}"


@lru_cache(maxsize=1024)
def _campaign_query(campaign: str, variant: str) -> str:
    return urlencode(
        {
            "utm_source": "nudge",
            "utm_medium": "email",
            "utm_campaign": campaign,
            "utm_content": variant,
        }
    )


def _quoted(value: str) -> str:
    # Send ids are nearly always plain; quoting them costs more than the check.
    return value if _PLAIN.fullmatch(value) else quote_plus(value)


@lru_cache(maxsize=64)
def _origin(base: str) -> str:
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}"


def absolute(url: str, base: str) -> str:
    """Resolve a link against the shop's URL unless it is already absolute."""
    if url.startswith(("https://", "http://")):
        # A bare host gets its root path, as a browser would show it.
        return url + "/" if url.count("/") == 2 and "?" not in url else url
    if url.startswith("/") and not url.startswith("//"):
        return _origin(base) + url
    return urljoin(base.rstrip("/") + "/", url)


def tag_url(url: str, base: str, query: str) -> str:
    """Return the link made absolute with the tracking query added to its own."""
    url = absolute(url, base)
    if "#" not in url and "utm_" not in url and "nudge_sid" not in url:
        # Most product links have no fragment and no tags of their own: skip the
        # parse, which costs more than the rest of a product card.
        return f"{url}{'&' if '?' in url else '?'}{query}"

    parts = urlsplit(url)
    kept = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in TRACKING_KEYS
    ]
    joined = "&".join(filter(None, (urlencode(kept), query)))
    return urlunsplit(parts._replace(query=joined))


class Links:
    """Tag the links of one send; templates reach it through the `track` filter."""

    __slots__ = ("base", "query")

    def __init__(self, base: str, query: str) -> None:
        self.base = base
        self.query = query

    def __call__(self, url: str) -> str:
        """Return a link of this send, absolute and tagged."""
        return tag_url(url, self.base, self.query)
