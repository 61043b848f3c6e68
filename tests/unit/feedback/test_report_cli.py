"""`nudge report` and `nudge health` through a click group of their own."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, insert

from nudge.cli.app import App
from nudge.cli.main import run
from nudge.cli.report import health, report
from nudge.feedback.events import utcnow
from nudge.settings import Settings
from nudge.store.feedback_models import FeedbackWatermark
from tests.unit.feedback.test_report import Shop

HOUR, DAY = timedelta(hours=1), timedelta(days=1)


@pytest.fixture
def cli(settings: Settings) -> click.Group:
    """A group with the two commands, over the test's settings."""

    @click.group()
    @click.pass_context
    def group(ctx: click.Context) -> None:
        ctx.obj = App(settings)

    group.add_command(report)
    group.add_command(health)
    return group


@pytest.fixture
def shop(engine: Engine) -> Shop:
    """Winback to three customers and one in holdout, three days ago."""
    shop = Shop(engine)
    sent = utcnow() - 3 * DAY
    run_id = shop.run(sent, "winback")
    buyer, reader, other, held = (shop.customer() for _ in range(4))
    first = shop.send(run_id, "winback", buyer, due=sent)
    shop.send(run_id, "winback", reader, variant="b", due=sent)
    shop.send(run_id, "winback", other, due=sent)
    shop.send(run_id, "winback", held, holdout=True, due=sent)
    shop.event(first, "click", sent + HOUR)
    shop.order(buyer, sent + DAY, (2, 25.0, "placed"))
    return shop


def test_report_prints_tables(
    cli: click.Group, shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(cli, ["report"]) == 0
    out = capsys.readouterr().out
    assert "all campaigns, as of" in out
    for title in ("revenue per campaign", "engagement per variant", "per day"):
        assert title in out
    assert "winback" in out


def test_report_as_json_and_html(
    cli: click.Group, shop: Shop, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "reports" / "winback.html"
    assert run(cli, ["report", "winback", "--json", "--html", str(page)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["campaign"] == "winback"
    (winback,) = data["campaigns"]
    assert (winback["sends"], winback["delivered"], winback["clicks"]) == (3, 3, 1)
    assert winback["attributed_revenue"] == 50.0
    assert winback["verdict"] == "not yet significant"
    assert [v["variant"] for v in data["variants"]] == ["a", "b"]
    assert "<svg" in page.read_text(encoding="utf-8")


def test_report_since_leaves_older_sends_out(
    cli: click.Group, shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    since = f"{utcnow() - DAY:%Y-%m-%d}"
    assert run(cli, ["report", "--since", since, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["campaigns"] == []
    assert run(cli, ["report", "--since", since]) == 0
    assert "no e-mails in this report yet" in capsys.readouterr().out


def test_bad_input_is_one_line(
    cli: click.Group, shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(cli, ["report", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown campaign 'nope'; campaigns with e-mails: winback"
    assert run(cli, ["report", "--since", "last tuesday"]) == 2
    assert "Invalid value for '--since'" in capsys.readouterr().err


def test_health_exits_non_zero_on_a_warning(cli: click.Group, shop: Shop) -> None:
    # CliRunner runs in click's standalone mode, where Exit(1) is the exit code.
    runner = CliRunner()
    healthy = runner.invoke(cli, ["health"])
    assert (healthy.exit_code, healthy.output.strip()) == (0, "healthy: no alerts")

    with shop.engine.begin() as conn:
        conn.execute(
            insert(FeedbackWatermark).values(
                esp="klaviyo",
                stream="Clicked Email",
                updated_at=utcnow(),
                failures=4,
                last_error="HTTP 401",
            )
        )
    failing = runner.invoke(cli, ["health"])
    assert failing.exit_code == 1
    assert "feedback pull failing" in failing.output
    as_json = runner.invoke(cli, ["health", "--json"])
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert data["healthy"] is False
    assert [a["code"] for a in data["alerts"]] == ["feedback_pull_failing"]
