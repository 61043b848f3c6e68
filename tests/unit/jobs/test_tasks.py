"""The tasks, run eagerly on a SQLite store: ledger states and outbox files."""

from __future__ import annotations

import email
import os
import types
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, select, update

from nudge.delivery.doubles import KlaviyoDouble
from nudge.insight import service as insight_service
from nudge.jobs import pipeline, tasks
from nudge.jobs.celery_app import NudgeCelery, make_app
from nudge.jobs.schedule import (
    DELIVER_CHUNK,
    DISPATCH_DUE,
    HANDLE_EVENT,
    PLAN_TRIGGERED,
    PULL_FEEDBACK,
    REFRESH_INSIGHT,
    RETRAIN_RECOMMENDERS,
    RUN_CAMPAIGN,
)
from nudge.settings import Settings
from nudge.store.send_models import Send
from tests.unit.campaigns.helpers import AS_OF

from .conftest import emails, ledger


def run(app: NudgeCelery, name: str, *args: Any, **kwargs: Any) -> Any:
    """Run a task by name, eagerly, and return what it returned."""
    return app.tasks[name].delay(*args, **kwargs).get()


def recipients(files: list[Path]) -> list[str]:
    """Return the To address of each .eml file."""
    return sorted(
        str(email.message_from_bytes(path.read_bytes())["To"]) for path in files
    )


def row_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(select(Send.id).order_by(Send.id)).scalars())


def test_a_campaign_run_is_delivered_in_chunks(
    app: NudgeCelery, engine: Engine, jobs_settings: Settings, shop: dict[str, int]
) -> None:
    result = run(app, RUN_CAMPAIGN, "weekly", as_of=AS_OF.isoformat())

    # Chunks of one row: one task per e-mail of the two the plan chose.
    assert result == {"campaign": "weekly", "run_id": 1, "rows": 2, "chunks": 2}
    assert ledger(engine) == [
        ("weekly", "ann", "accepted"),
        ("weekly", "bob", "accepted"),
    ]
    files = emails(jobs_settings)
    assert [f.parent.name for f in files] == ["1", "1"]
    assert recipients(files) == ["ann@example.com", "bob@example.com"]


def test_running_a_campaign_again_sends_nothing_twice(
    app: NudgeCelery, engine: Engine, jobs_settings: Settings, shop: dict[str, int]
) -> None:
    run(app, RUN_CAMPAIGN, "weekly", as_of=AS_OF.isoformat())
    again = run(app, RUN_CAMPAIGN, "weekly", as_of=AS_OF.isoformat())

    assert again["rows"] == 0
    assert len(ledger(engine)) == 2
    assert len(emails(jobs_settings)) == 2


def test_a_chunk_delivered_twice_sends_once(
    app: NudgeCelery, engine: Engine, jobs_settings: Settings, shop: dict[str, int]
) -> None:
    run(app, RUN_CAMPAIGN, "weekly", as_of=AS_OF.isoformat())

    result = run(app, DELIVER_CHUNK, row_ids(engine))

    assert result == {"rows": 0, "statuses": {}}
    assert len(emails(jobs_settings)) == 2


def test_the_scan_delivers_what_a_killed_worker_left_open(
    app: NudgeCelery, engine: Engine, jobs_settings: Settings, shop: dict[str, int]
) -> None:
    # One e-mail was written but the worker died before the ledger heard of
    # it; the other was rendered and never handed to the outbox.
    pipeline.plan_and_record(engine, jobs_settings, ["weekly"], as_of=AS_OF)
    context = tasks.resources(jobs_settings).context
    pipeline.deliver_chunk(context, row_ids(engine)[:1])
    [written] = emails(jobs_settings)
    before = written.stat().st_mtime_ns
    with engine.begin() as conn:
        conn.execute(update(Send).values(status="rendered", finished_at=None))

    result = run(app, DISPATCH_DUE)

    assert result == {"rows": 2, "chunks": 2}
    assert [s for _, _, s in ledger(engine)] == ["accepted", "accepted"]
    assert recipients(emails(jobs_settings)) == ["ann@example.com", "bob@example.com"]
    assert written.stat().st_mtime_ns == before


def test_a_run_can_go_through_another_esp(
    app: NudgeCelery, engine: Engine, jobs_settings: Settings, shop: dict[str, int]
) -> None:
    with KlaviyoDouble() as double:
        assert isinstance(double, KlaviyoDouble)
        settings = jobs_settings.model_copy(
            update={
                "klaviyo_base_url": double.url,
                "klaviyo_api_key": SecretStr(double.api_key),
            }
        )
        celery = make_app(settings)
        celery.conf.update(task_always_eager=True, task_eager_propagates=True)

        run(celery, RUN_CAMPAIGN, "weekly", as_of=AS_OF.isoformat(), esp="klaviyo")

        with engine.connect() as conn:
            sent = conn.execute(select(Send.send_key, Send.esp, Send.status)).all()
        assert {esp for _, esp, _ in sent} == {"klaviyo"}
        assert {status for _, _, status in sent} == {"accepted"}
        assert sorted(double.accepted_ids()) == sorted(key for key, _, _ in sent)

        # The worker died before the ledger heard back: the scan sends the
        # rows through Klaviyo again (the ledger holds the run's ESP), whose
        # unique ids keep one event each.
        with engine.begin() as conn:
            conn.execute(update(Send).values(status="rendered", finished_at=None))
        run(celery, DISPATCH_DUE)
        assert [s for _, _, s in ledger(engine)] == ["accepted", "accepted"]
        assert len(double.accepted_ids()) == 2 and double.duplicates == 2
    assert emails(jobs_settings) == []


def test_a_triggered_send_waits_in_the_ledger_until_due(
    app: NudgeCelery, engine: Engine, jobs_settings: Settings, shop: dict[str, int]
) -> None:
    result = run(app, HANDLE_EVENT, "cart_abandoned", customer="ann", product="p2")

    # The cart reminder is due an hour after the event: recorded, not sent.
    assert result["run_id"] is not None and result["rows"] == 0
    assert ledger(engine) == [("cart", "ann", "planned")]
    run(app, DISPATCH_DUE)
    assert ledger(engine) == [("cart", "ann", "planned")]

    # An hour later the scan finds it due.
    with engine.begin() as conn:
        due = conn.execute(select(Send.due_at)).scalar_one()
        conn.execute(update(Send).values(due_at=due - timedelta(hours=2)))
    run(app, DISPATCH_DUE)
    assert ledger(engine) == [("cart", "ann", "accepted")]
    assert recipients(emails(jobs_settings)) == ["ann@example.com"]


def test_triggered_campaigns_are_planned_and_then_dispatched(
    app: NudgeCelery, engine: Engine, jobs_settings: Settings, shop: dict[str, int]
) -> None:
    # Fay left a product in her basket two hours before AS_OF.
    planned = run(app, PLAN_TRIGGERED, as_of=AS_OF.isoformat())

    assert planned["created"] == 1
    assert ledger(engine) == [("cart", "fay", "planned")]
    run(app, DISPATCH_DUE)
    assert ledger(engine) == [("cart", "fay", "accepted")]


def test_a_beat_run_plans_as_of_its_firing(
    app: NudgeCelery,
    engine: Engine,
    shop: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "0 10 * * mon" fired at 10:00 (London is on UTC in November); the task
    # starts a few seconds later and still plans that firing.
    late = AS_OF + timedelta(hours=10, seconds=7)
    monkeypatch.setattr(tasks, "utc_now", lambda: late)

    run(app, RUN_CAMPAIGN, "weekly")

    with engine.connect() as conn:
        occurrences = set(conn.execute(select(Send.occurrence)).scalars())
    assert occurrences == {"2026-11-30T10:00"}


def test_refresh_insight_stores_a_snapshot(
    app: NudgeCelery, engine: Engine, shop: dict[str, int]
) -> None:
    moment = AS_OF + timedelta(days=1)

    result = run(app, REFRESH_INSIGHT, as_of=moment.isoformat())

    assert result["as_of"] == moment.isoformat()
    assert insight_service.latest_as_of(engine) == moment


def test_retraining_fits_the_strategies_of_enabled_campaigns(
    app: NudgeCelery, jobs_settings: Settings, shop: dict[str, int]
) -> None:
    result = run(app, RETRAIN_RECOMMENDERS, as_of=AS_OF.isoformat())

    # The cart campaign lists the basket itself: no model to fit.
    assert result["strategies"] == ["best_sellers"]
    models = jobs_settings.path(jobs_settings.var_dir) / "models"
    assert [p.name.split("-")[0] for p in models.glob("*.pkl")] == ["best_sellers"]


def test_pull_feedback_calls_the_feedback_service(
    app: NudgeCelery,
    engine: Engine,
    jobs_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from nudge.feedback import service as feedback

    calls: list[Settings] = []

    def pull(engine: Engine, settings: Settings) -> Any:
        calls.append(settings)
        return types.SimpleNamespace(total_stored=3, failures={})

    monkeypatch.setattr(feedback, "pull", pull)

    # The alerts run after the pull: nothing was sent, so nothing is wrong.
    assert run(app, PULL_FEEDBACK) == {"stored": 3, "failures": {}, "alerts": []}
    assert calls == [jobs_settings]


def test_a_worker_keeps_its_context_until_settings_or_files_change(
    jobs_settings: Settings, engine: Engine
) -> None:
    first = tasks.resources(jobs_settings)
    assert tasks.resources(jobs_settings) is first

    changed = jobs_settings.model_copy(update={"jobs_chunk_size": 7})
    second = tasks.resources(changed)
    assert second is not first and second.settings == changed

    # A marketer edits a campaign file: the campaigns are read again.
    folder = changed.path(changed.section("campaigns").campaigns_dir)
    path = folder / "weekly.yaml"
    later = path.stat().st_mtime_ns + 5_000_000_000
    os.utime(path, ns=(later, later))
    third = tasks.resources(changed)
    assert third is not second

    tasks.close_resources()
    assert tasks.resources(changed) is not third
    tasks.close_resources()


def test_chunks_go_to_the_queue_their_run_came_from() -> None:
    sent: list[dict[str, Any]] = []

    class Chunk:
        def apply_async(self, args: Any, **options: Any) -> None:
            sent.append({"args": args, **options})

    fake = types.SimpleNamespace(
        request=types.SimpleNamespace(delivery_info={"routing_key": "shop-7"}),
        app=types.SimpleNamespace(tasks={DELIVER_CHUNK: Chunk()}),
    )

    tasks._submitter(fake)([1, 2], "klaviyo")

    assert sent == [{"args": ([1, 2], "klaviyo"), "queue": "shop-7"}]


def test_an_unknown_campaign_fails_the_task(
    app: NudgeCelery, shop: dict[str, int]
) -> None:
    with pytest.raises(pipeline.PipelineError, match="no campaign named nope"):
        run(app, RUN_CAMPAIGN, "nope", as_of=AS_OF.isoformat())
