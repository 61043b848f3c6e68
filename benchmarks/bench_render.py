"""Time rendering: compile once and fill per customer, against the alternatives.

Run as ``python benchmarks/bench_render.py [--emails N]``. Renders N e-mails of
the six-product ``winback`` template through the compile-once path on one core,
then a sample through the per-customer MJML path (the fallback), MIME building
(outbox and SMTP only), and the official Node ``mjml`` CLI, which is installed
with npm into a temporary folder (the comparison is skipped, with a line saying
why, where that fails). Results are printed as a table and written to
``benchmarks/results/render.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import jinja2
from rich.console import Console
from rich.table import Table

from nudge.render import Recipient, Renderer, RenderRequest, fixture_request, to_mime

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "render.json"
TEMPLATES = REPO / "email_templates"
TEMPLATE = "winback"
SENDER = "Demo Shop <hello@demo-shop.example>"
NODE_MJML = "mjml@4"
TARGET_SPEEDUP = 50.0


def requests(count: int) -> list[RenderRequest]:
    """Return one request per customer: own send id, name and address."""
    base = fixture_request(TEMPLATE, products=6)
    names = ["Ada", "Grace", None, "Alan", "Edsger", "Barbara", "Ken"]
    return [
        dataclasses.replace(
            base,
            send_id=f"snd_{n:08d}",
            recipient=Recipient(
                customer_id=n,
                email=f"customer{n}@example.com",
                first_name=names[n % len(names)],
            ),
        )
        for n in range(count)
    ]


def per_item_ms(
    work: Callable[[Any], object], items: Sequence[Any]
) -> tuple[float, float]:
    """Run work on each item; return milliseconds per item and the total seconds."""
    # Results are dropped as they come: 20,000 e-mails would hold 1.5 GB.
    start = time.perf_counter()
    for item in items:
        work(item)
    seconds = time.perf_counter() - start
    return seconds * 1000 / len(items), seconds


def install_node_mjml(folder: Path, console: Console) -> Path | None:
    """Install the Node mjml CLI into a folder; return its binary or None."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        console.print("node comparison skipped: node or npm not on PATH")
        return None
    try:
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--silent", NODE_MJML],
            cwd=folder,
            check=True,
            capture_output=True,
            timeout=300,
        )
    except (subprocess.SubprocessError, OSError) as err:
        console.print(f"node comparison skipped: npm install {NODE_MJML} failed: {err}")
        return None
    binary = folder / "node_modules" / ".bin" / "mjml"
    if not binary.exists():
        console.print("node comparison skipped: npm installed no mjml binary")
        return None
    return binary


def node_version(binary: Path) -> str:
    """Return the mjml package version the CLI reports."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return " ".join(out.stdout.split())


def time_node(
    binary: Path, renderer: Renderer, sample: list[RenderRequest], folder: Path
) -> dict[str, float]:
    """Time the Node CLI per e-mail: one process each, and one process for all."""
    sources = folder / "in"
    sources.mkdir()
    files = []
    for request in sample:
        path = sources / f"{request.send_id}.mjml"
        path.write_text(renderer.fill_mjml(request), encoding="utf-8")
        files.append(path)

    # What a per-customer pipeline around the CLI does: a process per e-mail.
    single = files[: min(len(files), 20)]
    start = time.perf_counter()
    for path in single:
        subprocess.run(
            [binary, str(path), "-o", str(path.with_suffix(".html"))],
            check=True,
            capture_output=True,
        )
    per_process = (time.perf_counter() - start) * 1000 / len(single)

    # The CLI's best case: every file in one process.
    out = folder / "out"
    out.mkdir()
    start = time.perf_counter()
    subprocess.run(
        [binary, *map(str, files), "-o", f"{out}/"], check=True, capture_output=True
    )
    batch = (time.perf_counter() - start) * 1000 / len(files)
    return {
        "node_cli_process_per_email_ms": round(per_process, 2),
        "node_cli_process_per_email_count": len(single),
        "node_cli_one_process_ms": round(batch, 3),
        "node_cli_one_process_count": len(files),
    }


def pin_one_core() -> int | None:
    """Keep this process on one CPU, so e-mails/s is a one-core figure."""
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return cpu
    except (AttributeError, OSError):
        return None


def main() -> int:
    """Run the benchmark, print the table and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=20_000)
    parser.add_argument("--sample", type=int, default=1_000, help="slow paths")
    parser.add_argument("--node-sample", type=int, default=200)
    parser.add_argument("--skip-node", action="store_true")
    args = parser.parse_args()
    console = Console()
    cpu = pin_one_core()

    # Compile once (timed), then render every customer from the cache.
    renderer = Renderer(TEMPLATES, signing_secret="bench-secret")
    compile_ms, _ = per_item_ms(renderer.compile, [TEMPLATE])
    batch = requests(args.emails)
    message = renderer.render(batch[0])
    fill_ms, fill_s = per_item_ms(renderer.render, batch)

    # The fallback path and MIME building, on a sample.
    sample = batch[: args.sample]
    slow = Renderer(TEMPLATES, signing_secret="bench-secret", per_customer_mjml=True)
    slow.render(sample[0])
    mjml_ms, _ = per_item_ms(slow.render, sample)
    rendered = [renderer.render(r) for r in sample]
    mime_ms, _ = per_item_ms(
        lambda m: to_mime(m, SENDER, "customer@example.com"), rendered
    )

    results: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "jinja2": jinja2.__version__,
            "mjml_python": _version("mjml-python"),
            "pinned_cpu": cpu,
            "cpus": os.cpu_count(),
        },
        "template": TEMPLATE,
        "products": len(batch[0].items),
        "emails": len(batch),
        "html_bytes": len(message.html.encode()),
        "compile_ms": round(compile_ms, 2),
        "fill_ms": round(fill_ms, 4),
        "emails_per_second": round(len(batch) / fill_s),
        "per_customer_mjml_ms": round(mjml_ms, 4),
        "mime_ms": round(mime_ms, 4),
    }

    if not args.skip_node:
        with tempfile.TemporaryDirectory(prefix="nudge-bench-") as tmp:
            binary = install_node_mjml(Path(tmp), console)
            if binary is not None:
                node = time_node(
                    binary, renderer, sample[: args.node_sample], Path(tmp)
                )
                node["node_mjml_version"] = node_version(binary)
                results.update(node)
    else:
        console.print("node comparison skipped: --skip-node")

    report(results, console)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"written to {RESULTS.relative_to(REPO)}")
    speedup = results.get("speedup_vs_node_process_per_email")
    return 0 if speedup is None or speedup >= TARGET_SPEEDUP else 1


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def report(results: dict[str, Any], console: Console) -> None:
    """Add the speed-ups to the results and print them as one table."""
    fill = results["fill_ms"]
    table = Table(
        title=f"render: {results['template']}, {results['products']} products"
    )
    table.add_column("path")
    table.add_column("ms / e-mail", justify="right")
    table.add_column("vs compile once", justify="right")
    table.add_row(
        "compile once, fill per customer",
        f"{fill:.3f}",
        f"{results['emails_per_second']:,} e-mails/s",
    )
    table.add_row(
        "per-customer MJML (fallback)",
        f"{results['per_customer_mjml_ms']:.3f}",
        f"{results['per_customer_mjml_ms'] / fill:.1f}× slower",
    )
    table.add_row(
        "MIME building (outbox, SMTP)",
        f"{results['mime_ms']:.3f}",
        f"{results['mime_ms'] / fill:.1f}× the render",
    )
    if "node_cli_process_per_email_ms" in results:
        per_process = results["node_cli_process_per_email_ms"]
        one_process = results["node_cli_one_process_ms"]
        results["speedup_vs_node_process_per_email"] = round(per_process / fill, 1)
        results["speedup_vs_node_one_process"] = round(one_process / fill, 1)
        table.add_row(
            f"node mjml CLI, a process per e-mail "
            f"(n={results['node_cli_process_per_email_count']})",
            f"{per_process:.1f}",
            f"{per_process / fill:,.0f}× slower",
        )
        table.add_row(
            f"node mjml CLI, {results['node_cli_one_process_count']} files "
            "in one process",
            f"{one_process:.2f}",
            f"{one_process / fill:,.0f}× slower",
        )
    table.caption = (
        f"compile {results['compile_ms']:.1f} ms once; "
        f"{results['emails']:,} e-mails, {results['html_bytes'] // 1024} KiB HTML each"
    )
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
