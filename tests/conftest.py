"""Shared fixtures: settings and a migrated store per test, services, shared data.

Integration tests (marked `integration`) use the real PostgreSQL, Redis and
RabbitMQ on 127.0.0.1. Without them they skip with one line, unless
NUDGE_REQUIRE_SERVICES=1 (CI), where a missing service fails the run.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from nudge.logging import configure
from nudge.settings import Settings
from nudge.store.db import make_engine, upgrade

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
ONLINE_RETAIL = SHARED / "data" / "online-retail-ii" / "online_retail_ii.csv.gz"
CDNOW_SAMPLE = SHARED / "data" / "cdnow" / "CDNOW_sample.txt"
POSTGRES_URL = os.environ.get(
    "NUDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
SERVICES = {"PostgreSQL": 5432, "Redis": 6379, "RabbitMQ": 5672}
REQUIRE_SERVICES = os.environ.get("NUDGE_REQUIRE_SERVICES") == "1"


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Skip integration tests without services, or fail when CI requires them."""
    wanted = [i for i in items if i.get_closest_marker("integration")]
    if not wanted:
        return
    missing = [name for name, port in SERVICES.items() if not _reachable(port)]
    if not missing:
        return
    where = ", ".join(f"{n} (127.0.0.1:{SERVICES[n]})" for n in missing)
    if REQUIRE_SERVICES:
        raise pytest.UsageError(f"NUDGE_REQUIRE_SERVICES=1 but not reachable: {where}")
    skip = pytest.mark.skip(reason=f"integration tests need {where}")
    for item in wanted:
        item.add_marker(skip)


def needs_shared(path: Path) -> pytest.MarkDecorator:
    """Skip a test when a data set from ../shared is absent (a user's checkout)."""
    return pytest.mark.skipif(
        not path.is_file(), reason=f"{path} not found (shared data sets are absent)"
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose store and files live in the test's own folder."""
    return Settings(
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'nudge.db'}",
        var_dir=tmp_path / "var",
        outbox_dir=tmp_path / "var" / "outbox",
        import_chunk_rows=1_000,
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """A migrated SQLite store in the test's folder."""
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_engine() -> Iterator[Engine]:
    """A fresh, migrated PostgreSQL database, dropped after the test."""
    name = f"nudge_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://"),
        isolation_level="AUTOCOMMIT",
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(autouse=True, scope="session")
def quiet_logs() -> None:
    """Keep structured logs at warning level during tests."""
    configure("warning")
