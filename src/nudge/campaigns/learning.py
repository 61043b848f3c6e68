"""What the planner learns from past sends: variant shares, response, value, hours.

Pure functions over frames, and `learn`, which reads the send ledger, the
engagement events and the orders and returns a `Learned` for one plan:

- **Variant shares** by Thompson sampling: each variant's clicks per
  delivered e-mail get a Beta(1 + clicks, 1 + sends − clicks) posterior; a
  variant's share is the probability that it is the best, estimated by
  drawing from every posterior, floored at a minimum exploration share. The
  holdout is decided before variants and is never touched by this.
- **Response rate and order value per campaign × segment**: the share of
  delivered e-mails followed by an order within the attribution window, and
  the mean value of those orders, each shrunk toward the campaign's prior
  (its config) by a number of pseudo-sends, so a few results move little.
- **Preferred send hour per customer**: the hour (in the customer's own
  time zone) of most of their human opens and clicks; customers with too
  few fall back to the shop-wide most engaged hour, where there is one.
  Machine opens (privacy proxies) never count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import Engine, Table, and_, func, inspect, select

from nudge.campaigns.schema import Campaign
from nudge.campaigns.windows import known_zone
from nudge.store import queries
from nudge.store.feedback_models import EngagementEvent
from nudge.store.insight_models import CustomerProfile
from nudge.store.models import Customer, Order, OrderLine
from nudge.store.send_models import Send

_SENDS: Table = Send.__table__  # type: ignore[assignment]
_PROFILES: Table = CustomerProfile.__table__  # type: ignore[assignment]
DRAWS = 4_000


@dataclass(frozen=True)
class LearningConfig:
    """How much the planner trusts what it has seen."""

    # Every variant keeps at least this share of a campaign's sends.
    min_share: float = 0.1
    # A prior is worth this many delivered e-mails.
    prior_strength: float = 200.0
    # Orders this long after an e-mail count as its response.
    response_days: float = 5.0
    # Human opens and clicks a customer needs before their own hour is used.
    min_events: int = 3
    # History older than this is not read.
    lookback_days: float = 180.0


@dataclass(frozen=True)
class Learned:
    """What one plan uses from past results (empty: the campaign files' priors)."""

    variant_weights: Mapping[str, Sequence[float]] = field(default_factory=dict)
    response_rates: Mapping[tuple[str, str], float] = field(default_factory=dict)
    order_values: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # customer_id -> preferred local hour (0–23); "shop" -> the shop-wide hour.
    preferred_hours: Mapping[object, int] = field(default_factory=dict)


# ------------------------------------------------------------------ pure parts


def thompson_shares(
    sends: Sequence[int],
    clicks: Sequence[int],
    *,
    min_share: float = 0.1,
    draws: int = DRAWS,
    rng: np.random.Generator | None = None,
) -> npt.NDArray[np.float64]:
    """Return each arm's share: P(best) under Beta posteriors, floored, summing to 1."""
    n = len(sends)
    if n == 0:
        return np.zeros(0)
    if n == 1:
        return np.ones(1)
    rng = rng or np.random.default_rng(0)
    trials = np.asarray(sends, dtype=np.float64)
    wins = np.minimum(np.asarray(clicks, dtype=np.float64), trials)
    samples = rng.beta(1.0 + wins, 1.0 + trials - wins, size=(draws, n))
    best = np.bincount(samples.argmax(axis=1), minlength=n) / draws
    floor = min(max(min_share, 0.0), 1.0 / n)
    shares: npt.NDArray[np.float64] = floor + (1.0 - floor * n) * best
    normal: npt.NDArray[np.float64] = shares / shares.sum()
    return normal


def shrink(successes: float, trials: float, prior: float, strength: float) -> float:
    """Return a rate shrunk toward a prior worth `strength` trials."""
    return (successes + prior * strength) / (trials + strength)


def preferred_hours(
    events: pd.DataFrame, zones: Mapping[object, str], shop_zone: str, min_events: int
) -> dict[object, int]:
    """Return each customer's most engaged local hour, and the shop's under "shop".

    ``events`` has customer_id and occurred_at (naive UTC) of human opens and
    clicks; customers with fewer than ``min_events`` get no hour of their own.
    """
    if events.empty:
        return {}
    stamps = pd.to_datetime(events["occurred_at"]).dt.tz_localize("UTC")
    customers = events["customer_id"].to_numpy()
    zone_names = np.array(
        [known_zone(zones.get(c), shop_zone) for c in customers], dtype=object
    )
    hours = np.empty(len(events), dtype=np.int64)
    for zone in np.unique(zone_names):
        mask = zone_names == zone
        hours[mask] = stamps[mask].dt.tz_convert(ZoneInfo(str(zone))).dt.hour
    frame = pd.DataFrame({"customer_id": customers, "hour": hours})
    found: dict[object, int] = {}
    shop = frame["hour"].mode()
    if len(shop):
        found["shop"] = int(shop.min())
    counts = frame.groupby(["customer_id", "hour"]).size().rename("n").reset_index()
    totals = counts.groupby("customer_id")["n"].transform("sum")
    counts = counts[totals >= min_events]
    # The most engaged hour; ties go to the earliest.
    top = counts.sort_values(
        ["customer_id", "n", "hour"], ascending=[True, False, True]
    )
    for customer, hour in top.drop_duplicates("customer_id")[
        ["customer_id", "hour"]
    ].itertuples(index=False):
        found[customer] = int(hour)
    return found


def move_to_hour(
    base: npt.NDArray[np.datetime64],
    zones: Sequence[str],
    hours: Sequence[int | None],
) -> npt.NDArray[np.datetime64]:
    """Move each send to the first time at or after it on its preferred local hour."""
    moved = base.copy()
    for i, (moment, zone, hour) in enumerate(zip(base, zones, hours, strict=True)):
        if hour is None or np.isnat(moment):
            continue
        local = pd.Timestamp(moment).tz_localize("UTC").tz_convert(ZoneInfo(zone))
        target = local.replace(hour=int(hour), minute=0, second=0, microsecond=0)
        if target < local.floor("min"):
            target = (target + timedelta(days=1)).replace(hour=int(hour))
        moved[i] = np.datetime64(target.tz_convert("UTC").tz_localize(None), "ns")
    return moved


# ------------------------------------------------------------------ the store


def learn(
    engine: Engine,
    as_of: datetime,
    campaigns: Sequence[Campaign],
    shop_zone: str,
    config: LearningConfig | None = None,
) -> Learned:
    """Read past sends and what followed them; return what the next plan uses."""
    config = config or LearningConfig()
    if not inspect(engine).has_table("engagement_events"):
        return Learned()
    since = as_of - timedelta(days=config.lookback_days)
    sends = _delivered(engine, since, as_of)
    if sends.empty:
        return Learned()
    engagement = _engagement(engine, since, as_of)
    clicked = set(
        engagement.loc[engagement["kind"] == "click", "send_id"].dropna().astype(int)
    )
    sends["clicked"] = sends["id"].astype(int).isin(clicked)

    weights: dict[str, list[float]] = {}
    for campaign in campaigns:
        mine = sends[sends["campaign"] == campaign.name]
        if len(campaign.variants) < 2 or mine.empty:
            continue
        names = [v.name for v in campaign.variants]
        per = mine.groupby("variant")["clicked"].agg(["size", "sum"])
        per = per.reindex(names, fill_value=0)
        weights[campaign.name] = thompson_shares(
            per["size"].tolist(), per["sum"].tolist(), min_share=config.min_share
        ).tolist()

    rates, values = _responses(engine, sends, campaigns, as_of, config)
    zones = _zones(engine)
    human = engagement[
        engagement["kind"].isin(["open", "click"]) & ~engagement["machine_open"]
    ]
    hours = preferred_hours(
        human.dropna(subset=["customer_id"]), zones, shop_zone, config.min_events
    )
    return Learned(weights, rates, values, hours)


def _delivered(engine: Engine, since: datetime, until: datetime) -> pd.DataFrame:
    """Return accepted, non-holdout sends in [since, until) with the segment then."""
    statement = select(
        _SENDS.c.id,
        _SENDS.c.campaign,
        _SENDS.c.customer_id,
        _SENDS.c.variant,
        _SENDS.c.due_at,
    ).where(
        _SENDS.c.status == "accepted",
        _SENDS.c.holdout.is_(False),
        _SENDS.c.due_at >= since,
        _SENDS.c.due_at < until,
    )
    with engine.connect() as conn:
        result = conn.execute(statement)
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))
        latest = conn.execute(
            select(func.max(_PROFILES.c.as_of)).where(_PROFILES.c.as_of <= until)
        ).scalar()
        segments = pd.DataFrame(columns=["customer_id", "segment"])
        if latest is not None:
            rows = conn.execute(
                select(_PROFILES.c.customer_id, _PROFILES.c.segment).where(
                    _PROFILES.c.as_of == latest
                )
            ).all()
            segments = pd.DataFrame(rows, columns=["customer_id", "segment"])
    if frame.empty:
        return frame
    segment = segments.set_index("customer_id")["segment"]
    frame["segment"] = frame["customer_id"].map(segment).fillna("none").astype(str)
    return frame


def _engagement(engine: Engine, since: datetime, until: datetime) -> pd.DataFrame:
    """Return engagement events in [since, until) with their send and customer."""
    table = EngagementEvent.__table__
    statement = select(
        table.c.send_id,
        table.c.customer_id,
        table.c.kind,
        table.c.occurred_at,
        table.c.machine_open,
    ).where(table.c.occurred_at >= since, table.c.occurred_at < until)
    with engine.connect() as conn:
        result = conn.execute(statement)
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    frame["machine_open"] = frame["machine_open"].fillna(False).astype(bool)
    return frame


def _responses(
    engine: Engine,
    sends: pd.DataFrame,
    campaigns: Sequence[Campaign],
    as_of: datetime,
    config: LearningConfig,
) -> tuple[dict[tuple[str, str], float], dict[tuple[str, str], float]]:
    """Return shrunk response rates and order values per (campaign, segment)."""
    window = timedelta(days=config.response_days)
    statement = (
        select(
            Order.customer_id,
            Order.ordered_at,
            func.sum(OrderLine.quantity * OrderLine.unit_price).label("value"),
        )
        .join(OrderLine, OrderLine.order_id == Order.id)
        .where(
            and_(
                Order.status == "placed",
                OrderLine.status == "placed",
                Order.customer_id.in_(sends["customer_id"].unique().tolist()),
                Order.ordered_at >= pd.Timestamp(sends["due_at"].min()).to_pydatetime(),
                Order.ordered_at < as_of,
            )
        )
        .group_by(Order.id, Order.customer_id, Order.ordered_at)
    )
    with engine.connect() as conn:
        orders = pd.DataFrame(
            conn.execute(statement).all(),
            columns=["customer_id", "ordered_at", "value"],
        )
    # A send responded when its customer ordered within the window after it.
    joined = sends.merge(orders, on="customer_id", how="left")
    after = pd.to_datetime(joined["ordered_at"]) - pd.to_datetime(joined["due_at"])
    hit = (after >= pd.Timedelta(0)) & (after <= window)
    first = joined[hit].sort_values("ordered_at").drop_duplicates("id")
    responded = sends.merge(first[["id", "value"]], on="id", how="left").assign(
        responded=lambda f: f["value"].notna()
    )

    priors = {c.name: c for c in campaigns}
    rates: dict[tuple[str, str], float] = {}
    values: dict[tuple[str, str], float] = {}
    for (name, segment), group in responded.groupby(["campaign", "segment"]):
        campaign = priors.get(str(name))
        if campaign is None:
            continue
        key = (str(name), str(segment))
        prior_rate = campaign.value.response_rate
        rates[key] = shrink(
            float(group["responded"].sum()),
            len(group),
            prior_rate,
            config.prior_strength,
        )
        bought = group.loc[group["responded"], "value"].astype(float)
        if campaign.value.order_value != "customer" and len(bought):
            prior_value = float(campaign.value.order_value)
            # Order value is shrunk by orders, not sends: a prior of 20 orders.
            values[key] = (bought.sum() + prior_value * 20) / (len(bought) + 20)
    return rates, values


def _zones(engine: Engine) -> dict[object, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Customer.id, Customer.timezone).where(Customer.timezone.is_not(None))
        ).all()
    return {int(i): str(z) for i, z in rows}


# ------------------------------------------------------------------ ignored items


def ignored_items(
    engine: Engine, as_of: datetime, days: float, times: int
) -> set[tuple[int, int]]:
    """Return (customer, product) pairs e-mailed ``times`` times or more, never clicked.

    A product counts as shown when it was among an accepted e-mail's first
    products; a click on any e-mail of the customer that led to the
    product's page clears it.
    """
    if not inspect(engine).has_table("engagement_events"):
        return set()
    since = as_of - timedelta(days=days)
    statement = select(_SENDS.c.id, _SENDS.c.customer_id, _SENDS.c["items"]).where(
        _SENDS.c.status == "accepted",
        _SENDS.c.due_at >= since,
        _SENDS.c.due_at < as_of,
    )
    events: Table = EngagementEvent.__table__  # type: ignore[assignment]
    with engine.connect() as conn:
        sends = conn.execute(statement).all()
        clicked = conn.execute(
            select(events.c.customer_id, events.c.url).where(
                events.c.kind == "click",
                events.c.occurred_at >= since,
                events.c.customer_id.is_not(None),
            )
        ).all()
    shown: dict[tuple[int, int], int] = {}
    for _, customer, items in sends:
        for entry in (items or [])[:SHOWN_ITEMS]:
            key = (int(customer), int(entry["product_id"]))
            shown[key] = shown.get(key, 0) + 1
    paths: dict[int, set[str]] = {}
    for customer, url in clicked:
        paths.setdefault(int(customer), set()).add(queries.page_path(url))
    urls = queries.product_pages(engine, {p for _, p in shown}) if paths else {}
    return {
        (customer, product)
        for (customer, product), n in shown.items()
        if n >= times and urls.get(product) not in paths.get(customer, set())
    }


SHOWN_ITEMS = 6  # products a customer sees in an e-mail, at most


def damp(
    lists: pd.DataFrame, ignored: set[tuple[int, int]], factor: float
) -> pd.DataFrame:
    """Multiply ignored products' scores by a factor and rank each list again."""
    if not ignored or lists.empty:
        return lists
    pairs = list(
        zip(
            lists["customer_id"].astype(int).tolist(),
            lists["product_id"].astype(int).tolist(),
            strict=True,
        )
    )
    hit = np.array([pair in ignored for pair in pairs], dtype=bool)
    if not hit.any():
        return lists
    out = lists.copy()
    # Scores of different strategies are not comparable: damp by rank instead,
    # moving an ignored product behind the ones it beat by less than the factor.
    position = out["rank"].to_numpy(np.float64)
    out["_order"] = np.where(hit, position / max(factor, 1e-9), position)
    out = out.sort_values(["customer_id", "_order"], kind="stable")
    out["rank"] = out.groupby("customer_id").cumcount() + 1
    return out.drop(columns="_order").reset_index(drop=True)
