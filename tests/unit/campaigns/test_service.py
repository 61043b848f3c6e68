"""The campaign service on a SQLite store: plans stored, caps, approval, events."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from nudge.campaigns.schema import Recipe
from nudge.campaigns.service import (
    ApprovalError,
    CampaignService,
    PlanLookupError,
    StoreRecommender,
    sent_history,
)
from nudge.settings import Settings
from nudge.store.campaign_models import PlanDecision, PlanRun
from tests.unit.campaigns.helpers import AS_OF, recommend_all
from tests.unit.campaigns.shop import (
    CART,
    WINBACK,
    fill,
    planner_settings,
    write_campaigns,
)


@pytest.fixture
def service(engine: Engine, settings: Settings, tmp_path: Path) -> CampaignService:
    """A service over the tiny shop with the winback and cart campaigns."""
    fill(engine)
    folder = write_campaigns(tmp_path / "campaigns", winback=WINBACK, cart=CART)
    return CampaignService(engine, planner_settings(settings, folder))


def outcomes(service: CampaignService, run_id: int, campaign: str) -> dict[str, str]:
    """Return each customer's stored outcome:reason in one campaign of a run."""
    rows = service.decisions(run_id, campaign)
    names = dict(
        service.contacts(rows["customer_id"].tolist())[["id", "external_id"]].values
    )
    return {
        names[c]: f"{o}:{r}"
        for c, o, r in zip(
            rows["customer_id"], rows["outcome"], rows["reason"], strict=True
        )
    }


def test_a_plan_is_stored_with_every_decision(service: CampaignService) -> None:
    result = service.plan(AS_OF, recommend=recommend_all(3))

    assert result.run_id is not None
    assert result.status == "awaiting_approval"
    assert result.profiles_stored and result.profiles_as_of == AS_OF
    assert outcomes(service, result.run_id, "winback") == {
        "ann": "chosen:best_value",
        "bob": "chosen:best_value",
        "cat": "suppressed:no_consent",
        "dan": "suppressed:unsubscribed",
        "eve": "suppressed:no_address",
    }
    assert outcomes(service, result.run_id, "cart") == {"fay": "chosen:best_value"}

    run = service.run(result.run_id)
    assert run["campaigns"] == ["cart", "winback"]
    assert run["summary"]["campaigns"]["winback"]["chosen"] == 2
    with service.engine.connect() as conn:
        items = (
            conn.execute(
                select(PlanDecision.items).where(PlanDecision.outcome == "chosen")
            )
            .scalars()
            .all()
        )
    assert all(len(i) == 3 for i in items)
    assert set(items[0][0]) == {
        "product_id",
        "score",
        "strategy",
        "reason_code",
        "reason",
    }


def test_a_dry_run_stores_nothing(service: CampaignService) -> None:
    result = service.plan(AS_OF, save=False, recommend=recommend_all(3))

    assert result.run_id is None
    with service.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(PlanRun)).scalar() == 0


def test_earlier_plans_count_towards_caps(service: CampaignService) -> None:
    first = service.plan(AS_OF, ["winback"], recommend=recommend_all(3))
    again = service.plan(AS_OF, ["winback"], recommend=recommend_all(3))
    later = service.plan(
        AS_OF + timedelta(days=7), ["winback"], recommend=recommend_all(3)
    )

    assert first.run_id and again.run_id and later.run_id
    # Planning the same moment again does not count itself.
    assert outcomes(service, again.run_id, "winback")["ann"] == "chosen:best_value"
    assert outcomes(service, later.run_id, "winback")["ann"] == "suppressed:cap"

    history = sent_history(service.engine, AS_OF + timedelta(days=7), 30)
    assert sorted(history["customer_id"].tolist()) == [1, 2]  # same e-mail once


def test_approval_is_recorded_once(service: CampaignService) -> None:
    result = service.plan(AS_OF, ["winback"], recommend=recommend_all(3))
    assert result.run_id is not None

    approved = service.approve(result.run_id, "operator")

    assert approved["status"] == "approved"
    assert approved["approved_by"] == "operator"
    assert approved["approved_at"] is not None
    with pytest.raises(ApprovalError, match="approved already, by operator"):
        service.approve(result.run_id, "someone")
    with pytest.raises(PlanLookupError, match="no plan run 999"):
        service.approve(999, "operator")


def test_a_run_without_approval_needs_none(service: CampaignService) -> None:
    result = service.plan(AS_OF, ["cart"], recommend=recommend_all(3))
    assert result.status == "planned" and result.run_id is not None

    with pytest.raises(ApprovalError, match="needs no approval"):
        service.approve(result.run_id, "operator")


def test_previous_decisions_find_the_last_run_of_a_campaign(
    service: CampaignService,
) -> None:
    first = service.plan(AS_OF, ["winback"], recommend=recommend_all(3))
    service.plan(AS_OF, ["cart"], recommend=recommend_all(3))
    last = service.plan(AS_OF, ["winback"], recommend=recommend_all(3))

    found, rows = service.previous_decisions("winback", last.run_id)

    assert found == first.run_id
    assert len(rows) == 5


def test_the_cart_strategy_lists_what_was_left_in_the_basket(
    service: CampaignService,
) -> None:
    recommender = StoreRecommender(service.engine, service.settings, AS_OF)
    recipe = Recipe.model_validate({"strategy": "cart", "count": 3})

    lists = recommender(np.array([6, 1], dtype=object), recipe)

    assert lists["customer_id"].tolist() == [6]
    assert lists["product_id"].tolist() == [3]
    assert lists["reason"].tolist() == ["Still in your basket"]


def test_the_real_recommender_fills_a_plan(service: CampaignService) -> None:
    result = service.plan(AS_OF, ["winback"], save=False)

    items = result.plan.items
    assert set(items["customer_id"]) == {1, 2}
    assert (items["strategy"] == "best_sellers").all()
    assert items["reason"].str.len().gt(0).all()
