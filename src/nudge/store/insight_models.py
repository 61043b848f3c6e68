"""SQLAlchemy models of what customer insight computes: profiles and refill gaps.

Each row is a snapshot "as of" a moment, so the figures a campaign decided on
can be read again later; a refresh for the same moment replaces its rows.
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
    Integer,
    SmallInteger,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from nudge.store.models import Base, utc_time

# The type of the ids the profiles point at (customers.id, products.id).
_ID = BigInteger().with_variant(Integer, "sqlite")


class CustomerProfile(Base):
    """One customer's RFM figures, segment, stage and predictions as of a moment."""

    __tablename__ = "customer_profiles"

    customer_id: Mapped[int] = mapped_column(
        _ID, ForeignKey("customers.id"), primary_key=True, autoincrement=False
    )
    as_of: Mapped[datetime] = mapped_column(DateTime(), primary_key=True, index=True)
    first_order_at: Mapped[utc_time]
    last_order_at: Mapped[utc_time]
    recency_days: Mapped[int] = mapped_column(Integer)
    frequency: Mapped[int] = mapped_column(Integer)
    orders: Mapped[int] = mapped_column(Integer)
    monetary: Mapped[float] = mapped_column(Float)
    avg_order_value: Mapped[float] = mapped_column(Float)
    tenure_days: Mapped[int] = mapped_column(Integer)
    r_score: Mapped[int] = mapped_column(SmallInteger)
    f_score: Mapped[int] = mapped_column(SmallInteger)
    m_score: Mapped[int] = mapped_column(SmallInteger)
    segment: Mapped[str] = mapped_column(String(32))
    stage: Mapped[str] = mapped_column(String(16))
    stage_rule: Mapped[str] = mapped_column(String(255))
    # "bgnbd" or "heuristic": where p_alive and churn_risk came from.
    model_used: Mapped[str] = mapped_column(String(16))
    p_alive: Mapped[float] = mapped_column(Float)
    churn_risk: Mapped[float] = mapped_column(Float)
    churn_band: Mapped[str] = mapped_column(String(8))
    clv: Mapped[float] = mapped_column(Float)
    expected_next_order_at: Mapped[utc_time | None]
    typical_gap_days: Mapped[float] = mapped_column(Float)
    affinities: Mapped[dict[str, Any]] = mapped_column(JSON)
    refreshed_at: Mapped[utc_time]


class ProductReplenishment(Base):
    """How many days customers usually wait before re-buying a product."""

    __tablename__ = "product_replenishment"

    product_id: Mapped[int] = mapped_column(
        _ID, ForeignKey("products.id"), primary_key=True, autoincrement=False
    )
    as_of: Mapped[datetime] = mapped_column(DateTime(), primary_key=True, index=True)
    # "product" for its own repeat gaps, "category" for its category's.
    level: Mapped[str] = mapped_column(String(16))
    category: Mapped[str | None] = mapped_column(String(255))
    median_gap_days: Mapped[float] = mapped_column(Float)
    gap_p25_days: Mapped[float] = mapped_column(Float)
    gap_p75_days: Mapped[float] = mapped_column(Float)
    repeat_gaps: Mapped[int] = mapped_column(Integer)
    repeat_customers: Mapped[int] = mapped_column(Integer)
    refreshed_at: Mapped[utc_time]
