"""Structured logs: lowercase event names with key/value fields, on stderr."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def configure(level: str = "warning", fmt: str = "console") -> None:
    """Set up structlog for the CLI, workers and tests."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=_StderrLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(_LEVELS[level], logging.WARNING), stream=sys.stderr)


class _StderrLogger:
    """Print each line to whatever ``sys.stderr`` is when it is written.

    Bound to the stream of the moment it was configured, a logger would write
    to a stream a test runner (or a CLI runner) has since closed.
    """

    def msg(self, message: str) -> None:
        """Write one rendered log line."""
        stream = sys.stderr
        if stream is None or stream.closed:
            stream = sys.__stderr__
        if stream is not None:
            print(message, file=stream, flush=True)

    log = debug = info = warn = warning = err = error = critical = exception = msg


class _StderrLoggerFactory:
    def __call__(self, *args: Any) -> _StderrLogger:
        return _StderrLogger()


def get_logger(name: str) -> Any:
    """Return a logger bound to a module name."""
    return structlog.get_logger(name)
