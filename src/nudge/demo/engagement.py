"""Simulated customers for the demo: they open, click and buy by hidden tastes.

For every e-mail of a run that reached the outbox, and every holdout row
beside it, the simulation decides — seeded, so the same run gives the same
story — what the customer did:

- **Open** with the customer's hidden ``open_rate``; a share of opens come
  from privacy proxies that prefetch images at delivery (machine opens).
- **Click**, given a human open, with the hidden ``click_rate``, raised by
  how much the customer likes the first product's category and by the
  variant's hidden lift (`Truth.variant_lift`).
- **Buy** within a few days: everyone, mailed or not, with the shop's base
  rate; a mailed customer of a campaign with a real effect
  (`Truth.campaign_effect`) more, and more again after a click. The holdout
  gets the base rate only, so a campaign's true uplift is known.

Opens and clicks are recorded as the tracked links would record them
(through `nudge.feedback.store`, linked to the send by its key); orders are
written into the shop's orders as the next import would bring them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
from sqlalchemy import Engine, insert, select, update

from nudge.campaigns.service import CampaignService, naive_utc
from nudge.demo.synth import CATEGORY_NAMES, SyntheticShop
from nudge.feedback import store as feedback_store
from nudge.feedback.events import Engagement, PullReport, digest
from nudge.insight import service as insight_service
from nudge.insight.config import InsightConfig
from nudge.jobs import pipeline
from nudge.jobs.pipeline import Delivered
from nudge.settings import Settings
from nudge.store.models import Customer, Order, OrderLine, Product
from nudge.store.send_models import Send

# The demo's hidden truth: variant b of picked_for_you is clicked more, and
# picked_for_you sells; new_arrivals e-mails change nothing.
DEMO_TRUTH_LIFT = {("picked_for_you", "a"): 0.7, ("picked_for_you", "b"): 2.0}
DEMO_TRUTH_EFFECT = {"picked_for_you": 0.08}
MACHINE_SHARE = 0.15  # opens made by privacy proxies at delivery
APPLE_PROXY = "Mozilla/5.0"
BUY_DAYS = 4.0  # a response comes within this many days


@dataclass(frozen=True)
class Truth:
    """What the simulation knows and nudge has to find out."""

    # Multiplier on the click probability of (campaign, variant).
    variant_lift: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # Extra chance of an order for a mailed customer of a campaign.
    campaign_effect: Mapping[str, float] = field(default_factory=dict)
    # Chance that anyone orders within the window anyway.
    base_rate: float = 0.03
    # Extra chance of an order after a click, for campaigns with an effect.
    click_boost: float = 0.25


@dataclass
class Simulated:
    """What the simulated customers did with one run's e-mails."""

    emails: int = 0
    holdout: int = 0
    opens: int = 0
    machine_opens: int = 0
    clicks: int = 0
    orders: int = 0
    holdout_orders: int = 0


def simulate(
    engine: Engine,
    shop: SyntheticShop,
    run_id: int,
    truth: Truth,
    *,
    seed: int = 0,
) -> Simulated:
    """Make the customers of a run's e-mails act; store opens, clicks and orders."""
    rng = np.random.default_rng([seed, run_id])
    sends = _sends(engine, run_id)
    result = Simulated()
    if sends.empty:
        return result
    tastes = shop.tastes.set_index("customer_id")
    person = tastes.reindex(sends["external_id"].astype(str))
    mailed = (sends["status"] == "accepted").to_numpy()
    held = sends["holdout"].to_numpy(bool)
    n = len(sends)
    result.emails, result.holdout = int(mailed.sum()), int(held.sum())

    open_rate = person["open_rate"].fillna(0.2).to_numpy()
    opened = mailed & (rng.random(n) < open_rate)
    machine = mailed & (rng.random(n) < MACHINE_SHARE)
    liking = _liking(engine, sends, person)
    lift = np.array(
        [
            truth.variant_lift.get((c, str(v)), 1.0)
            for c, v in zip(sends["campaign"], sends["variant"], strict=True)
        ]
    )
    click_p = np.clip(person["click_rate"].fillna(0.1).to_numpy() * liking * lift, 0, 1)
    clicked = opened & (rng.random(n) < click_p)

    effect = np.array([truth.campaign_effect.get(c, 0.0) for c in sends["campaign"]])
    buy_p = np.full(n, truth.base_rate)
    buy_p += np.where(mailed, effect, 0.0)
    buy_p += np.where(clicked & (effect > 0), truth.click_boost, 0.0)
    bought = (mailed | held) & (rng.random(n) < np.clip(buy_p, 0, 1))

    # The simulation's clock is the plan's: each e-mail arrived when it was
    # due, which is what the machine-open rules compare opens with.
    with engine.begin() as conn:
        conn.execute(
            update(Send)
            .where(Send.plan_run_id == run_id, Send.status == "accepted")
            .values(submitted_at=Send.due_at, finished_at=Send.due_at)
        )
    due = pd.to_datetime(sends["due_at"]).to_numpy("datetime64[ns]")
    events: list[Engagement] = []
    for i in np.flatnonzero(opened | machine | clicked).tolist():
        key = str(sends["send_key"].iat[i])
        sent = pd.Timestamp(due[i]).to_pydatetime()
        if machine[i]:
            events.append(_event("open", key, sent + timedelta(seconds=2), True))
        if opened[i]:
            seen = sent + timedelta(minutes=float(rng.uniform(5, 600)))
            events.append(_event("open", key, seen, False))
            if clicked[i]:
                url = str(sends["first_url"].iat[i])
                at = seen + timedelta(seconds=float(rng.uniform(5, 120)))
                events.append(_event("click", key, at, False, url))
    if events:
        feedback_store.save(engine, events, PullReport(), now=_latest(due))
    _orders(engine, sends[bought], rng, due[bought])

    result.opens = int(opened.sum())
    result.machine_opens = int(machine.sum())
    result.clicks = int(clicked.sum())
    result.orders = int((bought & mailed).sum())
    result.holdout_orders = int((bought & held).sum())
    return result


def _sends(engine: Engine, run_id: int) -> pd.DataFrame:
    statement = (
        select(
            Send.id,
            Send.send_key,
            Send.campaign,
            Send.variant,
            Send.customer_id,
            Send.status,
            Send.holdout,
            Send.items,
            Send.due_at,
            Customer.external_id,
        )
        .join(Customer, Customer.id == Send.customer_id)
        .where(Send.plan_run_id == run_id)
        .where((Send.status == "accepted") | Send.holdout.is_(True))
        .order_by(Send.id)
    )
    with engine.connect() as conn:
        result = conn.execute(statement)
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    if frame.empty:
        return frame
    frame["first_product"] = [
        int(items[0]["product_id"]) if items else None for items in frame["items"]
    ]
    frame["first_url"] = [
        f"/products/{pid}" if pid is not None else "/" for pid in frame["first_product"]
    ]
    return frame


def _liking(engine: Engine, sends: pd.DataFrame, person: pd.DataFrame) -> np.ndarray:
    """Return how much each customer likes the first product's category (×)."""
    ids = [int(p) for p in sends["first_product"].dropna().unique()]
    with engine.connect() as conn:
        rows = conn.execute(
            select(Product.id, Product.category).where(Product.id.in_(ids))
        ).all()
    category = {int(i): str(c) for i, c in rows}
    liking = np.ones(len(sends))
    share = 1.0 / len(CATEGORY_NAMES)
    names = [
        category.get(int(pid)) if pid is not None and pd.notna(pid) else None
        for pid in sends["first_product"].tolist()
    ]
    for name in set(names) & set(person.columns):
        rows_of = np.array([n == name for n in names])
        values = person[name].to_numpy(dtype=np.float64, na_value=share)
        liking[rows_of] = values[rows_of] / share
    return np.clip(liking, 0.2, 3.0)


def _event(
    kind: str, key: str, at: datetime, machine: bool, url: str | None = None
) -> Engagement:
    agent = APPLE_PROXY if machine else "Mozilla/5.0 (Macintosh) demo-customer"
    return Engagement(
        esp="outbox",
        kind=kind,
        esp_event_id=digest("demo", kind, key, at.isoformat()),
        occurred_at=at,
        raw={"kind": kind, "send_id": key, "url": url, "user_agent": agent},
        send_key=key,
        url=url,
        machine_open=machine,
    )


def _latest(due: np.ndarray) -> datetime:
    return pd.Timestamp(due.max()).to_pydatetime() + timedelta(days=BUY_DAYS + 1)


def _orders(
    engine: Engine, buyers: pd.DataFrame, rng: np.random.Generator, due: np.ndarray
) -> None:
    """Write one order per buyer, a few hours to days after the e-mail."""
    if buyers.empty:
        return
    with engine.connect() as conn:
        prices = dict(conn.execute(select(Product.id, Product.price)).all())
    catalogue = [p for p, price in prices.items() if price is not None]
    with engine.begin() as conn:
        for (_, row), sent in zip(buyers.iterrows(), due, strict=True):
            at = pd.Timestamp(sent).to_pydatetime() + timedelta(
                hours=float(rng.uniform(2, BUY_DAYS * 24))
            )
            product = row["first_product"]
            if product is None or pd.isna(product) or prices.get(int(product)) is None:
                product = int(rng.choice(catalogue))
            order_id = conn.execute(
                insert(Order).values(
                    external_id=f"demo-{row['send_key']}",
                    customer_id=int(row["customer_id"]),
                    ordered_at=at,
                    status="placed",
                    updated_at=at,
                )
            ).inserted_primary_key
            assert order_id is not None
            conn.execute(
                insert(OrderLine).values(
                    order_id=int(order_id[0]),
                    line_no=1,
                    product_id=int(product),
                    quantity=int(rng.integers(1, 3)),
                    unit_price=Decimal(str(prices[int(product)])),
                    status="placed",
                )
            )


# ------------------------------------------------------------------ rounds


def demo_truth() -> Truth:
    """Return the hidden truth `nudge demo` simulates."""
    return Truth(variant_lift=DEMO_TRUTH_LIFT, campaign_effect=DEMO_TRUTH_EFFECT)


@dataclass(frozen=True)
class Round:
    """One week of the loop: the plan, what was delivered and what customers did."""

    week: int
    as_of: datetime
    run_id: int
    delivered: Delivered
    simulated: Simulated
    # Accepted e-mails per campaign and variant.
    variants: dict[str, dict[str, int]]


def weekly_rounds(
    engine: Engine,
    settings: Settings,
    shop: SyntheticShop,
    names: Sequence[str],
    truth: Truth,
    *,
    weeks: int,
    seed: int = 0,
    step: Callable[[str], None] | None = None,
) -> list[Round]:
    """Run the closed loop week by week from the shop's last day.

    Each week: refresh the profiles, plan the named campaigns (approving what
    needs approval), deliver to the outbox, let the simulated customers act.
    The next week's plan learns from all of it.
    """
    service = CampaignService(engine, settings)
    config = InsightConfig.from_settings(settings)
    start = naive_utc(shop.end)
    rounds = []
    for week in range(weeks):
        as_of = start + timedelta(days=7 * week)
        if step is not None:
            step(f"week {week + 1} of {weeks}: planning as of {as_of:%Y-%m-%d}")
        insight_service.refresh(engine, as_of, config)
        planned = pipeline.plan_and_record(
            engine, settings, names, as_of=as_of, service=service
        )
        run_id = planned.run_id
        assert run_id is not None
        if planned.plan.status == "awaiting_approval":
            service.approve(run_id, "nudge demo")
        delivered = pipeline.dispatch(
            engine, settings, now=as_of + timedelta(days=2), run_id=run_id, esp="outbox"
        )
        simulated = simulate(engine, shop, run_id, truth, seed=seed)
        rounds.append(
            Round(week, as_of, run_id, delivered, simulated, _variants(engine, run_id))
        )
    return rounds


def _variants(engine: Engine, run_id: int) -> dict[str, dict[str, int]]:
    statement = select(Send.campaign, Send.variant).where(
        Send.plan_run_id == run_id, Send.status == "accepted"
    )
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(statement).all(), columns=["c", "v"])
    return {
        str(c): {str(v): int(n) for v, n in g["v"].value_counts().items()}
        for c, g in frame.groupby("c")
    }
