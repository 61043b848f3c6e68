"""`nudge run`, `send`, `event` and `sends` on a synthetic shop, from the CLI."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nudge.cli.main import cli, run
from tests.unit.delivery.test_send_pipeline import LATER, SHOP_END, shop_db

__all__ = ["shop_db"]

REPO = Path(__file__).resolve().parents[3]
STAMP = "%Y-%m-%dT%H:%M:%S"


@pytest.fixture
def home(tmp_path: Path, shop_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with the shipped config and the synthetic shop's store."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("NUDGE_"):
            monkeypatch.delenv(name)
    shutil.copytree(REPO / "config", tmp_path / "config")
    (tmp_path / "email_templates").symlink_to(REPO / "email_templates")
    (tmp_path / "var").mkdir()
    shutil.copy(shop_db, tmp_path / "var" / "nudge.db")
    return tmp_path


def nudge(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(cli, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_plans_records_and_sends_then_send_finds_nothing_left(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = nudge(
        capsys,
        "run",
        "picked_for_you",
        "--as-of",
        f"{SHOP_END:{STAMP}}",
        "--now",
        f"{LATER:{STAMP}}",
        "--json",
    )
    assert code == 0
    found = json.loads(out)
    accepted = found["delivery"]["statuses"]["accepted"]
    assert accepted == found["recorded"]["created"] - found["recorded"]["holdout"]
    written = list((home / "var" / "outbox" / str(found["run_id"])).glob("*.eml"))
    assert len(written) == accepted > 20

    code, out, _ = nudge(capsys, "send", "--now", f"{LATER:{STAMP}}", "--json")
    assert code == 0 and json.loads(out)["rows"] == 0

    code, out, _ = nudge(capsys, "sends", "--json")
    assert code == 0
    assert json.loads(out) == {
        "accepted": accepted,
        "suppressed": found["recorded"]["holdout"],
    }


def test_send_dry_run_renders_but_changes_nothing(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = nudge(
        capsys, "plan", "picked_for_you", "--as-of", f"{SHOP_END:{STAMP}}"
    )
    assert code == 0
    code, out, _ = nudge(
        capsys, "send", "--dry-run", "--now", f"{LATER:{STAMP}}", "--json"
    )
    assert code == 0
    report = json.loads(out)
    assert report["dry_run"] is True and report["statuses"]["would_send"] > 20
    assert report["samples"][0]["subject"]
    assert not (home / "var" / "outbox").exists()
    code, out, _ = nudge(capsys, "sends", "--json")
    assert "accepted" not in json.loads(out)


def test_an_event_plans_a_delayed_send_that_goes_when_due(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = nudge(
        capsys,
        "event",
        "cart_abandoned",
        "--customer",
        "C00002",
        "--product",
        "SKU-0003",
        "--json",
    )
    assert code == 0, out
    found = json.loads(out)
    assert found["stored"].startswith("add_to_cart event-")
    # The campaign waits four hours after the cart: nothing goes at once.
    assert found["delivery"]["statuses"] == {}
    code, out, _ = nudge(capsys, "sends", "--json")
    assert json.loads(out) == {"planned": 1}

    soon = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=2)
    code, out, _ = nudge(capsys, "send", "--now", f"{soon:{STAMP}}", "--json")
    assert json.loads(out)["rows"] == 0
    later = soon + timedelta(hours=3)
    code, out, _ = nudge(capsys, "send", "--now", f"{later:{STAMP}}", "--json")
    assert json.loads(out)["statuses"] == {"accepted": 1}
    eml = next((home / "var" / "outbox").rglob("*.eml")).read_bytes()
    assert b"Subject: " in eml

    # The same cart again within the campaign's dedupe window sends nothing.
    code, out, _ = nudge(
        capsys,
        "event",
        "cart_abandoned",
        "--customer",
        "C00002",
        "--product",
        "SKU-0003",
        "--json",
    )
    assert code == 0
    code, out, _ = nudge(capsys, "sends", "--json")
    assert json.loads(out) == {"accepted": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "nosuch"), "no campaign named nosuch"),
        (("send", "--esp", "pigeon"), "Invalid value for '--esp'"),
        (
            ("event", "order_placed", "--customer", "C99999"),
            "no customer with id C99999",
        ),
        (("event", "cart_abandoned", "--customer", "C00002"), "needs --product"),
    ],
)
def test_bad_input_gets_one_line(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    code, _, err = nudge(capsys, *args)
    assert code != 0
    assert message in err
    assert "Traceback" not in err
    # One line says what is wrong (click adds its usage lines around its own).
    assert sum(message in line for line in err.splitlines()) == 1
