"""Celery tasks: thin shells over `nudge.jobs.pipeline` and the services.

Tasks take ids, names and ISO 8601 times, never ORM objects, and return a
few counts. A campaign run is planned and recorded in the send ledger by one
task and handed out as `deliver_chunk` tasks of ``jobs_chunk_size`` ledger
ids; each chunk goes to the queue its run came from. Sends due later
(triggered delays, quiet hours, retries) wait in the ledger, which
`dispatch_due` scans every ``jobs_dispatch_seconds``; the scan also hands
out again the rows a killed worker left open, which is safe because a chunk
delivered twice sends nobody a second e-mail.

Each worker process keeps one engine and one pipeline `Context` (renderer,
ESP adapters) across tasks; they are made again when the settings or the
campaign and template files change, and closed when the process ends.

With the embedded SQLite broker a worker killed outright loses the tasks it
held (Redis and RabbitMQ give them back); the ledger scan still delivers
every e-mail they would have, but a killed `run_campaign` that had not yet
recorded its plan waits for the campaign's next firing.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from celery import shared_task, signals
from kombu.exceptions import OperationalError as BrokerConnectionError
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError as StoreConnectionError

from nudge.campaigns.config import PlannerConfig
from nudge.campaigns.schema import Campaign, CampaignFile
from nudge.campaigns.service import CampaignService, naive_utc, utc_now
from nudge.delivery import registry
from nudge.feedback import alerts
from nudge.insight import service as insight_service
from nudge.insight.config import InsightConfig
from nudge.jobs import pipeline
from nudge.jobs.pipeline import Context, Submit
from nudge.jobs.schedule import (
    DELIVER_CHUNK,
    DISPATCH_DUE,
    HANDLE_EVENT,
    PLAN_TRIGGERED,
    PULL_FEEDBACK,
    REFRESH_INSIGHT,
    RETRAIN_RECOMMENDERS,
    RUN_CAMPAIGN,
    latest_firing,
)
from nudge.logging import configure, get_logger
from nudge.recommend.service import RecommendService
from nudge.settings import Settings, load_settings
from nudge.store.db import engine_for

log = get_logger(__name__)

# The store or the broker out of reach for a moment: worth another try. ESP
# failures are not here: the pipeline records them and the ledger retries.
RETRYABLE: tuple[type[Exception], ...] = (
    StoreConnectionError,
    BrokerConnectionError,
)
RETRY: dict[str, Any] = {
    "autoretry_for": RETRYABLE,
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 5,
}
# Strategies a campaign may name that are no fitted model.
_NOT_MODELS = frozenset({"cart"})


# ------------------------------------------------------------------ resources


@dataclass
class Resources:
    """What one worker process keeps between tasks."""

    settings: Settings
    stamp: tuple[int, int]
    engine: Engine
    context: Context

    def close(self) -> None:
        """Close the adapters and the engine's connections."""
        self.context.close()
        self.engine.dispose()


_current: Resources | None = None
_lock = threading.Lock()


def resources(settings: Settings) -> Resources:
    """Return this process's engine and context for settings, made on first use."""
    global _current
    stamp = files_stamp(settings)
    with _lock:
        found = _current
        if found is not None and found.settings == settings and found.stamp == stamp:
            return found
        if found is not None:
            found.close()
        engine = engine_for(settings)
        _current = Resources(settings, stamp, engine, Context(engine, settings))
        log.info("worker resources made", store=engine.url.get_backend_name())
        return _current


def close_resources(**_: Any) -> None:
    """Close this process's context and engine (at worker shutdown)."""
    global _current
    with _lock:
        if _current is not None:
            _current.close()
            _current = None


def files_stamp(settings: Settings) -> tuple[int, int]:
    """Return the number and newest change of the campaign and template files.

    The context reads campaigns and compiles templates once; a marketer's
    edit to either makes a new one.
    """
    config = PlannerConfig.from_settings(settings)
    count, newest = 0, 0
    for folder in (config.campaigns_dir, config.templates_dir):
        for path in _files(settings.path(folder)):
            count += 1
            newest = max(newest, path.stat().st_mtime_ns)
    return count, newest


def _files(folder: Path) -> Iterator[Path]:
    if folder.is_dir():
        yield from (p for p in folder.rglob("*") if p.is_file())


def _settings(task: Any) -> Settings:
    """Return the settings of the app a task runs in."""
    found = getattr(task.app, "settings", None)
    return found if isinstance(found, Settings) else load_settings()


def _work(task: Any) -> Resources:
    return resources(_settings(task))


def _submitter(task: Any) -> Submit:
    """Return a callable that hands a chunk of ledger ids to `deliver_chunk`.

    The chunk goes to the queue the calling task came from, so a run sent to
    a dedicated queue is delivered by the workers of that queue.
    """
    info = task.request.delivery_info or {}
    queue = info.get("routing_key")
    chunk_task = task.app.tasks[DELIVER_CHUNK]

    def submit(ids: list[int], esp: str | None) -> None:
        options = {"queue": queue} if queue else {}
        chunk_task.apply_async((ids, esp), **options)

    return submit


def _moment(text: str | None) -> datetime | None:
    return naive_utc(datetime.fromisoformat(text)) if text else None


def _task(name: str, *, retry: bool = True) -> Callable[[Callable[..., Any]], Any]:
    """Return the decorator that makes a function a (bound) shared task."""
    options: dict[str, Any] = {"name": name, "bind": True, **(RETRY if retry else {})}
    decorator: Callable[[Callable[..., Any]], Any] = shared_task(**options)
    return decorator


# ------------------------------------------------------------------ tasks


@_task(RUN_CAMPAIGN)
def run_campaign(
    self: Any, name: str, as_of: str | None = None, esp: str | None = None
) -> dict[str, Any]:
    """Plan one campaign, record its sends and hand the due ones out in chunks.

    Without ``as_of`` a scheduled campaign is planned as of its firing (when
    it fired within `LATE_START`), otherwise as of now; ``esp`` sends this
    run through another ESP than the campaign's (recorded on each ledger row,
    so the chunks carry none).
    """
    work = _work(self)
    service = work.context.service
    if esp is not None:
        registry.load(esp)  # an unknown name fails before anything is planned
        service = SentThrough(service, esp)
    moment = _moment(as_of) or _firing(work, name) or utc_now()
    planned = pipeline.plan_and_record(
        work.engine, work.settings, [name], as_of=moment, service=service
    )
    if planned.run_id is None:
        return {"campaign": name, "run_id": None, "rows": 0, "chunks": 0}

    report = pipeline.dispatch(
        work.engine,
        work.settings,
        now=max(moment, utc_now()),
        run_id=planned.run_id,
        submit=_submitter(self),
    )
    # After each run: a run that sent nothing, bounce and complaint rates.
    alerts.check(work.engine, work.settings)
    log.info(
        "campaign run handed out",
        campaign=name,
        run=planned.run_id,
        rows=report.rows,
        chunks=report.chunks,
    )
    return {
        "campaign": name,
        "run_id": planned.run_id,
        "rows": report.rows,
        "chunks": report.chunks,
    }


class SentThrough(CampaignService):
    """The campaign files of a service, each sent through one ESP.

    The override is recorded in the send ledger with the plan, so that the
    scan and every retry deliver a row through the ESP this run chose.
    """

    def __init__(self, base: CampaignService, esp: str) -> None:
        super().__init__(base.engine, base.settings, base.config)
        self.esp = esp

    def campaigns(self, names: Sequence[str] = ()) -> list[CampaignFile]:
        """Load the campaign files, each with this ESP."""
        return [
            dataclasses.replace(
                f, campaign=f.campaign.model_copy(update={"esp": self.esp})
            )
            for f in super().campaigns(names)
        ]


def _firing(work: Resources, name: str) -> datetime | None:
    campaign = work.context.campaign(name)
    cron = campaign.trigger.cron if campaign is not None else None
    if cron is None:
        return None
    return latest_firing(cron, utc_now(), work.settings.timezone)


@_task(DELIVER_CHUNK)
def deliver_chunk(self: Any, ids: list[int], esp: str | None = None) -> dict[str, Any]:
    """Deliver some ledger rows (those still open) through their ESP."""
    work = _work(self)
    report = pipeline.deliver_chunk(work.context, [int(i) for i in ids], esp=esp)
    return {"rows": report.rows, "statuses": report.statuses}


@_task(DISPATCH_DUE)
def dispatch_due(self: Any) -> dict[str, Any]:
    """Hand out the open ledger rows that are due, then send waiting campaigns."""
    work = _work(self)
    report = pipeline.dispatch(work.engine, work.settings, submit=_submitter(self))
    finished = pipeline.finish_campaigns(work.context)
    if report.rows or finished.statuses:
        log.info(
            "due sends handed out",
            rows=report.rows,
            chunks=report.chunks,
            **finished.statuses,
        )
    return {"rows": report.rows, "chunks": report.chunks, **finished.statuses}


@_task(PLAN_TRIGGERED)
def plan_triggered(self: Any, as_of: str | None = None) -> dict[str, Any]:
    """Plan the enabled event-triggered campaigns as of now and record their sends.

    Each send is recorded with its due time; `dispatch_due` sends it then.
    """
    work = _work(self)
    files = work.context.service.campaigns()
    names = [f.campaign.name for f in files if _triggered(f.campaign)]
    if not names:
        return {"run_id": None, "created": 0}
    planned = pipeline.plan_and_record(
        work.engine,
        work.settings,
        names,
        as_of=_moment(as_of) or utc_now(),
        service=work.context.service,
        keep_empty=False,
    )
    created = planned.recorded.created if planned.recorded is not None else 0
    return {"run_id": planned.run_id, "created": created}


def _triggered(campaign: Campaign) -> bool:
    return campaign.enabled and not campaign.scheduled


# Not retried on its own; a redelivered task stores its event once, by task id.
@_task(HANDLE_EVENT, retry=False)
def handle_event(
    self: Any,
    kind: str,
    customer: str | None = None,
    product: str | None = None,
    at: str | None = None,
) -> dict[str, Any]:
    """Store a trigger event and hand out the sends it makes due now."""
    work = _work(self)
    recorded = pipeline.record_event(
        work.engine,
        work.settings,
        kind,
        customer=customer,
        product=product,
        at=_moment(at),
        key=str(self.request.id) if self.request.id else None,
    )
    run_id = recorded.planned.run_id if recorded.planned is not None else None
    rows = 0
    if run_id is not None:
        report = pipeline.dispatch(
            work.engine, work.settings, run_id=run_id, submit=_submitter(self)
        )
        rows = report.rows
    return {"kind": kind, "stored": recorded.stored, "run_id": run_id, "rows": rows}


@_task(REFRESH_INSIGHT)
def refresh_insight(self: Any, as_of: str | None = None) -> dict[str, Any]:
    """Compute and store every customer's profile as of now (or ``as_of``)."""
    work = _work(self)
    config = InsightConfig.from_settings(work.settings)
    report = insight_service.refresh(work.engine, _moment(as_of) or utc_now(), config)
    return {"as_of": report.as_of.isoformat(), "customers": report.customers}


@_task(RETRAIN_RECOMMENDERS)
def retrain_recommenders(self: Any, as_of: str | None = None) -> dict[str, Any]:
    """Fit the recommenders the enabled campaigns use, on the store as of now."""
    work = _work(self)
    files = work.context.service.campaigns()
    strategies = sorted(_strategies(f.campaign for f in files if f.campaign.enabled))
    service = RecommendService(work.engine, work.settings)
    data = service.interactions(_moment(as_of) or utc_now())
    for strategy in strategies:
        service.model(strategy, data)
    log.info("recommenders fitted", strategies=strategies, customers=data.n_customers)
    return {"strategies": strategies, "customers": data.n_customers}


def _strategies(campaigns: Iterable[Campaign]) -> set[str]:
    """Return the model strategies some campaigns pick products with."""
    found: set[str] = set()
    for campaign in campaigns:
        recipe = campaign.recommend
        if recipe is not None:
            found.update(s for s in (recipe.strategy, recipe.fallback) if s)
    return found - _NOT_MODELS


@_task(PULL_FEEDBACK)
def pull_feedback(self: Any) -> dict[str, Any]:
    """Pull engagement (opens, clicks, unsubscribes) from the ESPs into the store."""
    from nudge.feedback.service import pull

    work = _work(self)
    report = pull(work.engine, work.settings)
    # After each pull: rates, collapses and failing pulls, logged and posted.
    problems = alerts.check(work.engine, work.settings)
    return {
        "stored": report.total_stored,
        "failures": dict(report.failures),
        "alerts": [a.code for a in problems],
    }


# ------------------------------------------------------------------ signals


def _configure_logs(sender: Any = None, **_: Any) -> None:
    settings = getattr(getattr(sender, "app", None), "settings", None)
    if isinstance(settings, Settings):
        configure(settings.log_level, settings.log_format)


def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    structlog.contextvars.bind_contextvars(
        task_id=task_id, task=getattr(task, "name", None)
    )


def _unbind_task(**_: Any) -> None:
    structlog.contextvars.unbind_contextvars("task_id", "task")


signals.worker_init.connect(_configure_logs, weak=False)
signals.beat_init.connect(_configure_logs, weak=False)
signals.task_prerun.connect(_bind_task, weak=False)
signals.task_postrun.connect(_unbind_task, weak=False)
signals.worker_process_shutdown.connect(close_resources, weak=False)
signals.worker_shutdown.connect(close_resources, weak=False)
