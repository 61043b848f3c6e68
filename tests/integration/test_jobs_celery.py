"""Scheduled runs through real Celery workers, Redis and PostgreSQL, killed midway.

A synthetic shop of a few thousand customers is imported into a fresh
PostgreSQL database. A `celery worker` process (two children) takes tasks
from a queue of this test's own on Redis; campaign runs are sent to it as
beat would send them: one into the outbox, one through the Klaviyo double.
Every accepted ledger row must be exactly one e-mail, and no customer may get
two. A second pair of runs is cut short by SIGKILL to the whole worker; a new
worker and the due-send scan finish them, still one e-mail per customer.

Redis gives a killed worker's reserved tasks back only after its visibility
timeout (an hour), so here the scan is what recovers; the tasks that were
still queued are taken by the new worker.
"""

from __future__ import annotations

import email
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
from pydantic import SecretStr
from sqlalchemy import Engine, func, select

from nudge.delivery.doubles import KlaviyoDouble
from nudge.demo.synth import generate_shop, write_csv
from nudge.ingest.importer import Importer
from nudge.insight import service as insight_service
from nudge.insight.config import InsightConfig
from nudge.jobs.celery_app import make_app
from nudge.jobs.schedule import DISPATCH_DUE, RUN_CAMPAIGN
from nudge.settings import Settings
from nudge.store.models import Customer
from nudge.store.send_models import OPEN_STATUSES, Send

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REDIS_DB = 11  # this test's own database; its keys carry a unique token too
OUTBOX_CAMPAIGN = "picked_for_you"  # every customer is in its audience
KLAVIYO_CAMPAIGN = "new_arrivals"  # repeat buyers
WAIT_SECONDS = 60


@pytest.fixture
def double() -> Iterator[KlaviyoDouble]:
    """The Klaviyo double the workers send to."""
    with KlaviyoDouble() as started:
        assert isinstance(started, KlaviyoDouble)
        yield started


@pytest.fixture
def token() -> str:
    """A name for this test's queue and workers, unique to this run."""
    return f"nudge-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store_settings(
    pg_engine: Engine, double: KlaviyoDouble, token: str, tmp_path: Path
) -> Settings:
    """Settings of the repository's campaigns over the test's database and files."""
    return Settings(
        home=REPO,
        database_url=pg_engine.url.render_as_string(hide_password=False),
        broker_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
        outbox_dir=tmp_path / "outbox",
        var_dir=tmp_path / "var",
        jobs_chunk_size=250,
        klaviyo_base_url=double.url,
        klaviyo_api_key=SecretStr(double.api_key),
        signing_secret=SecretStr("integration-test"),
    )


@pytest.fixture
def end(pg_engine: Engine, store_settings: Settings, tmp_path: Path) -> datetime:
    """Import a synthetic shop ending a month ago; return its end (naive UTC)."""
    # A month back, so that every send of the runs below is due by now.
    moment = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    shop = generate_shop(
        seed=11, customers=3000, products=300, end=moment - timedelta(days=30)
    )
    files = write_csv(shop, tmp_path / "shop")
    importer = Importer(pg_engine, store_settings)
    for kind in ("products", "customers", "orders", "events"):
        importer.run(kind, files[kind])
    config = InsightConfig.from_settings(store_settings)
    insight_service.refresh(pg_engine, shop.end, config)
    return shop.end.replace(tzinfo=None)


class Workers:
    """`celery worker` processes on the test's queue, each in its own session."""

    def __init__(self, settings: Settings, token: str, log: Path) -> None:
        self.token = token
        self.log = log
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}
        self.env.update(
            {
                "NUDGE_DATABASE_URL": settings.database_url,
                "NUDGE_BROKER_URL": settings.broker_url,
                "NUDGE_OUTBOX_DIR": str(settings.outbox_dir),
                "NUDGE_VAR_DIR": str(settings.var_dir),
                "NUDGE_JOBS_CHUNK_SIZE": str(settings.jobs_chunk_size),
                "NUDGE_KLAVIYO_BASE_URL": settings.klaviyo_base_url,
                "NUDGE_KLAVIYO_API_KEY": _secret(settings.klaviyo_api_key),
                "NUDGE_SIGNING_SECRET": _secret(settings.signing_secret),
                # Each chunk logs a line: the tail shows where a failed run stopped.
                "NUDGE_LOG_LEVEL": "info",
            }
        )
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        """Start a worker with two processes on the test's queue."""
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "nudge.jobs.celery_app",
            "worker",
            "-c",
            "2",
            "-Q",
            self.token,
            "-n",
            f"{self.token}-{len(self.running)}@%h",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            "-l",
            "warning",
        ]
        with self.log.open("ab") as out:
            worker = subprocess.Popen(
                command,
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running.append(worker)
        return worker

    def kill(self, worker: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker and its children at once, as a lost machine would."""
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)

    def stop(self) -> None:
        for worker in self.running:
            self.kill(worker)

    def check(self) -> None:
        """Fail when a worker exited by itself, with its log."""
        for worker in self.running:
            code = worker.poll()
            if code is not None and code != -signal.SIGKILL:
                pytest.fail(f"worker exited with {code}:\n{self.tail()}")

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-40:])


def _secret(value: SecretStr | None) -> str:
    assert value is not None
    return value.get_secret_value()


@pytest.fixture
def workers(store_settings: Settings, token: str, tmp_path: Path) -> Iterator[Workers]:
    """Workers for the test, killed and their Redis keys removed afterwards."""
    started = Workers(store_settings, token, tmp_path / "worker.log")
    try:
        yield started
    finally:
        started.stop()
        _forget(redis.Redis(db=REDIS_DB, decode_responses=True), token)


def _forget(client: redis.Redis, token: str) -> None:
    """Remove every Redis key and entry that names this test's queue or workers."""
    for key in client.scan_iter():
        name = str(key)
        kind = str(client.type(name))
        if token in name:
            client.delete(name)
        elif kind == "set":
            members = [m for m in client.smembers(name) if token in str(m)]
            if members:
                client.srem(name, *members)
        elif kind == "hash":
            entries = client.hgetall(name).items()
            fields = [f for f, v in entries if token in str(v)]
            if fields:
                client.hdel(name, *fields)
                client.zrem(f"{name}_index", *fields)


# ------------------------------------------------------------------ reading


def ledger(engine: Engine) -> pd.DataFrame:
    """Return every ledger row with its customer's address."""
    statement = select(
        Send.id,
        Send.campaign,
        Send.customer_id,
        Send.send_key,
        Send.plan_run_id,
        Send.status,
        Send.esp,
        Send.error,
        Customer.email,
    ).join(Customer, Customer.id == Send.customer_id)
    with engine.connect() as conn:
        result = conn.execute(statement)
        return pd.DataFrame(result.all(), columns=list(result.keys()))


def wait_for(
    done: Callable[[], bool], workers: Workers, what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        workers.check()
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; worker log:\n{workers.tail()}")
        time.sleep(0.1)


def counts(engine: Engine, after: int) -> Counter[tuple[str, str]]:
    """Return the number of ledger rows past an id, by campaign and status."""
    statement = (
        select(Send.campaign, Send.status, func.count())
        .where(Send.id > after)
        .group_by(Send.campaign, Send.status)
    )
    with engine.connect() as conn:
        return Counter({(c, s): n for c, s, n in conn.execute(statement)})


def settled(engine: Engine, after: int) -> Callable[[], bool]:
    """Return a check: both campaigns have rows past an id and none is open."""

    def check() -> bool:
        found = counts(engine, after)
        planned = {c for c, _ in found} >= {OUTBOX_CAMPAIGN, KLAVIYO_CAMPAIGN}
        return planned and not any(s in OPEN_STATUSES for _, s in found)

    return check


def recipients(folder: Path) -> dict[str, str]:
    """Return each .eml file's send key and To address, for one run's folder."""
    found = {}
    for path in folder.glob("*.eml"):
        found[path.stem] = str(email.message_from_bytes(path.read_bytes())["To"])
    return found


def assert_one_email_each(
    rows: pd.DataFrame, settings: Settings, double: KlaviyoDouble
) -> None:
    """Every accepted row is exactly one e-mail; no customer gets two."""
    assert not (rows["status"] == "failed").any(), rows["error"].value_counts()
    assert not rows.duplicated(["campaign", "customer_id"]).any()

    # The outbox: one file per accepted send, one per address.
    outbox = rows[rows["campaign"] == OUTBOX_CAMPAIGN]
    accepted = outbox[outbox["status"] == "accepted"]
    assert len(accepted) > 200
    [run_id] = set(outbox["plan_run_id"])
    files = recipients(settings.path(settings.outbox_dir) / str(run_id))
    assert set(files) == set(accepted["send_key"])
    assert sorted(files.values()) == sorted(accepted["email"])
    assert max(Counter(files.values()).values()) == 1

    # Klaviyo: one kept event per accepted send (retries share its unique_id),
    # one per customer.
    klaviyo = rows[rows["campaign"] == KLAVIYO_CAMPAIGN]
    accepted = klaviyo[klaviyo["status"] == "accepted"]
    assert len(accepted) > 200 and set(accepted["esp"]) == {"klaviyo"}
    keys = set(klaviyo["send_key"])
    held = [key for key in double.accepted_ids() if key in keys]
    assert len(held) == len(set(held)) == len(accepted)
    assert set(held) == set(accepted["send_key"])
    emails = Counter(
        str(event.profile.get("email"))
        for event in double.events.values()
        if event.unique_id in keys
    )
    assert sorted(emails) == sorted(accepted["email"])
    assert max(emails.values()) == 1


# ------------------------------------------------------------------ the test


def test_runs_deliver_once_each_even_when_the_worker_is_killed(
    pg_engine: Engine,
    store_settings: Settings,
    end: datetime,
    double: KlaviyoDouble,
    workers: Workers,
    token: str,
) -> None:
    client = make_app(store_settings)

    def send(task: str, *args: Any, **kwargs: Any) -> None:
        client.send_task(task, args=args, kwargs=kwargs, queue=token)

    # First runs: as beat would send them, one per ESP.
    first = workers.start()
    send(RUN_CAMPAIGN, OUTBOX_CAMPAIGN, as_of=end.isoformat())
    send(RUN_CAMPAIGN, KLAVIYO_CAMPAIGN, as_of=end.isoformat(), esp="klaviyo")
    wait_for(settled(pg_engine, 0), workers, "the first runs", WAIT_SECONDS)
    rows = ledger(pg_engine)
    assert_one_email_each(rows, store_settings, double)

    # Second runs, two weeks on: the worker dies with e-mails half sent.
    last = int(rows["id"].max())
    later = (end + timedelta(days=14)).isoformat()
    send(RUN_CAMPAIGN, OUTBOX_CAMPAIGN, as_of=later)
    send(RUN_CAMPAIGN, KLAVIYO_CAMPAIGN, as_of=later, esp="klaviyo")

    def halfway() -> bool:
        found = counts(pg_engine, last)
        planned = {c for c, _ in found} >= {OUTBOX_CAMPAIGN, KLAVIYO_CAMPAIGN}
        return planned and any(s == "accepted" for _, s in found)

    wait_for(halfway, workers, "the second runs to start sending", WAIT_SECONDS)
    workers.kill(first)
    cut = counts(pg_engine, last)
    assert any(s in OPEN_STATUSES for _, s in cut), "the runs ended before the kill"

    # A new worker takes what was still queued; the scan hands out the rest.
    workers.start()
    send(DISPATCH_DUE)
    wait_for(settled(pg_engine, last), workers, "the resumed runs", WAIT_SECONDS)
    rows = ledger(pg_engine)
    assert_one_email_each(rows[rows["id"] > last], store_settings, double)
