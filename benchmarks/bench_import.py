"""Time `nudge import orders` of the full Online Retail II file.

Targets (issue 2): SQLite <= 60 s, PostgreSQL <= 90 s for the first import of
1,044,847 lines on a 2-core machine. Each store starts empty; the second run
(nothing to change) is timed as well. Prints a table and writes
benchmarks/results/import.json.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from nudge.ingest.importer import Importer
from nudge.settings import Settings
from nudge.store.db import make_engine, upgrade

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "online-retail-ii" / "online_retail_ii.csv.gz"
RESULTS = ROOT / "benchmarks" / "results" / "import.json"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
TARGETS = {"sqlite": 60.0, "postgresql": 90.0}


def time_import(url: str, folder: Path) -> dict[str, float | int]:
    """Import the file twice into an empty store and time both runs."""
    settings = Settings(home=folder, database_url=url, var_dir=folder / "var")
    engine = make_engine(url)
    upgrade(engine)
    importer = Importer(engine, settings)
    started = time.perf_counter()
    first = importer.run("orders", DATA, "online-retail").counts["orders"]
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    second = importer.run("orders", DATA, "online-retail").counts["orders"]
    second_s = time.perf_counter() - started
    engine.dispose()
    return {
        "rows": first.read,
        "inserted": first.inserted,
        "rejected": first.rejected,
        "first_s": round(first_s, 1),
        "second_s": round(second_s, 1),
        "second_inserted": second.inserted,
        "rows_per_s": round(first.read / first_s),
    }


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def main() -> int:
    if not DATA.is_file():
        print(f"skipped: {DATA} not found")
        return 0
    results: dict[str, dict[str, float | int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results["sqlite"] = time_import(f"sqlite:///{folder / 'bench.db'}", folder)
        if postgres_reachable():
            name = f"nudge_bench_{uuid.uuid4().hex[:8]}"
            admin = create_engine(
                POSTGRES.replace("postgresql://", "postgresql+psycopg://"),
                isolation_level="AUTOCOMMIT",
            )
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                url = POSTGRES.rsplit("/", 1)[0] + f"/{name}"
                results["postgresql"] = time_import(url, folder)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))

    table = Table(title="nudge import orders: Online Retail II (1,044,847 lines)")
    for column in ("store", "rows/s", "first run s", "target s", "second run s", "ok"):
        table.add_column(column, justify="right")
    for store, figures in results.items():
        ok = float(figures["first_s"]) <= TARGETS[store]
        figures["target_s"] = TARGETS[store]
        figures["meets_target"] = ok
        table.add_row(
            store,
            f"{figures['rows_per_s']:,}",
            str(figures["first_s"]),
            str(TARGETS[store]),
            str(figures["second_s"]),
            "yes" if ok else "NO",
        )
    Console().print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
