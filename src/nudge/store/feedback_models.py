"""SQLAlchemy models of feedback: engagement events, pull watermarks, suppressions.

Every ESP's engagement becomes one row of ``engagement_events`` with the ESP's
own event id, unique per ESP, so an event read twice is stored once; the raw
payload is kept beside the normalized fields. ``feedback_watermarks`` holds,
per ESP and stream (a Klaviyo metric, a Mailchimp campaign's activity), the time
up to which events were read, and how often the last pulls failed.
``suppressions`` records why a customer was unsubscribed by feedback.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from nudge.store.models import Base, int_pk, utc_time

_ID = BigInteger().with_variant(Integer, "sqlite")

RECEIVED, OPEN, CLICK = "received", "open", "click"
UNSUBSCRIBE, SPAM_COMPLAINT = "unsubscribe", "spam_complaint"
BOUNCE_HARD, BOUNCE_SOFT = "bounce_hard", "bounce_soft"
# nudge's own trigger event as the ESP recorded it (Klaviyo's metric event).
TRIGGERED = "triggered"
UNKNOWN = "unknown"
EVENT_KINDS: tuple[str, ...] = (
    RECEIVED,
    OPEN,
    CLICK,
    UNSUBSCRIBE,
    BOUNCE_HARD,
    BOUNCE_SOFT,
    SPAM_COMPLAINT,
    TRIGGERED,
    UNKNOWN,
)
# Kinds after which a customer must never be mailed again.
SUPPRESSING: tuple[str, ...] = (UNSUBSCRIBE, SPAM_COMPLAINT, BOUNCE_HARD)


class EngagementEvent(Base):
    """One engagement event from an ESP or a tracked link, normalized."""

    __tablename__ = "engagement_events"
    __table_args__ = (
        UniqueConstraint("esp", "esp_event_id"),
        Index("ix_engagement_events_customer_time", "customer_id", "occurred_at"),
        Index("ix_engagement_events_kind_time", "kind", "occurred_at"),
        Index("ix_engagement_events_profile", "esp", "esp_profile_id"),
    )

    id: Mapped[int_pk]
    esp: Mapped[str] = mapped_column(String(16))
    esp_event_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[utc_time]
    send_id: Mapped[int | None] = mapped_column(_ID, ForeignKey("sends.id"), index=True)
    customer_id: Mapped[int | None] = mapped_column(_ID, ForeignKey("customers.id"))
    # How the send was found: "send_key", "esp_ids" or "nearest"; None unlinked.
    linked_by: Mapped[str | None] = mapped_column(String(16))
    # The ESP's id of the recipient (Klaviyo profile, Mailchimp subscriber hash).
    esp_profile_id: Mapped[str | None] = mapped_column(String(255))
    machine_open: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    url: Mapped[str | None] = mapped_column(String(2048))
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    received_at: Mapped[utc_time]


class FeedbackWatermark(Base):
    """How far one stream of one ESP has been read, and its recent failures."""

    __tablename__ = "feedback_watermarks"
    __table_args__ = (UniqueConstraint("esp", "stream"),)

    id: Mapped[int_pk]
    esp: Mapped[str] = mapped_column(String(16))
    stream: Mapped[str] = mapped_column(String(128))
    watermark: Mapped[datetime | None] = mapped_column(DateTime())
    updated_at: Mapped[utc_time]
    last_success_at: Mapped[utc_time | None]
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(500))


class Suppression(Base):
    """A customer unsubscribed by feedback: which event, from which ESP, and why."""

    __tablename__ = "suppressions"

    id: Mapped[int_pk]
    customer_id: Mapped[int] = mapped_column(
        _ID, ForeignKey("customers.id"), index=True
    )
    event_id: Mapped[int] = mapped_column(
        _ID, ForeignKey("engagement_events.id"), unique=True
    )
    esp: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(16))
    suppressed_at: Mapped[utc_time]
    created_at: Mapped[utc_time]
