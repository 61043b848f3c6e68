"""The send ledger: which e-mails are due, what each became, read and written in bulk.

Rows come from stored plans (`record_plan`); the dispatcher finds the open
ones that fall due (`due_ids`), a delivery chunk reads them (`open_rows`),
marks them rendered before it calls the ESP (`mark_rendered`) and writes what
the ESP answered (`record_results`). A chunk that dies between the two is
delivered again: its rows are still open, and the ESP call carries the same
idempotency key (`send_key`), so the customer still gets one e-mail.

Only the store is known here: no plans, templates or ESP clients.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, Table, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from nudge.delivery.base import Result
from nudge.ingest.writer import bulk_insert, bulk_update
from nudge.logging import get_logger
from nudge.store.campaign_models import PlanDecision, PlanRun
from nudge.store.send_models import (
    ACCEPTED,
    FAILED,
    FINAL_STATUSES,
    OPEN_STATUSES,
    PLANNED,
    RENDERED,
    SUBMITTED,
    SUPPRESSED,
    Send,
)

log = get_logger(__name__)

SENDS: Table = Send.__table__  # type: ignore[assignment]
_DECISIONS: Table = PlanDecision.__table__  # type: ignore[assignment]
_RUNS: Table = PlanRun.__table__  # type: ignore[assignment]
# Plan outcomes that become ledger rows: sends, and the holdout to compare with.
LEDGER_OUTCOMES: tuple[str, ...] = ("chosen", "deferred", "holdout")
# A campaign that needs approval sends once its plan run is approved.
APPROVED = "approved"
# A failure the ESP may get over is tried again this many times in all.
MAX_ATTEMPTS = 5
RETRY_DELAY = timedelta(minutes=5)
_IN_CHUNK = 5_000  # ids per IN (...) list


def send_key(campaign: str, customer_id: int, occurrence: str) -> str:
    """Return the idempotency key of one e-mail: stable for its ledger identity."""
    text = f"{campaign}\x1f{customer_id}\x1f{occurrence}".encode()
    return "n" + hashlib.blake2b(text, digest_size=15).hexdigest()


def _now() -> datetime:
    return pd.Timestamp.now("UTC").tz_localize(None).floor("s").to_pydatetime()


def _slices(ids: Sequence[Any], size: int = _IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


# ------------------------------------------------------------------ writing


@dataclass(frozen=True)
class Recorded:
    """What recording a plan in the ledger did."""

    run_id: int
    created: int
    already: int
    holdout: int


def record_plan(
    engine: Engine,
    run_id: int,
    esp_of: Mapping[str, str],
    approval: Iterable[str] = (),
) -> Recorded:
    """Add a stored plan's sends and holdouts to the ledger; keep rows already there.

    ``esp_of`` maps each campaign to the ESP its e-mails go through;
    ``approval`` names the campaigns whose e-mails wait for the run's
    approval (the others of the run go as planned). A holdout row is written
    as suppressed (never sent) so that feedback can compare it.
    """
    waiting = set(approval)
    columns = [
        _DECISIONS.c[c]
        for c in (
            "campaign",
            "customer_id",
            "outcome",
            "variant",
            "send_at",
            "items",
            "occurrence",
        )
    ]
    statement = select(*columns).where(
        _DECISIONS.c.run_id == run_id, _DECISIONS.c.outcome.in_(LEDGER_OUTCOMES)
    )
    with engine.connect() as conn:
        result = conn.execute(statement)
        frame = pd.DataFrame(result.all(), columns=list(result.keys()))
        as_of = conn.execute(select(_RUNS.c.as_of).where(_RUNS.c.id == run_id)).scalar()
    if frame.empty:
        return Recorded(run_id, 0, 0, 0)

    now = _now()
    occurrence = frame["occurrence"].where(
        frame["occurrence"].notna(), f"{as_of:%Y-%m-%dT%H:%M}" if as_of else "-"
    )
    holdout = (frame["outcome"] == "holdout").to_numpy()
    keys = [
        send_key(c, int(i), o)
        for c, i, o in zip(
            frame["campaign"], frame["customer_id"], occurrence, strict=True
        )
    ]
    rows = pd.DataFrame(
        {
            "send_key": keys,
            "plan_run_id": run_id,
            "campaign": frame["campaign"],
            "customer_id": frame["customer_id"].astype("int64"),
            "occurrence": occurrence,
            "variant": frame["variant"],
            "holdout": holdout,
            "approval_required": frame["campaign"].isin(waiting).to_numpy(),
            "items": frame["items"],
            "esp": [esp_of.get(c, "outbox") for c in frame["campaign"]],
            "status": [SUPPRESSED if h else PLANNED for h in holdout],
            "attempts": 0,
            "error": [("holdout: control group" if h else None) for h in holdout],
            "due_at": pd.to_datetime(frame["send_at"]).fillna(pd.Timestamp(now)),
            "created_at": now,
            "updated_at": now,
            "finished_at": [now if h else None for h in holdout],
        }
    )
    # The same (campaign, customer, occurrence) planned again keeps its first
    # row: whatever happened to that e-mail stands.
    with engine.begin() as conn:
        known = _existing_keys(conn, keys)
        fresh = rows[~rows["send_key"].isin(known)]
        try:
            with conn.begin_nested():
                bulk_insert(conn, SENDS, fresh)
        except IntegrityError:
            # Another planner wrote some of them meanwhile: one at a time.
            fresh = _insert_missing(conn, fresh)
    created = len(fresh)
    log.info("plan recorded in the ledger", run=run_id, created=created)
    return Recorded(run_id, created, len(rows) - created, int(holdout.sum()))


def _existing_keys(conn: Connection, keys: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for part in _slices(list(keys)):
        found.update(
            conn.execute(select(SENDS.c.send_key).where(SENDS.c.send_key.in_(part)))
            .scalars()
            .all()
        )
    return found


def _insert_missing(conn: Connection, rows: pd.DataFrame) -> pd.DataFrame:
    kept = []
    for index, record in zip(rows.index, rows.to_dict("records"), strict=True):
        clean = {str(k): (None if _missing(v) else v) for k, v in record.items()}
        try:
            with conn.begin_nested():
                conn.execute(SENDS.insert().values(**clean))
            kept.append(index)
        except IntegrityError:
            continue
    return rows.loc[kept]


def _missing(value: Any) -> bool:
    return value is None or (
        not isinstance(value, list | dict) and bool(pd.isna(value))
    )


def mark_rendered(
    engine: Engine, subjects: Mapping[int, str], esps: Mapping[int, str]
) -> None:
    """Record that rows were rendered (subject, ESP) and are being sent.

    The ESP is written before the call, so that a row whose chunk dies goes
    again through the ESP that may already hold it, never through another.
    """
    if not subjects:
        return
    now = _now()
    records = [
        {
            "_id": i,
            "status": RENDERED,
            "subject": s[:255],
            "esp": esps[i],
            "updated_at": now,
        }
        for i, s in subjects.items()
    ]
    with engine.begin() as conn:
        bulk_update(conn, SENDS, records)


def mark(
    engine: Engine,
    ids: Sequence[int],
    status: str,
    error: str | None = None,
    *,
    esp_job_id: str | None = None,
) -> None:
    """Set the status (and reason) of some rows."""
    if not ids:
        return
    now = _now()
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if error is not None:
        values["error"] = error[:500]
    if esp_job_id is not None:
        values["esp_job_id"] = esp_job_id
    if status in FINAL_STATUSES:
        values["finished_at"] = now
    with engine.begin() as conn:
        for part in _slices(list(ids)):
            conn.execute(update(SENDS).where(SENDS.c.id.in_(part)).values(**values))


def record_results(
    engine: Engine,
    ids_by_key: Mapping[str, int],
    results: Sequence[Result],
    *,
    attempts: Mapping[int, int],
    settled: str = ACCEPTED,
) -> dict[str, int]:
    """Write what the ESP made of each message; return counts by new status.

    ``settled`` is the status of an accepted message: ``accepted``, or
    ``submitted`` where the ESP still has to send it (Mailchimp's campaign).
    A failure the ESP may get over goes back to ``planned``, due again after a
    growing delay, until ``MAX_ATTEMPTS``.
    """
    now = _now()
    counts: dict[str, int] = {}
    records: list[dict[str, Any]] = []
    for result in results:
        row_id = ids_by_key[result.send_id]
        tries = attempts.get(row_id, 0) + max(result.attempts, 1)
        record: dict[str, Any] = {
            "_id": row_id,
            "attempts": tries,
            "updated_at": now,
            "esp": result.esp,
        }
        if result.status == "accepted":
            status = settled
            record.update(esp_id=result.esp_id, error=None)
            if settled == ACCEPTED:
                record["finished_at"] = now
        elif result.status == "suppressed" or result.permanent or tries >= MAX_ATTEMPTS:
            status = SUPPRESSED if result.status == "suppressed" else FAILED
            record.update(error=(result.error or status)[:500], finished_at=now)
        else:
            status = PLANNED
            record.update(
                error=(result.error or "failed")[:500],
                due_at=now + RETRY_DELAY * tries,
            )
        record["status"] = status
        if status in (SUBMITTED, ACCEPTED):
            record["submitted_at"] = now
        counts[status] = counts.get(status, 0) + 1
        records.append(record)
    # bulk_update needs the same columns in every record: one update per shape.
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(tuple(sorted(record)), []).append(record)
    with engine.begin() as conn:
        for group in groups.values():
            bulk_update(conn, SENDS, group)
    return counts


# ------------------------------------------------------------------ reading


def due_ids(
    engine: Engine,
    now: datetime,
    *,
    run_id: int | None = None,
    campaign: str | None = None,
    statuses: Sequence[str] = OPEN_STATUSES,
) -> list[int]:
    """Return the ids of open rows due by ``now`` that may be sent, in order.

    Rows of a campaign that needs approval wait until their run is approved.
    """
    statement = (
        select(SENDS.c.id)
        .join(_RUNS, _RUNS.c.id == SENDS.c.plan_run_id)
        .where(
            SENDS.c.status.in_(list(statuses)),
            SENDS.c.due_at <= now,
            or_(SENDS.c.approval_required.is_(False), _RUNS.c.status == APPROVED),
        )
        .order_by(SENDS.c.id)
    )
    if run_id is not None:
        statement = statement.where(SENDS.c.plan_run_id == run_id)
    if campaign is not None:
        statement = statement.where(SENDS.c.campaign == campaign)
    with engine.connect() as conn:
        return [int(i) for i in conn.execute(statement).scalars()]


def open_rows(engine: Engine, ids: Sequence[int]) -> pd.DataFrame:
    """Return the rows of some ids that are still open (others were settled)."""
    frames = []
    with engine.connect() as conn:
        for part in _slices(list(ids)):
            result = conn.execute(
                select(SENDS).where(
                    SENDS.c.id.in_(part), SENDS.c.status.in_(OPEN_STATUSES)
                )
            )
            frames.append(pd.DataFrame(result.all(), columns=list(result.keys())))
    if not frames:
        return pd.DataFrame(columns=[c.name for c in SENDS.columns])
    return pd.concat(frames, ignore_index=True).sort_values("id", ignore_index=True)


def accepted_before(engine: Engine, esp: str, customer_ids: Sequence[int]) -> set[int]:
    """Return the customers some e-mail already reached through an ESP."""
    found: set[int] = set()
    with engine.connect() as conn:
        for part in _slices(list(customer_ids)):
            found.update(
                int(i)
                for i in conn.execute(
                    select(SENDS.c.customer_id)
                    .where(
                        SENDS.c.esp == esp,
                        SENDS.c.status.in_((ACCEPTED, SUBMITTED)),
                        SENDS.c.customer_id.in_(part),
                    )
                    .distinct()
                ).scalars()
            )
    return found


def waiting_campaigns(engine: Engine, esp: str) -> list[tuple[int, str, str]]:
    """Return (run, campaign, variant) groups with rows an ESP's campaign must send.

    A group is ready when none of its rows is still planned or rendered.
    """
    busy = (
        select(SENDS.c.plan_run_id, SENDS.c.campaign, SENDS.c.variant)
        .where(SENDS.c.esp == esp, SENDS.c.status.in_((PLANNED, RENDERED)))
        .distinct()
    )
    statement = (
        select(SENDS.c.plan_run_id, SENDS.c.campaign, SENDS.c.variant)
        .where(SENDS.c.esp == esp, SENDS.c.status == SUBMITTED)
        .distinct()
    )
    with engine.connect() as conn:
        waiting = {(int(r), str(c), str(v)) for r, c, v in conn.execute(statement)}
        blocked = {(int(r), str(c), str(v)) for r, c, v in conn.execute(busy)}
    return sorted(waiting - blocked)


def group_ids(engine: Engine, run_id: int, campaign: str, variant: str) -> list[int]:
    """Return the submitted rows of one run's campaign variant."""
    with engine.connect() as conn:
        return [
            int(i)
            for i in conn.execute(
                select(SENDS.c.id).where(
                    SENDS.c.plan_run_id == run_id,
                    SENDS.c.campaign == campaign,
                    SENDS.c.variant == variant,
                    SENDS.c.status == SUBMITTED,
                )
            ).scalars()
        ]


def counts(
    engine: Engine, *, run_id: int | None = None, campaign: str | None = None
) -> dict[str, int]:
    """Return the number of ledger rows by status (of one run or campaign)."""
    statement = select(SENDS.c.status, func.count()).group_by(SENDS.c.status)
    if run_id is not None:
        statement = statement.where(SENDS.c.plan_run_id == run_id)
    if campaign is not None:
        statement = statement.where(SENDS.c.campaign == campaign)
    with engine.connect() as conn:
        return {str(s): int(n) for s, n in conn.execute(statement)}
