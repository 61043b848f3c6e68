"""Time a profile refresh on a million customers and ten million order lines.

Run as ``python benchmarks/bench_insight_refresh.py [--customers N --lines N]``;
the frames are generated in memory (no database), the way ``nudge insight
refresh`` hands them over after reading the store. Customers follow BG/NBD
(CDNOW-like parameters in days) over two years; each purchase day is one order
whose lines pick products by popularity. Results are printed as a table and
written to ``benchmarks/results/insight_refresh.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from nudge.insight.config import InsightConfig
from nudge.insight.profiles import build_profiles, customer_history, fit_shop_models
from nudge.insight.replenishment import replenishment
from nudge.insight.simulate import simulate_customers

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "insight_refresh.json"

SEED = 20240701
AS_OF = datetime(2026, 1, 1)
DAYS = 730
BGNBD = {"r": 0.243, "alpha": 4.414 * 7, "a": 0.793, "b": 2.426}
PRODUCTS = 20_000
CATEGORIES = 40
BRANDS = 400
LIMIT_SECONDS = 60.0


def make_lines(customers: int, lines: int, rng: np.random.Generator) -> pd.DataFrame:
    """Return about ``lines`` order lines of ``customers`` BG/NBD customers."""
    people = simulate_customers(customers, BGNBD, max_T=float(DAYS), rng=rng)
    per_customer = people["frequency"].to_numpy(np.int64) + 1
    orders = int(per_customer.sum())

    # Each customer's purchase days: the first, the last, the rest in between.
    owner = np.repeat(np.arange(customers, dtype=np.int64), per_customer)
    first = DAYS - people["T"].to_numpy()
    span = people["recency"].to_numpy()
    share = rng.random(orders)
    starts = np.r_[0, np.cumsum(per_customer)[:-1]]
    share[starts] = 0.0
    share[starts + per_customer - 1] = np.where(per_customer > 1, 1.0, 0.0)
    day = first[owner] + share * span[owner]
    start = np.datetime64(AS_OF - timedelta(days=DAYS), "s")
    ordered_at = start + (day * 86_400).astype("timedelta64[s]")

    # Lines per order to reach the wanted total, then products by popularity.
    extra = rng.poisson(max(lines / orders - 1.0, 0.0), orders)
    size = 1 + extra
    line_order = np.repeat(np.arange(orders, dtype=np.int64), size)
    # Popularity falls with rank as 1 / (rank + 10): a long tail of products.
    popularity = 1.0 / (rng.permutation(PRODUCTS) + 10.0)
    product = rng.choice(PRODUCTS, len(line_order), p=popularity / popularity.sum())
    status = np.where(rng.random(len(line_order)) < 0.02, "cancelled", "placed")
    return pd.DataFrame(
        {
            "order_id": line_order,
            "customer_id": owner[line_order],
            "ordered_at": ordered_at[line_order].astype("datetime64[us]"),
            "product_id": product.astype(np.int64),
            "quantity": rng.integers(1, 4, len(line_order)),
            "unit_price": np.round(rng.lognormal(2.5, 0.8, len(line_order)), 2),
            "status": pd.array(status, dtype="str"),
        }
    )


def make_products(rng: np.random.Generator) -> pd.DataFrame:
    """Return a catalog with categories, brands and prices."""
    return pd.DataFrame(
        {
            "id": np.arange(PRODUCTS, dtype=np.int64),
            "category": pd.array(
                [f"category {i}" for i in rng.integers(0, CATEGORIES, PRODUCTS)],
                dtype="str",
            ),
            "brand": pd.array(
                [f"brand {i}" for i in rng.integers(0, BRANDS, PRODUCTS)], dtype="str"
            ),
            "price": np.round(rng.lognormal(2.5, 0.8, PRODUCTS), 2),
        }
    )


def make_events(
    lines: pd.DataFrame, events: int, rng: np.random.Generator
) -> pd.DataFrame:
    """Return views and add-to-carts by buyers, before the refresh moment."""
    customer = rng.choice(lines["customer_id"].to_numpy(), events)
    offset = rng.integers(0, DAYS * 86_400, events).astype("timedelta64[s]")
    kind = np.where(rng.random(events) < 0.8, "view", "add_to_cart")
    return pd.DataFrame(
        {
            "customer_id": customer,
            "product_id": rng.integers(0, PRODUCTS, events),
            "event_type": pd.array(kind, dtype="str"),
            "occurred_at": (
                np.datetime64(AS_OF - timedelta(days=DAYS), "s") + offset
            ).astype("datetime64[us]"),
        }
    )


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``work`` once and return its wall time and result."""
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def main() -> None:
    """Generate the frames, time each step, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--events", type=int, default=2_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    config = InsightConfig()

    generate, lines = timed(lambda: make_lines(args.customers, args.lines, rng))
    products = make_products(rng)
    events = make_events(lines, args.events, rng)

    # The model fits alone, then the whole refresh (which fits again).
    history_s, history = timed(lambda: customer_history(lines, AS_OF))
    fit_s, models = timed(lambda: fit_shop_models(history.frame, config))
    profile_s, profiles = timed(
        lambda: build_profiles(lines, events, products, AS_OF, config)
    )
    refill_s, refills = timed(lambda: replenishment(lines, products, AS_OF, config))

    frame = profiles.frame
    rows = [
        ("generate frames (not timed against the limit)", generate),
        ("customer history alone", history_s),
        ("BG/NBD + Gamma-Gamma fits alone", fit_s),
        ("profiles: history, fits, scores, stages, CLV, affinities", profile_s),
        ("replenishment per product", refill_s),
        ("refresh total (profiles + replenishment)", profile_s + refill_s),
    ]
    result = {
        "customers_generated": args.customers,
        "order_lines": len(lines),
        "orders": int(lines["order_id"].nunique()),
        "events": len(events),
        "customers_profiled": len(frame),
        "repeat_buyers": models.repeat_buyers,
        "model": models.name,
        "bgnbd_params": models.bgnbd.params if models.bgnbd else None,
        "products_with_gap": len(refills),
        "seconds": {name: round(value, 2) for name, value in rows},
        "refresh_seconds": round(profile_s + refill_s, 2),
        "limit_seconds": LIMIT_SECONDS,
        "within_limit": profile_s + refill_s <= LIMIT_SECONDS,
        "peak_memory_gib": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
        ),
    }
    show(result, rows)
    write(result)


def show(result: dict[str, Any], rows: list[tuple[str, float]]) -> None:
    """Print the timings as a table."""
    console = Console()
    table = Table(
        title=(
            f"insight refresh: {result['customers_profiled']:,} customers, "
            f"{result['order_lines']:,} order lines, {result['events']:,} events"
        )
    )
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for name, seconds in rows:
        table.add_row(name, f"{seconds:.2f}")
    console.print(table)
    verdict = "within" if result["within_limit"] else "OVER"
    console.print(
        f"refresh {result['refresh_seconds']:.1f} s, {verdict} the "
        f"{LIMIT_SECONDS:.0f} s limit; peak memory {result['peak_memory_gib']} GiB; "
        f"model {result['model']} ({result['repeat_buyers']:,} repeat buyers)"
    )


def write(result: dict[str, Any]) -> None:
    """Write the results with the environment they were measured in."""
    environment = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "cpus": os.cpu_count(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {"environment": environment, **result}
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    Console().print(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
