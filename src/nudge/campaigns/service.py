"""Run the planner against the store: read profiles, events and sends, write plans.

This is the only campaigns module that touches the database. A plan reads
the customer profiles (the newest stored snapshot at or before the moment,
computed when there is none), the customers' consent and preferences, the
events that trigger campaigns, and the e-mails earlier plans chose (for the
caps, see `sent_history`); it writes one `PlanRun` and a `PlanDecision` per
(campaign, customer) pair of the due audiences, in one transaction.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import Engine, Table, and_, func, insert, or_, select, update

from nudge.campaigns.audience import audience_frame
from nudge.campaigns.config import PlannerConfig
from nudge.campaigns.learning import damp, ignored_items, learn
from nudge.campaigns.planner import (
    CHOSEN,
    DEFERRED,
    HOLDOUT,
    ITEM_COLUMNS,
    SPARE_ITEMS,
    Plan,
    PlanInput,
    Recommend,
    no_events,
    plan,
    typical_order_value,
)
from nudge.campaigns.schema import (
    Campaign,
    CampaignFile,
    Recipe,
    check_folder,
    load_campaigns,
)
from nudge.errors import NudgeError
from nudge.ingest.writer import bulk_insert
from nudge.insight import service as insight_service
from nudge.insight.config import InsightConfig
from nudge.logging import get_logger
from nudge.recommend.base import Strategy
from nudge.settings import Settings
from nudge.store import queries
from nudge.store.campaign_models import PlanDecision, PlanRun
from nudge.store.insight_models import CustomerProfile
from nudge.store.models import BehaviourEvent, Customer, Order, Product
from nudge.store.send_models import Send

log = get_logger(__name__)

_RUNS: Table = PlanRun.__table__  # type: ignore[assignment]
_DECISIONS: Table = PlanDecision.__table__  # type: ignore[assignment]
_PROFILES: Table = CustomerProfile.__table__  # type: ignore[assignment]
_SENDS: Table = Send.__table__  # type: ignore[assignment]
# Ledger statuses of e-mails that never reached anyone: they do not count.
NEVER_SENT: tuple[str, ...] = ("failed", "suppressed")
# Outcomes that put an e-mail on its way, and so count towards caps.
SENDING: tuple[str, ...] = (CHOSEN, DEFERRED)
# How far back the "cart" strategy looks for products left in a basket.
CART_DAYS = timedelta(days=7)
Step = Callable[[str], None]


class PlanLookupError(NudgeError, LookupError):
    """A plan run or customer asked for does not exist."""


class ApprovalError(NudgeError):
    """A plan run cannot be approved in its present state."""


@dataclass(frozen=True)
class PlanResult:
    """A plan, the run it was stored as, and where its profiles came from."""

    plan: Plan
    run_id: int | None
    status: str
    profiles_as_of: datetime
    profiles_stored: bool


@dataclass(frozen=True)
class Audience:
    """The audience frame of a moment and where its profiles came from."""

    frame: pd.DataFrame
    profiles_as_of: datetime
    stored: bool
    previous: pd.DataFrame | None


def utc_now() -> datetime:
    """Return the current time as naive UTC, whole seconds."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def naive_utc(moment: datetime) -> datetime:
    """Return a moment as naive UTC (naive input is taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def sent_history(engine: Engine, as_of: datetime, days: float) -> pd.DataFrame:
    """Return the e-mails that count towards caps: customer_id, campaign, send_at.

    Every cap reads this one function. It counts the chosen and deferred
    decisions of plans made before ``as_of`` (any status, so an approval that
    comes later cannot push a customer over a cap), with send times from
    ``days`` before ``as_of`` on, except the e-mails the send ledger shows
    never went (failed, or suppressed at send time); re-planning the same
    moment does not count itself, and the same e-mail planned twice counts
    once.
    """
    since = as_of - timedelta(days=days)
    statement = (
        select(_DECISIONS.c.customer_id, _DECISIONS.c.campaign, _DECISIONS.c.send_at)
        .join(_RUNS, _RUNS.c.id == _DECISIONS.c.run_id)
        .outerjoin(
            _SENDS,
            and_(
                _SENDS.c.plan_run_id == _DECISIONS.c.run_id,
                _SENDS.c.campaign == _DECISIONS.c.campaign,
                _SENDS.c.customer_id == _DECISIONS.c.customer_id,
            ),
        )
        .where(
            _RUNS.c.as_of < as_of,
            _DECISIONS.c.outcome.in_(SENDING),
            _DECISIONS.c.send_at >= since,
            or_(_SENDS.c.status.is_(None), _SENDS.c.status.not_in(NEVER_SENT)),
        )
        .distinct()
    )
    with engine.connect() as conn:
        rows = conn.execute(statement).all()
    return pd.DataFrame(rows, columns=["customer_id", "campaign", "send_at"])


class CampaignService:
    """Plan, store, approve and compare campaign runs over one store."""

    def __init__(
        self, engine: Engine, settings: Settings, config: PlannerConfig | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.config = config or PlannerConfig.from_settings(settings)
        self.campaigns_dir = settings.path(self.config.campaigns_dir)
        self.templates_dir = settings.path(self.config.templates_dir)

    def campaigns(self, names: Sequence[str] = ()) -> list[CampaignFile]:
        """Load the campaign files (all, or the named ones)."""
        return load_campaigns(self.campaigns_dir, names)

    def check(self) -> tuple[list[CampaignFile], list[str]]:
        """Validate every campaign file and its template; return problems as lines."""
        return check_folder(self.campaigns_dir, self.templates_dir)

    # ------------------------------------------------------------ reading

    def audience(self, as_of: datetime) -> Audience:
        """Build the audience frame as of a moment, from stored profiles if any."""
        moment = _latest_snapshot(self.engine, as_of)
        previous = None
        if moment is not None:
            profiles = insight_service.stored_profiles(self.engine, moment)
            stored = True
            before = _latest_snapshot(self.engine, moment, strictly=True)
            if before is not None:
                previous = insight_service.stored_profiles(self.engine, before)
        else:
            config = InsightConfig.from_settings(self.settings)
            snapshot = insight_service.snapshot(self.engine, as_of, config)
            profiles, moment, stored = snapshot.frame, snapshot.as_of, snapshot.stored

        customers = queries.customers(self.engine, as_of)
        addressed = _addressed(self.engine)
        customers["has_email"] = customers["id"].isin(addressed).to_numpy()
        frame = audience_frame(profiles, customers, as_of)
        return Audience(frame, moment, stored, previous)

    def events(
        self, as_of: datetime, kinds: set[str], since: datetime, audience: Audience
    ) -> pd.DataFrame:
        """Return trigger events in [since, as_of): customer_id, event, occurred_at."""
        parts = [no_events()]
        if "order_placed" in kinds:
            parts.append(_orders_placed(self.engine, since, as_of))
        if "cart_abandoned" in kinds:
            parts.append(_carts_abandoned(self.engine, since, as_of))
        if "product_added" in kinds:
            parts.append(_products_added(self.engine, since, as_of))
        for kind, column in (
            ("stage_changed", "stage"),
            ("segment_entered", "segment"),
        ):
            if kind in kinds:
                parts.append(_profile_changes(audience, kind, column))
        frames = [p for p in parts if len(p)]
        return pd.concat(frames, ignore_index=True) if frames else parts[0]

    def recommender(self, as_of: datetime) -> Recommend:
        """Return the planner's recommend callable backed by `nudge.recommend`."""
        return StoreRecommender(self.engine, self.settings, as_of)

    # ------------------------------------------------------------ planning

    def plan(
        self,
        as_of: datetime | None = None,
        names: Sequence[str] = (),
        *,
        save: bool = True,
        recommend: Recommend | None = None,
        step: Step | None = None,
        restrict_to: Sequence[int] | None = None,
        audience: Audience | None = None,
        keep_empty: bool = True,
    ) -> PlanResult:
        """Plan the due campaigns (or the named ones) as of a moment and store it.

        ``restrict_to`` plans for some customers (store ids) only, as previews
        do; ``audience`` reuses an audience frame read for the same moment;
        ``keep_empty=False`` stores nothing when no one was decided for (the
        periodic plan of triggered campaigns).
        """
        step = step or (lambda _: None)
        moment = naive_utc(as_of) if as_of is not None else utc_now()
        campaigns = [f.campaign for f in self.campaigns(names)]

        step("reading profiles")
        audience = audience or self.audience(moment)
        data = self.inputs(moment, campaigns, audience, names, restrict_to)

        step("deciding")
        made = plan(data, recommend or self.recommender(moment))
        approval = any(
            c.approval == "required" for c in campaigns if c.name in made.campaigns
        )
        status = "awaiting_approval" if approval else "planned"
        run_id = None
        if save and (keep_empty or len(made.decisions)):
            step("writing the plan")
            run_id = self._save(made, status)
        log.info(
            "plan made",
            run=run_id,
            as_of=moment.isoformat(),
            campaigns=len(made.campaigns),
            decisions=len(made.decisions),
            status=status,
            seconds=round(made.seconds, 2),
        )
        return PlanResult(
            made, run_id, status, audience.profiles_as_of, audience.stored
        )

    def inputs(
        self,
        moment: datetime,
        campaigns: list[Campaign],
        audience: Audience,
        names: Sequence[str],
        restrict_to: Sequence[int] | None,
    ) -> PlanInput:
        """Gather the planner's inputs: customers, trigger events, earlier sends."""
        # The shop-wide typical order value, taken before any restriction so
        # that a preview of one customer values it as the full plan would.
        frame = audience.frame
        fallback = typical_order_value(frame, self.config.default_order_value)
        if restrict_to is not None:
            frame = frame[frame["customer_id"].isin(list(restrict_to))]
            frame = frame.reset_index(drop=True)

        # Events far enough back for the longest delay, sends far enough back
        # for the longest cap or dedupe window.
        triggered = [c for c in campaigns if not c.scheduled]
        longest = max((c.trigger.delay_time for c in triggered), default=timedelta(0))
        since = moment - timedelta(hours=self.config.horizon_hours) - longest
        kinds = {str(c.trigger.event) for c in triggered}
        days = max(
            [self.config.global_cap_days, 7]
            + [cap.days for c in campaigns for cap in c.caps]
            + [c.trigger.dedupe_time / timedelta(days=1) for c in campaigns]
        )
        # What earlier sends taught: variant shares, response, send hours.
        learned = learn(self.engine, moment, campaigns, self.settings.shop_timezone)
        return PlanInput(
            as_of=moment,
            campaigns=campaigns,
            customers=frame,
            events=self.events(moment, kinds, since, audience),
            history=sent_history(self.engine, moment, days),
            config=self.config,
            shop_timezone=self.settings.shop_timezone,
            forced=frozenset(names),
            fallback_order_value=fallback,
            segment_rates=learned.response_rates,
            segment_values=learned.order_values,
            variant_weights=learned.variant_weights,
            preferred_hours=learned.preferred_hours,
        )

    def _save(self, made: Plan, status: str) -> int:
        """Store a plan's run and decisions in one transaction; return the run id."""
        summary = {
            "due": {d.campaign: d.note for d in made.due if d.due},
            "campaigns": {s.campaign: s.as_json() for s in made.summaries()},
        }
        decisions = made.decisions.drop(columns=["external_id"])
        decisions["detail"] = decisions["detail"].str.slice(0, 255)
        decisions["items"] = pd.Series(_item_lists(made), dtype=object)
        decisions["send_at"] = (
            decisions["send_at"]
            .astype(object)
            .where(decisions["send_at"].notna(), None)
        )
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(_RUNS).values(
                    created_at=utc_now(),
                    as_of=made.as_of,
                    campaigns=made.campaigns,
                    status=status,
                    summary=summary,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            run_id = int(key[0])
            bulk_insert(conn, _DECISIONS, decisions.assign(run_id=run_id))
        return run_id

    # ------------------------------------------------------------ runs

    def run(self, run_id: int) -> dict[str, Any]:
        """Return one stored run as a dict of its columns."""
        with self.engine.connect() as conn:
            row = conn.execute(select(_RUNS).where(_RUNS.c.id == run_id)).mappings()
            found = row.first()
        if found is None:
            raise PlanLookupError(f"no plan run {run_id}")
        return dict(found)

    def approve(self, run_id: int, by: str) -> dict[str, Any]:
        """Approve a run that awaits approval; return the run as stored."""
        run = self.run(run_id)
        if run["status"] == "approved":
            raise ApprovalError(
                f"plan run {run_id} was approved already, by {run['approved_by']} "
                f"at {run['approved_at']:%Y-%m-%d %H:%M} UTC"
            )
        if run["status"] != "awaiting_approval":
            raise ApprovalError(
                f"plan run {run_id} needs no approval ({run['status']})"
            )
        with self.engine.begin() as conn:
            conn.execute(
                update(_RUNS)
                .where(_RUNS.c.id == run_id, _RUNS.c.status == "awaiting_approval")
                .values(status="approved", approved_by=by, approved_at=utc_now())
            )
        log.info("plan approved", run=run_id)
        return self.run(run_id)

    def previous_decisions(
        self, campaign: str, before_run: int | None
    ) -> tuple[int | None, pd.DataFrame]:
        """Return the latest earlier run holding a campaign, and its decisions."""
        statement = select(_RUNS.c.id, _RUNS.c.campaigns).order_by(_RUNS.c.id.desc())
        if before_run is not None:
            statement = statement.where(_RUNS.c.id < before_run)
        with self.engine.connect() as conn:
            for run_id, names in conn.execute(statement.limit(500)):
                if campaign in (names or []):
                    return int(run_id), self.decisions(int(run_id), campaign)
        return None, pd.DataFrame(columns=["customer_id", "outcome", "reason"])

    def decisions(self, run_id: int, campaign: str | None = None) -> pd.DataFrame:
        """Return a stored run's decisions (of one campaign, if named)."""
        columns = [
            _DECISIONS.c[c]
            for c in (
                "campaign",
                "customer_id",
                "outcome",
                "reason",
                "detail",
                "variant",
                "expected_value",
                "send_at",
            )
        ]
        statement = select(*columns).where(_DECISIONS.c.run_id == run_id)
        if campaign is not None:
            statement = statement.where(_DECISIONS.c.campaign == campaign)
        with self.engine.connect() as conn:
            result = conn.execute(statement)
            return pd.DataFrame(result.all(), columns=list(result.keys()))

    def customer_ids(self, external_ids: Sequence[str]) -> dict[str, int]:
        """Map the shop's customer ids to store ids; raise for unknown ones."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Customer.external_id, Customer.id).where(
                    Customer.external_id.in_(list(external_ids))
                )
            ).all()
        found = {str(e): int(i) for e, i in rows}
        missing = [e for e in external_ids if e not in found]
        if missing:
            raise PlanLookupError(f"no customer with id {', '.join(missing)}")
        return found

    def contacts(self, customer_ids: Sequence[int]) -> pd.DataFrame:
        """Return id, external_id, email and first_name of some customers."""
        statement = select(
            Customer.id, Customer.external_id, Customer.email, Customer.first_name
        ).where(Customer.id.in_(list(customer_ids)))
        with self.engine.connect() as conn:
            result = conn.execute(statement)
            return pd.DataFrame(result.all(), columns=list(result.keys()))


# ------------------------------------------------------------------ helpers


def _latest_snapshot(
    engine: Engine, as_of: datetime, *, strictly: bool = False
) -> datetime | None:
    """Return the newest stored profile moment at (or strictly) before as_of."""
    moment = _PROFILES.c.as_of
    bound = moment < as_of if strictly else moment <= as_of
    with engine.connect() as conn:
        value = conn.execute(select(func.max(moment)).where(bound)).scalar()
    return value if isinstance(value, datetime) else None


def _addressed(engine: Engine) -> set[int]:
    """Return the ids of customers with an e-mail address."""
    statement = select(Customer.id).where(
        Customer.email.is_not(None), Customer.email != ""
    )
    with engine.connect() as conn:
        return {int(i) for i in conn.execute(statement).scalars()}


def _event_frame(rows: Sequence[Any], kind: str) -> pd.DataFrame:
    """Build an events frame from (customer_id, occurred_at) rows."""
    frame = pd.DataFrame(list(rows), columns=["customer_id", "occurred_at"])
    frame["event"] = kind
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"])
    return frame[["customer_id", "event", "occurred_at"]]


def _orders_placed(engine: Engine, since: datetime, until: datetime) -> pd.DataFrame:
    """Return each placed order of a known customer in [since, until)."""
    statement = select(Order.customer_id, Order.ordered_at).where(
        Order.customer_id.is_not(None),
        Order.status == "placed",
        Order.ordered_at >= since,
        Order.ordered_at < until,
    )
    with engine.connect() as conn:
        return _event_frame(conn.execute(statement).all(), "order_placed")


def _carts_abandoned(engine: Engine, since: datetime, until: datetime) -> pd.DataFrame:
    """Return add-to-carts in [since, until) not followed by an order before until."""
    carts = cart_items(engine, since, until)
    return _event_frame(
        list(zip(carts["customer_id"], carts["occurred_at"], strict=True)),
        "cart_abandoned",
    )


def cart_items(engine: Engine, since: datetime, until: datetime) -> pd.DataFrame:
    """Return products added to a basket in [since, until) with no order since.

    Columns: customer_id, product_id, occurred_at; products known to be out of
    stock are left out.
    """
    statement = (
        select(
            BehaviourEvent.customer_id,
            BehaviourEvent.product_id,
            BehaviourEvent.occurred_at,
        )
        .join(Product, Product.id == BehaviourEvent.product_id)
        .where(
            BehaviourEvent.event_type == "add_to_cart",
            BehaviourEvent.occurred_at >= since,
            BehaviourEvent.occurred_at < until,
            Product.in_stock.is_not(False),
        )
    )
    with engine.connect() as conn:
        frame = pd.DataFrame(
            conn.execute(statement).all(),
            columns=["customer_id", "product_id", "occurred_at"],
        )
    if frame.empty:
        return frame
    ordered = _last_orders(engine, until)
    latest = pd.to_datetime(frame["customer_id"].map(ordered))
    kept = latest.isna() | (latest < pd.to_datetime(frame["occurred_at"]))
    return frame[kept.to_numpy()].reset_index(drop=True)


def _last_orders(engine: Engine, until: datetime) -> dict[Any, Any]:
    """Return each customer's latest order time before until."""
    statement = (
        select(Order.customer_id, func.max(Order.ordered_at))
        .where(Order.customer_id.is_not(None), Order.ordered_at < until)
        .group_by(Order.customer_id)
    )
    with engine.connect() as conn:
        return {row[0]: row[1] for row in conn.execute(statement)}


def _products_added(engine: Engine, since: datetime, until: datetime) -> pd.DataFrame:
    """Return one event per product created in [since, until), without a customer."""
    statement = select(Product.created_at).where(
        Product.created_at >= since, Product.created_at < until
    )
    with engine.connect() as conn:
        times = conn.execute(statement).scalars().all()
    return _event_frame([(None, t) for t in times], "product_added")


def _profile_changes(audience: Audience, kind: str, column: str) -> pd.DataFrame:
    """Return customers whose stage or segment differs from the snapshot before."""
    previous = audience.previous
    if previous is None or previous.empty:
        return no_events()
    frame = audience.frame
    before = previous.set_index("customer_id")[column]
    old = before.reindex(frame["customer_id"]).to_numpy(object)
    profiled = frame["stage"].to_numpy(object) != "prospect"
    changed = profiled & (old != frame[column].to_numpy(object))
    return pd.DataFrame(
        {
            "customer_id": frame["customer_id"].to_numpy()[changed],
            "event": kind,
            "occurred_at": np.full(
                int(changed.sum()), np.datetime64(audience.profiles_as_of, "ns")
            ),
        }
    )


def _item_lists(made: Plan) -> list[list[dict[str, Any]] | None]:
    """Return each decision's products as JSON-ready lists (None for the rest)."""
    decisions = made.decisions
    result: list[list[dict[str, Any]] | None] = [None] * len(decisions)
    items = made.items
    if items.empty:
        return result
    winners = decisions["outcome"].isin([CHOSEN, DEFERRED, HOLDOUT]).to_numpy()
    position = {
        key: i
        for i, key in zip(
            np.flatnonzero(winners).tolist(),
            zip(
                decisions["campaign"].to_numpy()[winners].tolist(),
                decisions["customer_id"].to_numpy()[winners].tolist(),
                strict=True,
            ),
            strict=True,
        )
    }
    ordered = items.sort_values(["campaign", "customer_id", "rank"], kind="stable")
    fields = [c for c in ITEM_COLUMNS if c not in ("customer_id", "rank")]
    records = ordered[["campaign", "customer_id", *fields]].to_dict("records")
    for key, group in itertools.groupby(
        records, key=lambda r: (r["campaign"], r["customer_id"])
    ):
        at = position.get(key)
        if at is not None:
            result[at] = [{f: _plain(r[f]) for f in fields} for r in group]
    return result


def _plain(value: Any) -> Any:
    """Turn a numpy scalar into a plain Python value for JSON."""
    return value.item() if isinstance(value, np.generic) else value


class StoreRecommender:
    """The planner's recommend callable over `nudge.recommend`, fitted once per run.

    Each recipe's rules are the shop's `[recommend]` rules with the fields the
    campaign sets replacing theirs. A recipe's fallback strategy fills the
    lists of customers the first strategy leaves short (such as customers
    without any history).
    """

    def __init__(self, engine: Engine, settings: Settings, as_of: datetime) -> None:
        from nudge.recommend.service import RecommendService

        self.engine = engine
        self.service = RecommendService(engine, settings)
        self.config = PlannerConfig.from_settings(settings)
        self.as_of = as_of
        self._data: Any = None
        self._models: dict[str, Any] = {}
        self._ignored: set[tuple[int, int]] | None = None

    def _model(self, strategy: str) -> Strategy:
        if self._data is None:
            self._data = self.service.interactions(self.as_of)
        model = self._models.get(strategy)
        if model is None:
            model = self._models[strategy] = self.service.model(strategy, self._data)
        return model

    def _rules(self, recipe: Recipe) -> Any:
        from nudge.recommend.config import RulesConfig

        base = self.service.config.rules.model_dump()
        base.update(recipe.rules.model_dump(exclude_unset=True))
        return RulesConfig.model_validate(base)

    def _lists(
        self, strategy: str, ids: npt.NDArray[Any], recipe: Recipe
    ) -> pd.DataFrame:
        lists = self._model(strategy).recommend(
            ids.tolist(),
            recipe.count + SPARE_ITEMS,
            exclude_purchased=recipe.exclude_purchased,
            rules=self._rules(recipe),
            batch_size=self.service.config.batch_size,
        )
        items: pd.DataFrame = lists.items.rename(
            columns={"reason": "reason_code", "reason_text": "reason"}
        )
        return items.loc[:, list(ITEM_COLUMNS)]

    def _cart(self, ids: npt.NDArray[Any], recipe: Recipe) -> pd.DataFrame:
        """Return the products each customer left in the basket, newest first."""
        carts = cart_items(self.engine, self.as_of - CART_DAYS, self.as_of)
        carts = carts[carts["customer_id"].isin(set(ids.tolist()))]
        carts = carts.sort_values(
            ["customer_id", "occurred_at"], ascending=[True, False], kind="stable"
        ).drop_duplicates(["customer_id", "product_id"])
        rank = carts.groupby("customer_id").cumcount().to_numpy() + 1
        found = pd.DataFrame(
            {
                "customer_id": carts["customer_id"].to_numpy(),
                "rank": rank,
                "product_id": carts["product_id"].to_numpy(),
                "score": 1.0 / rank,
                "strategy": "cart",
                "reason_code": "in_cart",
                "reason": "Still in your basket",
            }
        )
        return found[found["rank"] <= recipe.count + SPARE_ITEMS].reset_index(drop=True)

    def __call__(self, ids: npt.NDArray[Any], recipe: Recipe) -> pd.DataFrame:
        """Return ranked products for customers (store ids) by a campaign's recipe.

        A product a customer was e-mailed several times and never clicked
        moves down that customer's list.
        """
        return damp(self._found(ids, recipe), self.ignored, self.config.ignored_damping)

    @property
    def ignored(self) -> set[tuple[int, int]]:
        """Return the (customer, product) pairs e-mailed often and never clicked."""
        if self._ignored is None:
            self._ignored = ignored_items(
                self.engine,
                self.as_of,
                self.config.ignored_days,
                self.config.ignored_after,
            )
        return self._ignored

    def _found(self, ids: npt.NDArray[Any], recipe: Recipe) -> pd.DataFrame:
        if recipe.strategy == "cart":
            found = self._cart(ids, recipe)
        else:
            found = self._lists(recipe.strategy, ids, recipe)
        if recipe.fallback is None or len(ids) == 0:
            return found
        counts = found.groupby("customer_id").size()
        have = counts.reindex(pd.Index(ids)).fillna(0).to_numpy()
        short = ids[have < recipe.min_items]
        if len(short) == 0:
            return found
        extra = self._lists(recipe.fallback, short, recipe)
        kept = found[~found["customer_id"].isin(set(short.tolist()))]
        return pd.concat([kept, extra], ignore_index=True)
