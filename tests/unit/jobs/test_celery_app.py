"""The Celery app: configuration from settings, the broker URL, the lazy app."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kombu.transport.sqlalchemy import Transport

from nudge.jobs import celery_app
from nudge.jobs.celery_app import (
    QUEUE,
    SQLITE_POLL_SECONDS,
    BrokerError,
    NudgeCelery,
    broker_url,
    check_broker,
    make_app,
)
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

REPO = Path(__file__).resolve().parents[3]


def test_the_app_redelivers_what_a_lost_worker_held(jobs_settings: Settings) -> None:
    conf = make_app(jobs_settings).conf

    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_ignore_result is True and conf.result_backend is None
    assert conf.task_default_queue == QUEUE
    assert conf.timezone == jobs_settings.shop_timezone


def test_every_task_is_registered(jobs_settings: Settings) -> None:
    app = make_app(jobs_settings)
    app.loader.import_default_modules()

    names = {
        RUN_CAMPAIGN,
        DELIVER_CHUNK,
        DISPATCH_DUE,
        PLAN_TRIGGERED,
        HANDLE_EVENT,
        REFRESH_INSIGHT,
        RETRAIN_RECOMMENDERS,
        PULL_FEEDBACK,
    }
    assert names <= set(app.tasks)
    assert all(app.tasks[name].app is app for name in names)


def test_the_embedded_broker_is_a_sqlite_file_under_home(tmp_path: Path) -> None:
    from nudge.campaigns.config import PlannerConfig

    shipped = PlannerConfig(campaigns_dir=REPO / "config" / "campaigns")
    settings = Settings(home=tmp_path, sections={"campaigns": shipped})

    app = make_app(settings)

    path = tmp_path / "var" / "celery-broker.db"
    assert app.conf.broker_url == f"sqla+sqlite:///{path}"
    assert path.parent.is_dir()
    # kombu hands transport options to create_engine: the interval is a
    # class attribute.
    assert Transport.polling_interval == SQLITE_POLL_SECONDS
    assert "polling_interval" not in app.conf.broker_transport_options


def test_a_server_broker_url_is_kept() -> None:
    for url in ("redis://127.0.0.1:6379/3", "amqp://guest:guest@127.0.0.1:5672//"):
        assert broker_url(Settings(broker_url=url)) == url
    absolute = "sqla+sqlite:////srv/nudge/broker.db"
    assert broker_url(Settings(broker_url=absolute)) == absolute


def test_an_unreachable_broker_is_one_line_without_the_password(
    jobs_settings: Settings,
) -> None:
    settings = jobs_settings.model_copy(
        update={"broker_url": "redis://:hunter2@127.0.0.1:1/0"}
    )
    started = time.perf_counter()

    with pytest.raises(BrokerError) as caught:
        check_broker(make_app(settings), timeout=2)

    message = str(caught.value)
    assert message.startswith("cannot reach the broker redis://:***@127.0.0.1:1/0: ")
    assert "hunter2" not in message and "\n" not in message
    assert time.perf_counter() - started < 5


def test_the_module_app_is_made_from_the_settings_on_first_use(
    jobs_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(celery_app, "_default", None)
    monkeypatch.setattr(celery_app, "load_settings", lambda: jobs_settings)

    app = celery_app.app

    assert isinstance(app, NudgeCelery) and app.settings == jobs_settings
    assert celery_app.app is app
    with pytest.raises(AttributeError):
        _ = celery_app.nothing_here
