"""Campaign plans on PostgreSQL: migration 0004 both ways and one stored plan."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect

from nudge.campaigns.service import CampaignService, sent_history
from nudge.settings import Settings
from nudge.store import db
from tests.unit.campaigns.helpers import AS_OF, recommend_all
from tests.unit.campaigns.shop import (
    CART,
    WINBACK,
    fill,
    planner_settings,
    write_campaigns,
)

pytestmark = pytest.mark.integration


def test_migration_0004_goes_down_and_up(pg_engine: Engine) -> None:
    tables = {"plan_runs", "plan_decisions"}
    assert tables <= set(inspect(pg_engine).get_table_names())

    db.downgrade(pg_engine, "0003")
    assert not tables & set(inspect(pg_engine).get_table_names())
    assert db.current_revision(pg_engine) == "0003"

    db.upgrade(pg_engine)
    assert tables <= set(inspect(pg_engine).get_table_names())
    assert db.current_revision(pg_engine) == db.head_revision()


def test_a_plan_is_stored_and_counted_for_caps(
    pg_engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    fill(pg_engine)
    folder = write_campaigns(tmp_path / "campaigns", winback=WINBACK, cart=CART)
    service = CampaignService(pg_engine, planner_settings(settings, folder))

    result = service.plan(AS_OF, recommend=recommend_all(3))

    assert result.run_id is not None and result.status == "awaiting_approval"
    stored = service.decisions(result.run_id)
    assert len(stored) == len(result.plan.decisions) == 6
    assert sorted(stored["outcome"]) == [
        "chosen",
        "chosen",
        "chosen",
        "suppressed",
        "suppressed",
        "suppressed",
    ]
    approved = service.approve(result.run_id, "operator")
    assert approved["status"] == "approved"

    # The real recommender fits on PostgreSQL's frames too.
    later = service.plan(AS_OF.replace(day=7, month=12), ["winback"])
    assert later.run_id is not None
    history = sent_history(pg_engine, AS_OF.replace(day=7, month=12), 30)
    assert set(history["customer_id"]) == {1, 2, 6}
    winback = service.decisions(later.run_id, "winback")
    assert (winback["reason"] == "cap").sum() == 2
