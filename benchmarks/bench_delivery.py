"""Time delivery: e-mails/s into a rate-limited Klaviyo double and into the outbox.

Run as ``python benchmarks/bench_delivery.py [--klaviyo N] [--steady N]
[--outbox N]`` (0 skips a run). The
Klaviyo double enforces the documented limits of the bulk event job (10 requests
a second, 150 a minute, 1,000 events a request) and answers 429 past them; the
real SDK talks to it over loopback. Two runs: "cold" starts with empty windows
(a run's first minute), "steady" starts with the last minute's 150 requests
already counted, so every request waits for the steady rate: the figure a long
run converges to. The outbox writes complete ``.eml`` files (plus the viewer's
scripts and the indexes) to a folder in memory (``/dev/shm``, where present) and
to one on the repository's disk, to tell the disk from the CPU: from one process,
then from two worker processes at once, each writing its own chunks as
``nudge worker -c 2`` does on two cores. Written files are deleted only at the
end: on some file systems creating files right after deleting thousands is
several times slower for minutes. Results are printed as a table and written to
``benchmarks/results/delivery.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from nudge.delivery import Outgoing
from nudge.delivery.doubles import KlaviyoDouble
from nudge.delivery.esp.klaviyo import EVENTS, KlaviyoAdapter
from nudge.delivery.esp.outbox import OutboxAdapter
from nudge.delivery.limits import LIMITS, Limiter
from nudge.render import Recipient, Renderer, fixture_request
from nudge.render.mime import message_id
from nudge.render.model import Esp

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "delivery.json"
TEMPLATES = REPO / "email_templates"
TEMPLATE = "winback"
CONSENTED = datetime(2025, 6, 1, tzinfo=UTC)
TARGETS = {"klaviyo": 2_000, "outbox": 5_000}
POOL = 200
# Outbox folders written by the runs, deleted when every run is done.
LEFT: list[Path] = []


def outgoing(esp: Esp, count: int, run_id: str) -> list[Outgoing]:
    """Return `count` sends: a pool of rendered e-mails, each copy its own send."""
    renderer = Renderer(TEMPLATES, signing_secret="bench-secret")
    base = fixture_request(TEMPLATE, esp=esp, products=6)
    pool = []
    for n in range(min(POOL, count)):
        request = dataclasses.replace(
            base,
            send_id=f"pool{n}",
            recipient=Recipient(n, f"customer{n}@example.com", "Ada"),
        )
        pool.append(
            Outgoing.from_render(
                request,
                renderer.render(request),
                run_id=run_id,
                consented_at=CONSENTED,
            )
        )

    # Copies share the rendered HTML (no gigabytes of strings) but not their
    # identity: send id, address, Message-ID.
    sends = []
    for n in range(count):
        template = pool[n % len(pool)]
        send_id = f"snd_{n:08d}"
        headers = dict(template.message.headers)
        if headers:
            headers["Message-ID"] = message_id(send_id, "demo-shop.example")
            headers["X-Nudge-Send-Id"] = send_id
        message = dataclasses.replace(
            template.message, send_id=send_id, headers=headers
        )
        sends.append(
            dataclasses.replace(
                template,
                send_id=send_id,
                email=f"customer{n}@example.com",
                customer_id=str(n),
                message=message,
                push_consent=n % 10 == 0,
            )
        )
    return sends


def klaviyo_run(count: int, *, steady: bool) -> dict[str, Any]:
    """Deliver `count` e-mails into the rate-limited double; return the figures."""
    batch = outgoing("klaviyo", count, "bench")
    with KlaviyoDouble(enforce_limits=True) as double:
        assert isinstance(double, KlaviyoDouble)
        limiter = Limiter(LIMITS["klaviyo"])
        if steady:
            # The last minute already holds the 150 requests the window allows,
            # spread evenly: from now on only the steady rate is left.
            now = time.monotonic()
            window = [now - 60 + 0.4 * n for n in range(150)]
            double.preload(EVENTS, window)
            for when in window:
                limiter.record(EVENTS, when)
        adapter = KlaviyoAdapter(double.api_key, base_url=double.url, limiter=limiter)
        start = time.perf_counter()
        results = adapter.deliver(batch)
        seconds = time.perf_counter() - start
        accepted = sum(r.ok for r in results)
        requests = len(double.recorded("POST", "event-bulk"))
        kept = len(double.events)
        throttled = double.throttled
    assert accepted == kept == count, (accepted, kept, count)
    return {
        "emails": count,
        "seconds": round(seconds, 2),
        "emails_per_second": round(count / seconds),
        "event_requests": requests,
        "answered_429": throttled,
        "limiter_wait_s": round(limiter.waited, 2),
    }


def outbox_run(count: int, folder: Path) -> dict[str, Any]:
    """Write `count` e-mails into an outbox folder; return the figures."""
    batch = outgoing("outbox", count, "bench")
    target = Path(tempfile.mkdtemp(prefix="nudge-bench-outbox-", dir=folder))
    LEFT.append(target)
    adapter = OutboxAdapter(target, limiter=Limiter({}))
    before = _cpu()
    start = time.perf_counter()
    results = []
    for n in range(0, count, 1_000):
        results.extend(adapter.deliver(batch[n : n + 1_000]))
    adapter.close()
    seconds = time.perf_counter() - start
    cpu = _cpu() - before
    written = len(list((target / "bench").glob("*.eml")))
    size = sum(p.stat().st_size for p in (target / "bench").glob("*.eml"))
    assert sum(r.ok for r in results) == written == count
    return {
        "emails": count,
        "folder": "tmpfs" if str(folder).startswith("/dev/shm") else "disk",
        "seconds": round(seconds, 2),
        "emails_per_second": round(count / seconds),
        "eml_bytes": round(size / count),
        # The outbox writes from the calling thread: its CPU time is what the
        # run would take with one core to itself, whatever else runs.
        "cpu_seconds": round(cpu, 2),
        "emails_per_second_if_a_core_free": round(count / cpu),
    }


def _outbox_worker(count: int, folder: str, name: str, barrier: Any, out: Any) -> None:
    """One delivery worker: render its own e-mails, then write them when told."""
    batch = outgoing("outbox", count, name)
    adapter = OutboxAdapter(Path(folder), limiter=Limiter({}))
    barrier.wait()
    start = time.monotonic()
    results = []
    for n in range(0, count, 1_000):
        results.extend(adapter.deliver(batch[n : n + 1_000]))
    adapter.close()
    out.put((start, time.monotonic(), sum(r.ok for r in results)))


def outbox_workers_run(count: int, folder: Path, workers: int = 2) -> dict[str, Any]:
    """Write `count` e-mails from several processes at once, as `nudge worker -c N`.

    Each process renders its own share first (as a worker renders its own
    chunks); the clock runs from the first start to the last finish.
    """
    context = multiprocessing.get_context("spawn")
    target = Path(tempfile.mkdtemp(prefix="nudge-bench-outbox-", dir=folder))
    LEFT.append(target)
    barrier = context.Barrier(workers)
    out = context.Queue()
    share = count // workers
    processes = [
        context.Process(
            target=_outbox_worker,
            args=(share, str(target), f"bench-w{n}", barrier, out),
        )
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    finished = [out.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    written = len(list(target.rglob("*.eml")))
    seconds = max(f[1] for f in finished) - min(f[0] for f in finished)
    total = share * workers
    assert sum(f[2] for f in finished) == written == total
    return {
        "emails": total,
        "folder": "tmpfs" if str(folder).startswith("/dev/shm") else "disk",
        "workers": workers,
        "seconds": round(seconds, 2),
        "emails_per_second": round(total / seconds),
    }


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> int:
    """Run the benchmark, print the table and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--klaviyo", type=int, default=30_000)
    parser.add_argument("--steady", type=int, default=20_000)
    parser.add_argument("--outbox", type=int, default=20_000)
    args = parser.parse_args()
    console = Console()

    runs: dict[str, Any] = {}
    if args.klaviyo:
        runs["klaviyo_cold"] = klaviyo_run(args.klaviyo, steady=False)
    if args.steady:
        runs["klaviyo_steady"] = klaviyo_run(args.steady, steady=True)
    if args.outbox:
        # Memory first: the disk run's gigabytes are still being flushed (and
        # then discarded) long after it ends, which would slow any run after it.
        scratch = REPO / "var"
        scratch.mkdir(exist_ok=True)
        try:
            if Path("/dev/shm").is_dir():
                shm = Path("/dev/shm")
                runs["outbox_tmpfs"] = outbox_run(args.outbox, shm)
                runs["outbox_tmpfs_2_workers"] = outbox_workers_run(args.outbox, shm)
            runs["outbox_disk"] = outbox_run(args.outbox, scratch)
            # Two delivery workers, as `nudge worker -c 2` runs chunks.
            runs["outbox_disk_2_workers"] = outbox_workers_run(args.outbox, scratch)
        finally:
            for folder in LEFT:
                shutil.rmtree(folder, ignore_errors=True)

    results = {
        "environment": {
            "python": platform.python_version(),
            "klaviyo_api": version("klaviyo-api"),
            "cpus": os.cpu_count(),
            # Other work on the machine slows every figure: keep it beside them.
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "template": TEMPLATE,
        "targets_emails_per_second": TARGETS,
        **runs,
    }

    table = Table(title="delivery: e-mails per second (2 cores)")
    for column in ("run", "e-mails", "seconds", "e-mails/s", "target", "notes"):
        table.add_column(
            column, justify="left" if column in ("run", "notes") else "right"
        )
    for name, run in runs.items():
        esp = name.split("_")[0]
        if esp == "klaviyo":
            notes = (
                f"{run['event_requests']} requests, {run['answered_429']} × 429, "
                f"limiter waited {run['limiter_wait_s']} s"
            )
        elif "workers" in run:
            notes = f"{run['workers']} worker processes, each writing its chunks"
        else:
            notes = (
                f"{run['eml_bytes']:,} bytes per .eml; one process, "
                f"{run['cpu_seconds']} CPU s: "
                f"{run['emails_per_second_if_a_core_free']:,}/s with a free core"
            )
        ok = run["emails_per_second"] >= TARGETS[esp]
        table.add_row(
            name,
            f"{run['emails']:,}",
            f"{run['seconds']:.2f}",
            f"{run['emails_per_second']:,}",
            f"{'≥' if ok else '<'} {TARGETS[esp]:,}",
            notes,
        )
    console.print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    console.print(f"written to {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
