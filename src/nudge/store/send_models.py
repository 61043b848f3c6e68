"""SQLAlchemy models of the send ledger: one row per e-mail nudge means to send.

A row is made for each winner of a stored plan (holdouts too, so that the
feedback loop can compare them) and is unique per (campaign, customer,
occurrence): the occurrence names the schedule firing or the trigger that made
the e-mail due, so re-planning the same moment never adds a second e-mail.
``send_key`` is derived from those three and is the idempotency key of every
ESP call, so even a row made again finds what the ESP already holds.

Statuses move planned → rendered → submitted → accepted | failed | suppressed;
``due_at`` (with the status) is the table the dispatcher scans for sends that
fall due later (triggered delays, quiet hours).
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
)
from sqlalchemy.orm import Mapped, mapped_column

from nudge.store.models import Base, int_pk, utc_time

_ID = BigInteger().with_variant(Integer, "sqlite")

PLANNED, RENDERED, SUBMITTED = "planned", "rendered", "submitted"
ACCEPTED, FAILED, SUPPRESSED = "accepted", "failed", "suppressed"
SEND_STATUSES: tuple[str, ...] = (
    PLANNED,
    RENDERED,
    SUBMITTED,
    ACCEPTED,
    FAILED,
    SUPPRESSED,
)
# Rows the dispatcher may still hand to an ESP.
OPEN_STATUSES: tuple[str, ...] = (PLANNED, RENDERED, SUBMITTED)
FINAL_STATUSES: tuple[str, ...] = (ACCEPTED, FAILED, SUPPRESSED)


class Send(Base):
    """One e-mail of one campaign to one customer, and what became of it."""

    __tablename__ = "sends"
    __table_args__ = (
        UniqueConstraint("campaign", "customer_id", "occurrence"),
        # The dispatcher's scan: open rows by due time.
        Index("ix_sends_status_due", "status", "due_at"),
        Index("ix_sends_customer", "customer_id", "due_at"),
    )

    id: Mapped[int_pk]
    send_key: Mapped[str] = mapped_column(String(40), unique=True)
    plan_run_id: Mapped[int] = mapped_column(
        _ID, ForeignKey("plan_runs.id"), index=True
    )
    campaign: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int] = mapped_column(_ID, ForeignKey("customers.id"))
    occurrence: Mapped[str] = mapped_column(String(32))
    variant: Mapped[str | None] = mapped_column(String(32))
    holdout: Mapped[bool] = mapped_column(Boolean, default=False)
    # The campaign needs an operator's approval of the plan run before it goes.
    approval_required: Mapped[bool] = mapped_column(Boolean, default=False)
    # The products, best first: product_id, score, strategy, reason_code, reason.
    items: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    subject: Mapped[str | None] = mapped_column(String(255))
    esp: Mapped[str] = mapped_column(String(16))
    esp_id: Mapped[str | None] = mapped_column(String(255))
    esp_job_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(String(500))
    due_at: Mapped[datetime] = mapped_column(DateTime())
    created_at: Mapped[utc_time]
    updated_at: Mapped[utc_time]
    submitted_at: Mapped[utc_time | None]
    finished_at: Mapped[utc_time | None]
