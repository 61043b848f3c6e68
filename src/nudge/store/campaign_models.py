"""SQLAlchemy models of campaign plans: each run and every decision it made.

A run is one `nudge plan` (or a scheduled plan) as of a moment; each
(campaign, customer) pair of a due audience has one decision row with its
outcome (chosen, deferred, holdout or suppressed), the reason, and for
winners the variant, send time and products. A run of a campaign that
needs approval waits as ``awaiting_approval`` until an operator approves it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from nudge.store.models import Base, int_pk, utc_time

# The type of the ids the decisions point at (plan_runs.id, customers.id).
_ID = BigInteger().with_variant(Integer, "sqlite")

RUN_STATUSES: tuple[str, ...] = ("planned", "awaiting_approval", "approved")


class PlanRun(Base):
    """One plan as of a moment, over the campaigns that were due."""

    __tablename__ = "plan_runs"

    id: Mapped[int_pk]
    created_at: Mapped[utc_time]
    as_of: Mapped[datetime] = mapped_column(DateTime(), index=True)
    campaigns: Mapped[list[str]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(24))
    approved_by: Mapped[str | None] = mapped_column(String(255))
    approved_at: Mapped[utc_time | None]
    # Per campaign: why it was due, audience size and counts by outcome.
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class PlanDecision(Base):
    """What one plan decided for one customer of one campaign's audience."""

    __tablename__ = "plan_decisions"
    __table_args__ = (
        UniqueConstraint("run_id", "campaign", "customer_id"),
        # The cap query: a customer's earlier e-mails by send time.
        Index("ix_plan_decisions_customer_send", "customer_id", "send_at"),
    )

    id: Mapped[int_pk]
    run_id: Mapped[int] = mapped_column(_ID, ForeignKey("plan_runs.id"), index=True)
    campaign: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[int] = mapped_column(_ID, ForeignKey("customers.id"))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(String(255))
    variant: Mapped[str | None] = mapped_column(String(32))
    expected_value: Mapped[float | None] = mapped_column(Float)
    send_at: Mapped[datetime | None] = mapped_column(DateTime())
    # What made the e-mail due (schedule firing, event minute, digest day);
    # the send ledger keeps one e-mail per campaign, customer and occurrence.
    occurrence: Mapped[str | None] = mapped_column(String(32))
    # The products of a winner, best first: product_id, score, strategy,
    # reason_code and reason.
    items: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
