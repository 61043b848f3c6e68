"""The CLI end to end: one-line errors, JSON counts, and the demo."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from nudge.cli.main import cli, run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the CLI in an empty project folder with its own store."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("NUDGE_"):
            monkeypatch.delenv(name)
    return tmp_path


def nudge(*args: str) -> int:
    return run(cli, list(args))


def test_db_upgrade_creates_the_store_under_var(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert nudge("db", "upgrade") == 0
    assert (home / "var" / "nudge.db").is_file()
    assert nudge("db", "status") == 0
    assert "up to date" in capsys.readouterr().out


def test_import_prints_counts_as_json(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = home / "products.csv"
    path.write_text(
        "product_id,title,price\nA1,Blue Mug,8.50\nA2,Red Mug,-1\nA3,Tea,4\n",
        encoding="utf-8",
    )
    assert nudge("db", "upgrade") == 0
    capsys.readouterr()
    assert nudge("import", "products", str(path), "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["products"] == {
        "read": 3,
        "inserted": 2,
        "updated": 0,
        "unchanged": 0,
        "rejected": 1,
        "merged": 0,
    }
    rejects = Path(out["rejects_file"]).read_text(encoding="utf-8").splitlines()
    assert rejects == ["row,column,value,reason", "2,price,-1,negative (-1)"]


def test_import_before_upgrade_says_what_to_run(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = home / "p.csv"
    path.write_text("product_id\nA\n", encoding="utf-8")
    assert nudge("import", "products", str(path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("run `nudge db upgrade`")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (("import", "orders", "missing.csv"), {}, "missing.csv: file not found"),
        (
            ("db", "status"),
            {"NUDGE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
            "cannot reach the store postgresql+psycopg://nobody@127.0.0.1:1/none",
        ),
        (("db", "status"), {"NUDGE_SHOP_TIMEZONE": "Nowhere"}, "NUDGE_SHOP_TIMEZONE"),
    ],
)
def test_user_errors_are_one_line_without_traceback(
    home: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    env: dict[str, str],
    expected: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if args[0] == "import":
        assert nudge("db", "upgrade") == 0
        capsys.readouterr()
    assert nudge(*args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ")
    assert expected in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_a_file_missing_a_required_column(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = home / "orders.csv"
    path.write_text("order_id,product_id\n1,A\n", encoding="utf-8")
    assert nudge("db", "upgrade") == 0
    capsys.readouterr()
    assert nudge("import", "orders", str(path)) == 2
    err = capsys.readouterr().err
    assert "missing column 'ordered_at'" in err


def test_the_console_script_reports_errors_in_one_line(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}
    env["NUDGE_DATABASE_URL"] = "sqlite:////proc/forbidden/nudge.db"
    result = subprocess.run(
        [sys.executable, "-m", "nudge.cli.main", "db", "upgrade"],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_demo_imports_a_synthetic_shop_and_fills_the_outbox_once(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(REPO / "config", home / "config")
    (home / "email_templates").symlink_to(REPO / "email_templates")
    args = ("demo", "--customers", "300", "--products", "60")
    assert nudge(*args) == 0
    first = capsys.readouterr().out
    assert "orders.csv" in first and "demo finished" in first
    assert "customer profiles as of 2026-11-30" in first
    counts = _store_counts(home)
    assert counts["customers"] == 300 and counts["products"] == 60
    assert counts["order_lines"] > 500 and counts["behaviour_events"] > 1000

    # Every accepted ledger row is one complete .eml in its run's folder.
    emails = sorted((home / "var" / "outbox").rglob("*.eml"))
    assert counts["accepted"] == len(emails) > 20
    assert f"{len(emails):,} e-mails written to the local outbox" in first
    assert emails[0].read_bytes().startswith(b"Subject: ")
    # Simulated customers acted on them, and the report says what it earned.
    assert counts["engagement_events"] > 0
    assert "per campaign" in first and "verdict" in first
    assert (home / "var" / "report.html").read_text().count("<svg") >= 2

    # A second run finds every row and every e-mail already there: nothing
    # is imported or sent twice.
    assert nudge(*args) == 0
    assert _store_counts(home) == counts
    assert len(list((home / "var" / "outbox").rglob("*.eml"))) == len(emails)


def _store_counts(home: Path) -> dict[str, int]:
    tables = ("customers", "products", "orders", "order_lines", "behaviour_events")
    with sqlite3.connect(home / "var" / "nudge.db") as conn:
        found = {
            t: conn.execute(f"select count(*) from {t}").fetchone()[0] for t in tables
        }
        found["accepted"] = conn.execute(
            "select count(*) from sends where status = 'accepted'"
        ).fetchone()[0]
        found["engagement_events"] = conn.execute(
            "select count(*) from engagement_events"
        ).fetchone()[0]
    return found
