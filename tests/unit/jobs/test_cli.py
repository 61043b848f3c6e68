"""`nudge worker` and `nudge beat`: options reach Celery, a dead broker is one line."""

from __future__ import annotations

from typing import Any, ClassVar

import click
import pytest

from nudge.cli import jobs
from nudge.cli.app import App
from nudge.cli.main import run
from nudge.jobs.celery_app import NudgeCelery
from nudge.settings import Settings


def nudge(settings: Settings, *args: str) -> int:
    """Run `nudge worker` or `nudge beat` with these settings."""

    @click.group()
    @click.pass_context
    def cli(ctx: click.Context) -> None:
        ctx.obj = App(settings)

    cli.add_command(jobs.worker)
    cli.add_command(jobs.beat)
    return run(cli, list(args))


class Started:
    """Stands in for Celery's worker or beat service; records how it was made."""

    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **options: Any) -> None:
        self.made.append(options)
        self.exitcode = 0

    def start(self) -> None:
        self.made.append({"started": True})

    def run(self) -> None:
        self.made.append({"started": True})


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    Started.made = []
    monkeypatch.setattr(NudgeCelery, "Worker", Started, raising=False)
    monkeypatch.setattr(NudgeCelery, "Beat", Started, raising=False)
    return Started.made


def test_worker_options_reach_celery(
    jobs_settings: Settings, started: list[dict[str, Any]]
) -> None:
    code = nudge(
        jobs_settings, "worker", "-c", "3", "-Q", "a,b", "-Q", "c", "-l", "info"
    )

    assert code == 0
    assert started == [
        {"concurrency": 3, "queues": ["a", "b", "c"], "loglevel": "INFO"},
        {"started": True},
    ]


def test_worker_defaults_come_from_the_settings(
    jobs_settings: Settings, started: list[dict[str, Any]]
) -> None:
    assert nudge(jobs_settings, "worker") == 0
    assert started[0] == {"loglevel": "WARNING"}


def test_beat_starts_with_its_schedule_file_under_var(
    jobs_settings: Settings,
    started: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert nudge(jobs_settings, "beat") == 0

    assert started == [{"loglevel": "WARNING"}, {"started": True}]
    assert jobs_settings.path(jobs_settings.var_dir).is_dir()
    assert "times in Europe/London" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["worker", "beat"])
def test_an_unreachable_broker_is_one_line(
    command: str,
    jobs_settings: Settings,
    started: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = jobs_settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})

    assert nudge(settings, command) == 2

    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot reach the broker redis://127.0.0.1:1/0")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert started == []
