"""SQLAlchemy 2.0 models of the shop data nudge reads and writes.

Times are stored as naive UTC everywhere; conversion to a customer's or the
shop's time zone happens at the edges. Money is a Decimal in Python.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine


class Money(TypeDecorator[Decimal]):
    """Decimal money: NUMERIC on PostgreSQL, a REAL read back exactly on SQLite.

    SQLite has no decimal type; a REAL holds every amount with at most four
    decimals and fourteen digits exactly once it is read back through ``repr``.
    """

    impl = Numeric(14, 4)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Float())
        return dialect.type_descriptor(Numeric(14, 4, asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return float(value)
        return value if isinstance(value, Decimal) else Decimal(str(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            return value
        return Decimal(repr(float(value)))


int_pk = Annotated[
    int, mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
]
external_id = Annotated[str, mapped_column(String(128), unique=True)]
utc_time = Annotated[datetime, mapped_column(DateTime())]
short_text = Annotated[str, mapped_column(String(255))]


class Base(DeclarativeBase):
    """Declarative base with nudge's naming convention for constraints."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {Decimal: Money()}


Base.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Customer(Base):
    """A shop's customer, created by a customer import or first seen on an order."""

    __tablename__ = "customers"

    id: Mapped[int_pk]
    external_id: Mapped[external_id]
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    first_name: Mapped[short_text | None]
    last_name: Mapped[short_text | None]
    country: Mapped[short_text | None]
    timezone: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[utc_time | None]
    accepts_marketing: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    consent_source: Mapped[short_text | None]
    consent_at: Mapped[utc_time | None]
    unsubscribed_at: Mapped[utc_time | None]
    favourite_categories: Mapped[str | None] = mapped_column(String(1024))
    max_emails_per_week: Mapped[int | None]
    # "catalog" when a customer file named it, "order" when only an order did.
    source: Mapped[str] = mapped_column(
        String(16), default="catalog", server_default="catalog"
    )
    updated_at: Mapped[utc_time]


class Product(Base):
    """A product of the catalog; `created_at` tells when it became a new arrival."""

    __tablename__ = "products"

    id: Mapped[int_pk]
    external_id: Mapped[external_id]
    title: Mapped[str | None] = mapped_column(String(512))
    description: Mapped[str | None] = mapped_column(Text)
    category: Mapped[short_text | None] = mapped_column(index=True)
    brand: Mapped[short_text | None]
    price: Mapped[Decimal | None]
    currency: Mapped[str | None] = mapped_column(String(3))
    image_url: Mapped[str | None] = mapped_column(String(2048))
    product_url: Mapped[str | None] = mapped_column(String(2048))
    in_stock: Mapped[bool | None]
    created_at: Mapped[utc_time | None]
    source: Mapped[str] = mapped_column(
        String(16), default="catalog", server_default="catalog"
    )
    updated_at: Mapped[utc_time]


class ProductAlias(Base):
    """Another id an export uses for a product, such as a Shopify variant's SKU."""

    __tablename__ = "product_aliases"

    id: Mapped[int_pk]
    alias: Mapped[str] = mapped_column(String(128), unique=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)


class Order(Base):
    """One order (an invoice); cancellations and returns keep their own rows."""

    __tablename__ = "orders"

    id: Mapped[int_pk]
    external_id: Mapped[external_id]
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id"), index=True
    )
    ordered_at: Mapped[utc_time] = mapped_column(index=True)
    currency: Mapped[str | None] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(
        String(16), default="placed", server_default="placed"
    )
    updated_at: Mapped[utc_time]


class OrderLine(Base):
    """One line of an order; `status` marks a cancelled or returned line."""

    __tablename__ = "order_lines"
    __table_args__ = (UniqueConstraint("order_id", "line_no"),)

    id: Mapped[int_pk]
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    line_no: Mapped[int]
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    quantity: Mapped[int]
    unit_price: Mapped[Decimal]
    status: Mapped[str] = mapped_column(
        String(16), default="placed", server_default="placed"
    )


class BehaviourEvent(Base):
    """A browse signal: a product view, an add-to-cart or a search."""

    __tablename__ = "behaviour_events"
    __table_args__ = (
        Index("ix_behaviour_events_customer_time", "customer_id", "occurred_at"),
    )

    id: Mapped[int_pk]
    # A digest of the event's own fields (or the shop's event id), so that
    # importing the same file twice stores each event once.
    event_key: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    product_id: Mapped[int | None] = mapped_column(
        ForeignKey("products.id"), index=True
    )
    event_type: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[utc_time] = mapped_column(index=True)
    query: Mapped[str | None] = mapped_column(String(512))


class ImportRun(Base):
    """One run of `nudge import`, with its counts and where its rejects went."""

    __tablename__ = "import_runs"

    id: Mapped[int_pk]
    kind: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(32))
    file: Mapped[str] = mapped_column(String(2048))
    started_at: Mapped[utc_time]
    finished_at: Mapped[utc_time | None]
    status: Mapped[str] = mapped_column(String(16), default="running")
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    rejects_file: Mapped[str | None] = mapped_column(String(2048))
