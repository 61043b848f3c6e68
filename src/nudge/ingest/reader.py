"""Read CSV (plain or gzipped) and Parquet files into a frame of text cells.

Every cell comes back as a string (empty for missing), so validation sees exactly
what the file said. Rows that cannot be split into the header's columns are
returned as rejects, with their row and line numbers, instead of stopping the read.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import pandas as pd

from nudge.errors import ImportFileError

REJECT_COLUMNS = ["row", "column", "value", "reason"]

# A row number is the data row's position in the file (the header is row 0),
# which equals its line number when no quoted cell spans several lines.
ROW = "_row"

# Bytes the file's encoding cannot decode are read as lone surrogates.
_UNDECODABLE = re.compile("[\udc80-\udcff]")

csv.field_size_limit(10 * 1024 * 1024)


@dataclass(frozen=True)
class RawTable:
    """The text cells of a file, with a `_row` column and the rows it rejected.

    A row with undecodable bytes stays in the frame (the bytes replaced) so that
    its neighbours keep their positions; its number is among the rejects.
    """

    frame: pd.DataFrame
    rejects: pd.DataFrame
    read: int


def empty_rejects() -> pd.DataFrame:
    """Return an empty rejects frame with the standard columns."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in REJECT_COLUMNS})


def _open_text(path: Path, encoding: str) -> TextIO:
    with path.open("rb") as probe:
        magic = probe.read(2)
    # Undecodable bytes survive as surrogates so that one bad cell rejects its
    # row, not the whole file.
    if magic == b"\x1f\x8b":
        return gzip.open(
            path, "rt", encoding=encoding, errors="surrogateescape", newline=""
        )
    return path.open("r", encoding=encoding, errors="surrogateescape", newline="")


def _csv_rows(path: Path, encoding: str) -> Iterator[list[str] | csv.Error]:
    with _open_text(path, encoding) as handle:
        sample = handle.read(64 * 1024)
        handle.seek(0)
        dialect: type[csv.Dialect] | csv.Dialect = csv.excel
        try:
            sniffed = csv.Sniffer().sniff(sample, delimiters=",;\t|")
            if sniffed.delimiter != ",":
                dialect = sniffed
        except csv.Error:
            pass

        # The reader carries on after a broken row, so one bad row is one
        # reject and the rows after it still count.
        reader = csv.reader(handle, dialect, strict=False)
        while True:
            try:
                yield next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield err


def read_csv(path: Path, encoding: str = "utf-8") -> RawTable:
    """Read a CSV file into text cells, rejecting rows of the wrong width."""
    rows = _csv_rows(path, encoding)
    try:
        first = next(rows)
    except StopIteration:
        raise ImportFileError(path, "the file is empty") from None
    except UnicodeError as err:
        raise ImportFileError(path, f"cannot decode as {encoding}: {err}") from err
    if isinstance(first, csv.Error):
        raise ImportFileError(path, f"unreadable header: {first}")
    header = [h.strip().lstrip("\ufeff") for h in first]
    _check_header(path, header)

    good: list[list[str]] = []
    numbers: list[int] = []
    bad: list[tuple[int, str, str, str]] = []
    width = len(header)
    row_no = 0
    for cells in rows:
        if isinstance(cells, csv.Error):
            row_no += 1
            bad.append((row_no, "", "", f"broken CSV: {cells}"))
            continue
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        row_no += 1
        if len(cells) != width:
            shown = ",".join(cells)[:80]
            reason = f"has {len(cells)} fields, the header has {width}"
            bad.append((row_no, "", shown, reason))
            continue
        joined = "".join(cells)
        if not joined.isascii() and _UNDECODABLE.search(joined):
            column = next(i for i, c in enumerate(cells) if _UNDECODABLE.search(c))
            shown = cells[column].encode("utf-8", "backslashreplace").decode()[:80]
            reason = f"not valid {encoding} text"
            bad.append((row_no, header[column], shown, reason))
            cells = [_UNDECODABLE.sub("\ufffd", c) for c in cells]
        good.append(cells)
        numbers.append(row_no)

    frame = pd.DataFrame(good, columns=header, dtype="str")
    frame[ROW] = numbers
    rejects = pd.DataFrame(bad, columns=REJECT_COLUMNS) if bad else empty_rejects()
    return RawTable(frame=frame, rejects=rejects, read=row_no)


def read_parquet(path: Path) -> RawTable:
    """Read a Parquet file into text cells."""
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises many unrelated types for bad files
        raise ImportFileError(path, f"not a readable Parquet file: {err}") from err
    header = [str(c).strip() for c in frame.columns]
    _check_header(path, header)
    frame.columns = pd.Index(header)
    for column in header:
        frame[column] = _to_text(frame[column])
    frame[ROW] = range(1, len(frame) + 1)
    return RawTable(frame=frame, rejects=empty_rejects(), read=len(frame))


def _to_text(series: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series):
        text = series.dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    elif pd.api.types.is_float_dtype(series):
        # Whole floats come from integer columns with gaps; write them as ints.
        text = series.map(lambda v: f"{v:.0f}" if float(v).is_integer() else repr(v))
    else:
        text = series.astype("object").map(str)
    result: pd.Series = text.where(series.notna(), "").astype("str")
    return result


def _check_header(path: Path, header: list[str]) -> None:
    seen: set[str] = set()
    for name in header:
        if not name:
            raise ImportFileError(path, "the header has an empty column name")
        if name.lower() in seen:
            raise ImportFileError(path, f"the header names column {name!r} twice")
        seen.add(name.lower())


def read_table(path: Path, encoding: str = "utf-8") -> RawTable:
    """Read a CSV, gzipped CSV or Parquet file by its name."""
    if not path.is_file():
        raise ImportFileError(path, "file not found")
    if path.suffix.lower() in {".parquet", ".pq"}:
        return read_parquet(path)
    return read_csv(path, encoding)
