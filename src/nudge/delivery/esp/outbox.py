"""The outbox: every message as a complete `.eml` file, with an index to browse.

Nothing is sent. Each run gets a folder under the outbox with one
``<send id>.eml`` per message (what an SMTP server would have received) and
two indexes that grow with every batch: ``index.html`` (a table linking each
message) and ``index.jsonl`` (one line per message, for tools).

A page opened from disk may not read other files, so the index cannot open an
`.eml` itself; it may load a script, though. Each batch therefore also writes
``view/<first send id>.js``, one script holding its messages' headers, text
and HTML, and each index row links to ``view.html#<batch>/<message>``, which
loads that script and shows the message. ``write_html=True`` also writes each
HTML part as ``<send id>.html``, a file per message that costs about as much
as the message itself.

A message file is written once, in one piece, under its final name: created
only where no file has that name (so a send id is never written twice), and
counted as sent only when it ends with its closing MIME boundary, which no
partial write can (see `is_complete`). A file cut short by a crash is written
again.

The stdlib's ``email`` package takes over a millisecond to build one message,
more than rendering it, so `build_mime` writes the same MIME by hand: headers
as `nudge.render.to_mime` sets them, base64 parts, CRLF line ends.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import html
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from typing import IO, Any

import numpy as np

from nudge.delivery.base import Accepted, Adapter, Outcome, Outgoing, Rejected
from nudge.render.mime import MessageError, message_id
from nudge.render.model import RenderedMessage
from nudge.settings import Settings

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
VIEWER = "view.html"
BUNDLES = "view"
_CRLF = np.frombuffer(b"\r\n", dtype=np.uint8)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_ADDRESS = re.compile(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+")
_JSON = json.JSONEncoder(ensure_ascii=False)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_INDEX_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nudge outbox</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse}
td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}
</style></head><body><h1>nudge outbox</h1>
<table><thead><tr><th>send</th><th>to</th><th>subject</th><th>campaign</th>
<th>variant</th><th>written</th><th>files</th></tr></thead><tbody>
"""
# The page behind each index link: ``view.html#<batch>/<message>`` loads
# ``view/<batch>.js``, whose ``nudgeOutbox.add`` calls hand over the messages.
_VIEWER_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nudge outbox message</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
th{text-align:left;padding-right:12px;vertical-align:top}
iframe{width:100%;height:75vh;border:1px solid #ccc;margin:12px 0}
pre{white-space:pre-wrap}
</style></head><body>
<p><a href="index.html">&larr; all messages</a> &middot;
<a id="eml" download>the .eml file</a></p>
<p id="problem" hidden></p>
<table id="summary"></table>
<iframe id="html" sandbox title="HTML part"></iframe>
<details><summary>plain text part</summary><pre id="text"></pre></details>
<details><summary>headers</summary><pre id="head"></pre></details>
<script>
"use strict";
globalThis.nudgeOutbox = {
  messages: new Map(),
  add(name, summary, head, text, html) {
    this.messages.set(name, {summary, head, text, html});
  },
};

if (typeof document !== "undefined") {
  const problem = (text) => {
    const note = document.getElementById("problem");
    note.textContent = text;
    note.hidden = false;
  };
  const show = (message) => {
    const table = document.getElementById("summary");
    for (const [key, value] of Object.entries(message.summary)) {
      const row = table.insertRow();
      row.append(Object.assign(document.createElement("th"), {textContent: key}));
      row.insertCell().textContent = value;
    }
    document.title = message.summary.subject || document.title;
    document.getElementById("html").srcdoc = message.html;
    document.getElementById("text").textContent = message.text;
    document.getElementById("head").textContent = message.head;
  };

  const parts = decodeURIComponent(location.hash.slice(1)).split("/");
  const [batch, name] = parts;
  const safe = /^[A-Za-z0-9._=-]+$/;
  if (parts.length !== 2 || !safe.test(batch) || !safe.test(name)) {
    problem("Open a message from the index: this page shows one at a time.");
  } else {
    document.getElementById("eml").href = name + ".eml";
    const script = document.createElement("script");
    script.src = "view/" + batch + ".js";
    script.onload = () => nudgeOutbox.messages.has(name)
      ? show(nudgeOutbox.messages.get(name))
      : problem(name + " is not in " + script.src);
    script.onerror = () => problem(script.src + " could not be read.");
    document.head.append(script);
  }
}
</script></body></html>
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


Piece = bytes | memoryview


def _base64(data: bytes) -> list[Piece]:
    """Return the base64 lines of `data` (CRLF between them) as buffers to join."""
    # One C call, then the 76-character lines laid out as rows of an array: the
    # stdlib's line-by-line encoders take ten times as long on a 30 KiB e-mail.
    flat = binascii.b2a_base64(data, newline=False)
    rows, rest = divmod(len(flat), 76)
    lines = np.empty((rows, 78), dtype=np.uint8)
    lines[:, :76] = np.frombuffer(flat, dtype=np.uint8, count=rows * 76).reshape(
        rows, 76
    )
    lines[:, 76:] = _CRLF
    body = lines.reshape(-1).data
    return [body, flat[rows * 76 :]] if rest else [body[:-2]]


def file_name(send_id: str) -> str:
    """Return a send id as a safe file name (stable, so a resend finds it)."""
    return _UNSAFE_NAME.sub(lambda m: f"={ord(m.group()):02X}", send_id)


def _boundary(send_id: str) -> str:
    # No base64 line can start with "--", so the boundary never occurs inside
    # a part; the send id's digest keeps it stable from one build to the next.
    digest = hashlib.blake2s(send_id.encode(), digest_size=8).hexdigest()
    return f"==nudge{digest}=="


def _closing_line(send_id: str) -> bytes:
    """Return the last line of a send's MIME: its closing boundary."""
    return f"\r\n--{_boundary(send_id)}--\r\n".encode("ascii")


def _mime_pieces(
    message: RenderedMessage,
    sender: str,
    recipient: str,
    date: datetime | None,
    html: bytes | None,
) -> tuple[bytes, list[Piece]]:
    """Return `build_mime`'s bytes in two: the message's own headers, the rest."""
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

    boundary = _boundary(message.send_id)
    part = (
        'Content-Type: text/{}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode("ascii"), [
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\n{part.format('plain')}".encode("ascii"),
        *_base64(message.text.encode()),
        f"\r\n--{boundary}\r\n{part.format('html')}".encode("ascii"),
        *_base64(html if html is not None else message.html.encode()),
        f"\r\n--{boundary}--\r\n".encode("ascii"),
    ]


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
    head, rest = _mime_pieces(message, sender, recipient, date, html)
    return b"".join([head, *rest])


def is_complete(path: Path | str, send_id: str) -> bool:
    """Tell whether a message file holds the whole message of its send.

    The closing boundary occurs once, at the very end, so a file cut short by
    a crash, however far its writing got, never ends with it.
    """
    ending = _closing_line(send_id)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size < len(ending):
                return False
            file.seek(size - len(ending))
            return file.read() == ending
    except FileNotFoundError:
        return False


def _create(path: str, pieces: list[Piece]) -> bool:
    """Write a new file from its pieces; return False where the name is taken."""
    try:
        fd = os.open(path, _CREATE, 0o644)
    except FileExistsError:
        return False
    try:
        done = os.writev(fd, pieces)
        if done < sum(len(p) for p in pieces):
            rest = memoryview(b"".join(pieces))[done:]
            while rest:
                rest = rest[os.write(fd, rest) :]
    except BaseException:
        # A file that could not be finished is not left to look like a send.
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)
    return True


def _literal(data: bytes) -> bytes:
    """Return bytes as they are written inside a JavaScript template literal."""
    # Every "$" is escaped, not only those before "{": one-byte searches are
    # many times faster than a search for "${".
    if b"\\" in data or b"`" in data or b"$" in data:
        data = data.replace(b"\\", b"\\\\").replace(b"`", b"\\`")
        data = data.replace(b"$", b"\\$")
    return data


@dataclass
class _Run:
    folder: Path
    index_html: IO[str]
    index_jsonl: IO[str]
    prefix: str = field(init=False)

    def __post_init__(self) -> None:
        self.prefix = f"{self.folder}{os.sep}"


@dataclass(slots=True)
class _Written:
    message: Outgoing
    name: str
    head: bytes
    html: bytes


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
        write_html: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
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
        outcomes: dict[str, Outcome] = {}
        written: list[_Written] = []
        for message in chunk:
            run = self._run(message.run_id)
            name = file_name(message.send_id)
            path = f"{run.prefix}{name}.eml"
            html_part = message.message.html.encode()
            try:
                head, rest = _mime_pieces(
                    message.message, self.sender, message.email, now, html_part
                )
            except MessageError as err:
                outcomes[message.send_id] = Rejected(str(err))
                continue

            # The copy goes first: a complete `.eml` then always has its copy.
            if self.write_html:
                with open(f"{run.prefix}{name}.html", "wb") as copy:
                    copy.write(html_part)
            if self._store(path, [head, *rest], message.send_id):
                outcomes[message.send_id] = Accepted(path)
                written.append(_Written(message, name, head, html_part))
            else:
                outcomes[message.send_id] = Accepted(path, duplicate=True)

        self._index(written, self._bundle(written), now)
        return outcomes

    def _store(self, path: str, pieces: list[Piece], send_id: str) -> bool:
        if _create(path, pieces):
            return True
        if is_complete(path, send_id):
            return False
        # Cut short by a crash: the message was never written, so it is now.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return _create(path, pieces)

    def _run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            folder = self.run_folder(run_id)
            (folder / BUNDLES).mkdir(parents=True, exist_ok=True)
            (folder / VIEWER).write_text(_VIEWER_PAGE, encoding="utf-8")
            index = folder / "index.html"
            fresh = not index.exists()
            index_html = index.open("a", encoding="utf-8")
            if fresh:
                index_html.write(_INDEX_HEAD)
            index_jsonl = (folder / "index.jsonl").open("a", encoding="utf-8")
            run = self._runs[run_id] = _Run(folder, index_html, index_jsonl)
        return run

    def _bundle(self, written: list[_Written]) -> dict[str, str]:
        """Write each run's script of the batch for the viewer; return its names.

        One script per run and batch, named after its first message: a file
        per message would cost more than the message itself on many disks.
        """
        by_run: dict[str, list[_Written]] = {}
        for item in written:
            by_run.setdefault(item.message.run_id, []).append(item)
        names = {}
        for run_id, items in by_run.items():
            pieces: list[Piece] = []
            for item in items:
                sent = item.message
                summary = {"subject": sent.message.subject, "to": sent.email}
                pieces += (
                    f'nudgeOutbox.add("{item.name}", {json.dumps(summary)}, `'.encode(),
                    _literal(item.head),
                    b"`, `",
                    _literal(sent.message.text.encode()),
                    b"`, `",
                    _literal(item.html),
                    b"`);\n",
                )
            names[run_id] = items[0].name
            path = self._runs[run_id].folder / BUNDLES / f"{names[run_id]}.js"
            with open(path, "wb") as bundle:
                bundle.writelines(pieces)
        return names

    def _index(
        self, written: list[_Written], batches: Mapping[str, str], now: datetime
    ) -> None:
        # Rows are appended to an open table: browsers close it themselves, so
        # the index never has to be rewritten as a run grows.
        stamp = now.isoformat(timespec="seconds")
        esc = html.escape
        for item in written:
            sent, name = item.message, item.name
            run = self._runs[sent.run_id]
            view = f"{VIEWER}#{batches[sent.run_id]}/{name}"
            copy = f' <a href="{name}.html">html</a>' if self.write_html else ""
            run.index_html.write(
                f'<tr><td><a href="{view}">{esc(sent.send_id)}</a></td>'
                f"<td>{esc(sent.email)}</td><td>{esc(sent.message.subject)}</td>"
                f"<td>{esc(sent.campaign)}</td><td>{esc(sent.variant)}</td>"
                f'<td>{stamp}</td><td><a href="{name}.eml">eml</a>{copy}</td></tr>\n'
            )
            record = {
                "send_id": sent.send_id,
                "eml": f"{name}.eml",
                "view": view,
                "to": sent.email,
                "subject": sent.message.subject,
                "campaign": sent.campaign,
                "variant": sent.variant,
                "written_at": stamp,
            }
            run.index_jsonl.write(_JSON.encode(record) + "\n")
        for run in self._runs.values():
            run.index_html.flush()
            run.index_jsonl.flush()

    def close(self) -> None:
        """Close the index files; the adapter opens them again when next used."""
        for run in self._runs.values():
            run.index_html.close()
            run.index_jsonl.close()
        self._runs.clear()
