"""Engines, sessions and schema migrations for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from nudge.errors import DatabaseError
from nudge.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the CLI read while a worker writes; foreign keys are off by
    # default in SQLite and the store relies on them.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """Create an engine for a store URL, with SQLite tuned for local use."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        # psycopg 3 is the driver nudge installs; plain URLs mean it.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise DatabaseError(
                    f"cannot create the store's folder {folder}: {err.strerror}"
                ) from err
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(parsed, pool_pre_ping=True)


def engine_for(settings: Settings) -> Engine:
    """Return the engine of the store the settings name."""
    return make_engine(settings.resolved_database_url)


def describe(engine: Engine) -> str:
    """Name a store for messages without its password."""
    return engine.url.render_as_string(hide_password=True)


def check_connection(engine: Engine) -> None:
    """Raise a one-line DatabaseError when the store cannot be reached."""
    try:
        with engine.connect():
            pass
    except OperationalError as err:
        reason = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        raise DatabaseError(
            f"cannot reach the store {describe(engine)}: {reason}"
        ) from err


def alembic_config(engine: Engine) -> Config:
    """Build an Alembic config that migrates the given engine."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def current_revision(engine: Engine) -> str | None:
    """Return the store's schema revision, or None for an empty store."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """Return the newest schema revision nudge ships."""
    return ScriptDirectory.from_config(alembic_config_no_engine()).get_current_head()


def alembic_config_no_engine() -> Config:
    """Build an Alembic config for reading the migration scripts only."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the store's schema up to a revision."""
    check_connection(engine)
    command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrate the store's schema down to a revision."""
    check_connection(engine)
    command.downgrade(alembic_config(engine), revision)


def require_schema(engine: Engine) -> None:
    """Raise unless the store is migrated to the newest revision."""
    check_connection(engine)
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise DatabaseError(
            f"the store {describe(engine)} is at schema revision {current or 'none'}, "
            f"nudge needs {head}: run `nudge db upgrade`"
        )


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """Yield a session that commits on success and rolls back on any error."""
    factory = sessionmaker(engine, expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
