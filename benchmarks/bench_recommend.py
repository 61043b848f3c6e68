"""Time the production blend's fit and batch recommendation on a synthetic shop.

Target (issue 4): 1M customers x 50k products x 20M order lines; fit of the
production blend (the shipped, tuned configuration) <= 5 min and batch
recommend >= 5,000 customers/s with rules and reasons, on 2 cores. The shop
is drawn with numpy (customers favour a few categories, products within a
category follow a steep popularity curve, orders hold 1 + Poisson(3) lines
over a year). Run as ``python benchmarks/bench_recommend.py [--scale 0.1]``;
``--scale`` shrinks customers and lines (not products) where the full size
does not fit the machine. Prints a table and writes
benchmarks/results/recommend.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import implicit
import numpy as np
import pandas as pd
import scipy
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_info

from nudge.recommend import RecommendConfig, RulesConfig, build_interactions
from nudge.recommend.blend import Blend

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "recommend.json"

CUSTOMERS = 1_000_000
PRODUCTS = 50_000
LINES = 20_000_000
CATEGORIES = 50
BRANDS = 500
WORDS = 3_000
DAYS = 365
SEED = 20240601
AS_OF = datetime(2024, 6, 1)
FIT_TARGET_S = 300.0
RECOMMEND_TARGET = 5_000.0
SAMPLE = 50_000


def peak_memory_mib() -> float:
    """Return the process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """Return the CPU time of this process and its finished workers so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def generate(customers: int, products: int, lines: int) -> dict[str, pd.DataFrame]:
    """Draw a shop as the store's query frames, seeded."""
    rng = np.random.default_rng(SEED)

    # Products grouped by category; within one, a steep popularity curve.
    category = np.sort(rng.integers(0, CATEGORIES, products))
    starts = np.searchsorted(category, np.arange(CATEGORIES))
    sizes = np.diff(np.append(starts, products))
    vocabulary = np.array([f"w{i:04d}" for i in range(WORDS)], dtype=object)
    words = vocabulary[rng.integers(0, WORDS, (products, 3))]
    titles = words[:, 0] + " " + words[:, 1] + " " + words[:, 2]

    # Orders by customers of uneven activity, over a year, weekends busier.
    activity = rng.gamma(0.6, 1.0, customers)
    n_orders = lines // 4
    # Every customer has at least one order; the rest follow activity.
    drawn = np.searchsorted(
        np.cumsum(activity) / activity.sum(), rng.random(n_orders - customers)
    ).clip(0, customers - 1)
    buyer = np.concatenate([rng.permutation(customers), drawn])
    day = rng.random(n_orders) * DAYS
    order_sizes = 1 + rng.poisson(3.0, n_orders)
    order_sizes = _trim(order_sizes, lines)

    # Lines: mostly the customer's two favourite categories.
    line_order = np.repeat(np.arange(len(order_sizes)), order_sizes)
    line_buyer = buyer[line_order]
    favourite = rng.integers(0, CATEGORIES, (customers, 2))
    draw = rng.random(len(line_order))
    chosen = np.where(
        draw < 0.6,
        favourite[line_buyer, 0],
        np.where(
            draw < 0.8,
            favourite[line_buyer, 1],
            rng.integers(0, CATEGORIES, len(line_order)),
        ),
    )
    within = np.floor(sizes[chosen] * rng.random(len(line_order)) ** 2.5).astype(
        np.int64
    )
    product = starts[chosen] + np.minimum(within, sizes[chosen] - 1)

    # Products arrive over two years, a tenth of them in the last 60 days;
    # a sale before a product arrived goes to its category's best seller.
    age = rng.random(products) * 2 * DAYS
    fresh = rng.random(products) < 0.1
    age[fresh] = rng.random(int(fresh.sum())) * 60
    age[starts] = 2 * DAYS
    sold_age = DAYS - day[line_order]
    early = sold_age > age[product]
    product[early] = starts[chosen[early]]

    ordered_at = pd.to_datetime(AS_OF) - pd.to_timedelta(sold_age, unit="D")
    frame = pd.DataFrame(
        {
            "order_id": line_order + 1,
            "customer_id": line_buyer + 1,
            "ordered_at": ordered_at.floor("s"),
            "product_id": product + 1,
            "quantity": 1 + rng.poisson(0.5, len(line_order)),
        }
    )
    created = (pd.to_datetime(AS_OF) - pd.to_timedelta(age, unit="D")).floor("s")
    catalog = pd.DataFrame(
        {
            "id": np.arange(1, products + 1),
            "external_id": [f"P{i:06d}" for i in range(1, products + 1)],
            "title": titles,
            "description": None,
            "category": [f"category {c:02d}" for c in category],
            "brand": [f"brand {b:03d}" for b in rng.integers(0, BRANDS, products)],
            "price": np.round(np.exp(rng.normal(2.5, 0.7, products)), 2),
            "image_url": "https://shop.example/img.jpg",
            "product_url": "https://shop.example/p",
            "in_stock": rng.random(products) < 0.95,
            "created_at": created.to_numpy(),
        }
    )
    people = pd.DataFrame(
        {
            "id": np.arange(1, customers + 1),
            "external_id": [f"C{i:07d}" for i in range(1, customers + 1)],
        }
    )
    return {"lines": frame, "products": catalog, "customers": people}


def _trim(sizes: np.ndarray[Any, Any], total: int) -> np.ndarray[Any, Any]:
    """Cut order sizes so that they add up to exactly ``total`` lines."""
    ends = np.cumsum(sizes)
    keep = int(np.searchsorted(ends, total))
    sizes = sizes[: keep + 1].copy()
    sizes[-1] -= int(sizes.sum()) - total
    return sizes[sizes > 0]


def run(scale: float, sample: int) -> dict[str, Any]:
    """Generate, fit and recommend, timing each step."""
    customers = int(CUSTOMERS * scale)
    lines = int(LINES * scale)
    started = time.perf_counter()
    frames = generate(customers, PRODUCTS, lines)
    generate_s = time.perf_counter() - started

    started = time.perf_counter()
    data = build_interactions(
        frames["lines"], frames["products"], AS_OF, customers=frames["customers"]
    )
    prepare_s = time.perf_counter() - started
    del frames
    memory_after_prepare = peak_memory_mib()

    # The production blend: the shipped configuration, every strategy it weighs.
    config = RecommendConfig()
    blend = Blend(config)
    fit_s: dict[str, float] = {}
    for name, component in blend.components.items():
        started = time.perf_counter()
        component.fit(data)
        fit_s[name] = time.perf_counter() - started
    blend.fit(data)
    total_fit = sum(fit_s.values())

    # Batch recommend with the default rules and reasons, as an export does.
    rng = np.random.default_rng(SEED)
    ids = data.customers.to_numpy()[
        np.sort(
            rng.choice(data.n_customers, min(sample, data.n_customers), replace=False)
        )
    ]
    rates = {}
    for exclude in (False, True):
        cpu = cpu_seconds()
        started = time.perf_counter()
        lists = blend.recommend(
            ids,
            10,
            rules=RulesConfig(),
            exclude_purchased=exclude,
            batch_size=config.batch_size,
            workers=config.worker_count(),
        )
        seconds = time.perf_counter() - started
        # CPU time beside wall time: the machine may be shared, and a rate
        # measured while other work runs is lower than the code's own.
        cpu = cpu_seconds() - cpu
        rates["new" if exclude else "all"] = {
            "customers": len(ids),
            "seconds": seconds,
            "cpu_s": cpu,
            "cpu_us_per_customer": cpu / len(ids) * 1e6,
            "customers_per_s": len(ids) / seconds,
            "rows": len(lists.items),
            "workers": config.worker_count(),
            "skipped": len(lists.skipped),
        }
    return {
        "scale": scale,
        "customers": data.n_customers,
        "products": data.n_items,
        "order_lines": lines,
        "purchases": len(data.purchases),
        "generate_s": generate_s,
        "prepare_s": prepare_s,
        "fit_s": fit_s,
        "fit_total_s": total_fit,
        "fit_target_s": FIT_TARGET_S,
        "recommend": rates,
        "recommend_target_per_s": RECOMMEND_TARGET,
        "peak_memory_mib": peak_memory_mib(),
        "memory_after_prepare_mib": memory_after_prepare,
        "config": config.model_digest(),
    }


def show(result: dict[str, Any], console: Console) -> None:
    """Print the results as a table."""
    table = Table(
        title=(
            f"production blend: {result['customers']:,} customers x "
            f"{result['products']:,} products x {result['order_lines']:,} lines"
        )
    )
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_column("rate / target", justify="right")
    table.add_row("generate (not counted)", f"{result['generate_s']:.1f}", "")
    table.add_row("build interactions", f"{result['prepare_s']:.1f}", "")
    for name, seconds in result["fit_s"].items():
        table.add_row(f"fit {name}", f"{seconds:.1f}", "")
    table.add_row(
        "fit production blend",
        f"{result['fit_total_s']:.1f}",
        f"target <= {result['fit_target_s']:.0f} s",
    )
    for task, rate in result["recommend"].items():
        table.add_row(
            f"recommend 10 ({task} products), rules + reasons",
            f"{rate['seconds']:.1f}",
            f"{rate['customers_per_s']:,.0f} customers/s (target >= 5,000)",
        )
        table.add_row(
            f"  CPU of all processes ({task})",
            f"{rate['cpu_s']:.1f}",
            f"{rate['cpu_us_per_customer']:,.0f} µs per customer",
        )
    table.add_row("peak memory", f"{result['peak_memory_mib']:,.0f} MiB", "")
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--sample", type=int, default=SAMPLE)
    args = parser.parse_args(argv)
    console = Console()
    result = run(args.scale, args.sample)
    show(result, console)
    environment = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "implicit": implicit.__version__,
        "cpus": os.cpu_count(),
        "blas_threads": [info.get("num_threads") for info in threadpool_info()],
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {"environment": environment, "result": result, "argv": sys.argv[1:]}
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"written to {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
