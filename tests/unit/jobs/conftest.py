"""A tiny shop in SQLite, its campaigns, and a Celery app that runs tasks eagerly."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from nudge.jobs import tasks
from nudge.jobs.celery_app import NudgeCelery, make_app
from nudge.settings import Settings
from nudge.store.models import Customer
from nudge.store.send_models import Send
from tests.unit.campaigns.helpers import AS_OF
from tests.unit.campaigns.shop import (
    CART,
    WINBACK,
    fill,
    planner_settings,
    write_campaigns,
)

# The tiny shop's win-back campaign without the approval step, so it sends.
WEEKLY = WINBACK.replace("name: winback", "name: weekly").replace(
    "approval: required", "approval: none"
)


@pytest.fixture
def jobs_settings(settings: Settings, tmp_path: Path) -> Settings:
    """Settings with the test campaigns, an in-memory broker and small chunks."""
    folder = write_campaigns(tmp_path / "campaigns", weekly=WEEKLY, cart=CART)
    return planner_settings(settings, folder).model_copy(
        update={"broker_url": "memory://localhost/", "jobs_chunk_size": 1}
    )


@pytest.fixture
def shop(engine: Engine) -> dict[str, int]:
    """Fill the store with the tiny shop; return customer ids by name.

    The customers get a creation time: the adapters read it as the moment of
    consent where the shop gave none.
    """
    ids = fill(engine)
    with engine.begin() as conn:
        conn.execute(update(Customer).values(created_at=AS_OF - timedelta(days=400)))
    return ids


@pytest.fixture
def app(jobs_settings: Settings) -> Iterator[NudgeCelery]:
    """A Celery app whose tasks (and the chunks they hand out) run in-process."""
    celery = make_app(jobs_settings)
    celery.conf.update(task_always_eager=True, task_eager_propagates=True)
    yield celery
    tasks.close_resources()


def ledger(engine: Engine) -> list[tuple[str, str, str]]:
    """Return (campaign, customer external id, status) of every ledger row."""
    statement = (
        select(Send.campaign, Customer.external_id, Send.status)
        .join(Customer, Customer.id == Send.customer_id)
        .order_by(Send.campaign, Customer.external_id)
    )
    with engine.connect() as conn:
        return [(c, e, s) for c, e, s in conn.execute(statement)]


def emails(settings: Settings) -> list[Path]:
    """Return every .eml file the outbox holds."""
    return sorted(settings.path(settings.outbox_dir).rglob("*.eml"))
