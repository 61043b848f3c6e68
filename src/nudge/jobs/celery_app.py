"""The Celery app, configured from nudge's settings.

`make_app` builds an app for some settings; the module's ``app`` is built from
`load_settings` on first use, so that ``celery -A nudge.jobs.celery_app worker``
(and ``nudge worker``) find one.

The embedded default broker is kombu's SQLAlchemy transport on a SQLite file
under ``var/``: no server to run, about 110 tasks/s, plenty for chunks of a
thousand e-mails. Production points ``broker_url`` at Redis or RabbitMQ.

Delivery is at least once: a task is acknowledged after it ran
(``task_acks_late``), a worker process that dies gives its task back
(``task_reject_on_worker_lost``) and each process reserves one task at a
time. A worker killed outright leaves its tasks unacknowledged: RabbitMQ
gives them back when the connection drops, Redis after its visibility
timeout (an hour), the SQLite broker never; the scan of due sends
(`nudge.jobs.tasks.dispatch_due`) hands out what they held within a minute.
Running a chunk twice sends nothing twice (see
`nudge.jobs.pipeline.deliver_chunk`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from celery import Celery
from kombu.exceptions import OperationalError as BrokerConnectionError

from nudge.campaigns.config import PlannerConfig
from nudge.campaigns.schema import load_campaigns
from nudge.errors import NudgeError
from nudge.jobs.schedule import beat_schedule
from nudge.settings import Settings, load_settings

# Where tasks go unless a worker is told otherwise (``--queues``).
QUEUE = "nudge"
TASK_MODULES = ("nudge.jobs.tasks",)
_SQLITE_BROKERS = ("sqla+sqlite:///", "sqlalchemy+sqlite:///")
# How often an idle worker asks the SQLite broker for work, in seconds.
SQLITE_POLL_SECONDS = 0.2
BROKER_CHECK_SECONDS = 5.0


class BrokerError(NudgeError):
    """The broker cannot be reached."""


class NudgeCelery(Celery):  # type: ignore[misc]
    """A Celery app that carries the nudge settings it was made from."""

    def __init__(self, settings: Settings, **options: Any) -> None:
        super().__init__("nudge", **options)
        self.settings = settings


def broker_url(settings: Settings) -> str:
    """Return the broker URL with a relative SQLite path made absolute."""
    url = settings.broker_url
    for prefix in _SQLITE_BROKERS:
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            if rest and rest != ":memory:" and not rest.startswith("/"):
                return prefix + str(settings.path(Path(rest)).resolve())
    return url


def describe_broker(url: str) -> str:
    """Name a broker for messages, its password masked."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def make_app(settings: Settings) -> NudgeCelery:
    """Return a Celery app configured from settings, with the beat schedule."""
    url = broker_url(settings)
    if url.startswith(_SQLITE_BROKERS):
        _prepare_sqlite_broker(url)
    folder = settings.path(PlannerConfig.from_settings(settings).campaigns_dir)
    campaigns = [found.campaign for found in load_campaigns(folder)]

    app = NudgeCelery(settings, include=list(TASK_MODULES))
    app.conf.update(
        broker_url=url,
        broker_connection_retry_on_startup=True,
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        timezone=settings.shop_timezone,
        enable_utc=True,
        task_default_queue=QUEUE,
        beat_schedule=beat_schedule(settings, campaigns),
        beat_schedule_filename=str(
            settings.path(settings.var_dir) / "celerybeat-schedule"
        ),
    )
    return app


def _prepare_sqlite_broker(url: str) -> None:
    """Create the SQLite broker's folder and set the transport's polling interval.

    kombu hands ``broker_transport_options`` to ``create_engine``, which
    refuses a polling interval, so it is set on the transport class.
    """
    from kombu.transport.sqlalchemy import Transport

    database = url.split(":///", 1)[1]
    if database not in ("", ":memory:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    Transport.polling_interval = SQLITE_POLL_SECONDS


def check_broker(app: Celery, timeout: float = BROKER_CHECK_SECONDS) -> None:
    """Raise a one-line BrokerError when the app's broker cannot be reached."""
    with app.connection_for_write() as conn:
        try:
            conn.ensure_connection(max_retries=1, interval_start=0.5, timeout=timeout)
        except (BrokerConnectionError, *conn.connection_errors, OSError) as err:
            lines = str(err).strip().splitlines()
            reason = lines[0] if lines else type(err).__name__
            where = describe_broker(str(app.conf.broker_url))
            raise BrokerError(f"cannot reach the broker {where}: {reason}") from err


_default: NudgeCelery | None = None


def default_app() -> NudgeCelery:
    """Return the app of the settings in the environment, made on first use."""
    global _default
    if _default is None:
        _default = make_app(load_settings())
    return _default


def __getattr__(name: str) -> Any:
    # ``celery -A nudge.jobs.celery_app`` looks for ``app``; building it on
    # first access keeps importing this module free of reading settings.
    if name == "app":
        return default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
