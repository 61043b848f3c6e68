"""Run customer insight against the store: read as of a moment, compute, write.

This is the only insight module that touches the database. Snapshots are
written per ``as_of``: refreshing the same moment again replaces its rows in
one transaction, so a reader never sees half a snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Engine, Table, delete, func, select

from nudge.errors import NudgeError
from nudge.ingest.writer import bulk_insert
from nudge.insight.backtest import BacktestReport, backtest
from nudge.insight.config import InsightConfig
from nudge.insight.profiles import (
    PROFILE_COLUMNS,
    Profiles,
    build_profiles,
    naive_utc,
)
from nudge.insight.replenishment import (
    REPLENISHMENT_COLUMNS,
    buy_again_due,
    replenishment,
)
from nudge.logging import get_logger
from nudge.store import queries
from nudge.store.insight_models import CustomerProfile, ProductReplenishment
from nudge.store.models import Customer, Order, OrderLine, Product

log = get_logger(__name__)

Step = Callable[[str], None]

_PROFILES: Table = CustomerProfile.__table__  # type: ignore[assignment]
_REFILLS: Table = ProductReplenishment.__table__  # type: ignore[assignment]


class InsightLookupError(NudgeError, LookupError):
    """Raised when a customer or a snapshot asked for does not exist."""


@dataclass(frozen=True)
class RefreshReport:
    """What one refresh stored, and how the figures were made."""

    as_of: datetime
    customers: int
    products: int
    model: str
    reason: str
    params: dict[str, dict[str, float]]
    shop_gap_days: float
    win_back_value: float
    stages: dict[str, int]
    segments: dict[str, int]
    seconds: float

    def as_json(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "as_of": self.as_of.isoformat(),
            "customers": self.customers,
            "products": self.products,
            "model": self.model,
            "reason": self.reason,
            "params": self.params,
            "shop_gap_days": self.shop_gap_days,
            "win_back_value": self.win_back_value,
            "stages": self.stages,
            "segments": self.segments,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class Snapshot:
    """Profiles as of a moment, and whether they came from the store."""

    as_of: datetime
    frame: pd.DataFrame
    stored: bool


@dataclass(frozen=True)
class CustomerInsight:
    """One customer's profile with the products they are due to buy again."""

    external_id: str
    profile: dict[str, Any]
    buy_again: pd.DataFrame
    stored: bool
    notes: list[str] = field(default_factory=list)


def utc_now() -> datetime:
    """Return the current time as a naive UTC datetime, whole seconds."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def compute(
    engine: Engine,
    as_of: datetime,
    config: InsightConfig,
    step: Step | None = None,
) -> tuple[Profiles, pd.DataFrame]:
    """Read the store as of a moment and compute profiles and replenishment."""
    step = step or (lambda _: None)
    step("reading orders")
    lines = queries.order_lines(engine, as_of, include_guests=False)
    events = queries.behaviour_events(engine, as_of)
    products = queries.products(engine)

    step("fitting models and scoring customers")
    profiles = build_profiles(lines, events, products, as_of, config)
    step("timing replenishment")
    refills = replenishment(lines, products, as_of, config)
    return profiles, refills


def refresh(
    engine: Engine,
    as_of: datetime | None = None,
    config: InsightConfig | None = None,
    step: Step | None = None,
) -> RefreshReport:
    """Compute and store every customer's profile and every product's refill gap."""
    started = time.perf_counter()
    config = config or InsightConfig()
    as_of = naive_utc(as_of) if as_of is not None else utc_now()
    profiles, refills = compute(engine, as_of, config, step)

    # One transaction: the old snapshot of this moment goes, the new one comes.
    if step:
        step("writing profiles")
    stamp = utc_now()
    with engine.begin() as conn:
        conn.execute(delete(_PROFILES).where(_PROFILES.c.as_of == as_of))
        conn.execute(delete(_REFILLS).where(_REFILLS.c.as_of == as_of))
        bulk_insert(conn, _PROFILES, profiles.frame.assign(refreshed_at=stamp))
        bulk_insert(conn, _REFILLS, refills.assign(refreshed_at=stamp))

    report = _refresh_report(profiles, len(refills), time.perf_counter() - started)
    log.info(
        "insight refreshed",
        as_of=as_of.isoformat(),
        customers=report.customers,
        products=report.products,
        model=report.model,
        seconds=round(report.seconds, 2),
    )
    return report


def snapshot(
    engine: Engine,
    as_of: datetime | None = None,
    config: InsightConfig | None = None,
) -> Snapshot:
    """Return stored profiles as of a moment (latest if None), computing if absent.

    Profiles computed here are not stored; `refresh` stores them.
    """
    moment = naive_utc(as_of) if as_of is not None else latest_as_of(engine)
    if moment is not None:
        frame = stored_profiles(engine, moment)
        if not frame.empty:
            return Snapshot(moment, frame, stored=True)

    moment = moment or utc_now()
    profiles, _ = compute(engine, moment, config or InsightConfig())
    frame = _with_external_ids(engine, profiles.frame)
    return Snapshot(moment, frame, stored=False)


def latest_as_of(engine: Engine) -> datetime | None:
    """Return the moment of the newest stored profile snapshot, if any."""
    with engine.connect() as conn:
        value = conn.execute(select(func.max(_PROFILES.c.as_of))).scalar()
    return value if isinstance(value, datetime) else None


def stored_profiles(
    engine: Engine, as_of: datetime, customer_id: int | None = None
) -> pd.DataFrame:
    """Return the stored profiles of one moment, with each customer's external id."""
    statement = (
        select(*(_PROFILES.c[c] for c in PROFILE_COLUMNS), Customer.external_id)
        .join(Customer, Customer.id == _PROFILES.c.customer_id)
        .where(_PROFILES.c.as_of == as_of)
    )
    if customer_id is not None:
        statement = statement.where(_PROFILES.c.customer_id == customer_id)
    with engine.connect() as conn:
        result = conn.execute(statement)
        return pd.DataFrame(result.all(), columns=list(result.keys()))


def customer_insight(
    engine: Engine,
    external_id: str,
    as_of: datetime | None = None,
    config: InsightConfig | None = None,
) -> CustomerInsight:
    """Explain one customer: their profile as of a moment and what is due again."""
    config = config or InsightConfig()
    customer_id = _customer_id(engine, external_id)
    moment = naive_utc(as_of) if as_of is not None else latest_as_of(engine)

    # The stored snapshot when there is one: its figures are what campaigns used.
    notes: list[str] = []
    frame, refills = pd.DataFrame(), pd.DataFrame()
    if moment is not None:
        frame = stored_profiles(engine, moment, customer_id)
        refills = _stored_refills(engine, moment)
    stored = not frame.empty
    if not stored:
        moment = moment or utc_now()
        profiles, refills = compute(engine, moment, config)
        frame = profiles.frame[profiles.frame["customer_id"] == customer_id]
        notes.append("computed now, not stored: run `nudge insight refresh`")
    assert moment is not None
    if frame.empty:
        raise InsightLookupError(
            f"customer {external_id} has no purchase before {moment:%Y-%m-%d %H:%M}"
        )

    profile = {str(k): v for k, v in frame.iloc[0].to_dict().items()}
    profile["external_id"] = external_id
    due = _buy_again(engine, customer_id, moment, refills)
    return CustomerInsight(external_id, profile, due, stored, notes)


def run_backtest(
    engine: Engine,
    calibration_end: datetime,
    holdout_days: int,
    config: InsightConfig | None = None,
) -> BacktestReport:
    """Backtest the customer models on the store's orders."""
    start = naive_utc(calibration_end)
    end = start + timedelta(days=holdout_days)
    lines = queries.order_lines(engine, end, include_guests=False)
    report = backtest(lines, start, holdout_days, config)
    log.info(
        "insight backtest",
        calibration_end=start.isoformat(),
        holdout_days=holdout_days,
        customers=report.customers,
        model=report.scores.model,
    )
    return report


def _refresh_report(profiles: Profiles, products: int, seconds: float) -> RefreshReport:
    """Summarise a refresh for printing."""
    models = profiles.models
    params: dict[str, dict[str, float]] = {}
    if models.bgnbd is not None and models.gammagamma is not None:
        params = {"bgnbd": models.bgnbd.params, "gammagamma": models.gammagamma.params}
    frame = profiles.frame
    return RefreshReport(
        as_of=profiles.as_of,
        customers=len(frame),
        products=products,
        model=models.name,
        reason=models.reason,
        params=params,
        shop_gap_days=profiles.shop_gap_days,
        win_back_value=profiles.win_back_value,
        stages=_counts(frame["stage"]),
        segments=_counts(frame["segment"]),
        seconds=seconds,
    )


def _counts(values: pd.Series) -> dict[str, int]:
    """Return how often each value occurs, most frequent first."""
    return {str(k): int(v) for k, v in values.value_counts().items()}


def _customer_id(engine: Engine, external_id: str) -> int:
    """Return the store id of a customer named by the shop's id."""
    with engine.connect() as conn:
        found = conn.execute(
            select(Customer.id).where(Customer.external_id == external_id)
        ).scalar()
    if found is None:
        raise InsightLookupError(f"no customer with id {external_id!r}")
    return int(found)


def _with_external_ids(engine: Engine, frame: pd.DataFrame) -> pd.DataFrame:
    """Add each profile's customer external id."""
    ids = queries.customers(engine)[["id", "external_id"]].set_index("id")
    return frame.assign(
        external_id=ids["external_id"].reindex(frame["customer_id"]).to_numpy()
    )


def _stored_refills(engine: Engine, as_of: datetime) -> pd.DataFrame:
    """Return the stored replenishment figures of one moment."""
    statement = select(*(_REFILLS.c[c] for c in REPLENISHMENT_COLUMNS)).where(
        _REFILLS.c.as_of == as_of
    )
    with engine.connect() as conn:
        result = conn.execute(statement)
        return pd.DataFrame(result.all(), columns=list(result.keys()))


def _buy_again(
    engine: Engine, customer_id: int, as_of: datetime, refills: pd.DataFrame
) -> pd.DataFrame:
    """Return the products one customer is due to re-buy, nearest due first."""
    lines = _customer_lines(engine, customer_id, as_of)
    due = buy_again_due(lines, refills, as_of)
    names = lines.drop_duplicates("product_id").set_index("product_id")
    due["product"] = names["product_external_id"].reindex(due["product_id"]).values
    due["title"] = names["title"].reindex(due["product_id"]).values

    # Closest to the moment first: long-overdue one-off items matter least.
    until = (due["due_at"] - as_of) / pd.Timedelta(days=1)
    due["days_until_due"] = until.round(1)
    order = until.abs().sort_values(kind="stable").index
    return due.loc[order].reset_index(drop=True)


def _customer_lines(engine: Engine, customer_id: int, as_of: datetime) -> pd.DataFrame:
    """Return one customer's order lines before a moment, with product names."""
    statement = (
        select(
            Order.id.label("order_id"),
            Order.customer_id,
            Order.ordered_at,
            OrderLine.product_id,
            Product.external_id.label("product_external_id"),
            Product.title,
            OrderLine.quantity,
            OrderLine.status,
        )
        .join(OrderLine, OrderLine.order_id == Order.id)
        .join(Product, Product.id == OrderLine.product_id)
        .where(Order.customer_id == customer_id, Order.ordered_at < as_of)
    )
    with engine.connect() as conn:
        result = conn.execute(statement)
        return pd.DataFrame(result.all(), columns=list(result.keys()))
