"""Shared pieces of the CLI: the app object every command receives, and consoles."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import click
import numpy as np
import pandas as pd
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


def json_ready(value: Any) -> Any:
    """Turn a cell of a frame into something json.dumps accepts."""
    if isinstance(value, datetime | date | pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NaT:
        return None
    return value
