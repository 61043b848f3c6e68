"""The next-best-action planner: per customer at most one e-mail, or none with a reason.

Pure: frames in, decisions out; nothing here reads the store or renders.

For a moment ``as_of`` (naive UTC) the plan covers sends due in
``[as_of, as_of + horizon)``. A scheduled campaign is due when its cron
schedule (in the shop's time zone) fires in that span; an event campaign is
due for each customer whose event (plus the campaign's delay) falls due in
it, or in the span before, which the previous plan could not yet see.

Every (campaign, customer) pair of a due campaign's audience gets one
decision, decided in this order:

1. **Suppressed** when the customer cannot be mailed or should not be:
   ``no_address``, ``unsubscribed``, ``no_consent``, ``cap`` (the global cap,
   the customer's own e-mails-a-week preference, the campaign's caps, the
   event's dedupe window and one send of a campaign per horizon, all counted
   over earlier sends, including ones still to go out) and
   ``below_threshold`` (expected incremental value under the threshold).
2. Among the rest, each customer's campaign with the highest priority wins,
   and between equal priorities the highest expected incremental value
   (response rate × order value − fatigue cost), then the name. The winner's
   products are fetched; a list shorter than the recipe's minimum suppresses
   it as ``list_too_short`` and the next campaign gets its turn. The others
   are suppressed as ``lost_to_another``.
3. A winner in the campaign's holdout (a stable hash of campaign and
   customer) becomes ``holdout``: recorded, never sent.
4. The send time moves to the next minute allowed by the campaign's send
   window and quiet hours in the customer's own time zone; a winner whose
   time moved is ``deferred`` (reason ``quiet_hours`` or ``send_window``),
   otherwise ``chosen`` (reason ``best_value``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd

from nudge.campaigns.config import PlannerConfig
from nudge.campaigns.cron import Cron
from nudge.campaigns.holdout import in_holdout, variants
from nudge.campaigns.learning import move_to_hour
from nudge.campaigns.schema import Campaign, Recipe
from nudge.campaigns.windows import build_rules, known_zone, next_allowed

Recommend = Callable[[npt.NDArray[Any], Recipe], pd.DataFrame]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

CHOSEN, DEFERRED, HOLDOUT, SUPPRESSED = "chosen", "deferred", "holdout", "suppressed"
# Products kept beyond a recipe's count, in rank order, for sold-out ones.
SPARE_ITEMS = 3
OUTCOMES: tuple[str, ...] = (CHOSEN, DEFERRED, HOLDOUT, SUPPRESSED)
# Each reason code with the words `nudge plan` shows for it.
REASONS: dict[str, str] = {
    "best_value": "highest expected value",
    "quiet_hours": "moved out of quiet hours",
    "send_window": "moved into the send window",
    "holdout": "control group",
    "no_address": "no e-mail address",
    "unsubscribed": "unsubscribed",
    "no_consent": "no consent",
    "cap": "frequency cap",
    "lost_to_another": "lost to another campaign",
    "list_too_short": "list too short",
    "below_threshold": "below value threshold",
}
SUPPRESSIONS: tuple[str, ...] = (
    "no_address",
    "unsubscribed",
    "no_consent",
    "cap",
    "lost_to_another",
    "list_too_short",
    "below_threshold",
)
ITEM_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "rank",
    "product_id",
    "score",
    "strategy",
    "reason_code",
    "reason",
)
DECISION_COLUMNS: tuple[str, ...] = (
    "campaign",
    "customer_id",
    "external_id",
    "outcome",
    "reason",
    "detail",
    "variant",
    "expected_value",
    "send_at",
    "occurrence",
)


@dataclass(frozen=True)
class Due:
    """Whether a campaign takes part in a plan, and why (or when it will)."""

    campaign: str
    due: bool
    note: str


@dataclass(frozen=True)
class PlanInput:
    """Everything one plan reads.

    ``customers`` is an audience frame (see `nudge.campaigns.audience`);
    ``events`` has customer_id (empty for product_added), event and
    occurred_at; ``history`` lists earlier e-mails as customer_id, campaign
    and send_at. Times are naive UTC.
    """

    as_of: datetime
    campaigns: Sequence[Campaign]
    customers: pd.DataFrame
    events: pd.DataFrame | None = None
    history: pd.DataFrame | None = None
    config: PlannerConfig = field(default_factory=PlannerConfig)
    shop_timezone: str = "Europe/London"
    # Campaigns an operator named: planned even when not due now.
    forced: frozenset[str] = frozenset()
    # Response rates learnt from feedback, replacing the campaigns' priors.
    response_rates: Mapping[str, float] = field(default_factory=dict)
    # Learnt per (campaign, segment), preferred over the per-campaign rates;
    # order values likewise, for campaigns with a fixed order value.
    segment_rates: Mapping[tuple[str, str], float] = field(default_factory=dict)
    segment_values: Mapping[tuple[str, str], float] = field(default_factory=dict)
    # Variant shares per campaign (Thompson sampling), aligned to its variants.
    variant_weights: Mapping[str, Sequence[float]] = field(default_factory=dict)
    # Each customer's preferred local send hour; "shop" for the shop-wide one.
    preferred_hours: Mapping[object, int] = field(default_factory=dict)
    # Order value of customers without one; default: the median of `customers`.
    fallback_order_value: float | None = None


@dataclass
class CampaignSummary:
    """The counts `nudge plan` prints for one campaign."""

    campaign: str
    note: str
    audience: int = 0
    chosen: int = 0
    deferred: int = 0
    holdout: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)
    variants: dict[str, int] = field(default_factory=dict)
    expected_value: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """Return the summary as plain JSON values."""
        return {
            "campaign": self.campaign,
            "note": self.note,
            "audience": self.audience,
            "chosen": self.chosen,
            "deferred": self.deferred,
            "holdout": self.holdout,
            "suppressed": self.suppressed,
            "variants": self.variants,
            "expected_value": round(self.expected_value, 2),
        }


@dataclass
class Plan:
    """The decisions of one plan, the products of its winners, and timings."""

    as_of: datetime
    due: list[Due]
    decisions: pd.DataFrame
    items: pd.DataFrame
    seconds: float = 0.0

    @property
    def campaigns(self) -> list[str]:
        """Return the names of the campaigns that took part."""
        return [d.campaign for d in self.due if d.due]

    def summaries(self) -> list[CampaignSummary]:
        """Count audience, outcomes, reasons and variants per campaign."""
        found: list[CampaignSummary] = []
        groups = dict(tuple(self.decisions.groupby("campaign", sort=False)))
        for due in self.due:
            if not due.due:
                continue
            summary = CampaignSummary(due.campaign, due.note)
            rows = groups.get(due.campaign)
            if rows is not None:
                _fill_summary(summary, rows)
            found.append(summary)
        return found


def _fill_summary(summary: CampaignSummary, rows: pd.DataFrame) -> None:
    """Put one campaign's counts into its summary."""
    outcome = rows["outcome"]
    summary.audience = len(rows)
    summary.chosen = int((outcome == CHOSEN).sum())
    summary.deferred = int((outcome == DEFERRED).sum())
    summary.holdout = int((outcome == HOLDOUT).sum())
    reasons = rows.loc[outcome == SUPPRESSED, "reason"].value_counts()
    summary.suppressed = {r: int(reasons.get(r, 0)) for r in SUPPRESSIONS}
    sent = rows[outcome.isin([CHOSEN, DEFERRED])]
    summary.variants = {
        str(k): int(v) for k, v in sent["variant"].value_counts().sort_index().items()
    }
    summary.expected_value = float(sent["expected_value"].sum())


# ------------------------------------------------------------------ candidates


@dataclass
class _Candidates:
    """One row per (campaign, customer) pair of the due audiences."""

    campaign: IntArray
    row: IntArray
    base_at: npt.NDArray[np.datetime64]
    occurrence: npt.NDArray[np.object_]

    def __len__(self) -> int:
        return len(self.row)

    @classmethod
    def join(cls, parts: Sequence[Part]) -> _Candidates:
        """Join each due campaign's (index, rows, send times, occurrences)."""
        nothing = np.zeros(0, dtype=np.int64)
        return cls(
            campaign=np.concatenate(
                [np.full(len(p.rows), p.index, dtype=np.int64) for p in parts]
                or [nothing]
            ),
            row=np.concatenate([p.rows for p in parts] or [nothing]),
            base_at=np.concatenate(
                [p.times for p in parts] or [np.zeros(0, "datetime64[ns]")]
            ).astype("datetime64[ns]"),
            occurrence=np.concatenate(
                [p.occurrences for p in parts] or [np.zeros(0, dtype=object)]
            ).astype(object),
        )


@dataclass(frozen=True)
class Part:
    """One due campaign's candidates: audience rows, send times, occurrences.

    The occurrence names what made the e-mail due, the same in every plan
    that sees it: the schedule's firing, the event's due minute, or (for new
    products, one digest a day) the day. The send ledger keeps one e-mail per
    (campaign, customer, occurrence).
    """

    index: int
    rows: IntArray
    times: npt.NDArray[np.datetime64]
    occurrences: npt.NDArray[np.object_]


def _minutes(moments: npt.NDArray[np.datetime64]) -> npt.NDArray[np.object_]:
    """Return moments as ISO text to the minute ("2026-12-03T09:00")."""
    text: npt.NDArray[np.object_] = np.datetime_as_string(
        moments.astype("datetime64[m]"), unit="m"
    ).astype(object)
    return text


def due_campaigns(data: PlanInput) -> tuple[list[Due], list[Part]]:
    """Decide which campaigns are due and who each one's candidates are."""
    as_of = data.as_of
    horizon = timedelta(hours=data.config.horizon_hours)
    zone = ZoneInfo(data.shop_timezone)
    events = data.events if data.events is not None else no_events()
    dues: list[Due] = []
    parts: list[Part] = []

    for index, campaign in enumerate(data.campaigns):
        forced = campaign.name in data.forced
        if not campaign.enabled and not forced:
            dues.append(Due(campaign.name, False, "disabled"))
            continue
        members = np.flatnonzero(campaign.audience_filter.matches(data.customers))
        cron = campaign.trigger.cron

        # Scheduled: the first firing in the horizon is everyone's send time;
        # event: each customer's latest event that falls due around now.
        if cron is not None:
            fire, note = _firing(cron, as_of, horizon, zone, forced)
            rows = members.astype(np.int64)
            times: npt.NDArray[np.datetime64] = np.full(
                len(rows), np.datetime64(fire or as_of, "ns")
            )
            occurrences = _minutes(times)
            due = fire is not None
        else:
            rows, times, occurrences, note = _event_candidates(
                campaign, events, data.customers, members, as_of, horizon
            )
            due = len(rows) > 0 or forced
        dues.append(Due(campaign.name, due, note))
        if due:
            parts.append(Part(index, rows, times, occurrences))
    return dues, parts


def _firing(
    cron: Cron, as_of: datetime, horizon: timedelta, zone: ZoneInfo, forced: bool
) -> tuple[datetime | None, str]:
    """Return a schedule's first firing in the horizon (None: not due) and a note."""
    fire = next(cron.firings(as_of, as_of + horizon, zone), None)
    if fire is not None:
        return fire, f"{cron.source!r} fires {_local(fire, zone)}"
    later = cron.next_after(as_of + horizon, zone)
    when = _local(later, zone) if later else "never within a year"
    if forced:
        return as_of, f"named, so planned now (next due {when})"
    return None, f"not due; next {when}"


def _event_candidates(
    campaign: Campaign,
    events: pd.DataFrame,
    customers: pd.DataFrame,
    members: IntArray,
    as_of: datetime,
    horizon: timedelta,
) -> tuple[IntArray, npt.NDArray[np.datetime64], npt.NDArray[np.object_], str]:
    """Return the audience rows an event campaign is due for, with send times
    and occurrences."""
    kind = campaign.trigger.event
    now = np.datetime64(as_of, "ns")
    occurred = pd.to_datetime(events["occurred_at"]).to_numpy("datetime64[ns]")
    due_at = occurred + np.timedelta64(campaign.trigger.delay_time)

    # Events known before now whose delay runs out in the horizon around now:
    # the span before now catches up on what the last plan could not see.
    keep = (
        (events["event"] == kind).to_numpy()
        & (occurred < now)
        & (due_at >= np.datetime64(as_of - horizon, "ns"))
        & (due_at < np.datetime64(as_of + horizon, "ns"))
    )
    if not keep.any():
        return (
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype="datetime64[ns]"),
            np.zeros(0, dtype=object),
            f"no {kind} events fall due",
        )

    # A new product concerns the whole audience, not one customer: one
    # digest a day whatever the number of products.
    if kind == "product_added":
        latest = max(due_at[keep].max(), now)
        base = np.full(len(members), latest)
        day = np.full(len(members), str(latest.astype("datetime64[D]")), dtype=object)
        note = f"{int(keep.sum())} products added"
        return members.astype(np.int64), base, day, note

    # Each customer's latest event, for audience members only.
    found = pd.DataFrame(
        {"customer_id": events["customer_id"].to_numpy()[keep], "due_at": due_at[keep]}
    )
    latest = found.groupby("customer_id")["due_at"].max()
    rows = pd.Index(customers["customer_id"].to_numpy()).get_indexer(latest.index)
    known = rows >= 0
    rows, when = rows[known], latest.to_numpy("datetime64[ns]")[known]
    inside = np.isin(rows, members)
    rows, when = rows[inside].astype(np.int64), when[inside]
    note = (
        f"{int(known.sum())} customers with {kind} events, {len(rows)} in the audience"
    )
    # The event's own due minute names the occurrence, also when the send
    # itself moves up to now because an earlier plan could not see it.
    return rows, np.maximum(when, now), _minutes(when), note


def no_events() -> pd.DataFrame:
    """Return an events frame without rows."""
    return pd.DataFrame(
        {
            "customer_id": pd.Series([], dtype=object),
            "event": pd.Series([], dtype=object),
            "occurred_at": pd.Series([], dtype="datetime64[ns]"),
        }
    )


def _local(moment: datetime | None, zone: ZoneInfo) -> str:
    """Show a naive UTC moment in a zone, to the minute."""
    if moment is None:
        return "never"
    stamp = pd.Timestamp(moment).tz_localize("UTC").tz_convert(zone)
    return f"{stamp:%a %Y-%m-%d %H:%M} {zone.key}"


# ------------------------------------------------------------------ the plan


@dataclass
class _Work:
    """The candidates with their scores and the decisions filled in step by step."""

    data: PlanInput
    candidates: _Candidates
    value: FloatArray
    response: FloatArray
    order_value: FloatArray
    fatigue: FloatArray
    outcome: npt.NDArray[np.object_]
    reason: npt.NDArray[np.object_]
    detail: npt.NDArray[np.object_]
    variant: npt.NDArray[np.object_]
    send_at: npt.NDArray[np.datetime64]
    items: list[pd.DataFrame] = field(default_factory=list)

    @property
    def open(self) -> npt.NDArray[np.bool_]:
        """Return the candidates no step has decided yet."""
        opened: npt.NDArray[np.bool_] = self.reason == ""
        return opened

    def suppress(
        self,
        where: npt.NDArray[np.bool_],
        reason: str,
        detail: str | Callable[[IntArray], list[str]],
    ) -> None:
        """Suppress undecided candidates with a reason (first reason wins).

        ``detail`` is one text for all, or a function of the suppressed
        candidates' indexes returning one text each.
        """
        hit = np.flatnonzero(where & self.open)
        if len(hit) == 0:
            return
        self.outcome[hit] = SUPPRESSED
        self.reason[hit] = reason
        self.detail[hit] = detail if isinstance(detail, str) else detail(hit)


def plan(data: PlanInput, recommend: Recommend) -> Plan:
    """Decide every due campaign's audience: at most one action per customer."""
    started = time.perf_counter()
    dues, parts = due_campaigns(data)
    work = _score(data, _Candidates.join(parts))

    _suppress_unreachable(work)
    _suppress_capped(work)
    _suppress_low_value(work)
    _arbitrate(work, recommend)
    _holdout_and_variants(work)
    _send_times(work)

    decisions = _decisions(work)
    items = (
        pd.concat(work.items, ignore_index=True)
        if work.items
        else pd.DataFrame({c: [] for c in ("campaign", *ITEM_COLUMNS)})
    )
    return Plan(data.as_of, dues, decisions, items, time.perf_counter() - started)


def _score(data: PlanInput, candidates: _Candidates) -> _Work:
    """Compute each candidate's expected incremental value."""
    n = len(candidates)
    customers = data.customers
    config = data.config
    campaigns = data.campaigns

    # Response rate and order value per campaign, the customer's own average
    # where the campaign says so (the shop's median for customers without one).
    rates = np.array(
        [data.response_rates.get(c.name, c.value.response_rate) for c in campaigns]
        or [0.0]
    )
    own = customers["avg_order_value"].to_numpy(np.float64)
    fallback = data.fallback_order_value or typical_order_value(
        customers, config.default_order_value
    )
    own = np.where(np.isfinite(own) & (own > 0), own, fallback)
    fixed = np.array(
        [
            np.nan if c.value.order_value == "customer" else float(c.value.order_value)
            for c in campaigns
        ]
        or [np.nan]
    )
    picked = fixed[candidates.campaign]
    order_value: FloatArray = np.where(
        np.isnan(picked), own[candidates.row], picked
    ).astype(np.float64)

    recent = _recent_counts(data, config.global_cap_days)
    fatigue: FloatArray = (config.fatigue_cost * (1.0 + recent[candidates.row])).astype(
        np.float64
    )
    response: FloatArray = rates[candidates.campaign].astype(np.float64)
    if data.segment_rates or data.segment_values:
        _learnt(data, candidates, response, order_value)
    value = response * order_value - fatigue
    empty = np.full(n, "", dtype=object)
    return _Work(
        data=data,
        candidates=candidates,
        value=value,
        response=response,
        order_value=order_value,
        fatigue=fatigue,
        outcome=empty.copy(),
        reason=empty.copy(),
        detail=empty.copy(),
        variant=np.full(n, None, dtype=object),
        send_at=np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]"),
    )


def _learnt(
    data: PlanInput,
    candidates: _Candidates,
    response: FloatArray,
    order_value: FloatArray,
) -> None:
    """Put learnt rates and values per (campaign, segment) over the priors, in place."""
    names = np.array([c.name for c in data.campaigns] or [""], dtype=object)
    segments = data.customers["segment"].astype(str).to_numpy(object)
    keys = list(
        zip(
            names[candidates.campaign].tolist(),
            segments[candidates.row].tolist(),
            strict=True,
        )
    )
    for i, key in enumerate(keys):
        rate = data.segment_rates.get(key)
        if rate is not None:
            response[i] = rate
        value = data.segment_values.get(key)
        if value is not None:
            order_value[i] = value


def typical_order_value(customers: pd.DataFrame, default: float) -> float:
    """Return the median average order value of customers who have one."""
    own = customers["avg_order_value"].to_numpy(np.float64)
    positive = own[np.isfinite(own) & (own > 0)]
    return float(np.median(positive)) if len(positive) else default


def _history_rows(
    data: PlanInput, days: float, campaign: str | None = None
) -> IntArray:
    """Return the customer rows of earlier sends in the last `days` days."""
    history = data.history
    if history is None or history.empty:
        return np.zeros(0, dtype=np.int64)
    since = np.datetime64(data.as_of - timedelta(days=days), "ns")
    sent = pd.to_datetime(history["send_at"]).to_numpy("datetime64[ns]")
    keep = sent >= since
    if campaign is not None:
        keep &= (history["campaign"] == campaign).to_numpy()
    ids = history["customer_id"].to_numpy()[keep]
    rows = pd.Index(data.customers["customer_id"].to_numpy()).get_indexer(ids)
    found: IntArray = rows[rows >= 0].astype(np.int64)
    return found


def _recent_counts(
    data: PlanInput, days: float, campaign: str | None = None
) -> IntArray:
    """Count earlier sends per customer row in the last `days` days."""
    rows = _history_rows(data, days, campaign)
    counts: IntArray = np.bincount(rows, minlength=len(data.customers)).astype(np.int64)
    return counts


def _suppress_unreachable(work: _Work) -> None:
    """Suppress customers without an address, unsubscribed, or without consent."""
    customers = work.data.customers
    row = work.candidates.row
    has_email = customers["has_email"].to_numpy(bool)[row]
    unsubscribed = customers["unsubscribed"].to_numpy(bool)[row]
    consent = customers["consent"].to_numpy(bool)[row]
    work.suppress(~has_email, "no_address", "no e-mail address on file")
    work.suppress(unsubscribed, "unsubscribed", "unsubscribed earlier")
    work.suppress(~consent, "no_consent", "no marketing consent")


def _suppress_capped(work: _Work) -> None:
    """Suppress candidates over the global, personal, campaign or dedupe caps."""
    data, config = work.data, work.data.config
    row, campaign = work.candidates.row, work.candidates.campaign
    if len(row) == 0:
        return

    # The global cap over every campaign together.
    days = config.global_cap_days
    recent = _recent_counts(data, days)[row]
    work.suppress(
        recent >= config.global_cap,
        "cap",
        lambda hit: [
            f"{n} e-mails in {days} days (global cap {config.global_cap})"
            for n in recent[hit].tolist()
        ],
    )

    # The customer's own limit from the preference centre.
    limit = data.customers["max_emails_per_week"].to_numpy(np.float64)[row]
    week = _recent_counts(data, 7)[row]
    personal = np.isfinite(limit) & (week >= limit)
    work.suppress(personal, "cap", "the customer's own limit of e-mails a week")

    # Each campaign's own caps, the dedupe window of event triggers, and one
    # send per horizon, so that planning again within it cannot send twice.
    hours = config.horizon_hours
    for index, spec in enumerate(data.campaigns):
        mine = campaign == index
        if not mine.any():
            continue
        limits = [(1, hours / 24, f"already planned in the last {hours} hours")]
        limits += [
            (c.max, float(c.days), f"campaign cap: {c.max} per {c.days} days")
            for c in spec.caps
        ]
        dedupe = spec.trigger.dedupe_time
        if dedupe > timedelta(0):
            window = dedupe / timedelta(days=1)
            limits.append((1, window, f"dedupe window of {spec.trigger.dedupe}"))
        for most, days_back, detail in limits:
            count = _recent_counts(data, days_back, spec.name)[row]
            work.suppress(mine & (count >= most), "cap", detail)


def _suppress_low_value(work: _Work) -> None:
    """Suppress candidates whose expected incremental value is under the threshold."""
    threshold = work.data.config.value_threshold
    work.suppress(
        work.value < threshold,
        "below_threshold",
        lambda hit: [
            f"expected value {v:.2f} < threshold {threshold:.2f}"
            for v in work.value[hit].tolist()
        ],
    )


def _ranking(work: _Work) -> IntArray:
    """Return candidate indexes best first: priority, then value, then name."""
    campaigns = work.data.campaigns
    priority = np.array([c.priority for c in campaigns] or [0])[
        work.candidates.campaign
    ]
    by_name = np.argsort(np.argsort([c.name for c in campaigns] or [""]))
    name_rank = by_name[work.candidates.campaign]
    order: IntArray = np.lexsort((name_rank, -work.value, -priority)).astype(np.int64)
    return order


def _firsts(order: IntArray, rows: IntArray) -> IntArray:
    """Return, from candidates in rank order, the first one of each customer."""
    if len(order) == 0:
        return order
    _, first = np.unique(rows[order], return_index=True)
    picked: IntArray = order[first]
    return picked


def _arbitrate(work: _Work, recommend: Recommend) -> None:
    """Pick each customer's best campaign whose product list is long enough."""
    campaigns = work.data.campaigns
    row = work.candidates.row
    customer_ids = work.data.customers["customer_id"].to_numpy()
    order = _ranking(work)
    checked = np.zeros(len(row), dtype=bool)

    # Fetch products for the winners; a failed winner passes the turn on.
    while True:
        ranked = order[work.open[order]]
        winners = _firsts(ranked, row)
        fresh = winners[~checked[winners]]
        if len(fresh) == 0:
            break
        checked[fresh] = True
        for index in np.unique(work.candidates.campaign[fresh]).tolist():
            mine = fresh[work.candidates.campaign[fresh] == index]
            _fetch_items(
                work, campaigns[index], mine, customer_ids[row[mine]], recommend
            )

    # The winners are chosen for now; everyone else lost to them.
    ranked = order[work.open[order]]
    winners = _firsts(ranked, row)
    winner_of_row = np.full(len(work.data.customers), -1, dtype=np.int64)
    winner_of_row[row[winners]] = winners
    work.outcome[winners] = CHOSEN
    work.reason[winners] = "best_value"
    losers = np.flatnonzero(work.open)
    beaten_by = winner_of_row[row[losers]]
    names = [c.name for c in campaigns]
    work.detail[losers] = [
        f"lost to {names[work.candidates.campaign[w]]} "
        f"(value {work.value[w]:.2f} vs {work.value[i]:.2f})"
        for i, w in zip(losers.tolist(), beaten_by.tolist(), strict=True)
    ]
    work.outcome[losers] = SUPPRESSED
    work.reason[losers] = "lost_to_another"
    _explain_winners(work, winners, ranked)


def _fetch_items(
    work: _Work,
    campaign: Campaign,
    candidates: IntArray,
    ids: npt.NDArray[Any],
    recommend: Recommend,
) -> None:
    """Fetch a campaign's products for some winners; suppress too-short lists."""
    recipe = campaign.recommend
    if recipe is None:
        return
    lists = _lists_by_variant(work, campaign, recipe, candidates, ids, recommend)
    # Spares beyond the count replace products that sell out before sending.
    lists = lists[lists["rank"] <= recipe.count + SPARE_ITEMS]
    counts = lists.groupby("customer_id").size()
    have = counts.reindex(pd.Index(ids)).fillna(0).to_numpy(np.int64)
    short = have < recipe.min_items
    mask = np.zeros(len(work.reason), dtype=bool)
    mask[candidates[short]] = True
    count_of = dict(zip(candidates.tolist(), have.tolist(), strict=True))
    work.suppress(
        mask,
        "list_too_short",
        lambda hit: [
            f"{count_of[i]} products, at least {recipe.min_items} needed"
            for i in hit.tolist()
        ],
    )
    kept = lists[lists["customer_id"].isin(set(ids[~short].tolist()))]
    if len(kept):
        work.items.append(
            kept.loc[:, list(ITEM_COLUMNS)].assign(campaign=campaign.name)
        )


def _variant_of(
    work: _Work, campaign: Campaign, candidates: IntArray
) -> npt.NDArray[np.object_]:
    """Return the variant each candidate gets: a stable hash over the shares."""
    keys = work.data.customers["external_id"].astype(str).to_numpy(object)
    learnt = work.data.variant_weights.get(campaign.name)
    weights = (
        list(learnt)
        if learnt is not None and len(learnt) == len(campaign.variants)
        else [v.weight for v in campaign.variants]
    )
    return variants(
        campaign.name,
        keys[work.candidates.row[candidates]].tolist(),
        [v.name for v in campaign.variants],
        weights,
    )


def _lists_by_variant(
    work: _Work,
    campaign: Campaign,
    recipe: Recipe,
    candidates: IntArray,
    ids: npt.NDArray[Any],
    recommend: Recommend,
) -> pd.DataFrame:
    """Fetch the products, with each variant's own strategy where it sets one."""
    own = {v.name: v.strategy for v in campaign.variants if v.strategy}
    if not own:
        return recommend(ids, recipe)
    picked = _variant_of(work, campaign, candidates)
    strategies = np.array(
        [own.get(str(v), recipe.strategy) for v in picked], dtype=object
    )
    parts = [
        recommend(ids[strategies == name], recipe.model_copy(update={"strategy": name}))
        for name in np.unique(strategies).tolist()
    ]
    return pd.concat(parts, ignore_index=True)


def _explain_winners(work: _Work, winners: IntArray, ranked: IntArray) -> None:
    """Write why each winner won: its value and the runner-up it beat."""
    names = [c.name for c in work.data.campaigns]
    row = work.candidates.row
    runner = np.full(len(work.data.customers), -1, dtype=np.int64)
    others = ranked[~np.isin(ranked, winners)]
    seconds = _firsts(others, row)
    runner[row[seconds]] = seconds
    beaten = runner[row[winners]]
    work.detail[winners] = [
        f"value {work.value[w]:.2f} = {work.response[w]:.1%} × "
        f"{work.order_value[w]:.2f} − fatigue {work.fatigue[w]:.2f}"
        + (
            f"; ahead of {names[work.candidates.campaign[b]]} ({work.value[b]:.2f})"
            if b >= 0
            else ""
        )
        for w, b in zip(winners.tolist(), beaten.tolist(), strict=True)
    ]


def _holdout_and_variants(work: _Work) -> None:
    """Put winners in the holdout by a stable hash, and give each a variant."""
    keys = work.data.customers["external_id"].astype(str).to_numpy(object)
    chosen = np.flatnonzero(work.outcome == CHOSEN)
    for index, campaign in enumerate(work.data.campaigns):
        mine = chosen[work.candidates.campaign[chosen] == index]
        if len(mine) == 0:
            continue
        mine_keys = keys[work.candidates.row[mine]].tolist()
        work.variant[mine] = _variant_of(work, campaign, mine)
        if campaign.holdout <= 0:
            continue
        held = mine[in_holdout(campaign.name, mine_keys, campaign.holdout)]
        work.outcome[held] = HOLDOUT
        work.reason[held] = "holdout"
        work.detail[held] = f"control group ({campaign.holdout:.0%} of the campaign)"


def _send_times(work: _Work) -> None:
    """Move winners' send times into their allowed hours; record who was deferred."""
    data = work.data
    shop = data.shop_timezone
    zones = np.array(
        [known_zone(z, shop) for z in data.customers["timezone"].tolist()], dtype=object
    )
    winners = np.flatnonzero(np.isin(work.outcome, [CHOSEN, HOLDOUT]))
    for index, campaign in enumerate(data.campaigns):
        mine = winners[work.candidates.campaign[winners] == index]
        if len(mine) == 0:
            continue
        window = campaign.send_window
        quiet = (
            campaign.quiet_hours
            if campaign.quiet_hours is not None
            else data.config.quiet_hours
        )
        rules = build_rules(
            window.days if window else None, window.hours if window else None, quiet
        )
        base = work.candidates.base_at[mine]
        mine_zones = zones[work.candidates.row[mine]]
        if window is not None and data.preferred_hours:
            # Inside a send window, each customer's own best hour comes first.
            base = _preferred(data, work.candidates.row[mine], base, mine_zones)
        moved, why = next_allowed(base, mine_zones, rules)
        work.send_at[mine] = moved

        # A moved send still goes, later: deferred, with the rule and times.
        later = (why != "") & (work.outcome[mine] == CHOSEN)
        hit = mine[later]
        work.outcome[hit] = DEFERRED
        work.reason[hit] = why[later]
        work.detail[hit] = [
            f"{_wall(b, z)} → {_wall(m, z)} {z}"
            for b, m, z in zip(
                base[later].tolist(),
                moved[later].tolist(),
                mine_zones[later],
                strict=True,
            )
        ]


def _preferred(
    data: PlanInput,
    rows: IntArray,
    base: npt.NDArray[np.datetime64],
    zones: npt.NDArray[np.object_],
) -> npt.NDArray[np.datetime64]:
    """Move sends to each customer's preferred hour (the shop's when unknown)."""
    ids = data.customers["customer_id"].to_numpy()[rows].tolist()
    shop = data.preferred_hours.get("shop")
    hours = [data.preferred_hours.get(i, shop) for i in ids]
    return move_to_hour(base, [str(z) for z in zones], hours)


def _wall(moment: Any, zone: str) -> str:
    """Show a naive UTC moment (nanoseconds or datetime) on a zone's clock."""
    stamp = pd.Timestamp(moment).tz_localize("UTC").tz_convert(zone)
    return f"{stamp:%a %H:%M}"


def _decisions(work: _Work) -> pd.DataFrame:
    """Assemble the decisions frame, one row per candidate."""
    data = work.data
    row = work.candidates.row
    names = np.array([c.name for c in data.campaigns] or [""], dtype=object)
    customers = data.customers
    return pd.DataFrame(
        {
            "campaign": names[work.candidates.campaign] if len(row) else [],
            "customer_id": customers["customer_id"].to_numpy()[row],
            "external_id": customers["external_id"].to_numpy(object)[row],
            "outcome": work.outcome,
            "reason": work.reason,
            "detail": work.detail,
            "variant": work.variant,
            "expected_value": np.round(work.value, 4),
            "send_at": work.send_at,
            "occurrence": work.candidates.occurrence,
        },
        columns=list(DECISION_COLUMNS),
    )
