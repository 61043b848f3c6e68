"""Bulk upserts of typed frames: COPY on PostgreSQL, executemany on SQLite.

The importer hands over a frame keyed by a natural key; the writer reads the rows
the store already has for those keys, inserts the new ones in bulk, updates only
the ones whose values changed, and returns the counts and the ids by key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Table, bindparam, select, update

# Bound parameters per statement stay well below SQLite's and PostgreSQL's limits.
_KEYS_PER_QUERY = 5_000


@dataclass
class Written:
    """What one upsert did: counts and the store id of every key it saw."""

    inserted: int
    updated: int
    unchanged: int
    ids: pd.Series


def _chunks(values: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def fetch_existing(
    conn: Connection,
    table: Table,
    filter_on: str,
    values: Sequence[Any],
    columns: Sequence[str],
) -> pd.DataFrame:
    """Return the stored rows (id and columns) whose `filter_on` is among values."""
    names = ["id", *dict.fromkeys(columns)]
    wanted = [table.c[c] for c in names]
    rows: list[Any] = []
    for part in _chunks(list(dict.fromkeys(values)), _KEYS_PER_QUERY):
        statement = select(*wanted).where(table.c[filter_on].in_(part))
        rows.extend(conn.execute(statement).all())
    return pd.DataFrame(rows, columns=names, dtype=object)


def same(left: pd.Series, right: pd.Series) -> pd.Series:
    """Compare two object columns cell by cell, treating missing as equal."""
    both_missing = left.isna() & right.isna()
    equal = pd.Series(
        [a == b for a, b in zip(left.tolist(), right.tolist(), strict=True)],
        index=left.index,
        dtype=bool,
    )
    return both_missing | (equal & left.notna() & right.notna())


def bulk_insert(conn: Connection, table: Table, frame: pd.DataFrame) -> None:
    """Insert a frame's rows at once with the fastest path the database offers.

    Values go through each column type's own bind processing, then straight
    to the driver: COPY on PostgreSQL, one executemany on SQLite.
    """
    if frame.empty:
        return
    columns = list(frame.columns)
    values: list[list[Any]] = []
    for column in columns:
        cells = frame[column].astype(object).where(frame[column].notna(), None).tolist()
        kind = table.c[column].type.dialect_impl(conn.dialect)
        process = kind.bind_processor(conn.dialect)
        values.append(cells if process is None else [process(v) for v in cells])
    rows = list(zip(*values, strict=True))

    quote = conn.dialect.identifier_preparer
    names = ", ".join(quote.quote(c) for c in columns)
    target = quote.format_table(table)
    raw: Any = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY {target} ({names}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join("?" for _ in columns)
        raw.executemany(f"INSERT INTO {target} ({names}) VALUES ({marks})", rows)


def bulk_update(conn: Connection, table: Table, records: list[dict[str, Any]]) -> None:
    """Update rows by id; every record holds `_id` and the columns to set."""
    if not records:
        return
    columns = [c for c in records[0] if c != "_id"]
    statement = (
        update(table)
        .where(table.c.id == bindparam("_id"))
        .values({c: bindparam(c) for c in columns})
    )
    conn.execute(statement, records)


def upsert(
    conn: Connection,
    table: Table,
    frame: pd.DataFrame,
    *,
    key: Sequence[str],
    compare: Sequence[str],
    stamps: Sequence[str] = (),
) -> Written:
    """Insert new keys, update changed rows, and return what happened.

    The first key column selects the stored rows to compare with. `compare`
    columns are written on insert and on change; `stamps` (such as
    `updated_at`) travel with those writes but never count as a change.
    """
    if frame.empty:
        return Written(0, 0, 0, pd.Series(dtype="int64"))
    key = list(key)
    existing = fetch_existing(
        conn, table, key[0], frame[key[0]].tolist(), [*key, *compare]
    )
    for column in key:
        existing[column] = existing[column].astype(frame[column].dtype)
    merged = frame.merge(existing, on=key, how="left", suffixes=("", "_old"))

    is_new = merged["id"].isna()
    changed = pd.Series(False, index=merged.index)
    for column in compare:
        changed |= ~same(merged[column], merged[f"{column}_old"])
    changed &= ~is_new

    new_rows = merged.loc[is_new, [*key, *compare, *stamps]]
    bulk_insert(conn, table, new_rows)
    updates = merged.loc[changed, [*compare, *stamps]]
    bulk_update(conn, table, records(updates.assign(_id=merged.loc[changed, "id"])))

    ids = pd.Series(dtype="int64")
    if len(key) == 1:
        ids = _ids_by_key(conn, table, key[0], merged, is_new)
    return Written(
        inserted=int(is_new.sum()),
        updated=int(changed.sum()),
        unchanged=int((~is_new & ~changed).sum()),
        ids=ids,
    )


def _ids_by_key(
    conn: Connection, table: Table, key: str, merged: pd.DataFrame, is_new: pd.Series
) -> pd.Series:
    known = dict(zip(merged.loc[~is_new, key], merged.loc[~is_new, "id"], strict=True))
    if is_new.any():
        fresh = fetch_existing(
            conn, table, key, merged.loc[is_new, key].tolist(), [key]
        )
        known.update(zip(fresh[key], fresh["id"], strict=True))
    return pd.Series(known, dtype="int64")


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Turn a frame into plain Python records, with None for every missing cell."""
    clean = frame.astype(object).where(frame.notna(), None)
    return clean.to_dict("records")  # type: ignore[return-value]
