"""Shared pieces of the CLI: the app object every command receives, and consoles."""

from __future__ import annotations

from dataclasses import dataclass, field

import click
from rich.console import Console
from sqlalchemy import Engine

from nudge.settings import Settings
from nudge.store.db import engine_for, require_schema

console = Console()
errors = Console(stderr=True)


@dataclass
class App:
    """What every command needs: the settings and, on demand, the store."""

    settings: Settings
    _engine: Engine | None = field(default=None, init=False)

    @property
    def engine(self) -> Engine:
        """Return the store's engine, created on first use."""
        if self._engine is None:
            self._engine = engine_for(self.settings)
        return self._engine

    def store(self) -> Engine:
        """Return the engine of a reachable store at the newest schema."""
        require_schema(self.engine)
        return self.engine


pass_app = click.make_pass_decorator(App)
