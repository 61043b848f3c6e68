"""`nudge worker` and `nudge beat`: Celery's worker and scheduler, from settings.

Both check the broker first and stop with one line when it cannot be
reached, instead of retrying in silence.
"""

from __future__ import annotations

from typing import Any

import click

from nudge.cli.app import App, console, pass_app
from nudge.jobs.celery_app import (
    QUEUE,
    broker_url,
    check_broker,
    describe_broker,
    make_app,
)

LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"])


def _where(app: App) -> str:
    return describe_broker(broker_url(app.settings))


@click.command()
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(1, 512),
    help="Worker processes (default: one per CPU).",
)
@click.option(
    "-Q",
    "--queues",
    multiple=True,
    help=f"Queues to take tasks from, comma-separated or repeated (default: {QUEUE}).",
)
@click.option(
    "-l", "--loglevel", type=LOG_LEVELS, help="Log level (default: settings)."
)
@pass_app
def worker(
    app: App, concurrency: int | None, queues: tuple[str, ...], loglevel: str | None
) -> None:
    """Start a Celery worker that runs campaigns and delivers chunks."""
    celery = make_app(app.settings)
    check_broker(celery)
    names = [q.strip() for part in queues for q in part.split(",") if q.strip()]
    console.print(
        f"worker on {_where(app)}, queues {', '.join(names or [QUEUE])}",
        highlight=False,
        soft_wrap=True,
    )
    options: dict[str, Any] = {"loglevel": (loglevel or app.settings.log_level).upper()}
    if concurrency is not None:
        options["concurrency"] = concurrency
    if names:
        options["queues"] = names
    running = celery.Worker(**options)
    running.start()
    raise click.exceptions.Exit(running.exitcode or 0)


@click.command()
@click.option(
    "-l", "--loglevel", type=LOG_LEVELS, help="Log level (default: settings)."
)
@pass_app
def beat(app: App, loglevel: str | None) -> None:
    """Start the scheduler: campaign crons, the due-send scan and nightly jobs."""
    celery = make_app(app.settings)
    check_broker(celery)
    app.settings.path(app.settings.var_dir).mkdir(parents=True, exist_ok=True)
    entries = celery.conf.beat_schedule
    console.print(
        f"beat on {_where(app)}: {len(entries)} entries, "
        f"times in {app.settings.shop_timezone}",
        highlight=False,
        soft_wrap=True,
    )
    celery.Beat(loglevel=(loglevel or app.settings.log_level).upper()).run()
