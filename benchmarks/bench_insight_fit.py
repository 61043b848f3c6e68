"""Time the insight models' fits on CDNOW and on a million synthetic customers.

Run as ``python benchmarks/bench_insight_fit.py``; results are printed as a
table and written to ``benchmarks/results/insight_fit.json``.
"""

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy
from rich.console import Console
from rich.table import Table

from nudge.insight import BetaGeoModel, GammaGammaModel, summarize_transactions
from nudge.insight.simulate import simulate_customers

REPO = Path(__file__).resolve().parents[1]
CDNOW_SAMPLE = REPO.parent / "shared" / "data" / "cdnow" / "CDNOW_sample.txt"
RESULTS = REPO / "benchmarks" / "results" / "insight_fit.json"

SYNTHETIC_CUSTOMERS = 1_000_000
SEED = 20050101
# The published CDNOW fit, with alpha turned from weeks into days.
DAILY_BGNBD = {"r": 0.243, "alpha": 4.414 * 7, "a": 0.793, "b": 2.426}
SPEND = {"p": 6.25, "q": 3.74, "v": 15.44}


def best_of(repeats: int, work: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``work`` several times and return the fastest time and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return min(times), result


def load_cdnow() -> pd.DataFrame | None:
    """Summarise the CDNOW calibration period in weeks, or None if it is absent."""
    if not CDNOW_SAMPLE.exists():
        return None
    raw = pd.read_csv(
        CDNOW_SAMPLE,
        sep=r"\s+",
        header=None,
        names=["customer", "sample_id", "date", "cds", "dollars"],
        dtype={"date": str},
    )
    raw["date"] = pd.to_datetime(raw["date"], format="%Y%m%d")
    return summarize_transactions(
        raw, "customer", "date", "dollars", freq="W", observation_end="1997-09-30"
    )


# Small fits take milliseconds; the best of many runs filters out other load.
SMALL_REPEATS = 15


def bench_cdnow(cdnow: pd.DataFrame) -> dict[str, Any]:
    """Time the BG/NBD fit on CDNOW."""
    columns = (cdnow["frequency"], cdnow["recency"], cdnow["T"])
    seconds, model = best_of(SMALL_REPEATS, lambda: BetaGeoModel().fit(*columns))
    return {
        "name": "nudge BG/NBD, CDNOW",
        "customers": len(cdnow),
        "seconds": seconds,
        "repeats": SMALL_REPEATS,
        "params": model.params,
    }


def bench_synthetic() -> list[dict[str, Any]]:
    """Time both fits on a million customers drawn from the models."""
    rng = np.random.default_rng(SEED)
    customers = simulate_customers(
        SYNTHETIC_CUSTOMERS, DAILY_BGNBD, SPEND, max_T=365.0, rng=rng
    )
    # Transaction logs record whole days, so the drawn times are too.
    customers["recency"] = np.ceil(customers["recency"])
    customers["T"] = np.ceil(customers["T"])

    columns = (customers["frequency"], customers["recency"], customers["T"])
    bg_seconds, bg = best_of(1, lambda: BetaGeoModel().fit(*columns))
    spend = (customers["frequency"], customers["monetary_value"])
    gg_seconds, gg = best_of(1, lambda: GammaGammaModel().fit(*spend))
    repeat_buyers = int((customers["frequency"] > 0).sum())
    return [
        {
            "name": "nudge BG/NBD, synthetic",
            "customers": len(customers),
            "seconds": bg_seconds,
            "repeats": 1,
            "params": bg.params,
            "true_params": DAILY_BGNBD,
        },
        {
            "name": "nudge Gamma-Gamma, synthetic",
            "customers": repeat_buyers,
            "seconds": gg_seconds,
            "repeats": 1,
            "params": gg.params,
            "true_params": SPEND,
        },
    ]


def bench_lifetimes(cdnow: pd.DataFrame) -> dict[str, Any] | None:
    """Time lifetimes' BetaGeoFitter on CDNOW, or return None if it is missing."""
    try:
        from lifetimes import BetaGeoFitter  # type: ignore[import-not-found]
    except ImportError:
        return None

    columns = (cdnow["frequency"], cdnow["recency"], cdnow["T"])
    seconds, fitter = best_of(SMALL_REPEATS, lambda: BetaGeoFitter().fit(*columns))
    return {
        "name": "lifetimes BetaGeoFitter, CDNOW",
        "customers": len(cdnow),
        "seconds": seconds,
        "repeats": SMALL_REPEATS,
        "params": {k: float(v) for k, v in fitter.params_.items()},
    }


def show(rows: list[dict[str, Any]], console: Console) -> None:
    """Print the results as a table."""
    table = Table(title="insight model fits")
    for heading in ("fit", "customers", "seconds", "params"):
        table.add_column(heading, justify="left" if heading == "fit" else "right")
    for row in rows:
        params = ", ".join(f"{k}={v:.4g}" for k, v in row["params"].items())
        table.add_row(
            row["name"], f"{row['customers']:,}", f"{row['seconds']:.3f}", params
        )
    console.print(table)


def main() -> None:
    """Run every benchmark, print the table and write the JSON results."""
    console = Console()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []

    cdnow = load_cdnow()
    if cdnow is None:
        notes.append(f"CDNOW sample not found at {CDNOW_SAMPLE}, CDNOW fits skipped")
    else:
        rows.append(bench_cdnow(cdnow))
    rows.extend(bench_synthetic())

    comparison = bench_lifetimes(cdnow) if cdnow is not None else None
    if comparison is None:
        notes.append("lifetimes not installed, comparison skipped")
    else:
        rows.append(comparison)
        ours = rows[0]["seconds"] if cdnow is not None else float("nan")
        speedup = comparison["seconds"] / ours
        notes.append(
            f"BG/NBD on CDNOW: {speedup:.1f}x the speed of lifetimes "
            f"(target at least 3x): {'met' if speedup >= 3 else 'NOT met'}"
        )

    show(rows, console)
    for note in notes:
        console.print(note)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    environment = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "cpus": os.cpu_count(),
    }
    report = {"environment": environment, "results": rows, "notes": notes}
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
