"""Import customers, products, orders and behaviour events from shop exports.

An import reads the whole file, validates every cell, writes every unusable row
to a rejects file (row, column, value, reason) and stores the good rows in chunks,
one transaction per chunk, upserting by the shop's own ids so that importing the
same file again changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, Table

from nudge.ingest import parse
from nudge.ingest.layouts import FIELDS, Kind, Layout, layout_for
from nudge.ingest.reader import REJECT_COLUMNS, ROW, RawTable, read_table
from nudge.ingest.writer import (
    Written,
    bulk_insert,
    bulk_update,
    fetch_existing,
    upsert,
)
from nudge.logging import get_logger
from nudge.settings import Settings
from nudge.store.models import (
    BehaviourEvent,
    Customer,
    ImportRun,
    Order,
    OrderLine,
    Product,
    ProductAlias,
)

log = get_logger(__name__)

Progress = Callable[[int, int], None]

EVENT_TYPES = {
    "view": "view",
    "product_view": "view",
    "viewed_product": "view",
    "viewed product": "view",
    "add_to_cart": "add_to_cart",
    "add-to-cart": "add_to_cart",
    "added_to_cart": "add_to_cart",
    "added to cart": "add_to_cart",
    "cart": "add_to_cart",
    "search": "search",
    "searched": "search",
}
ORDER_STATUSES = {"placed", "cancelled", "returned"}
# Fields that describe the whole order: a line that leaves them empty takes
# them from the order's other lines (Shopify writes them on the first only).
ORDER_LEVEL = (
    "customer_id",
    "email",
    "ordered_at",
    "currency",
    "status",
    "country",
    "_cancelled_at",
)

_CUSTOMERS: Table = Customer.__table__  # type: ignore[assignment]
_PRODUCTS: Table = Product.__table__  # type: ignore[assignment]
_ORDERS: Table = Order.__table__  # type: ignore[assignment]
_LINES: Table = OrderLine.__table__  # type: ignore[assignment]
_EVENTS: Table = BehaviourEvent.__table__  # type: ignore[assignment]
_RUNS: Table = ImportRun.__table__  # type: ignore[assignment]
_ALIASES: Table = ProductAlias.__table__  # type: ignore[assignment]


@dataclass
class Counts:
    """What happened to one entity's rows during an import."""

    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    merged: int = 0

    def add(self, written: Written) -> None:
        """Add the counts of one chunk's upsert."""
        self.inserted += written.inserted
        self.updated += written.updated
        self.unchanged += written.unchanged


@dataclass
class ImportReport:
    """The outcome of one `nudge import`: counts per entity and the rejects file."""

    kind: Kind
    format: str
    file: Path
    counts: dict[str, Counts] = field(default_factory=dict)
    rejects_file: Path | None = None
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """Return the counts keyed by entity, plus where the rejects went."""
        out: dict[str, Any] = {name: asdict(c) for name, c in self.counts.items()}
        out["rejects_file"] = str(self.rejects_file) if self.rejects_file else None
        out["seconds"] = round(self.seconds, 2)
        return out


# Stored columns beyond the key, in the generic layout's order.
CUSTOMER_COLUMNS = FIELDS["customers"][1:]
PRODUCT_COLUMNS = FIELDS["products"][1:]


@dataclass
class _Context:
    """State one import carries from chunk to chunk."""

    report: ImportReport
    fmt: str
    # Fields the file provides: only these are compared and updated, so a
    # file without a column never blanks what another file stored.
    present: set[str]
    seen: dict[str, set[Any]] = field(
        default_factory=lambda: {"customers": set(), "products": set()}
    )

    def counts(self, entity: str) -> Counts:
        """Return the counts of an entity, creating them on first use."""
        return self.report.counts.setdefault(entity, Counts())


@dataclass
class _Validated:
    """Typed rows that passed validation, and every problem found."""

    frame: pd.DataFrame
    problems: list[pd.DataFrame]


class _Checker:
    """Collect typed columns and the problems of each bad cell."""

    def __init__(self, text: pd.DataFrame, mapping: dict[str, str]) -> None:
        self.text = text
        self.mapping = mapping
        self.typed = pd.DataFrame({ROW: text[ROW]}, index=text.index)
        self.problems: list[pd.DataFrame] = []

    def add(self, name: str, parsed: parse.Parsed) -> None:
        """Keep a parsed column and note its bad cells against the file's header."""
        self.typed[name] = parsed.values
        self.flag(parsed.reasons.notna(), name, parsed.reasons)

    def flag(self, bad: pd.Series, name: str, reason: pd.Series | str) -> None:
        """Note a problem on the rows where `bad` holds."""
        if not bad.any():
            return
        reasons = reason[bad] if isinstance(reason, pd.Series) else reason
        self.problems.append(
            pd.DataFrame(
                {
                    "row": self.text.loc[bad, ROW],
                    "column": self.mapping.get(name, name),
                    "value": self.text.loc[bad, name].str.slice(0, 80)
                    if name in self.text
                    else "",
                    "reason": reasons,
                }
            )
        )

    def result(self) -> _Validated:
        """Return the rows without problems, and the problems."""
        bad_rows: set[int] = set()
        for problem in self.problems:
            bad_rows.update(problem["row"].tolist())
        good = self.typed[~self.typed[ROW].isin(bad_rows)]
        return _Validated(good, self.problems)


def _canonical(
    raw: RawTable, layout: Layout, path: Path
) -> tuple[pd.DataFrame, dict[str, str]]:
    header = [c for c in raw.frame.columns if c != ROW]
    mapping = layout.resolve(header, path)
    by_lower = {h.lower(): h for h in header}
    blank = pd.Series("", index=raw.frame.index, dtype="str")
    columns: dict[str, pd.Series] = {name: blank for name in FIELDS[layout.kind]}
    for name, source in mapping.items():
        columns[name] = raw.frame[source]
    for name, source in layout.extra.items():
        if source.lower() in by_lower:
            columns[name] = raw.frame[by_lower[source.lower()]]
        else:
            columns[name] = blank
    frame = pd.DataFrame(columns, index=raw.frame.index)
    frame[ROW] = raw.frame[ROW]
    return frame, mapping


def _reject_duplicates(checker: _Checker, key: str, label: str) -> None:
    typed = checker.typed
    present = typed[key].notna()
    first_row = typed[present].groupby(key, sort=False)[ROW].transform("first")
    duplicate = present & typed[ROW].ne(first_row.reindex(typed.index))
    reasons = "duplicate " + label + " (first on row " + first_row.astype(str) + ")"
    checker.flag(duplicate.fillna(False), key, reasons.reindex(typed.index))


def _aliases(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the (SKU, product) pairs a catalog names, other than the id itself."""
    if "_sku" not in frame:
        return pd.DataFrame(columns=["_sku", "external_id"])
    pairs = frame.loc[frame["_sku"].notna(), ["_sku", "external_id"]]
    pairs = pairs[pairs["_sku"] != pairs["external_id"]]
    return pairs.drop_duplicates("_sku").reset_index(drop=True)


def _merge_continuations(frame: pd.DataFrame, key: str) -> tuple[pd.DataFrame, int]:
    # Continuation rows (variants, extra images) fill the first row's gaps; a
    # product is in stock when any of its variants is.
    groups = frame.groupby(key, sort=False)
    merged = groups.first()
    merged[ROW] = groups[ROW].first()
    if "in_stock" in frame:
        stock = frame["in_stock"].map({True: 1.0, False: 0.0}).astype("float64")
        any_stock = stock.groupby(frame[key], sort=False).max()
        flags = any_stock.map({1.0: True, 0.0: False}).astype(object)
        merged["in_stock"] = flags.where(flags.notna(), None)
    return merged.reset_index(), len(frame) - len(merged)


class Importer:
    """Import shop exports into the store named by the settings."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)

    def run(
        self,
        kind: Kind,
        path: Path,
        fmt: str = "generic",
        *,
        encoding: str = "utf-8",
        rejects_path: Path | None = None,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Import one file and return what happened to its rows."""
        started = datetime.now(UTC)
        layout = layout_for(fmt, kind)
        raw = read_table(path, encoding)
        text, mapping = _canonical(raw, layout, path)
        report = ImportReport(kind=kind, format=fmt, file=path)
        present = set(mapping) | set(layout.produces)

        checker = _Checker(text, mapping)
        if not raw.rejects.empty:
            # Rows the reader rejected stay in the frame so that line numbers
            # keep counting them, but never reach the store.
            checker.problems.append(raw.rejects)
        if kind == "orders":
            checker.text = _prepare_orders(checker.text)
        if layout.reshape is not None:
            checker.text = layout.reshape(checker.text.copy())
        validate = {
            "customers": self._validate_customers,
            "products": self._validate_products,
            "orders": self._validate_orders,
            "events": self._validate_events,
        }[kind]
        validated = validate(checker, layout)
        good = validated.frame
        main = report.counts.setdefault(kind, Counts(read=raw.read))
        aliases = _aliases(good)
        if layout.merge_duplicates:
            good, main.merged = _merge_continuations(good, "external_id")
        if kind == "events":
            # The same event twice in one file (same customer, product, kind
            # and second) is one event; the repeat counts as merged.
            good = good.assign(event_key=_event_keys(good))
            unique = good.drop_duplicates("event_key")
            main.merged = len(good) - len(unique)
            good = unique

        problems = [p for p in validated.problems if not p.empty]
        rejects = pd.concat(problems) if problems else raw.rejects
        main.rejected = int(rejects["row"].nunique())
        report.rejects_file = self._write_rejects(rejects, kind, path, rejects_path)

        ctx = _Context(report=report, fmt=fmt, present=present)
        run_id = self._start_run(report)
        try:
            self._store(kind, good, ctx, progress)
            if not aliases.empty:
                with self.engine.begin() as conn:
                    self._store_aliases(conn, aliases, ctx)
        except BaseException:
            self._finish_run(run_id, report, "failed")
            raise
        for entity in ("customers", "products"):
            if entity != kind and entity in report.counts:
                c = report.counts[entity]
                c.unchanged = c.read - c.inserted - c.updated
        report.seconds = (datetime.now(UTC) - started).total_seconds()
        self._finish_run(run_id, report, "done")
        log.info("import finished", kind=kind, format=fmt, **asdict(main))
        return report

    def _write_rejects(
        self, rejects: pd.DataFrame, kind: Kind, path: Path, target: Path | None
    ) -> Path | None:
        if rejects.empty:
            return None
        if target is None:
            stamp = self.now.strftime("%Y%m%dT%H%M%S")
            name = f"{kind}-{path.name.split('.')[0]}-{stamp}.csv"
            target = self.settings.path(self.settings.var_dir) / "rejects" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        ordered = rejects.sort_values("row", kind="stable")[REJECT_COLUMNS]
        ordered.to_csv(target, index=False, encoding="utf-8", errors="backslashreplace")
        return target

    def _start_run(self, report: ImportReport) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                _RUNS.insert().values(
                    kind=report.kind,
                    format=report.format,
                    file=str(report.file),
                    started_at=self.now,
                    status="running",
                    counts={},
                    rejects_file=str(report.rejects_file)
                    if report.rejects_file
                    else None,
                )
            )
            return int(result.inserted_primary_key[0])  # type: ignore[index]

    def _finish_run(self, run_id: int, report: ImportReport, status: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                _RUNS.update()
                .where(_RUNS.c.id == run_id)
                .values(
                    status=status,
                    finished_at=datetime.now(UTC).replace(tzinfo=None),
                    counts={k: asdict(v) for k, v in report.counts.items()},
                )
            )

    # -- validation ---------------------------------------------------------

    def _validate_customers(self, checker: _Checker, layout: Layout) -> _Validated:
        text = checker.text
        tz = self.settings.shop_timezone
        checker.mapping.setdefault("external_id", checker.mapping["customer_id"])
        text["external_id"] = text["customer_id"]
        checker.add("external_id", parse.parse_id(text["customer_id"]))
        checker.add("email", parse.parse_email(text["email"]))
        for name in ("first_name", "last_name", "country", "consent_source"):
            checker.add(name, parse.parse_text(text[name]))
        checker.add(
            "favourite_categories",
            parse.parse_text(text["favourite_categories"], max_length=1024),
        )
        checker.add("timezone", parse.parse_timezone(text["timezone"]))
        for name in ("created_at", "consent_at", "unsubscribed_at"):
            checker.add(
                name, parse.parse_time(text[name], tz, dayfirst=layout.dayfirst)
            )
        checker.add("accepts_marketing", parse.parse_bool(text["accepts_marketing"]))
        checker.add(
            "max_emails_per_week",
            parse.parse_int(text["max_emails_per_week"], minimum=0),
        )
        _reject_duplicates(checker, "external_id", "customer_id")
        return checker.result()

    def _validate_products(self, checker: _Checker, layout: Layout) -> _Validated:
        text = checker.text
        checker.mapping.setdefault("external_id", checker.mapping["product_id"])
        text["external_id"] = text["product_id"]
        checker.add("external_id", parse.parse_id(text["product_id"]))
        checker.add("title", parse.parse_text(text["title"], max_length=512))
        checker.add(
            "description",
            parse.parse_text(text["description"], max_length=20_000),
        )
        for name in ("category", "brand"):
            checker.add(name, parse.parse_text(text[name]))
        checker.add("price", parse.parse_decimal(text["price"]))
        checker.add("currency", _parse_currency(text["currency"]))
        for name in ("image_url", "product_url"):
            checker.add(name, self._parse_url(text[name]))
        checker.add("in_stock", parse.parse_bool(text["in_stock"]))
        checker.add(
            "created_at",
            parse.parse_time(
                text["created_at"],
                self.settings.shop_timezone,
                dayfirst=layout.dayfirst,
            ),
        )
        if "_sku" in text:
            checker.add("_sku", parse.parse_text(text["_sku"], max_length=128))
        if not layout.merge_duplicates:
            _reject_duplicates(checker, "external_id", "product_id")
        return checker.result()

    def _validate_orders(self, checker: _Checker, layout: Layout) -> _Validated:
        text = checker.text
        tz = self.settings.shop_timezone
        checker.add("order_id", parse.parse_id(text["order_id"]))
        checker.add("product_id", parse.parse_id(text["product_id"]))
        checker.add(
            "customer_id", parse.parse_text(text["customer_id"], max_length=128)
        )
        checker.add("email", parse.parse_email(text["email"]))
        checker.add("country", parse.parse_text(text["country"]))
        checker.add("title", parse.parse_text(text["title"], max_length=512))
        checker.add(
            "ordered_at",
            parse.parse_time(text["ordered_at"], tz, dayfirst=layout.dayfirst),
        )
        checker.flag(
            checker.typed["ordered_at"].isna() & (text["ordered_at"].str.strip() == ""),
            "ordered_at",
            "missing",
        )

        quantity = text["quantity"]
        negative = quantity.str.strip().str.startswith("-")
        checker.add(
            "quantity", parse.parse_int(quantity.where(~negative, ""), minimum=1)
        )
        checker.flag(negative, "quantity", "negative quantity outside a cancellation")
        checker.flag(~negative & (quantity.str.strip() == ""), "quantity", "missing")
        checker.add("unit_price", parse.parse_decimal(text["unit_price"]))
        checker.flag(text["unit_price"].str.strip() == "", "unit_price", "missing")
        checker.add("currency", _parse_currency(text["currency"]))

        status = text["status"].str.strip().str.lower().replace("", "placed")
        checker.typed["status"] = status
        bad_status = ~status.isin(ORDER_STATUSES)
        checker.flag(bad_status, "status", "not one of placed, cancelled, returned")
        checker.typed["line_no"] = text["line_no"]
        return checker.result()

    def _validate_events(self, checker: _Checker, layout: Layout) -> _Validated:
        text = checker.text
        checker.add("customer_id", parse.parse_id(text["customer_id"]))
        checker.add("product_id", parse.parse_text(text["product_id"], max_length=128))
        checker.add("query", parse.parse_text(text["query"], max_length=512))
        checker.add("event_id", parse.parse_text(text["event_id"], max_length=128))
        checker.add(
            "occurred_at",
            parse.parse_time(
                text["occurred_at"],
                self.settings.shop_timezone,
                dayfirst=layout.dayfirst,
            ),
        )
        checker.flag(text["occurred_at"].str.strip() == "", "occurred_at", "missing")

        raw_type = text["event_type"].str.strip().str.lower()
        kind = raw_type.map(EVENT_TYPES)
        checker.typed["event_type"] = kind
        checker.flag(kind.isna(), "event_type", "not one of view, add_to_cart, search")
        needs_product = (
            kind.isin(["view", "add_to_cart"]) & checker.typed["product_id"].isna()
        )
        checker.flag(
            needs_product,
            "product_id",
            "missing (a view or add_to_cart names a product)",
        )
        if "event_id" in checker.mapping:
            _reject_duplicates(checker, "event_id", "event_id")
        return checker.result()

    def _parse_url(self, text: pd.Series) -> parse.Parsed:
        parsed = parse.parse_text(text, max_length=2048)
        values = parsed.values
        relative = values.notna() & values.astype(str).str.startswith("/")
        base = self.settings.shop_url.rstrip("/")
        values = values.where(~relative, base + values.astype(str))
        bad = values.notna() & ~values.astype(str).str.match(r"^https?://", na=False)
        reasons = parsed.reasons.where(~bad, "not an absolute http(s) URL")
        return parse.Parsed(values.where(~bad, None), reasons)

    # -- storing -----------------------------------------------------------

    def _store(
        self,
        kind: Kind,
        frame: pd.DataFrame,
        ctx: _Context,
        progress: Progress | None,
    ) -> None:
        size = self.settings.import_chunk_rows
        if kind == "orders":
            # Whole orders stay in one chunk, so a crash never leaves half an order.
            first_row = frame.groupby("order_id", sort=False)[ROW].transform("min")
            chunk_of = (first_row // size).astype("int64")
        else:
            chunk_of = pd.Series(np.arange(len(frame)) // size, index=frame.index)
        store = {
            "customers": self._store_customers,
            "products": self._store_products,
            "orders": self._store_orders,
            "events": self._store_events,
        }[kind]

        done, total = 0, len(frame)
        for _, chunk in frame.groupby(chunk_of, sort=True):
            with self.engine.begin() as conn:
                store(conn, chunk.reset_index(drop=True), ctx)
            done += len(chunk)
            if progress is not None:
                progress(done, total)

    def _store_customers(
        self, conn: Connection, frame: pd.DataFrame, ctx: _Context
    ) -> None:
        columns = [c for c in CUSTOMER_COLUMNS if c in ctx.present]
        data = frame[["external_id", *columns]].copy()
        if "accepts_marketing" in data:
            # An empty consent cell is no consent; a "yes" without a source
            # records the import it came from.
            data["accepts_marketing"] = (
                data["accepts_marketing"].fillna(False).astype(bool)
            )
            if "consent_source" not in data:
                data["consent_source"] = None
                columns.append("consent_source")
            unsourced = data["accepts_marketing"] & data["consent_source"].isna()
            data.loc[unsourced, "consent_source"] = f"import:{ctx.fmt}"
        data["source"] = "catalog"
        data["updated_at"] = self.now
        written = upsert(
            conn,
            _CUSTOMERS,
            data,
            key=["external_id"],
            compare=[*columns, "source"],
            stamps=["updated_at"],
        )
        ctx.counts("customers").add(written)

    def _store_products(
        self, conn: Connection, frame: pd.DataFrame, ctx: _Context
    ) -> None:
        columns = [c for c in PRODUCT_COLUMNS if c in ctx.present]
        data = frame[["external_id", *columns]].copy()
        if "price" in data and "currency" not in data:
            data["currency"] = self.settings.shop_currency
            columns.append("currency")
        elif "currency" in data:
            data["currency"] = data["currency"].fillna(self.settings.shop_currency)
        data["source"] = "catalog"
        data["updated_at"] = self.now
        written = upsert(
            conn,
            _PRODUCTS,
            data,
            key=["external_id"],
            compare=[*columns, "source"],
            stamps=["updated_at"],
        )
        ctx.counts("products").add(written)

    def _store_orders(
        self, conn: Connection, frame: pd.DataFrame, ctx: _Context
    ) -> None:
        frame = frame.assign(
            currency=frame["currency"].fillna(self.settings.shop_currency)
        )
        customer_ids = self._ensure_customers(conn, frame, "ordered_at", ctx)
        product_ids = self._ensure_products(conn, frame, "ordered_at", ctx)

        # The order's own fields come from its first valid line.
        heads = frame.groupby("order_id", sort=False).first().reset_index()
        orders = pd.DataFrame(
            {
                "external_id": heads["order_id"],
                "customer_id": _ids(heads["customer_id"], customer_ids),
                "ordered_at": heads["ordered_at"],
                "currency": heads["currency"],
                "status": heads["status"],
                "updated_at": self.now,
            }
        )
        written = upsert(
            conn,
            _ORDERS,
            orders,
            key=["external_id"],
            compare=["customer_id", "ordered_at", "currency", "status"],
            stamps=["updated_at"],
        )
        invoices = ctx.counts("invoices")
        invoices.read += len(orders)
        invoices.add(written)

        lines = pd.DataFrame(
            {
                "order_id": frame["order_id"].map(written.ids).astype("int64"),
                "line_no": frame["line_no"].astype("int64"),
                "product_id": _ids(frame["product_id"], product_ids),
                "quantity": frame["quantity"].astype(object),
                "unit_price": frame["unit_price"],
                "status": frame["status"],
            }
        )
        written = upsert(
            conn,
            _LINES,
            lines,
            key=["order_id", "line_no"],
            compare=["product_id", "quantity", "unit_price", "status"],
        )
        ctx.counts("orders").add(written)

    def _store_events(
        self, conn: Connection, frame: pd.DataFrame, ctx: _Context
    ) -> None:
        customer_ids = self._ensure_customers(conn, frame, "occurred_at", ctx)
        product_ids = self._ensure_products(conn, frame, "occurred_at", ctx)
        key = frame["event_key"]
        events = pd.DataFrame(
            {
                "event_key": key,
                "customer_id": _ids(frame["customer_id"], customer_ids),
                "product_id": _ids(frame["product_id"], product_ids),
                "event_type": frame["event_type"],
                "occurred_at": frame["occurred_at"],
                "query": frame["query"],
            }
        )
        written = upsert(
            conn,
            _EVENTS,
            events,
            key=["event_key"],
            compare=["customer_id", "product_id", "event_type", "occurred_at", "query"],
        )
        ctx.counts("events").add(written)

    def _store_aliases(
        self, conn: Connection, aliases: pd.DataFrame, ctx: _Context
    ) -> None:
        products = fetch_existing(
            conn,
            _PRODUCTS,
            "external_id",
            aliases["external_id"].tolist(),
            ["external_id"],
        )
        ids = products.set_index("external_id")["id"]
        frame = pd.DataFrame(
            {"alias": aliases["_sku"], "product_id": _ids(aliases["external_id"], ids)}
        )
        frame = frame[frame["product_id"].notna()]
        ctx.counts("aliases").add(
            upsert(conn, _ALIASES, frame, key=["alias"], compare=["product_id"])
        )
        ctx.counts("aliases").read = len(frame)

    def _ensure_customers(
        self, conn: Connection, frame: pd.DataFrame, time: str, ctx: _Context
    ) -> pd.Series:
        named = frame[frame["customer_id"].notna()]
        groups = named.groupby("customer_id", sort=False)
        refs = pd.DataFrame({"first_at": groups[time].min()})
        for name in ("email", "country"):
            if name in named:
                refs[name] = groups[name].first()
        return self._ensure(conn, _CUSTOMERS, refs, "customers", ctx)

    def _ensure_products(
        self, conn: Connection, frame: pd.DataFrame, time: str, ctx: _Context
    ) -> pd.Series:
        named = frame[frame["product_id"].notna()]
        groups = named.groupby("product_id", sort=False)
        refs = pd.DataFrame({"first_at": groups[time].min()})
        if "title" in named:
            refs["title"] = groups["title"].first()
        if "unit_price" in named:
            refs["price"] = groups["unit_price"].first()
            refs["currency"] = groups["currency"].first()
        return self._ensure(conn, _PRODUCTS, refs, "products", ctx)

    def _aliased(self, conn: Connection, table: Table, keys: list[Any]) -> pd.Series:
        """Return store ids of the keys that are aliases of catalog products."""
        if table is not _PRODUCTS or not keys:
            return pd.Series(dtype="int64")
        found = fetch_existing(conn, _ALIASES, "alias", keys, ["alias", "product_id"])
        ids: pd.Series = found.set_index("alias")["product_id"].astype("int64")
        return ids

    def _ensure(
        self,
        conn: Connection,
        table: Table,
        refs: pd.DataFrame,
        entity: str,
        ctx: _Context,
    ) -> pd.Series:
        """Create what the rows reference but the store lacks; return ids by key."""
        counts = ctx.counts(entity)
        keys = refs.index.tolist()
        fresh = [k for k in keys if k not in ctx.seen[entity]]
        counts.read += len(fresh)
        ctx.seen[entity].update(fresh)
        existing = fetch_existing(
            conn, table, "external_id", keys, ["external_id", "source", "created_at"]
        )
        existing = existing.set_index("external_id")

        missing = refs.loc[~refs.index.isin(existing.index)]
        aliased = self._aliased(conn, table, missing.index.tolist())
        missing = missing.loc[~missing.index.isin(aliased.index)]
        new = missing.rename(columns={"first_at": "created_at"}).assign(
            source="order", updated_at=self.now
        )
        bulk_insert(conn, table, new.rename_axis("external_id").reset_index())
        counts.inserted += len(missing)

        # A placeholder's "created" is the first time an order named it; an
        # earlier order in a later chunk moves it back.
        known = refs.join(existing, how="inner")
        earlier = known[
            (known["source"] == "order")
            & (known["first_at"] < pd.to_datetime(known["created_at"]))
        ]
        bulk_update(
            conn,
            table,
            [
                {"_id": i, "created_at": t}
                for i, t in zip(earlier["id"], earlier["first_at"], strict=True)
            ],
        )
        counts.updated += len(set(earlier.index) & set(fresh))

        ids = pd.concat([existing["id"], aliased])
        if len(missing):
            added = fetch_existing(
                conn, table, "external_id", missing.index.tolist(), ["external_id"]
            )
            ids = pd.concat([ids, added.set_index("external_id")["id"]])
        result: pd.Series = ids.astype("int64")
        return result


def _parse_currency(text: pd.Series) -> parse.Parsed:
    parsed = parse.parse_text(text.str.upper(), max_length=3)
    values = parsed.values
    bad = values.notna() & ~values.astype(str).str.fullmatch(r"[A-Z]{3}", na=False)
    reasons = parsed.reasons.where(~bad, "not a three-letter currency code")
    return parse.Parsed(values.where(~bad, None), reasons)


def _prepare_orders(text: pd.DataFrame) -> pd.DataFrame:
    text = text.copy()
    order = text["order_id"].str.strip()
    text["order_id"] = order

    # Line numbers count every row of an order, rejected or not, so a row
    # fixed in a later export keeps its place and updates instead of adding.
    text["line_no"] = text.groupby(order, sort=False).cumcount() + 1
    for name in ORDER_LEVEL:
        if name not in text:
            continue
        column = text[name]
        empty = column.str.strip() == ""
        if not empty.any():
            continue
        first = column.where(~empty).groupby(order, sort=False).transform("first")
        text[name] = column.where(~empty, first.fillna(""))
    return text


def _ids(keys: pd.Series, ids: pd.Series) -> pd.Series:
    """Map external ids to store ids, as Python ints with None for no match."""
    mapped = keys.map(ids).astype("Int64").astype(object)
    return mapped.where(mapped.notna(), None)


def _event_keys(frame: pd.DataFrame) -> pd.Series:
    identity = frame[
        ["customer_id", "event_type", "occurred_at", "product_id", "query"]
    ]
    return frame["event_id"].where(frame["event_id"].notna(), hash_event(identity))


def hash_event(parts: pd.DataFrame) -> pd.Series:
    """Digest an event's identifying fields into a stable key."""
    joined = pd.Series("", index=parts.index, dtype=object)
    for column in parts.columns:
        cells = parts[column].astype(object)
        joined = joined + "\x1f" + cells.where(cells.notna(), "").map(str)
    return joined.map(lambda s: hashlib.sha1(s.encode("utf-8")).hexdigest())
