"""The outbox: every message as a complete `.eml` file, with an index to browse.

Nothing is sent. Each run gets a folder under the outbox with one
``<send id>.eml`` per message (what an SMTP server would have received), the
HTML part beside it as ``<send id>.html`` for a browser, and two indexes that
grow with every batch: ``index.html`` (a table linking each message) and
``index.jsonl`` (one line per message, for tools).

The stdlib's ``email`` package takes over a millisecond to build one message,
more than rendering it, so `build_mime` writes the same MIME by hand: headers
as `nudge.render.to_mime` sets them, base64 parts, CRLF line ends.
"""

from __future__ import annotations

import binascii
import hashlib
import html
import json
import multiprocessing
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from nudge.delivery.base import Accepted, Adapter, Outcome, Outgoing, Rejected
from nudge.render.mime import MessageError, message_id
from nudge.render.model import RenderedMessage
from nudge.settings import Settings

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
DUPLICATE = "already written"
PER_PROCESS = 250  # below this many messages a process each costs more than it saves
_CRLF = np.frombuffer(b"\r\n", dtype=np.uint8)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+")
_INDEX_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nudge outbox</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse}
td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
</style></head><body><h1>nudge outbox</h1>
<table><thead><tr><th>send</th><th>to</th><th>subject</th><th>campaign</th>
<th>variant</th><th>written</th></tr></thead><tbody>
"""


def default_sender(settings: Settings) -> str:
    """Return the From address of the shop's e-mails (see `Settings.sender`)."""
    return settings.sender


def _address(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise MessageError(f"address contains a line break: {value!r}")
    if value.isascii():
        return value
    name, addr = parseaddr(value)
    return formataddr((name, addr), charset="utf-8")


def _header_text(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise MessageError("header contains a line break")
    return value if value.isascii() else Header(value, "utf-8").encode()


def _base64(data: bytes) -> bytes:
    # One C call, then the 76-character lines laid out as rows of an array: the
    # stdlib's line-by-line encoders take ten times as long on a 30 KiB e-mail.
    flat = binascii.b2a_base64(data, newline=False)
    rows, rest = divmod(len(flat), 76)
    lines = np.empty((rows, 78), dtype=np.uint8)
    lines[:, :76] = np.frombuffer(flat, dtype=np.uint8, count=rows * 76).reshape(
        rows, 76
    )
    lines[:, 76:] = _CRLF
    body = lines.tobytes()
    return body + flat[rows * 76 :] if rest else body[:-2]


def file_name(send_id: str) -> str:
    """Return a send id as a safe file name (stable, so a resend finds it)."""
    return _UNSAFE_NAME.sub(lambda m: f"={ord(m.group()):02X}", send_id)


def build_mime(
    message: RenderedMessage,
    sender: str,
    recipient: str,
    *,
    date: datetime | None = None,
    html: bytes | None = None,
) -> bytes:
    """Return the message as MIME bytes: text and HTML alternatives, CRLF ends.

    ``html`` is the HTML part already encoded as UTF-8, where the caller has it.
    """
    headers = [
        ("Subject", _header_text(message.subject)),
        ("From", _address(sender)),
        ("To", _address(recipient)),
    ]
    given = {k.lower() for k in message.headers}
    headers.extend((k, _header_text(v)) for k, v in message.headers.items())
    if "message-id" not in given:
        domain = parseaddr(sender)[1].rpartition("@")[2] or "nudge"
        headers.append(("Message-ID", message_id(message.send_id, domain)))
    if "date" not in given:
        headers.append(("Date", format_datetime(date or datetime.now(UTC))))

    # No base64 line can start with "--", so the boundary never occurs inside
    # a part; the send id's digest keeps it stable from one build to the next.
    digest = hashlib.blake2s(message.send_id.encode(), digest_size=8).hexdigest()
    boundary = f"==nudge{digest}=="
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    part = (
        'Content-Type: text/{}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return b"".join(
        (
            head.encode("ascii"),
            b"MIME-Version: 1.0\r\n",
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\n{part.format('plain')}".encode("ascii"),
            _base64(message.text.encode()),
            f"\r\n--{boundary}\r\n{part.format('html')}".encode("ascii"),
            _base64(html if html is not None else message.html.encode()),
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        )
    )


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


Work = tuple[str, str, str, RenderedMessage]  # send id, run id, address, message


def _write_all(
    folder: Path,
    sender: str,
    write_html: bool,
    date: datetime,
    work: Sequence[Work],
) -> list[tuple[Path | None, str | None]]:
    """Build and write each message; return its path, or why it was refused.

    A message whose `.eml` is already there was sent before: it is left as it
    is and reported with ``DUPLICATE`` (the check runs here, in parallel).
    """
    done: list[tuple[Path | None, str | None]] = []
    for send_id, run_id, address, message in work:
        path = folder / file_name(run_id) / f"{file_name(send_id)}.eml"
        if os.path.exists(path):
            done.append((path, DUPLICATE))
            continue
        html = message.html.encode()
        try:
            raw = build_mime(message, sender, address, date=date, html=html)
        except MessageError as err:
            done.append((None, str(err)))
            continue
        _write(path, raw)
        if write_html:
            _write(path.with_suffix(".html"), html)
        done.append((path, None))
    return done


def _write(path: Path, data: bytes) -> None:
    # Written under a temporary name and renamed, so that a crash never leaves
    # a partial file that would count as sent.
    partial = f"{path}.part"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(partial, path)


@dataclass
class _Run:
    folder: Path
    index_html: Any
    index_jsonl: Any


class OutboxAdapter(Adapter):
    """Write each message as an `.eml` file under the outbox folder."""

    name = "outbox"
    batch_size = 1_000

    def __init__(
        self,
        folder: Path | str,
        *,
        sender: str = "nudge <hello@nudge.invalid>",
        max_bytes: int = MAX_MESSAGE_BYTES,
        write_html: bool = True,
        processes: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.processes = processes if processes is not None else _cores()
        self._executor: ProcessPoolExecutor | None = None
        self.folder = Path(folder)
        self.sender = sender
        self.max_bytes = max_bytes
        self.write_html = write_html
        self._runs: dict[str, _Run] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> OutboxAdapter:
        """Return an outbox writing under the configured outbox folder."""
        options.setdefault("sender", default_sender(settings))
        return cls(settings.path(settings.outbox_dir), **options)

    def run_folder(self, run_id: str) -> Path:
        """Return the folder of a run's messages."""
        return self.folder / file_name(run_id)

    def path_of(self, message: Outgoing) -> Path:
        """Return where a message's `.eml` file is written."""
        return self.run_folder(message.run_id) / f"{file_name(message.send_id)}.eml"

    def check(self, message: Outgoing) -> str | None:
        """Refuse an address mail cannot carry, or a message over the size limit."""
        if not _ADDRESS.fullmatch(message.email):
            return f"invalid address: {message.email!r}"
        size = len(message.message.html) + len(message.message.text)
        if size > self.max_bytes:
            return (
                f"message too large: {size / 1_048_576:.1f} MiB; the outbox "
                f"takes at most {self.max_bytes / 1_048_576:.1f} MiB"
            )
        return None

    def send(self, chunk: Sequence[Outgoing]) -> Mapping[str, Outcome]:
        """Write each message of the chunk and add it to its run's indexes."""
        now = datetime.now(UTC)
        for run_id in {m.run_id for m in chunk}:
            self.run_folder(run_id).mkdir(parents=True, exist_ok=True)

        # Building MIME is CPU work: big chunks are shared among processes,
        # each building and writing its part, so that every core is used.
        jobs = self.processes if len(chunk) >= self.processes * PER_PROCESS else 1
        work = [(m.send_id, m.run_id, m.email, m.message) for m in chunk]
        task = partial(_write_all, self.folder, self.sender, self.write_html, now)
        if jobs > 1:
            size = -(-len(work) // jobs)
            parts = [work[n : n + size] for n in range(0, len(work), size)]
            try:
                done = [row for rows in self._pool().map(task, parts) for row in rows]
            except BrokenProcessPool:
                # A worker that could not start (a script without a __main__
                # guard, a killed process): write here instead.
                self._executor = None
                done = task(work)
        else:
            done = task(work)

        outcomes: dict[str, Outcome] = {}
        written: list[tuple[Outgoing, Path]] = []
        for message, (path, note) in zip(chunk, done, strict=True):
            if path is None:
                outcomes[message.send_id] = Rejected(str(note))
            elif note == DUPLICATE:
                outcomes[message.send_id] = Accepted(str(path), duplicate=True)
            else:
                outcomes[message.send_id] = Accepted(str(path))
                written.append((message, path))
        self._index(written, now)
        return outcomes

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # Spawned, not forked: the parent may run threads (HTTP doubles,
            # Celery), which a fork would copy in whatever state they are.
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(self.processes, mp_context=context)
        return self._executor

    def _run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            folder = self.run_folder(run_id)
            folder.mkdir(parents=True, exist_ok=True)
            index = folder / "index.html"
            fresh = not index.exists()
            index_html = index.open("a", encoding="utf-8")
            if fresh:
                index_html.write(_INDEX_HEAD)
            index_jsonl = (folder / "index.jsonl").open("a", encoding="utf-8")
            run = self._runs[run_id] = _Run(folder, index_html, index_jsonl)
        return run

    def _index(self, written: list[tuple[Outgoing, Path]], now: datetime) -> None:
        # Rows are appended to an open table: browsers close it themselves, so
        # the index never has to be rewritten as a run grows.
        stamp = now.isoformat(timespec="seconds")
        for message, path in written:
            run = self._run(message.run_id)
            esc = html.escape
            link = esc(path.with_suffix(".html").name if self.write_html else path.name)
            run.index_html.write(
                f'<tr><td><a href="{link}">{esc(message.send_id)}</a></td>'
                f"<td>{esc(message.email)}</td><td>{esc(message.message.subject)}</td>"
                f"<td>{esc(message.campaign)}</td><td>{esc(message.variant)}</td>"
                f"<td>{stamp}</td></tr>\n"
            )
            record = {
                "send_id": message.send_id,
                "eml": path.name,
                "to": message.email,
                "subject": message.message.subject,
                "campaign": message.campaign,
                "variant": message.variant,
                "written_at": stamp,
            }
            run.index_jsonl.write(json.dumps(record, ensure_ascii=False) + "\n")
        for run in self._runs.values():
            run.index_html.flush()
            run.index_jsonl.flush()

    def close(self) -> None:
        """Close the index files and stop the writer threads."""
        for run in self._runs.values():
            run.index_html.close()
            run.index_jsonl.close()
        self._runs.clear()
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
