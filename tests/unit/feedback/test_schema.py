"""Migration 0006 builds exactly the feedback models, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from nudge.feedback import store
from nudge.feedback.events import Engagement, PullReport
from nudge.store import db
from nudge.store.models import Base

from .conftest import NOW, SENT, Ledger

TABLES = {"engagement_events", "feedback_watermarks", "suppressions"}


def schema_diff(engine: Engine) -> list[object]:
    """Return what autogenerate would change in the feedback tables."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    # Other layers' tables are their own migrations' business.
    return [d for d in diff if any(table in repr(d) for table in TABLES)]


def check_migration(engine: Engine) -> None:
    """Assert the schema matches the models and 0006 goes down and up."""
    assert schema_diff(engine) == []
    db.downgrade(engine, "0005")
    assert not TABLES & set(inspect(engine).get_table_names())
    db.upgrade(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES
    assert schema_diff(engine) == []


def check_idempotent_writes(engine: Engine) -> None:
    """Assert events and suppressions are written once, however often repeated."""
    ledger = Ledger(engine)
    ann = ledger.customer("ann@example.com")
    send_id, key = ledger.send(ann, "klaviyo")
    events = [
        Engagement(
            "klaviyo", "open", "E1", SENT + timedelta(hours=1), {}, send_key=key
        ),
        Engagement(
            "klaviyo", "unsubscribe", "E2", SENT + timedelta(hours=2), {}, send_key=key
        ),
    ]
    report = PullReport()
    store.save(engine, events, report, now=NOW)
    store.save(engine, events, report, now=NOW)
    assert report.stored == {"open": 1, "unsubscribe": 1} and report.duplicates == 2
    assert report.suppressed == 1
    assert [r.send_id for r in ledger.events()] == [send_id, send_id]
    assert store.suppressed(engine, [ann]) == {ann: "unsubscribe"}
    store.advance(engine, "klaviyo", "metric:Opened Email", NOW, now=NOW)
    assert store.watermark(engine, "klaviyo", "metric:Opened Email") == NOW


def test_the_migration_matches_the_models_on_sqlite(engine: Engine) -> None:
    check_migration(engine)


def test_writes_are_idempotent_on_sqlite(engine: Engine) -> None:
    check_idempotent_writes(engine)


@pytest.mark.integration
def test_the_migration_matches_the_models_on_postgres(pg_engine: Engine) -> None:
    check_migration(pg_engine)


@pytest.mark.integration
def test_writes_are_idempotent_on_postgres(pg_engine: Engine) -> None:
    check_idempotent_writes(pg_engine)
