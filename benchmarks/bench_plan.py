"""Time the next-best-action planner, alone and with rendering, on 100k customers.

Run as ``python benchmarks/bench_plan.py [--customers N] [--workers W]``. Builds
a synthetic audience of N customers (stages, churn bands, values, consent,
time zones, preferences), a week of earlier sends, trigger events, and plans
the six shipped campaigns of ``config/campaigns`` as of a Monday. Products
come from a synthetic recommender (numpy, no model fitting: the recommenders
have their own benchmark), so "plan" is the planner's own work: audiences,
suppressions, arbitration, holdouts, variants and send windows. Then every
e-mail to send is rendered through `nudge.render` (compile once, fill per
customer) in W processes. Prints a table and writes
``benchmarks/results/plan.json``; the target is 5,000 e-mails a second for
plan plus render on two cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from nudge.campaigns.audience import audience_frame
from nudge.campaigns.planner import PlanInput, plan
from nudge.campaigns.preview import build_request
from nudge.campaigns.schema import Campaign, Recipe, load_campaigns
from nudge.render import Item, Recipient, Renderer
from nudge.settings import Settings

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "plan.json"
CAMPAIGNS = REPO / "config" / "campaigns"
TEMPLATES = REPO / "email_templates"
AS_OF = datetime(2026, 11, 30)
TARGET = 5_000
PRODUCTS = 400
ZONES = (
    ["Europe/London"] * 14
    + ["Europe/Dublin", "Europe/Paris", "Europe/Berlin", "America/New_York"]
    + ["America/Los_Angeles", "Australia/Sydney"]
)
STAGES = ["active", "active", "new", "at_risk", "churned", "churned", "reactivated"]
ITEM_COLUMNS = [
    "customer_id",
    "rank",
    "product_id",
    "score",
    "strategy",
    "reason_code",
    "reason",
]

# What the render workers read, set before they fork.
_WORK: dict[str, Any] = {}


def customers(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Return an audience frame of n customers, a fifth of them prospects."""
    ids = np.arange(1, n + 1)
    base = pd.DataFrame(
        {
            "id": ids,
            "external_id": [f"C{i:07d}" for i in ids],
            "country": rng.choice(["GB", "IE", "FR", "DE", "US", "AU"], n),
            "timezone": rng.choice(ZONES, n),
            "accepts_marketing": rng.random(n) < 0.85,
            "unsubscribed_at": np.where(rng.random(n) < 0.03, AS_OF, None),
            "favourite_categories": np.where(rng.random(n) < 0.05, "Candles|Tea", ""),
            "max_emails_per_week": np.where(rng.random(n) < 0.04, 1.0, np.nan),
            "has_email": rng.random(n) < 0.99,
        }
    )
    profiled = ids[rng.random(n) < 0.8]
    m = len(profiled)
    last = AS_OF - pd.to_timedelta(rng.exponential(120, m), unit="D")
    orders = 1 + rng.poisson(3, m)
    profiles = pd.DataFrame(
        {
            "customer_id": profiled,
            "stage": rng.choice(STAGES, m),
            "segment": rng.choice(["champions", "loyal", "at_risk", "lost"], m),
            "churn_band": rng.choice(["low", "medium", "high"], m),
            "churn_risk": rng.random(m),
            "p_alive": rng.random(m),
            "clv": rng.gamma(1.5, 60, m),
            "orders": orders,
            "frequency": np.maximum(1, orders - 1),
            "monetary": orders * rng.gamma(3, 12, m),
            "avg_order_value": rng.gamma(3, 12, m),
            "first_order_at": last - pd.to_timedelta(rng.exponential(300, m), unit="D"),
            "last_order_at": last,
            "expected_next_order_at": AS_OF
            + pd.to_timedelta(rng.exponential(60, m), unit="D"),
            "affinities": [{"category": {"Candles": 0.6, "Tea": 0.4}}] * m,
        }
    )
    return audience_frame(profiles, base, AS_OF)


def events(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Return recent orders and abandoned baskets of a few percent of customers."""
    ids = frame["customer_id"].to_numpy()
    ordered = rng.choice(ids, len(ids) // 30)
    carted = rng.choice(ids, len(ids) // 100)
    return pd.DataFrame(
        {
            "customer_id": np.concatenate([ordered, carted]),
            "event": ["order_placed"] * len(ordered) + ["cart_abandoned"] * len(carted),
            "occurred_at": np.concatenate(
                [
                    np.datetime64(AS_OF, "ns")
                    - (rng.random(len(ordered)) * 4 * 86400e9).astype(
                        "timedelta64[ns]"
                    ),
                    np.datetime64(AS_OF, "ns")
                    - (rng.random(len(carted)) * 86400e9).astype("timedelta64[ns]"),
                ]
            ),
        }
    )


def history(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Return earlier sends of the last month: half a send per customer."""
    ids = frame["customer_id"].to_numpy()
    sent = rng.choice(ids, len(ids) // 2)
    return pd.DataFrame(
        {
            "customer_id": sent,
            "campaign": rng.choice(
                ["winback", "new_arrivals", "picked_for_you"], len(sent)
            ),
            "send_at": np.datetime64(AS_OF, "ns")
            - (rng.random(len(sent)) * 30 * 86400e9).astype("timedelta64[ns]"),
        }
    )


def recommender(rng: np.random.Generator) -> Any:
    """Return a vectorised stand-in recommender over a catalog of PRODUCTS."""

    def recommend(ids: np.ndarray[Any, Any], recipe: Recipe) -> pd.DataFrame:
        n, k = len(ids), recipe.count
        # Every twentieth customer gets too short a list.
        lengths = np.where(np.arange(n) % 20 == 0, 1, k)
        owner = np.repeat(np.arange(n), lengths)
        rank = np.concatenate([np.arange(1, m + 1) for m in lengths]) if n else owner
        return pd.DataFrame(
            {
                "customer_id": ids[owner],
                "rank": rank,
                "product_id": rng.integers(1, PRODUCTS + 1, len(owner)),
                "score": 1.0 / rank,
                "strategy": recipe.strategy,
                "reason_code": "best_seller",
                "reason": "One of our best sellers",
            },
            columns=ITEM_COLUMNS,
        )

    return recommend


def catalog() -> dict[int, Item]:
    """Return render items for the synthetic catalog, by product id."""
    return {
        p: Item(
            product_id=p,
            title=f"Beeswax candle no. {p}",
            url=f"https://demo-shop.example/products/candle-{p}",
            image_url=f"https://demo-shop.example/img/{p}.jpg",
            price=Decimal("9.50") + p % 40,
            currency="GBP",
            reason="One of our best sellers",
            reason_code="best_seller",
            category="Candles",
        )
        for p in range(1, PRODUCTS + 1)
    }


def render_range(bounds: tuple[int, int]) -> tuple[int, int, float]:
    """Render the e-mails of decisions [start, end): count, HTML bytes, CPU seconds."""
    started = time.process_time()
    work = _WORK
    renderer: Renderer = work["renderer"]
    items: dict[int, Item] = work["catalog"]
    decisions = work["decisions"]
    product_ids = work["product_ids"]
    starts, ends = work["starts"], work["ends"]
    by_name: dict[str, Campaign] = work["campaigns"]
    settings: Settings = work["settings"]
    size = 0
    for i in range(*bounds):
        name, customer, external, variant, send_at = decisions[i]
        chosen = [items[p] for p in product_ids[starts[i] : ends[i]].tolist()]
        request = build_request(
            by_name[name],
            settings,
            send_id=f"snd_{name}_{customer}",
            variant=variant,
            recipient=Recipient(customer, f"{external.lower()}@example.com", "Ada"),
            external_id=external,
            items=chosen,
            send_at=send_at.replace(tzinfo=UTC),
        )
        size += len(renderer.render(request).html)
    return bounds[1] - bounds[0], size, time.process_time() - started


def prepare_render(made: Any, campaigns: list[Campaign], settings: Settings) -> int:
    """Set up what the render workers read; return the number of e-mails."""
    decisions = made.decisions[made.decisions["outcome"].isin(["chosen", "deferred"])]
    items = made.items.sort_values(["campaign", "customer_id", "rank"], kind="stable")
    key = items["campaign"] + ":" + items["customer_id"].astype(str)
    wanted = decisions["campaign"] + ":" + decisions["customer_id"].astype(str)
    keys = key.to_numpy()
    renderer = Renderer(TEMPLATES, signing_secret="bench-secret")
    for c in campaigns:
        for v in c.variants:
            renderer.compile(c.template, v.name, c.esp)
    _WORK.update(
        renderer=renderer,
        catalog=catalog(),
        decisions=list(
            zip(
                decisions["campaign"],
                decisions["customer_id"].astype(int),
                decisions["external_id"],
                decisions["variant"],
                pd.to_datetime(decisions["send_at"]).dt.to_pydatetime(),
                strict=True,
            )
        ),
        product_ids=items["product_id"].to_numpy(),
        starts=np.searchsorted(keys, wanted.to_numpy(), side="left"),
        ends=np.searchsorted(keys, wanted.to_numpy(), side="right"),
        campaigns={c.name: c for c in campaigns},
        settings=settings,
    )
    return len(decisions)


def render_all(count: int, workers: int) -> tuple[float, int, float]:
    """Render every e-mail in worker processes: seconds, HTML bytes, CPU seconds."""
    chunk = 2_000
    bounds = [(s, min(s + chunk, count)) for s in range(0, count, chunk)]
    start = time.perf_counter()
    if workers <= 1:
        done = [render_range(b) for b in bounds]
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            done = pool.map(render_range, bounds)
    seconds = time.perf_counter() - start
    assert sum(n for n, _, _ in done) == count
    return seconds, sum(b for _, b, _ in done), sum(c for _, _, c in done)


def main() -> int:
    """Run the benchmark, print the table and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    console = Console()
    rng = np.random.default_rng(11)

    # Inputs are built before the clock starts: the store would hand them over.
    frame = customers(args.customers, rng)
    loaded = [f.campaign for f in load_campaigns(CAMPAIGNS)]
    data = PlanInput(
        as_of=AS_OF,
        campaigns=loaded,
        customers=frame,
        events=events(frame, rng),
        history=history(frame, rng),
    )
    settings = Settings()

    start, cpu = time.perf_counter(), time.process_time()
    made = plan(data, recommender(rng))
    plan_s, plan_cpu = time.perf_counter() - start, time.process_time() - cpu
    emails = prepare_render(made, loaded, settings)
    render_s, html_bytes, render_cpu = render_all(emails, args.workers)

    # Wall clock is the figure; CPU time shows what other load on the machine
    # took away (the plan runs on one core, rendering spreads over workers).
    total = plan_s + render_s
    cpu_total = plan_cpu + render_cpu / max(args.workers, 1)
    summaries = made.summaries()
    results: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "workers": args.workers,
        },
        "customers": args.customers,
        "campaigns_due": len(made.campaigns),
        "decisions": len(made.decisions),
        "emails": emails,
        "plan_seconds": round(plan_s, 3),
        "plan_decisions_per_second": round(len(made.decisions) / plan_s),
        "plan_customers_per_second": round(args.customers / plan_s),
        "render_seconds": round(render_s, 3),
        "render_emails_per_second": round(emails / render_s),
        "plan_and_render_seconds": round(total, 3),
        "plan_and_render_emails_per_second": round(emails / total),
        "plan_cpu_seconds": round(plan_cpu, 3),
        "render_cpu_seconds": round(render_cpu, 3),
        "render_cpu_ms_per_email": round(render_cpu * 1000 / max(emails, 1), 4),
        "cpu_bound_emails_per_second": round(emails / cpu_total),
        "mean_html_bytes": round(html_bytes / max(emails, 1)),
        "target_emails_per_second": TARGET,
        "by_campaign": {s.campaign: s.as_json() for s in summaries},
    }

    rate = results["plan_and_render_emails_per_second"]
    cpu_rate = results["cpu_bound_emails_per_second"]
    table = Table(title=f"plan + render, {args.customers:,} customers")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("campaigns due", f"{results['campaigns_due']}"),
        ("decisions (campaign × customer)", f"{results['decisions']:,}"),
        ("e-mails to send (chosen + deferred)", f"{emails:,}"),
        ("plan", f"{plan_s:.2f} s"),
        ("plan: decisions/s", f"{results['plan_decisions_per_second']:,}"),
        (f"render ({args.workers} processes)", f"{render_s:.2f} s"),
        ("render: e-mails/s", f"{results['render_emails_per_second']:,}"),
        (
            "plan + render: e-mails/s",
            f"{rate:,}",
        ),
        ("render CPU per e-mail", f"{results['render_cpu_ms_per_email']:.3f} ms"),
        ("CPU-bound e-mails/s (no other load)", f"{cpu_rate:,}"),
        ("target e-mails/s", f"{TARGET:,}"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    met = rate >= TARGET
    console.print(
        f"{'met' if met else 'MISSED'}: {rate:,} e-mails/s against {TARGET:,}; "
        f"results in {RESULTS.relative_to(REPO)}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
