"""A tiny shop in a migrated SQLite store, and settings pointing at test campaigns."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, insert

from nudge.campaigns.config import PlannerConfig
from nudge.settings import Settings
from nudge.store.insight_models import CustomerProfile
from nudge.store.models import BehaviourEvent, Customer, Order, OrderLine, Product
from tests.unit.campaigns.helpers import AS_OF

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = REPO / "email_templates"

WINBACK = """\
name: winback
description: Win back customers at risk.
trigger:
  schedule: "0 10 * * mon"
audience: stage in [at_risk, churned]
recommend:
  strategy: best_sellers
  count: 3
  rules:
    min_items: 1
template: winback
variants:
  - name: a
    subject: "We miss you"
offer:
  code_prefix: COMEBACK
  value: "15%"
  description: 15% off your next order
value:
  response_rate: 0.05
  order_value: customer
caps:
  - max: 1
    days: 30
quiet_hours: ""
holdout: 0
approval: required
"""

CART = """\
name: cart
description: Products left in the basket.
trigger:
  event: cart_abandoned
  delay: 1h
  dedupe: 7d
audience: orders >= 0
recommend:
  strategy: cart
  count: 3
  rules:
    min_items: 1
template: cart_abandonment
variants:
  - name: a
    subject: "You left something behind"
value:
  response_rate: 0.1
quiet_hours: ""
holdout: 0
"""

# name, consent, unsubscribed, e-mail, stage (None: no profile)
PEOPLE = [
    ("ann", True, False, "ann@example.com", "at_risk"),
    ("bob", True, False, "bob@example.com", "churned"),
    ("cat", False, False, "cat@example.com", "at_risk"),
    ("dan", True, True, "dan@example.com", "churned"),
    ("eve", True, False, None, "at_risk"),
    ("fay", True, False, "fay@example.com", "active"),
    ("gus", True, False, "gus@example.com", None),
]


def planner_settings(settings: Settings, folder: Path) -> Settings:
    """Return settings whose campaigns live in a folder of the test."""
    config = PlannerConfig(campaigns_dir=folder, templates_dir=TEMPLATES)
    return settings.model_copy(
        update={"sections": {"campaigns": config}, "signing_secret": None}
    )


def write_campaigns(folder: Path, **files: str) -> Path:
    """Write campaign files into a folder and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    return folder


def fill(engine: Engine) -> dict[str, int]:
    """Store customers, products, orders, a basket and profiles; return ids."""
    now = AS_OF
    ids: dict[str, int] = {}
    with engine.begin() as conn:
        for n, (name, consent, unsubscribed, email, _) in enumerate(PEOPLE, 1):
            conn.execute(
                insert(Customer).values(
                    id=n,
                    external_id=name,
                    email=email,
                    first_name=name.title(),
                    country="GB",
                    timezone="Europe/London",
                    accepts_marketing=consent,
                    unsubscribed_at=now - timedelta(days=3) if unsubscribed else None,
                    updated_at=now,
                )
            )
            ids[name] = n
        for p in range(1, 6):
            conn.execute(
                insert(Product).values(
                    id=p,
                    external_id=f"p{p}",
                    title=f"Product {p}",
                    category="Candles" if p % 2 else "Tea",
                    price=Decimal("10.00") + p,
                    currency="GBP",
                    image_url=f"https://demo-shop.example/img/p{p}.jpg",
                    product_url=f"https://demo-shop.example/products/p{p}",
                    in_stock=True,
                    created_at=now - timedelta(days=400),
                    updated_at=now,
                )
            )
        _orders(conn)
        conn.execute(
            insert(BehaviourEvent).values(
                event_key="cart-fay",
                customer_id=ids["fay"],
                product_id=3,
                event_type="add_to_cart",
                occurred_at=now - timedelta(hours=2),
            )
        )
        _profiles(conn)
    return ids


def _orders(conn: object) -> None:
    """Give every profiled customer a few orders in the last months."""
    order_id = 0
    for n, (_, _, _, _, stage) in enumerate(PEOPLE, 1):
        if stage is None:
            continue
        for k in range(3):
            order_id += 1
            when = AS_OF - timedelta(days=20 + 15 * k + n)
            conn.execute(  # type: ignore[attr-defined]
                insert(Order).values(
                    id=order_id,
                    external_id=f"o{order_id}",
                    customer_id=n,
                    ordered_at=when,
                    updated_at=when,
                )
            )
            conn.execute(  # type: ignore[attr-defined]
                insert(OrderLine).values(
                    order_id=order_id,
                    line_no=1,
                    product_id=1 + (order_id % 5),
                    quantity=1,
                    unit_price=Decimal("12.00"),
                )
            )


def _profiles(conn: object) -> None:
    """Store a profile snapshot as of AS_OF for the customers with a stage."""
    for n, (_, _, _, _, stage) in enumerate(PEOPLE, 1):
        if stage is None:
            continue
        conn.execute(  # type: ignore[attr-defined]
            insert(CustomerProfile).values(
                customer_id=n,
                as_of=AS_OF,
                first_order_at=datetime(2026, 1, 1),
                last_order_at=datetime(2026, 10, 1),
                recency_days=60,
                frequency=3,
                orders=3,
                monetary=36.0,
                avg_order_value=12.0,
                tenure_days=300,
                r_score=2,
                f_score=3,
                m_score=3,
                segment="at_risk",
                stage=stage,
                stage_rule="test",
                model_used="heuristic",
                p_alive=0.3,
                churn_risk=0.7,
                churn_band="high",
                clv=20.0,
                expected_next_order_at=None,
                typical_gap_days=30.0,
                affinities={"category": {"Candles": 1.0}},
                refreshed_at=AS_OF,
            )
        )
