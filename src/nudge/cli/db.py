"""`nudge db`: create and migrate the store."""

from __future__ import annotations

import click

from nudge.cli.app import App, console, pass_app
from nudge.store import db as store


@click.group()
def db() -> None:
    """Create, migrate and inspect the store."""


@db.command()
@click.argument("revision", default="head")
@pass_app
def upgrade(app: App, revision: str) -> None:
    """Migrate the store's schema up to REVISION (default: the newest)."""
    store.upgrade(app.engine, revision)
    console.print(
        f"store {store.describe(app.engine)} at revision "
        f"{store.current_revision(app.engine)}"
    )


@db.command()
@click.argument("revision")
@pass_app
def downgrade(app: App, revision: str) -> None:
    """Migrate the store's schema down to REVISION ("base" empties it)."""
    store.downgrade(app.engine, revision)
    console.print(
        f"store {store.describe(app.engine)} at revision "
        f"{store.current_revision(app.engine) or 'base'}"
    )


@db.command()
@pass_app
def status(app: App) -> None:
    """Show which store nudge uses and its schema revision."""
    store.check_connection(app.engine)
    current, head = store.current_revision(app.engine), store.head_revision()
    state = "up to date" if current == head else "needs `nudge db upgrade`"
    console.print(f"store    {store.describe(app.engine)}")
    console.print(f"revision {current or 'none'} (newest {head}): {state}")
