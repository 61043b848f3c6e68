"""Store engagement once, linked to its send, and keep each stream's watermark.

`save` takes a page of normalized events: it drops those already stored (the
ESP's event id is unique per ESP), links each to its ledger row (by the send id
nudge put in the payload, else by the ESP's own ids, else for some ESPs by the
customer's latest earlier send), writes them in one bulk insert that ignores
conflicts, unsubscribes the customers of unsubscribes, spam complaints and hard
bounces at once, and flags machine opens. The watermark of a stream moves only
forward and never past now, whatever time an ESP's clock claims.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from nudge.errors import DatabaseError
from nudge.feedback import machine
from nudge.feedback.events import OPEN, SUPPRESSING, Engagement, PullReport
from nudge.store.feedback_models import EngagementEvent, FeedbackWatermark, Suppression
from nudge.store.models import Base, Customer
from nudge.store.send_models import Send

T = TypeVar("T")
CHUNK = 500
# A time this far ahead of now is an ESP's clock, not the future.
SKEW = timedelta(minutes=5)
# A suppressing event of the same kind for the same recipient this close to
# one already stored is the same event seen through another stream.
REPEAT = timedelta(days=1)
# How far back the customer's latest send may be for a "nearest" link.
NEAREST = timedelta(days=7)
ERROR_LENGTH = 500


@dataclass(frozen=True, slots=True)
class Link:
    """The ledger row and customer an event belongs to, and how it was found."""

    send_id: int | None = None
    customer_id: int | None = None
    linked_by: str | None = None


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------------------------ writes


def insert_ignore(
    conn: Connection,
    model: type[Base],
    rows: Sequence[dict[str, Any]],
    keys: list[str],
) -> None:
    """Insert rows in bulk, skipping any that conflict on the unique keys."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(model).on_conflict_do_nothing(
            index_elements=keys
        )
    elif dialect == "sqlite":
        statement = sqlite.insert(model).on_conflict_do_nothing(index_elements=keys)
    else:
        raise DatabaseError(f"feedback needs SQLite or PostgreSQL, not {dialect}")
    for part in _chunks(rows, 1_000):
        conn.execute(statement, list(part))


def save(
    engine: Engine,
    events: Iterable[Engagement],
    report: PullReport,
    *,
    now: datetime,
) -> list[int]:
    """Store the events not stored yet, linked and applied; return their row ids."""
    unique: dict[tuple[str, str], Engagement] = {}
    for event in events:
        key = (event.esp, event.esp_event_id)
        if key in unique:
            report.duplicates += 1
        else:
            unique[key] = event
    if not unique:
        return []

    with engine.begin() as conn:
        known = _stored_ids(conn, list(unique))
        report.duplicates += len(known)
        fresh = [e for key, e in unique.items() if key not in known]
        fresh = _without_repeats(conn, fresh, report)
        if not fresh:
            return []
        links = _link(conn, fresh, report)
        rows = [
            _row(e, link, now, report) for e, link in zip(fresh, links, strict=True)
        ]
        insert_ignore(conn, EngagementEvent, rows, ["esp", "esp_event_id"])

        # Read back the ids: the suppressions point at their events.
        ids = _stored_ids(conn, [(e.esp, e.esp_event_id) for e in fresh])
        stored = [
            (e, link, ids[(e.esp, e.esp_event_id)])
            for e, link in zip(fresh, links, strict=True)
            if (e.esp, e.esp_event_id) in ids
        ]
        _tally(report, stored)
        report.suppressed += _suppress(conn, stored, report, now)
        opened = {link.customer_id for e, link, _ in stored if e.kind == OPEN}
        report.machine_opens += machine.flag_opens(
            conn, [c for c in opened if c is not None]
        )
    return [row_id for _, _, row_id in stored]


def _tally(report: PullReport, stored: Sequence[tuple[Engagement, Link, int]]) -> None:
    for event, link, _ in stored:
        report.stored[event.kind] += 1
        if link.send_id is None:
            report.unlinked += 1
        else:
            report.linked += 1
            report.linked_by[link.linked_by or "send_key"] += 1
        if event.kind == OPEN and event.machine_open:
            report.machine_opens += 1


def _stored_ids(
    conn: Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    by_esp: dict[str, list[str]] = defaultdict(list)
    for esp, event_id in keys:
        by_esp[esp].append(event_id)
    found: dict[tuple[str, str], int] = {}
    for esp, event_ids in by_esp.items():
        for part in _chunks(event_ids):
            query = select(EngagementEvent.id, EngagementEvent.esp_event_id).where(
                EngagementEvent.esp == esp, EngagementEvent.esp_event_id.in_(part)
            )
            for row_id, event_id in conn.execute(query):
                found[(esp, event_id)] = row_id
    return found


def _without_repeats(
    conn: Connection, events: list[Engagement], report: PullReport
) -> list[Engagement]:
    """Drop a suppressing event already stored through another stream."""
    candidates = [e for e in events if e.kind in SUPPRESSING and e.esp_profile_id]
    if not candidates:
        return events
    seen: dict[tuple[str, str, str], list[datetime]] = defaultdict(list)
    profiles = sorted({e.esp_profile_id for e in candidates if e.esp_profile_id})
    for part in _chunks(profiles):
        query = select(
            EngagementEvent.esp,
            EngagementEvent.esp_profile_id,
            EngagementEvent.kind,
            EngagementEvent.occurred_at,
        ).where(
            EngagementEvent.esp_profile_id.in_(part),
            EngagementEvent.kind.in_(SUPPRESSING),
        )
        for esp, profile, kind, at in conn.execute(query):
            seen[(esp, str(profile), kind)].append(at)

    kept = []
    for event in events:
        if event.kind in SUPPRESSING and event.esp_profile_id:
            key = (event.esp, str(event.esp_profile_id), event.kind)
            if any(abs(at - event.occurred_at) <= REPEAT for at in seen[key]):
                report.skip("repeated")
                continue
            seen[key].append(event.occurred_at)
        kept.append(event)
    return kept


def _row(
    event: Engagement, link: Link, now: datetime, report: PullReport
) -> dict[str, Any]:
    if event.occurred_at > now + SKEW:
        report.flagged["future_time"] += 1
    return {
        "esp": event.esp,
        "esp_event_id": event.esp_event_id,
        "kind": event.kind,
        "occurred_at": event.occurred_at,
        "send_id": link.send_id,
        "customer_id": link.customer_id,
        "linked_by": link.linked_by,
        "esp_profile_id": event.esp_profile_id,
        "machine_open": event.machine_open,
        "url": event.url[:2048] if event.url else None,
        "raw": event.raw,
        "received_at": now,
    }


# ------------------------------------------------------------------ links


def _link(
    conn: Connection, events: Sequence[Engagement], report: PullReport
) -> list[Link]:
    """Find each event's ledger row and customer, counting what stays unknown."""
    by_key = _sends_by_key(conn, {e.send_key for e in events if e.send_key})
    by_job = _sends_by_job(
        conn, {(e.esp, str(e.esp_job_id)) for e in events if e.esp_job_id}
    )
    customers = _customers(conn, events)
    nearest = _nearest_sends(conn, events, customers)

    links = []
    for event, customer in zip(events, customers, strict=True):
        found: tuple[int, int] | None = None
        how = None
        if event.send_key and event.send_key in by_key:
            found, how = by_key[event.send_key], "send_key"
        elif event.send_key:
            report.flagged["unknown_send"] += 1
        if found is None and event.esp_job_id:
            jobs = by_job.get((event.esp, event.esp_job_id), [])
            found = next(
                (
                    (send_id, owner)
                    for send_id, owner, esp_id in jobs
                    if (event.esp_profile_id and esp_id == event.esp_profile_id)
                    or (customer is not None and owner == customer)
                ),
                None,
            )
            how = "esp_ids" if found else None
        # A send id the ledger does not know names another send: not a guess.
        guess = event.nearest and not event.send_key
        if found is None and guess and customer is not None:
            found = nearest(event, customer)
            how = "nearest" if found else None
        if found is not None:
            links.append(Link(found[0], found[1], how))
            continue
        if customer is None:
            report.flagged["unknown_customer"] += 1
        links.append(Link(None, customer, None))
    return links


def _sends_by_key(conn: Connection, keys: set[str]) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    for part in _chunks(sorted(keys)):
        query = select(Send.send_key, Send.id, Send.customer_id).where(
            Send.send_key.in_(part)
        )
        for key, send_id, customer in conn.execute(query):
            found[key] = (send_id, customer)
    return found


def _sends_by_job(
    conn: Connection, jobs: set[tuple[str, str]]
) -> dict[tuple[str, str], list[tuple[int, int, str | None]]]:
    found: dict[tuple[str, str], list[tuple[int, int, str | None]]] = defaultdict(list)
    by_esp: dict[str, list[str]] = defaultdict(list)
    for esp_name, job in jobs:
        by_esp[esp_name].append(job)
    for esp, job_ids in by_esp.items():
        for part in _chunks(sorted(job_ids)):
            query = select(
                Send.esp_job_id, Send.id, Send.customer_id, Send.esp_id
            ).where(Send.esp == esp, Send.esp_job_id.in_(part))
            for job_id, send_id, customer, esp_id in conn.execute(query):
                found[(esp, str(job_id))].append((send_id, customer, esp_id))
    return found


def _customers(conn: Connection, events: Sequence[Engagement]) -> list[int | None]:
    """Return the customer each event names (by e-mail, else by id), or None."""
    emails = {e.email.strip() for e in events if e.email and e.email.strip()}
    variants = sorted(emails | {e.lower() for e in emails})
    by_email: dict[str, int] = {}
    for part in _chunks(variants):
        query = select(Customer.email, Customer.id).where(Customer.email.in_(part))
        _note_emails(by_email, conn.execute(query))
    # Addresses stored in another case cost a scan; only the few missed pay it.
    missed = sorted({e.lower() for e in emails} - by_email.keys())
    for part in _chunks(missed):
        query = select(Customer.email, Customer.id).where(
            func.lower(Customer.email).in_(part)
        )
        _note_emails(by_email, conn.execute(query))

    refs = sorted(
        {e.customer_ref for e in events if e.customer_ref is not None and not e.email}
    )
    known: dict[str, int] = {}
    for ref_part in _chunks(refs):
        found_ids = select(Customer.external_id, Customer.id).where(
            Customer.external_id.in_(ref_part)
        )
        known.update(
            (str(ref), int(customer)) for ref, customer in conn.execute(found_ids)
        )

    found: list[int | None] = []
    for event in events:
        if event.email:
            found.append(by_email.get(event.email.strip().lower()))
        elif event.customer_ref is not None:
            found.append(known.get(event.customer_ref))
        else:
            found.append(None)
    return found


def _note_emails(by_email: dict[str, int], rows: Iterable[Any]) -> None:
    for email, customer in rows:
        lowered = str(email).lower()
        by_email[lowered] = min(customer, by_email.get(lowered, customer))


def _nearest_sends(
    conn: Connection, events: Sequence[Engagement], customers: list[int | None]
) -> Callable[[Engagement, int], tuple[int, int] | None]:
    """Return a finder of a customer's latest send of an ESP before an event."""
    wanted = [
        (e, c)
        for e, c in zip(events, customers, strict=True)
        if e.nearest and c is not None
    ]
    history: dict[tuple[int, str], list[tuple[datetime, int]]] = defaultdict(list)
    if wanted:
        owners = sorted({c for _, c in wanted if c is not None})
        esps = sorted({e.esp for e, _ in wanted})
        earliest = min(e.occurred_at for e, _ in wanted) - NEAREST
        for part in _chunks(owners):
            query = select(
                Send.customer_id, Send.esp, Send.id, Send.submitted_at
            ).where(
                Send.customer_id.in_(part),
                Send.esp.in_(esps),
                Send.submitted_at.is_not(None),
                Send.submitted_at >= earliest,
                Send.holdout.is_(False),
            )
            for owner, esp, send_id, submitted in conn.execute(query):
                if submitted is not None:
                    history[(owner, esp)].append((submitted, send_id))
        for entries in history.values():
            entries.sort()

    def find(event: Engagement, customer: int) -> tuple[int, int] | None:
        entries = history.get((customer, event.esp), [])
        # An ESP's clock may run a little ahead of nudge's.
        at = bisect.bisect_right(entries, (event.occurred_at + SKEW, 2**62))
        if at == 0:
            return None
        submitted, send_id = entries[at - 1]
        if event.occurred_at - submitted > NEAREST:
            return None
        return send_id, customer

    return find


# ------------------------------------------------------------------ suppression


def _suppress(
    conn: Connection,
    stored: Sequence[tuple[Engagement, Link, int]],
    report: PullReport,
    now: datetime,
) -> int:
    """Unsubscribe the customers of suppressing events; return how many."""
    due: dict[int, tuple[Engagement, int]] = {}
    for event, link, row_id in stored:
        if event.kind not in SUPPRESSING or link.customer_id is None:
            continue
        first = due.get(link.customer_id)
        if first is None or event.occurred_at < first[0].occurred_at:
            due[link.customer_id] = (event, row_id)
    if not due:
        return 0

    state = {}
    for part in _chunks(sorted(due)):
        query = select(
            Customer.id, Customer.unsubscribed_at, Customer.consent_at
        ).where(Customer.id.in_(part))
        state.update({row[0]: (row[1], row[2]) for row in conn.execute(query)})

    suppressions = []
    for customer, (event, row_id) in due.items():
        unsubscribed, consented = state.get(customer, (None, None))
        if unsubscribed is not None:
            continue
        # A consent given after the event (a late report of an old
        # unsubscribe) stands; the customer asked to be mailed again.
        if consented is not None and consented > event.occurred_at:
            report.flagged["consent_after_event"] += 1
            continue
        conn.execute(
            update(Customer)
            .where(Customer.id == customer, Customer.unsubscribed_at.is_(None))
            .values(unsubscribed_at=event.occurred_at, updated_at=now)
        )
        suppressions.append(
            {
                "customer_id": customer,
                "event_id": row_id,
                "esp": event.esp,
                "reason": event.kind,
                "suppressed_at": event.occurred_at,
                "created_at": now,
            }
        )
    insert_ignore(conn, Suppression, suppressions, ["event_id"])
    return len(suppressions)


def suppressed(engine: Engine, customer_ids: Iterable[int]) -> dict[int, str]:
    """Return the customers among these that feedback suppressed, with the reason."""
    ids = sorted(set(customer_ids))
    found: dict[int, str] = {}
    with engine.connect() as conn:
        for part in _chunks(ids):
            query = (
                select(Suppression.customer_id, Suppression.reason)
                .where(Suppression.customer_id.in_(part))
                .order_by(Suppression.suppressed_at)
            )
            found.update({customer: reason for customer, reason in conn.execute(query)})
    return found


# ------------------------------------------------------------------ watermarks


def watermark(engine: Engine, esp: str, stream: str) -> datetime | None:
    """Return how far a stream was read, or None before its first pull."""
    with engine.connect() as conn:
        return conn.execute(
            select(FeedbackWatermark.watermark).where(
                FeedbackWatermark.esp == esp, FeedbackWatermark.stream == stream
            )
        ).scalar_one_or_none()


def advance(
    engine: Engine, esp: str, stream: str, seen: datetime | None, *, now: datetime
) -> datetime | None:
    """Record a successful read up to `seen` (never past now); return the mark."""
    with engine.begin() as conn:
        current = _ensure(conn, esp, stream, now)
        mark = current
        if seen is not None:
            seen = min(seen, now)
            mark = seen if current is None else max(current, seen)
        conn.execute(
            update(FeedbackWatermark)
            .where(FeedbackWatermark.esp == esp, FeedbackWatermark.stream == stream)
            .values(
                watermark=mark,
                updated_at=now,
                last_success_at=now,
                failures=0,
                last_error=None,
            )
        )
    return mark


def failed(engine: Engine, esp: str, stream: str, error: str, *, now: datetime) -> int:
    """Record a failed read of a stream; return its consecutive failures."""
    with engine.begin() as conn:
        _ensure(conn, esp, stream, now)
        conn.execute(
            update(FeedbackWatermark)
            .where(FeedbackWatermark.esp == esp, FeedbackWatermark.stream == stream)
            .values(
                failures=FeedbackWatermark.failures + 1,
                last_error=error[:ERROR_LENGTH],
                updated_at=now,
            )
        )
        count: int = conn.execute(
            select(FeedbackWatermark.failures).where(
                FeedbackWatermark.esp == esp, FeedbackWatermark.stream == stream
            )
        ).scalar_one()
    return count


def _ensure(conn: Connection, esp: str, stream: str, now: datetime) -> datetime | None:
    insert_ignore(
        conn,
        FeedbackWatermark,
        [{"esp": esp, "stream": stream, "updated_at": now, "failures": 0}],
        ["esp", "stream"],
    )
    return conn.execute(
        select(FeedbackWatermark.watermark).where(
            FeedbackWatermark.esp == esp, FeedbackWatermark.stream == stream
        )
    ).scalar_one_or_none()
