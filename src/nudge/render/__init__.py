"""Render e-mails: Jinja2 and MJML compiled once per template, filled per customer.

The render layer reads no database: callers hand it a `RenderRequest` (the
customer, the products with their reasons, the offer, the shop) and get back a
`RenderedMessage` with subject, preheader, HTML, plain text and headers.
"""

from __future__ import annotations

from nudge.render.links import sign, tag_url, unsubscribe_url, verify
from nudge.render.mime import MessageError, message_id, to_mime
from nudge.render.model import (
    ESPS,
    Esp,
    Item,
    Offer,
    Recipient,
    RenderedMessage,
    RenderRequest,
    ShopInfo,
)
from nudge.render.stock import refresh_items
from nudge.render.templates import (
    CompiledTemplate,
    Renderer,
    TemplateError,
    template_names,
)
from nudge.render.validate import fixture_request, validate_subject, validate_template

__all__ = [
    "ESPS",
    "CompiledTemplate",
    "Esp",
    "Item",
    "MessageError",
    "Offer",
    "Recipient",
    "RenderRequest",
    "RenderedMessage",
    "Renderer",
    "ShopInfo",
    "TemplateError",
    "fixture_request",
    "message_id",
    "refresh_items",
    "sign",
    "tag_url",
    "template_names",
    "to_mime",
    "unsubscribe_url",
    "validate_subject",
    "validate_template",
    "verify",
]
