"""The send pipeline as plain functions over ids: plan, record, render, deliver.

Celery tasks (`nudge.jobs.tasks`), the CLI and the demo call the same
functions; only how chunks travel differs (a broker, or a loop here).

- `plan_and_record` plans campaigns (or the due ones) and writes each
  send and holdout to the send ledger.
- `dispatch` finds the ledger rows that are due and hands them out in
  chunks, to `deliver_chunk` here or to a ``submit`` callable (a task).
- `deliver_chunk` checks consent again, renders, marks the rows rendered,
  hands the messages to each ESP's adapter and writes the answers back.
- `finish_campaigns` sends the campaigns of ESPs that send per campaign
  (Mailchimp) once every member of a run's variant is in place.
- `record_event` stores a trigger (an order, an add-to-cart, a new product)
  and plans the campaigns it triggers for that customer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pandas as pd
from jinja2 import TemplateError as JinjaError
from sqlalchemy import Connection, Engine, insert, select, update

from nudge.campaigns.preview import build_request, make_items
from nudge.campaigns.schema import Campaign
from nudge.campaigns.service import CampaignService, PlanResult, naive_utc, utc_now
from nudge.delivery import ledger, registry
from nudge.delivery.base import Adapter, CampaignSend, Outgoing, Result
from nudge.delivery.ledger import Recorded
from nudge.delivery.setup import TranslationError, esp_html, translate
from nudge.errors import NudgeError
from nudge.feedback import store as feedback_store
from nudge.feedback.tracking import track_message
from nudge.logging import get_logger
from nudge.render import Recipient, Renderer, ShopInfo
from nudge.render.model import Esp
from nudge.render.templates import TEXT_ENV
from nudge.settings import Settings, signing_key
from nudge.store.models import BehaviourEvent, Customer, Order, OrderLine, Product
from nudge.store.send_models import ACCEPTED, FAILED, SUBMITTED, SUPPRESSED

log = get_logger(__name__)

# ESPs whose clicks and opens nudge records itself (the others track their own).
SELF_TRACKED: frozenset[str] = frozenset({"outbox", "smtp"})
# ESPs that send a run as one campaign per variant after members are in place.
CAMPAIGN_ESPS: frozenset[str] = frozenset({"mailchimp"})
EVENT_KINDS: tuple[str, ...] = (
    "order_placed",
    "cart_abandoned",
    "product_added",
    "product_viewed",
)
Submit = Callable[[list[int], str | None], Any]


class PipelineError(NudgeError):
    """A run, send or event cannot go ahead (unknown campaign, customer, ESP)."""


# ------------------------------------------------------------------ context


class Context:
    """What delivering chunks needs again and again: campaigns, renderer, adapters.

    One per process (a worker keeps its own); adapters are made on first use
    and closed by `close`.
    """

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.service = CampaignService(engine, settings)
        self.renderer = Renderer(
            self.service.templates_dir, signing_secret=signing_key(settings)
        )
        self._campaigns: dict[str, Campaign] | None = None
        self._adapters: dict[str, Adapter] = {}

    def campaign(self, name: str) -> Campaign | None:
        """Return a campaign by name (files read once), or None if it is gone."""
        if self._campaigns is None:
            self._campaigns = {
                f.campaign.name: f.campaign for f in self.service.campaigns()
            }
        return self._campaigns.get(name)

    def adapter(self, esp: str) -> Adapter:
        """Return the adapter of an ESP, made from the settings on first use."""
        adapter = self._adapters.get(esp)
        if adapter is None:
            adapter = self._adapters[esp] = registry.create(esp, self.settings)
        return adapter

    @property
    def shop(self) -> ShopInfo:
        """Return the shop as the e-mails show it."""
        s = self.settings
        return ShopInfo(
            name=s.shop_name, url=s.shop_url, postal_address=s.shop_postal_address
        )

    def close(self) -> None:
        """Close every adapter made."""
        for adapter in self._adapters.values():
            adapter.close()
        self._adapters.clear()


# ------------------------------------------------------------------ planning


@dataclass(frozen=True)
class Planned:
    """A stored plan and what it added to the send ledger."""

    plan: PlanResult
    recorded: Recorded | None

    @property
    def run_id(self) -> int | None:
        """Return the plan run's id."""
        return self.plan.run_id


def plan_and_record(
    engine: Engine,
    settings: Settings,
    names: Sequence[str] = (),
    *,
    as_of: datetime | None = None,
    restrict_to: Sequence[int] | None = None,
    step: Callable[[str], None] | None = None,
    service: CampaignService | None = None,
    save: bool = True,
    keep_empty: bool = True,
) -> Planned:
    """Plan the named campaigns (or the due ones) and record the sends in the ledger.

    ``save=False`` plans without storing anything (a dry run);
    ``keep_empty=False`` stores no run that decided nothing.
    """
    service = service or CampaignService(engine, settings)
    campaigns = {f.campaign.name: f.campaign for f in service.campaigns()}
    unknown = [n for n in names if n not in campaigns]
    if unknown:
        raise PipelineError(
            f"no campaign named {', '.join(unknown)} in {service.campaigns_dir} "
            f"(known: {', '.join(sorted(campaigns))})"
        )
    result = service.plan(
        as_of,
        names,
        step=step,
        restrict_to=restrict_to,
        save=save,
        keep_empty=keep_empty,
    )
    if result.run_id is None:
        return Planned(result, None)
    esp_of = {name: c.esp for name, c in campaigns.items()}
    approval = [n for n, c in campaigns.items() if c.approval == "required"]
    recorded = ledger.record_plan(engine, result.run_id, esp_of, approval)
    return Planned(result, recorded)


# ------------------------------------------------------------------ dispatch


@dataclass
class Delivered:
    """What delivering some ledger rows did: counts by status, and samples."""

    rows: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    by_esp: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    samples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, other: Delivered) -> None:
        """Add another report's counts to this one."""
        self.rows += other.rows
        self.chunks += other.chunks
        for mine, theirs in (
            (self.statuses, other.statuses),
            (self.by_esp, other.by_esp),
            (self.errors, other.errors),
        ):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n
        self.samples.extend(other.samples[: max(0, 5 - len(self.samples))])

    def count(self, status: str, n: int = 1, *, error: str | None = None) -> None:
        """Count rows that reached a status (and why, for failures)."""
        if n <= 0:
            return
        self.statuses[status] = self.statuses.get(status, 0) + n
        if error is not None:
            reason = _reason(error)
            self.errors[reason] = self.errors.get(reason, 0) + n

    def as_json(self) -> dict[str, Any]:
        """Return the report as plain data."""
        return dataclasses.asdict(self)


def _reason(error: str) -> str:
    """Return an error as counted and shown: the first line, at most 160 characters."""
    line = error.strip().splitlines()[0] if error.strip() else "unknown error"
    return line if len(line) <= 160 else line[:159] + "…"


def dispatch(
    engine: Engine,
    settings: Settings,
    *,
    now: datetime | None = None,
    run_id: int | None = None,
    campaign: str | None = None,
    esp: str | None = None,
    dry_run: bool = False,
    submit: Submit | None = None,
    context: Context | None = None,
    limit: int | None = None,
) -> Delivered:
    """Deliver the ledger rows due by ``now``, a chunk at a time.

    With ``submit`` each chunk of ids is handed to it (a Celery task) and the
    report counts chunks only; otherwise chunks are delivered here.
    """
    started = time.perf_counter()
    moment = naive_utc(now) if now is not None else utc_now()
    if esp is not None:
        registry.load(esp)  # an unknown name fails before anything moves
    ids = ledger.due_ids(engine, moment, run_id=run_id, campaign=campaign)
    if limit is not None:
        ids = ids[:limit]
    size = settings.jobs_chunk_size
    report = Delivered(dry_run=dry_run)
    if submit is not None:
        for part in _chunks(ids, size):
            submit(list(part), esp)
            report.chunks += 1
        report.rows = len(ids)
        report.seconds = time.perf_counter() - started
        return report

    own = context is None
    context = context or Context(engine, settings)
    try:
        for part in _chunks(ids, size):
            report.add(deliver_chunk(context, part, esp=esp, dry_run=dry_run))
        if not dry_run:
            report.add(finish_campaigns(context))
    finally:
        if own:
            context.close()
    report.seconds = time.perf_counter() - started
    log.info(
        "dispatched",
        rows=report.rows,
        chunks=report.chunks,
        seconds=round(report.seconds, 2),
        **report.statuses,
    )
    return report


def _chunks(ids: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


# ------------------------------------------------------------------ one chunk


def deliver_chunk(
    context: Context,
    ids: Sequence[int],
    *,
    esp: str | None = None,
    dry_run: bool = False,
) -> Delivered:
    """Deliver some ledger rows: consent again, render, hand to the ESP, record.

    Rows settled meanwhile (another worker, an earlier try) are skipped, so a
    chunk may be delivered twice without a second e-mail.
    """
    engine = context.engine
    report = Delivered(dry_run=dry_run, chunks=1)
    rows = ledger.open_rows(engine, ids)
    report.rows = len(rows)
    if rows.empty:
        return report
    if esp is not None:
        rows["esp"] = esp

    customer_ids = rows["customer_id"].astype(int).unique().tolist()
    people = _contacts(engine, customer_ids)
    # Feedback's suppressions (unsubscribes, complaints, hard bounces) hold
    # even where a later import cleared the customer's unsubscribe date.
    people["suppressed"] = pd.Series(feedback_store.suppressed(engine, customer_ids))
    ready, suppressed = _consented(rows, people)
    for reason, group in suppressed.items():
        report.count(SUPPRESSED, len(group), error=f"ledger: {reason}")
        if not dry_run:
            ledger.mark(engine, group, SUPPRESSED, reason)

    messages, failures = _render(context, ready, people)
    for reason, group in failures.items():
        report.count(FAILED, len(group), error=f"render: {reason}")
        if not dry_run:
            ledger.mark(engine, group, FAILED, reason)
    if dry_run:
        report.count("would_send", len(messages))
        for message in messages:
            report.by_esp[message.esp] = report.by_esp.get(message.esp, 0) + 1
        report.samples = [
            {
                "to": m.outgoing.email,
                "subject": m.outgoing.message.subject,
                "esp": m.esp,
            }
            for m in messages[:5]
        ]
        return report

    ledger.mark_rendered(
        engine,
        {m.row_id: m.outgoing.message.subject for m in messages},
        {m.row_id: m.esp for m in messages},
    )
    by_esp: dict[str, list[_Message]] = {}
    for message in messages:
        by_esp.setdefault(message.esp, []).append(message)
    for name, sending in by_esp.items():
        report.by_esp[name] = report.by_esp.get(name, 0) + len(sending)
        results = _deliver(context, name, sending)
        settled = SUBMITTED if name in CAMPAIGN_ESPS else ACCEPTED
        counts = ledger.record_results(
            engine,
            {m.outgoing.send_id: m.row_id for m in sending},
            results,
            attempts={m.row_id: m.attempts for m in sending},
            settled=settled,
        )
        for status, n in counts.items():
            report.count(status, n)
        for result in results:
            if result.status == "failed" and result.error:
                reason = _reason(result.error)
                report.errors[reason] = report.errors.get(reason, 0) + 1
    return report


@dataclass(frozen=True)
class _Message:
    row_id: int
    esp: str
    attempts: int
    outgoing: Outgoing


def _contacts(engine: Engine, customer_ids: list[int]) -> pd.DataFrame:
    statement = select(
        Customer.id,
        Customer.external_id,
        Customer.email,
        Customer.first_name,
        Customer.accepts_marketing,
        Customer.consent_at,
        Customer.unsubscribed_at,
        Customer.created_at,
    ).where(Customer.id.in_(customer_ids))
    with engine.connect() as conn:
        result = conn.execute(statement)
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))
    return frame.set_index("id")


def _consented(
    rows: pd.DataFrame, people: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """Split rows into those that may go and those to suppress, by reason.

    Consent and unsubscribes are read now, right before the ESP call: a
    customer who unsubscribed after the plan is not mailed.
    """
    known = rows["customer_id"].isin(people.index)
    person = people.reindex(rows["customer_id"].astype(int))
    email = person["email"].fillna("").astype(str).str.strip().to_numpy()
    unsubscribed = person["unsubscribed_at"].notna().to_numpy()
    consent = person["accepts_marketing"].fillna(False).astype(bool).to_numpy()
    reasons = pd.Series("", index=rows.index, dtype=object)
    reasons[~consent] = "no consent"
    reasons[unsubscribed] = "unsubscribed"
    blocked = person["suppressed"].notna().to_numpy()
    reasons[blocked] = (
        "suppressed after " + person["suppressed"][blocked].astype(str)
    ).to_numpy()
    reasons[email == ""] = "no e-mail address"
    reasons[~known.to_numpy()] = "customer no longer in the store"
    out: dict[str, list[int]] = {}
    for reason, group in rows[reasons != ""].groupby(reasons[reasons != ""]):
        out[str(reason)] = group["id"].astype(int).tolist()
    return rows[reasons == ""], out


def _render(
    context: Context, rows: pd.DataFrame, people: pd.DataFrame
) -> tuple[list[_Message], dict[str, list[int]]]:
    """Render each row's e-mail; return the messages and failures by reason."""
    failures: dict[str, list[int]] = {}
    messages: list[_Message] = []
    if rows.empty:
        return messages, failures
    items = _items(context, rows)
    reached = {
        name: ledger.accepted_before(
            context.engine, name, rows["customer_id"].astype(int).tolist()
        )
        for name in set(rows["esp"]) & {"klaviyo"}
    }
    for row in rows.to_dict("records"):
        row_id = int(row["id"])
        campaign = context.campaign(str(row["campaign"]))
        if campaign is None:
            failures.setdefault(
                f"campaign {row['campaign']} is no longer configured", []
            ).append(row_id)
            continue
        found = items.get(row_id, [])
        recipe = campaign.recommend
        if recipe is not None and len(found) < recipe.min_items:
            failures.setdefault("its products are gone from the catalogue", []).append(
                row_id
            )
            continue
        person = people.loc[int(row["customer_id"])]
        esp = str(row["esp"])
        request = build_request(
            campaign,
            context.settings,
            send_id=str(row["send_key"]),
            variant=str(row["variant"] or campaign.variants[0].name),
            recipient=Recipient(
                customer_id=int(row["customer_id"]),
                email=str(person["email"]).strip(),
                first_name=_text(person["first_name"]),
            ),
            external_id=str(person["external_id"]),
            items=found[: recipe.count] if recipe is not None else found,
            send_at=pd.Timestamp(row["due_at"]).to_pydatetime(),
        )
        if request.esp != esp:
            request = dataclasses.replace(request, esp=cast(Esp, esp))
        try:
            message = context.renderer.render(request)
            if esp in SELF_TRACKED and context.settings.tracking_url:
                message = track_message(message, context.settings)
        except NudgeError as err:
            failures.setdefault(str(err), []).append(row_id)
            continue
        consented = (
            person["consent_at"]
            if pd.notna(person["consent_at"])
            else person["created_at"]
        )
        outgoing = Outgoing.from_render(
            request,
            message,
            run_id=str(row["plan_run_id"]),
            # Consent without a date (exports without one) is consent now.
            consented_at=_moment(consented) or utc_now(),
            push_consent=int(row["customer_id"]) not in reached.get(esp, set()),
            external_id=str(person["external_id"]),
        )
        messages.append(_Message(row_id, esp, int(row["attempts"] or 0), outgoing))
    return messages, failures


def _items(context: Context, rows: pd.DataFrame) -> dict[int, list[Any]]:
    """Return each row's products as render items, keyed by ledger row id."""
    lists = [
        {
            "customer_id": int(row_id),
            "rank": rank,
            "product_id": int(entry["product_id"]),
            "reason": entry.get("reason") or "",
            "reason_code": entry.get("reason_code") or "",
        }
        for row_id, entries in zip(rows["id"], rows["items"], strict=True)
        for rank, entry in enumerate(entries or [])
    ]
    if not lists:
        return {}
    frame = pd.DataFrame(lists)
    wanted = frame["product_id"].unique().tolist()
    statement = select(
        Product.id,
        Product.external_id,
        Product.title,
        Product.product_url,
        Product.image_url,
        Product.price,
        Product.currency,
        Product.category,
        Product.in_stock,
    ).where(Product.id.in_(wanted))
    with context.engine.connect() as conn:
        result = conn.execute(statement)
        products = pd.DataFrame(result.all(), columns=list(result.keys()))
    # A product sold out since the plan is left out of the e-mail.
    products = products[products["in_stock"].ne(False)]
    return make_items(frame, products, context.settings)


def _deliver(context: Context, esp: str, group: list[_Message]) -> list[Result]:
    adapter = context.adapter(esp)
    return adapter.deliver([m.outgoing for m in group])


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    return str(value)


def _moment(value: Any) -> datetime | None:
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).to_pydatetime()


# ------------------------------------------------------------------ campaigns


def finish_campaigns(context: Context) -> Delivered:
    """Send the per-variant campaigns whose members are all in place (Mailchimp)."""
    report = Delivered()
    for esp in sorted(CAMPAIGN_ESPS):
        for run_id, name, variant in ledger.waiting_campaigns(context.engine, esp):
            ids = ledger.group_ids(context.engine, run_id, name, variant)
            campaign = context.campaign(name)
            if campaign is None:
                ledger.mark(
                    context.engine,
                    ids,
                    FAILED,
                    f"campaign {name} is no longer configured",
                )
                report.count(FAILED, len(ids))
                continue
            chosen = next(
                (v for v in campaign.variants if v.name == variant),
                campaign.variants[0],
            )
            html = esp_html(
                context.renderer,
                campaign.template,
                chosen.name,
                "mailchimp",
                context.shop,
            )
            send = CampaignSend(
                run_id=str(run_id),
                campaign=name,
                variant=variant,
                html=html,
                subject=_campaign_text(chosen.subject, context.shop) or campaign.name,
                preheader=_campaign_text(chosen.preheader, context.shop),
                from_name=context.settings.shop_name,
            )
            outcome = context.adapter(esp).send_campaigns([send])[0]
            if outcome.status == "failed":
                ledger.mark(
                    context.engine, ids, FAILED, outcome.error or "campaign failed"
                )
                report.count(FAILED, len(ids), error=outcome.error or "campaign failed")
            else:
                ledger.mark(context.engine, ids, ACCEPTED, esp_job_id=outcome.esp_id)
                report.count(ACCEPTED, len(ids))
    return report


def _campaign_text(source: str, shop: ShopInfo) -> str:
    """Return a subject for a whole campaign: Mailchimp's merge tags where it can.

    What merge tags cannot say (a customer's own products) is filled as for a
    customer without any, so nobody gets another customer's words.
    """
    try:
        return translate(source, "mailchimp", shop)
    except TranslationError:
        pass
    try:
        text = TEXT_ENV.from_string(source).render(
            recipient={"first_name": None, "email": ""},
            items=[],
            offer=None,
            shop={"name": shop.name, "url": shop.url},
        )
    except JinjaError:
        return ""
    return " ".join(text.split())


# ------------------------------------------------------------------ events


@dataclass(frozen=True)
class EventRecorded:
    """A trigger stored, and the plan it set off."""

    kind: str
    customer: str | None
    stored: str
    planned: Planned | None


def record_event(
    engine: Engine,
    settings: Settings,
    kind: str,
    *,
    customer: str | None = None,
    product: str | None = None,
    at: datetime | None = None,
    key: str | None = None,
) -> EventRecorded:
    """Store a trigger event and plan the campaigns it triggers for the customer.

    ``order_placed`` stores an order (one line when a product is named),
    ``cart_abandoned`` an add-to-cart, ``product_viewed`` a view,
    ``product_added`` a new product (no customer). A delayed campaign is
    recorded now with its due time and sent by the dispatcher then. ``key``
    (a task id, a webhook's event id) makes a repeat store nothing twice.
    """
    if kind not in EVENT_KINDS:
        raise PipelineError(f"unknown event {kind!r} (known: {', '.join(EVENT_KINDS)})")
    moment = naive_utc(at) if at is not None else utc_now()
    customer_id = _customer_id(engine, customer) if customer is not None else None
    if kind != "product_added" and customer_id is None:
        raise PipelineError(f"{kind} needs --customer")
    product_id = _product_id(engine, product) if product is not None else None
    if kind == "cart_abandoned" and product_id is None:
        raise PipelineError(
            "cart_abandoned needs --product (the product left in the cart)"
        )

    stored = _store_event(
        engine, settings, kind, customer_id, product, product_id, moment, key
    )
    service = CampaignService(engine, settings)
    trigger = {
        "cart_abandoned": "cart_abandoned",
        "order_placed": "order_placed",
        "product_added": "product_added",
    }.get(kind)
    names = [
        f.campaign.name
        for f in service.campaigns()
        if f.campaign.enabled and f.campaign.trigger.event == trigger
    ]
    planned = None
    if names:
        restrict = [customer_id] if customer_id is not None else None
        # The plan looks at events before its moment: one second after this one.
        planned = plan_and_record(
            engine,
            settings,
            names,
            as_of=moment + timedelta(seconds=1),
            restrict_to=restrict,
            service=service,
        )
    return EventRecorded(kind, customer, stored, planned)


def _customer_id(engine: Engine, external: str) -> int:
    with engine.connect() as conn:
        found = conn.execute(
            select(Customer.id).where(Customer.external_id == external)
        ).scalar()
    if found is None:
        raise PipelineError(f"no customer with id {external}")
    return int(found)


def _product_id(engine: Engine, external: str) -> int:
    with engine.connect() as conn:
        found = conn.execute(
            select(Product.id).where(Product.external_id == external)
        ).scalar()
    if found is None:
        raise PipelineError(f"no product with id {external}")
    return int(found)


def _store_event(
    engine: Engine,
    settings: Settings,
    kind: str,
    customer_id: int | None,
    product: str | None,
    product_id: int | None,
    moment: datetime,
    key: str | None = None,
) -> str:
    """Write the event into the shop data; return what was stored, in words.

    An event whose key was stored before is not stored again.
    """
    key = _event_key(key) if key else uuid.uuid4().hex[:16]
    with engine.begin() as conn:
        if _seen(conn, kind, f"event-{key}"):
            return f"{kind} event-{key} was stored before"
        if kind == "order_placed":
            result = conn.execute(
                insert(Order).values(
                    external_id=f"event-{key}",
                    customer_id=customer_id,
                    ordered_at=moment,
                    currency=settings.shop_currency,
                    status="placed",
                    updated_at=moment,
                )
            )
            order_id = (
                result.inserted_primary_key[0] if result.inserted_primary_key else None
            )
            if product_id is not None and order_id is not None:
                price = conn.execute(
                    select(Product.price).where(Product.id == product_id)
                ).scalar()
                conn.execute(
                    insert(OrderLine).values(
                        order_id=order_id,
                        line_no=1,
                        product_id=product_id,
                        quantity=1,
                        unit_price=price if price is not None else Decimal(0),
                        status="placed",
                    )
                )
            return f"order event-{key}"
        if kind == "product_added":
            if product_id is None:
                raise PipelineError(
                    "product_added needs --product (an imported product)"
                )
            conn.execute(
                update(Product)
                .where(Product.id == product_id)
                .values(created_at=moment, updated_at=moment)
            )
            return f"product {product} marked new at {moment:%Y-%m-%d %H:%M}"
        event_type = "add_to_cart" if kind == "cart_abandoned" else "view"
        conn.execute(
            insert(BehaviourEvent).values(
                event_key=f"event-{key}",
                customer_id=customer_id,
                product_id=product_id,
                event_type=event_type,
                occurred_at=moment,
            )
        )
        return f"{event_type} event-{key}"


def _event_key(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def _seen(conn: Connection, kind: str, external: str) -> bool:
    if kind == "order_placed":
        statement = select(Order.id).where(Order.external_id == external)
    elif kind == "product_added":
        return False
    else:
        statement = select(BehaviourEvent.id).where(
            BehaviourEvent.event_key == external
        )
    return conn.execute(statement).first() is not None


def outbox_folder(settings: Settings) -> Path:
    """Return where the local outbox writes."""
    return settings.path(settings.outbox_dir)
