"""What the e-mails earned: orders credited by last touch, and uplift over holdout.

Two answers, both per campaign and variant:

* Last touch (`attribute`): each placed order goes to the last e-mail its
  customer clicked within the click window before it, or failing that to the
  last one a person opened (never a machine open) within the open window. An
  order is credited to one e-mail at most, over every campaign together.
* Incremental (`effects`): the e-mails delivered (treated) against the
  campaign's control group (holdout rows, never sent). A recipient converts
  when the customer places an order within the click window after the send
  time, whatever they did with the e-mail; the difference in conversion rate
  and in revenue per recipient is the effect, with a confidence interval, and
  is called "significant" only when the interval excludes zero.

The functions on frames are pure; `measure` reads the store into them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import Connection, Engine, Float, func, select

from nudge.feedback.config import FeedbackConfig
from nudge.feedback.events import utcnow
from nudge.store.feedback_models import CLICK, OPEN, EngagementEvent
from nudge.store.models import Order, OrderLine
from nudge.store.send_models import ACCEPTED, Send

SIGNIFICANT = "significant"
NOT_YET = "not yet significant"
# The variant label of a campaign's whole comparison, and of rows without one.
ALL_VARIANTS = "all"
NO_VARIANT = "-"
# Values one bootstrap draw may hold at most (bounds memory on big campaigns).
_DRAW_LIMIT = 4_000_000

SEND_COLUMNS = [
    "send_id",
    "plan_run_id",
    "campaign",
    "variant",
    "customer_id",
    "holdout",
    "status",
    "due_at",
]
TOUCH_COLUMNS = ["send_id", "customer_id", "kind", "occurred_at", "machine_open"]
ORDER_COLUMNS = ["order_id", "customer_id", "ordered_at", "revenue"]
ATTRIBUTED_COLUMNS = [*ORDER_COLUMNS, "send_id", "touch", "touched_at"]


def _times(values: Any) -> pd.Series:
    """Return times as one datetime64 unit, so that frames merge on them."""
    return pd.Series(pd.to_datetime(values)).astype("datetime64[us]")


# ------------------------------------------------------------------ last touch


def attribute(
    orders: pd.DataFrame,
    touches: pd.DataFrame,
    *,
    click_window: timedelta,
    open_window: timedelta,
) -> pd.DataFrame:
    """Credit each order to the last e-mail clicked, else the last opened, before it.

    ``orders`` has ORDER_COLUMNS and ``touches`` TOUCH_COLUMNS (kinds other
    than click and open, and machine opens, are ignored). Returns the credited
    orders only, with the e-mail's ``send_id``, the ``touch`` ("click" or
    "open") and its time; an order has one row at most.
    """
    if orders.empty or touches.empty:
        return pd.DataFrame(columns=ATTRIBUTED_COLUMNS)
    orders = orders[ORDER_COLUMNS].assign(
        ordered_at=_times(orders["ordered_at"].to_numpy()),
        customer_id=orders["customer_id"].astype("int64").to_numpy(),
    )
    touches = touches.assign(
        occurred_at=_times(touches["occurred_at"].to_numpy()),
        customer_id=touches["customer_id"].astype("int64").to_numpy(),
    )
    clicks = touches[touches["kind"] == CLICK]
    opens = touches[(touches["kind"] == OPEN) & ~touches["machine_open"].astype(bool)]

    # Clicks first; only the orders no click explains look at human opens.
    by_click = _last_touch(orders, clicks, click_window).assign(touch=CLICK)
    rest = orders[~orders["order_id"].isin(by_click["order_id"])]
    by_open = _last_touch(rest, opens, open_window).assign(touch=OPEN)
    credited = pd.concat([by_click, by_open], ignore_index=True)
    credited["send_id"] = credited["send_id"].astype("int64")
    return credited.sort_values(["ordered_at", "order_id"], ignore_index=True)[
        ATTRIBUTED_COLUMNS
    ]


def _last_touch(
    orders: pd.DataFrame, touches: pd.DataFrame, window: timedelta
) -> pd.DataFrame:
    """Match each order with its customer's latest touch within the window."""
    if orders.empty or touches.empty:
        return pd.DataFrame(columns=[*ORDER_COLUMNS, "send_id", "touched_at"])
    # Ties at the same moment go to the later send, so the result is stable.
    right = touches.sort_values(["occurred_at", "send_id"])[
        ["customer_id", "occurred_at", "send_id"]
    ].rename(columns={"occurred_at": "touched_at"})
    merged = pd.merge_asof(
        orders.sort_values("ordered_at"),
        right,
        left_on="ordered_at",
        right_on="touched_at",
        by="customer_id",
        tolerance=pd.Timedelta(window),
        direction="backward",
    )
    return merged.dropna(subset=["send_id"])


# ------------------------------------------------------------------ outcomes


def recipients(sends: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """Keep the treated and control rows a comparison may use.

    Treated are the accepted sends outside the holdout. Control rows are the
    holdout rows due by ``now`` of the (run, campaign) pairs whose e-mails
    went out, so a run that was never sent adds no controls.
    """
    treated = ~sends["holdout"].astype(bool) & (sends["status"] == ACCEPTED)
    went_out = (
        sends.loc[treated, ["plan_run_id", "campaign"]]
        .drop_duplicates()
        .assign(_out=True)
    )
    flagged = sends.merge(went_out, on=["plan_run_id", "campaign"], how="left")
    control = (
        flagged["holdout"].astype(bool)
        & flagged["_out"].eq(True)
        & (_times(flagged["due_at"].to_numpy()) <= pd.Timestamp(now)).to_numpy()
    )
    keep = treated.to_numpy() | control.to_numpy()
    return sends[keep].reset_index(drop=True)


def outcomes(
    recipients: pd.DataFrame, orders: pd.DataFrame, *, window: timedelta
) -> pd.DataFrame:
    """Add each recipient's orders and revenue in the window after its send time.

    Every order counts for every e-mail whose window holds it: this is the
    recipient's behaviour, not a credit (`attribute` gives credits).
    """
    frame = recipients.copy()
    frame["orders"] = 0
    frame["revenue"] = 0.0
    if frame.empty or orders.empty:
        frame["converted"] = False
        return frame

    pairs = frame[["send_id", "customer_id", "due_at"]].merge(
        orders[["customer_id", "ordered_at", "revenue"]], on="customer_id"
    )
    due = _times(pairs["due_at"].to_numpy())
    at = _times(pairs["ordered_at"].to_numpy())
    inside = ((at >= due) & (at < due + pd.Timedelta(window))).to_numpy()
    totals = (
        pairs[inside]
        .groupby("send_id")
        .agg(orders=("revenue", "size"), revenue=("revenue", "sum"))
    )
    found = frame["send_id"].map(totals["orders"])
    frame["orders"] = found.fillna(0).astype("int64")
    frame["revenue"] = frame["send_id"].map(totals["revenue"]).fillna(0.0)
    frame["converted"] = frame["orders"] > 0
    return frame


# ------------------------------------------------------------------ effects


@dataclass(frozen=True, slots=True)
class Interval:
    """An estimate with the bounds of its confidence interval."""

    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """Tell whether the whole interval lies on one side of zero."""
        return bool(self.low > 0 or self.high < 0)

    def scaled(self, factor: float) -> Interval:
        """Return the interval multiplied by a positive factor."""
        return Interval(self.estimate * factor, self.low * factor, self.high * factor)

    def as_json(self) -> dict[str, float | None]:
        """Return the three numbers, None where unknown."""
        return {
            name: (None if np.isnan(value) else float(value))
            for name, value in (
                ("estimate", self.estimate),
                ("low", self.low),
                ("high", self.high),
            )
        }


UNKNOWN_INTERVAL = Interval(float("nan"), float("nan"), float("nan"))


@dataclass(frozen=True, slots=True)
class Effect:
    """Treated against holdout for one campaign and variant ("all": the campaign).

    ``verdict`` judges revenue per recipient, the figure that matters;
    ``conversion_verdict`` the conversion rate. ``note`` says why a comparison
    cannot be judged yet (no holdout, a holdout too small).
    """

    campaign: str
    variant: str
    treated: int
    control: int
    treated_conversions: int
    control_conversions: int
    treated_revenue: float
    control_revenue: float
    conversion_uplift: Interval
    revenue_uplift: Interval
    verdict: str
    conversion_verdict: str
    note: str = ""

    @property
    def treated_rate(self) -> float:
        """Return the share of treated recipients who ordered."""
        return _ratio(self.treated_conversions, self.treated)

    @property
    def control_rate(self) -> float:
        """Return the share of control recipients who ordered."""
        return _ratio(self.control_conversions, self.control)

    @property
    def incremental_revenue(self) -> Interval:
        """Return the revenue the e-mails added: uplift per recipient × treated."""
        return self.revenue_uplift.scaled(float(self.treated))

    def as_json(self) -> dict[str, Any]:
        """Return the comparison as plain JSON values."""
        return {
            "campaign": self.campaign,
            "variant": self.variant,
            "treated": self.treated,
            "control": self.control,
            "treated_conversions": self.treated_conversions,
            "control_conversions": self.control_conversions,
            "treated_conversion_rate": _plain(self.treated_rate),
            "control_conversion_rate": _plain(self.control_rate),
            "treated_revenue": self.treated_revenue,
            "control_revenue": self.control_revenue,
            "conversion_uplift": self.conversion_uplift.as_json(),
            "revenue_per_recipient_uplift": self.revenue_uplift.as_json(),
            "incremental_revenue": self.incremental_revenue.as_json(),
            "verdict": self.verdict,
            "conversion_verdict": self.conversion_verdict,
            "note": self.note,
        }


def _ratio(part: float, whole: float) -> float:
    return float(part) / float(whole) if whole else float("nan")


def _plain(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def rate_difference(
    successes_a: int, total_a: int, successes_b: int, total_b: int, confidence: float
) -> Interval:
    """Return rate a − rate b with Newcombe's hybrid score interval (method 10).

    It combines the Wilson score intervals of the two rates, so it keeps its
    coverage with few conversions and with rates near zero, where the usual
    normal (Wald) interval is too narrow or collapses to a point; it needs no
    resampling and gives the same answer every time.
    """
    if total_a == 0 or total_b == 0:
        return UNKNOWN_INTERVAL
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p_a, p_b = successes_a / total_a, successes_b / total_b
    low_a, high_a = _wilson(successes_a, total_a, z)
    low_b, high_b = _wilson(successes_b, total_b, z)
    difference = p_a - p_b
    return Interval(
        difference,
        difference - float(np.hypot(p_a - low_a, high_b - p_b)),
        difference + float(np.hypot(high_a - p_a, p_b - low_b)),
    )


def _wilson(successes: int, total: int, z: float) -> tuple[float, float]:
    """Return the Wilson score interval of a binomial rate."""
    p = successes / total
    z2 = z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z / (1 + z2 / total) * np.sqrt(p * (1 - p) / total + z2 / (4 * total**2))
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_difference(
    values_a: npt.ArrayLike,
    values_b: npt.ArrayLike,
    *,
    confidence: float,
    resamples: int,
    rng: np.random.Generator,
) -> Interval:
    """Return mean a − mean b with a percentile bootstrap interval.

    Revenue per recipient is mostly zeros with a long tail of large orders,
    so no normal approximation is trusted: each group is resampled on its own
    (two independent samples) and the interval is read off the resampled
    differences. The caller's seeded generator makes the interval repeatable.
    """
    a = np.asarray(values_a, dtype=np.float64)
    b = np.asarray(values_b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return UNKNOWN_INTERVAL
    draws = _bootstrap_means(a, resamples, rng) - _bootstrap_means(b, resamples, rng)
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return Interval(float(a.mean() - b.mean()), float(low), float(high))


def _bootstrap_means(
    values: npt.NDArray[np.float64], resamples: int, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """Return the means of bootstrap resamples of values, drawing only non-zeros.

    A resample of n values holds Binomial(n, k/n) of the k non-zero ones, each
    drawn uniformly from them, so drawing those alone gives the same
    distribution as resampling all n, at the cost of the converters only.
    """
    n = len(values)
    nonzero = values[values != 0]
    k = len(nonzero)
    if k == 0:
        return np.zeros(resamples)
    counts = rng.binomial(n, k / n, size=resamples)
    sums = np.empty(resamples)
    step = max(1, _DRAW_LIMIT // max(k, 1))
    for start in range(0, resamples, step):
        chunk = counts[start : start + step]
        picked = nonzero[rng.integers(0, k, size=int(chunk.sum()))]
        owner = np.repeat(np.arange(len(chunk)), chunk)
        sums[start : start + len(chunk)] = np.bincount(
            owner, weights=picked, minlength=len(chunk)
        )
    result: npt.NDArray[np.float64] = sums / n
    return result


def compare(
    campaign: str,
    variant: str,
    treated: pd.DataFrame,
    control: pd.DataFrame,
    config: FeedbackConfig,
) -> Effect:
    """Compare the outcomes of treated and control recipients of one group."""
    n_t, n_c = len(treated), len(control)
    conv_t, conv_c = int(treated["converted"].sum()), int(control["converted"].sum())
    note = ""
    if n_t == 0:
        note = "no delivered e-mails yet"
    elif n_c == 0:
        note = "no holdout to compare with"
    elif n_c < config.min_holdout:
        people = "recipient" if n_c == 1 else "recipients"
        note = (
            f"holdout too small: {n_c} {people}, at least {config.min_holdout} needed"
        )

    conversion = rate_difference(conv_t, n_t, conv_c, n_c, config.confidence)
    # A generator per group, so one campaign's interval never depends on
    # which other campaigns the same report holds.
    rng = np.random.default_rng(
        [config.seed, zlib.crc32(f"{campaign}\x1f{variant}".encode())]
    )
    revenue = mean_difference(
        treated["revenue"].to_numpy(np.float64),
        control["revenue"].to_numpy(np.float64),
        confidence=config.confidence,
        resamples=config.bootstrap_resamples,
        rng=rng,
    )
    judged = not note
    return Effect(
        campaign=campaign,
        variant=variant,
        treated=n_t,
        control=n_c,
        treated_conversions=conv_t,
        control_conversions=conv_c,
        treated_revenue=float(treated["revenue"].sum()),
        control_revenue=float(control["revenue"].sum()),
        conversion_uplift=conversion,
        revenue_uplift=revenue,
        verdict=SIGNIFICANT if judged and revenue.excludes_zero else NOT_YET,
        conversion_verdict=(
            SIGNIFICANT if judged and conversion.excludes_zero else NOT_YET
        ),
        note=note,
    )


def effects(outcomes: pd.DataFrame, config: FeedbackConfig) -> list[Effect]:
    """Compare treated with holdout per campaign: the whole campaign, then variants.

    ``outcomes`` has campaign, variant, holdout, converted and revenue per
    recipient. A variant is compared with the holdout rows of the same
    variant (the planner labels both from the same draw), so a variant's
    share changing between runs cannot bias its comparison.
    """
    found: list[Effect] = []
    if outcomes.empty:
        return found
    frame = outcomes.assign(
        variant=outcomes["variant"].fillna(NO_VARIANT).astype(str),
        holdout=outcomes["holdout"].astype(bool),
    )
    for campaign, rows in frame.groupby("campaign", sort=True):
        name = str(campaign)
        found.append(
            compare(
                name,
                ALL_VARIANTS,
                rows[~rows["holdout"]],
                rows[rows["holdout"]],
                config,
            )
        )
        for variant, group in rows.groupby("variant", sort=True):
            found.append(
                compare(
                    name,
                    str(variant),
                    group[~group["holdout"]],
                    group[group["holdout"]],
                    config,
                )
            )
    return found


# ------------------------------------------------------------------ the store


def read_sends(
    conn: Connection,
    *,
    campaign: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pd.DataFrame:
    """Read ledger rows (holdouts too) due in [since, until) as SEND_COLUMNS."""
    sends = Send.__table__.c
    query = select(
        sends.id.label("send_id"),
        sends.plan_run_id,
        sends.campaign,
        sends.variant,
        sends.customer_id,
        sends.holdout,
        sends.status,
        sends.due_at,
    ).where(*_send_filter(campaign, since, until))
    return _frame(conn, query, SEND_COLUMNS, times=("due_at",))


def _send_filter(
    campaign: str | None, since: datetime | None, until: datetime | None
) -> list[Any]:
    sends = Send.__table__.c
    where: list[Any] = []
    if campaign is not None:
        where.append(sends.campaign == campaign)
    if since is not None:
        where.append(sends.due_at >= since)
    if until is not None:
        where.append(sends.due_at < until)
    return where


def read_events(
    conn: Connection,
    *,
    campaign: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pd.DataFrame:
    """Read the engagement of the sends `read_sends` returns for the same filter."""
    events, sends = EngagementEvent.__table__.c, Send.__table__.c
    query = (
        select(
            events.send_id,
            sends.customer_id,
            events.kind,
            events.occurred_at,
            events.machine_open,
        )
        .join_from(
            EngagementEvent.__table__, Send.__table__, events.send_id == sends.id
        )
        .where(*_send_filter(campaign, since, until))
    )
    return _frame(conn, query, TOUCH_COLUMNS, times=("occurred_at",))


def read_touches(conn: Connection, start: datetime, end: datetime) -> pd.DataFrame:
    """Read the clicks and opens of every campaign's e-mails in [start, end)."""
    events, sends = EngagementEvent.__table__.c, Send.__table__.c
    query = (
        select(
            events.send_id,
            sends.customer_id,
            events.kind,
            events.occurred_at,
            events.machine_open,
        )
        .join_from(
            EngagementEvent.__table__, Send.__table__, events.send_id == sends.id
        )
        .where(
            events.kind.in_((CLICK, OPEN)),
            events.occurred_at >= start,
            events.occurred_at < end,
        )
    )
    return _frame(conn, query, TOUCH_COLUMNS, times=("occurred_at",))


def read_orders(conn: Connection, start: datetime, end: datetime) -> pd.DataFrame:
    """Read the placed orders in [start, end) of customers nudge has e-mailed.

    An order's revenue is the sum of its placed lines (quantity × unit price).
    """
    orders, lines = Order.__table__.c, OrderLine.__table__.c
    mailed = select(Send.__table__.c.customer_id).distinct()
    revenue = func.sum(lines.quantity * lines.unit_price, type_=Float())
    query = (
        select(
            orders.id.label("order_id"),
            orders.customer_id,
            orders.ordered_at,
            revenue.label("revenue"),
        )
        .join_from(Order.__table__, OrderLine.__table__, lines.order_id == orders.id)
        .where(
            orders.status == "placed",
            lines.status == "placed",
            orders.ordered_at >= start,
            orders.ordered_at < end,
            orders.customer_id.in_(mailed),
        )
        .group_by(orders.id, orders.customer_id, orders.ordered_at)
    )
    frame = _frame(conn, query, ORDER_COLUMNS, times=("ordered_at",))
    frame["revenue"] = frame["revenue"].astype("float64")
    return frame


def _frame(
    conn: Connection, query: Any, columns: list[str], times: Iterable[str]
) -> pd.DataFrame:
    rows = conn.execute(query).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=columns)
    for column in times:
        frame[column] = _times(frame[column].to_numpy())
    return frame


@dataclass(frozen=True)
class Measured:
    """The ledger rows of a report's scope with their outcomes, credits and effects.

    ``sends`` has SEND_COLUMNS; ``outcomes`` the treated and control rows with
    the orders and revenue of their window; ``attributed`` the orders credited
    to those sends; ``events`` the sends' engagement.
    """

    sends: pd.DataFrame
    outcomes: pd.DataFrame
    attributed: pd.DataFrame
    events: pd.DataFrame
    effects: list[Effect]


def measure(
    engine: Engine,
    config: FeedbackConfig,
    *,
    campaign: str | None = None,
    since: datetime | None = None,
    now: datetime | None = None,
) -> Measured:
    """Read the sends of a scope and measure what they earned, up to now."""
    now = now or utcnow()
    click_window = timedelta(days=config.click_window_days)
    open_window = timedelta(days=config.open_window_days)
    with engine.connect() as conn:
        sends = read_sends(conn, campaign=campaign, since=since, until=now)
        events = read_events(conn, campaign=campaign, since=since, until=now)
        if sends.empty:
            orders = pd.DataFrame(columns=ORDER_COLUMNS)
            touches = pd.DataFrame(columns=TOUCH_COLUMNS)
        else:
            # Touches of every campaign: an order may belong to another one.
            first = sends["due_at"].min().to_pydatetime()
            last = sends["due_at"].max().to_pydatetime() + click_window
            orders = read_orders(conn, first, min(last, now))
            touches = read_touches(conn, first - click_window, now)

    credited = attribute(
        orders, touches, click_window=click_window, open_window=open_window
    )
    credited = credited[credited["send_id"].isin(sends["send_id"])]
    measured = outcomes(recipients(sends, now), orders, window=click_window)
    return Measured(
        sends=sends,
        outcomes=measured,
        attributed=credited.reset_index(drop=True),
        events=events,
        effects=effects(measured, config),
    )
