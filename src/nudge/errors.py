"""One error tree for everything a user of nudge can cause."""

from __future__ import annotations

from pathlib import Path


class NudgeError(Exception):
    """Root of every error nudge reports to a user as one line."""

    exit_code = 2


class ConfigError(NudgeError, ValueError):
    """A setting or config file holds a value nudge cannot use."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class DatabaseError(NudgeError):
    """The store cannot be reached or is not in the expected shape."""


class ImportFileError(NudgeError, ValueError):
    """An import file cannot be read at all (rows with problems are rejects)."""

    def __init__(
        self, path: Path | str, message: str, *, row: int | None = None
    ) -> None:
        where = f"{path}, row {row}" if row is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = Path(path)
        self.row = row
