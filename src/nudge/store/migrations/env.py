"""Alembic environment: migrate the engine nudge hands over in the config."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from nudge.store.models import Base

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):
    raise RuntimeError("nudge migrations run through `nudge db upgrade`")

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    context.run_migrations()
