"""The data a render needs and the message it returns, free of any database."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

Esp = Literal["outbox", "smtp", "klaviyo", "mailchimp"]
ESPS: tuple[Esp, ...] = ("outbox", "smtp", "klaviyo", "mailchimp")


@dataclass(frozen=True, slots=True)
class Item:
    """One recommended product as the e-mail shows it."""

    product_id: int
    title: str
    url: str
    image_url: str | None
    price: Decimal | None
    currency: str
    reason: str
    reason_code: str
    category: str | None = None


@dataclass(frozen=True, slots=True)
class Offer:
    """A discount or perk the e-mail presents, with its code."""

    code: str
    description: str
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Recipient:
    """The customer an e-mail is addressed to."""

    customer_id: int
    email: str
    first_name: str | None = None


@dataclass(frozen=True, slots=True)
class ShopInfo:
    """What the e-mail says about the shop that sends it."""

    name: str
    url: str
    postal_address: str
    logo_url: str | None = None


@dataclass(frozen=True, slots=True)
class RenderRequest:
    """Everything needed to render one e-mail for one customer.

    ``subject`` and ``preheader`` are Jinja sources for the chosen variant; an
    empty subject means the template's own ``subject.txt.j2``.
    """

    send_id: str
    campaign: str
    variant: str
    template: str
    recipient: Recipient
    items: list[Item]
    offer: Offer | None
    shop: ShopInfo
    subject: str
    preheader: str
    esp: Esp
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """One rendered e-mail, ready for an ESP adapter or for MIME."""

    send_id: str
    subject: str
    preheader: str
    html: str
    text: str
    unsubscribe_url: str
    headers: dict[str, str] = field(default_factory=dict)
