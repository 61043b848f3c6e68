"""The campaign commands end to end on a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from sqlalchemy import Engine

from nudge.cli import campaigns as commands
from nudge.cli.app import App
from nudge.cli.main import run
from nudge.settings import Settings
from tests.unit.campaigns.shop import (
    CART,
    WINBACK,
    fill,
    planner_settings,
    write_campaigns,
)


@pytest.fixture
def nudge(engine: Engine, settings: Settings, tmp_path: Path) -> click.Group:
    """A `nudge` group with the campaign commands over the tiny shop."""
    fill(engine)
    folder = write_campaigns(tmp_path / "campaigns", winback=WINBACK, cart=CART)
    configured = planner_settings(settings, folder)

    @click.group()
    @click.pass_context
    def root(ctx: click.Context) -> None:
        ctx.obj = App(configured)

    for command in (
        commands.campaigns,
        commands.plan,
        commands.preview,
        commands.approve,
    ):
        root.add_command(command)
    return root


def test_list_and_validate(
    nudge: click.Group, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(nudge, ["campaigns", "list"]) == 0
    assert "winback" in capsys.readouterr().out

    assert run(nudge, ["campaigns", "validate"]) == 0
    assert "2 campaigns valid" in capsys.readouterr().out


def test_validate_lists_each_problem_on_one_line(
    nudge: click.Group, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "campaigns"
    (folder / "cart.yaml").write_text(
        CART.replace("orders >= 0", "orders >>= 0"), encoding="utf-8"
    )
    (folder / "winback.yaml").write_text(
        WINBACK.replace("template: winback", "template: nope"), encoding="utf-8"
    )

    assert run(nudge, ["campaigns", "validate"]) == 2

    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3
    assert lines[2] == f"error: 2 problems in {folder}"
    assert lines[0].startswith(f"{folder / 'cart.yaml'}:7: audience: ")
    assert lines[1].startswith(f"{folder / 'winback.yaml'}:11: template: no template")


def test_plan_as_json_then_approve(
    nudge: click.Group, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(nudge, ["plan", "--as-of", "2026-11-30", "--json", "--diff"]) == 0
    found = json.loads(capsys.readouterr().out)

    assert found["status"] == "awaiting_approval"
    winback = next(c for c in found["campaigns"] if c["campaign"] == "winback")
    assert winback["audience"] == 5
    assert winback["chosen"] == 2
    assert winback["suppressed"]["no_consent"] == 1
    assert found["sample"] and "customer_id" not in found["sample"][0]
    assert found["diff"][0]["previous_run"] is None

    assert run(nudge, ["approve", str(found["run"]), "--by", "lead"]) == 0
    assert "approved by lead" in capsys.readouterr().out
    assert run(nudge, ["approve", str(found["run"])]) == 2
    assert "approved already" in capsys.readouterr().err


def test_plan_tables_and_a_diff(
    nudge: click.Group, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(nudge, ["plan", "winback", "--as-of", "2026-11-30"]) == 0
    capsys.readouterr()

    assert run(nudge, ["plan", "winback", "--as-of", "2026-12-07", "--diff"]) == 0
    out = capsys.readouterr().out

    assert "plan by campaign" in out
    assert "suppressed by reason" in out
    assert "winback: against plan run 1" in out
    assert "nudge approve 2" in out


def test_preview_writes_html_text_eml_and_a_gallery(
    nudge: click.Group, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "preview"
    args = ["preview", "winback", "--as-of", "2026-11-30", "--out", str(out)]

    assert run(nudge, [*args, "--customer", "ann", "--customer", "cat"]) == 0

    assert {p.name for p in out.iterdir()} == {
        "ann.html",
        "ann.txt",
        "ann.eml",
        "cat.html",
        "cat.txt",
        "cat.eml",
        "index.html",
    }
    eml = (out / "ann.eml").read_bytes()
    assert b"To: ann@example.com" in eml and b"Subject: We miss you" in eml
    assert b"COMEBACK-" in eml or b"COMEBACK" in (out / "ann.txt").read_bytes()
    gallery = (out / "index.html").read_text(encoding="utf-8")
    assert "Customer ann" in gallery and "Customer cat" in gallery
    assert "no consent" in gallery
    assert "Product 1" in gallery or "Product 2" in gallery
    assert "gallery:" in capsys.readouterr().out


def test_preview_needs_customers_or_a_sample(
    nudge: click.Group, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(nudge, ["preview", "winback"]) == 2
    assert "--customer ID or --sample N" in capsys.readouterr().err

    assert run(nudge, ["preview", "winback", "--customer", "zed"]) == 2
    assert "no customer with id zed" in capsys.readouterr().err


def test_preview_of_a_sample(
    nudge: click.Group, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sample"
    args = ["preview", "winback", "--sample", "2", "--as-of", "2026-11-30"]

    assert run(nudge, [*args, "--out", str(out)]) == 0

    assert sorted(p.name for p in out.glob("*.eml")) == ["ann.eml", "bob.eml"]
