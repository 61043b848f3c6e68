"""Customer insight on PostgreSQL: migration 0002 both ways and one refresh."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, inspect

from nudge.insight import service
from nudge.settings import Settings
from nudge.store import db
from tests.unit.insight.test_profiles import AS_OF, TINY_LINES
from tests.unit.insight.test_service import STAGES, _import, _write_shop

pytestmark = pytest.mark.integration


def test_migration_0002_goes_down_and_up(pg_engine: Engine) -> None:
    tables = {"customer_profiles", "product_replenishment"}
    assert tables <= set(inspect(pg_engine).get_table_names())

    db.downgrade(pg_engine, "0001")
    assert not tables & set(inspect(pg_engine).get_table_names())
    assert db.current_revision(pg_engine) == "0001"

    db.upgrade(pg_engine)
    assert tables <= set(inspect(pg_engine).get_table_names())
    assert db.current_revision(pg_engine) == db.head_revision()


def test_refresh_writes_and_reads_back(
    pg_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    _import(pg_engine, settings, _write_shop(tmp_path, TINY_LINES))
    service.refresh(pg_engine, AS_OF)
    report = service.refresh(pg_engine, AS_OF)

    assert report.customers == 7
    stored = service.stored_profiles(pg_engine, AS_OF).set_index("external_id")
    assert len(stored) == 7
    assert stored["stage"].to_dict() == STAGES
    assert stored.loc["ann", "affinities"]["category"] == {
        "Candles": 0.6,
        "Kitchen": 0.4,
    }
    assert pd.isna(stored.loc["cat", "expected_next_order_at"])
    assert stored.loc["ann", "expected_next_order_at"] > AS_OF

    found = service.customer_insight(pg_engine, "gus")
    assert found.stored
    assert found.profile["stage"] == "at_risk"
