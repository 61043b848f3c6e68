"""The outbox: complete `.eml` files and an index, no server needed."""

from __future__ import annotations

import base64
import dataclasses
import email
import errno
import json
import os
import shutil
import subprocess
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from nudge.delivery import Adapter, Outgoing
from nudge.delivery.esp.outbox import OutboxAdapter, build_mime, is_complete
from nudge.delivery.limits import Limiter
from nudge.render import to_mime
from nudge.render.model import Esp
from nudge.settings import Settings

from .conftest import MessageFactory
from .contract import AdapterContract


def parse(raw: bytes) -> EmailMessage:
    """Parse MIME bytes as a mail client would."""
    parsed = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


class OutboxBackend:
    esp: Esp = "outbox"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def adapter(self, **options: Any) -> Adapter:
        options.setdefault("limiter", Limiter({}))
        return OutboxAdapter(self.folder, max_bytes=200_000, **options)

    def held(self) -> list[str]:
        return [
            str(parse(p.read_bytes())["X-Nudge-Send-Id"])
            for p in sorted(self.folder.glob("*/*.eml"))
        ]

    def refuse(self, message: Outgoing) -> Outgoing:
        return dataclasses.replace(message, email="not an address")

    def oversize(self, message: Outgoing) -> Outgoing:
        rendered = dataclasses.replace(message.message, html="x" * 300_000)
        return dataclasses.replace(message, message=rendered)

    def settings(self, base: Settings) -> tuple[Settings, dict[str, Any]]:
        return base.model_copy(update={"outbox_dir": self.folder}), {}


class TestOutboxContract(AdapterContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> OutboxBackend:
        return OutboxBackend(tmp_path / "outbox")


def test_the_eml_is_what_to_mime_builds(messages: MessageFactory) -> None:
    message = messages("outbox", 1)[0].message
    accented = dataclasses.replace(message, subject="Zoë, 20 % off — this week")
    sender = "Café Zoë <hi@cafe.example>"

    ours = parse(build_mime(accented, sender, "zoe@example.com"))
    stdlib = parse(to_mime(accented, sender, "zoe@example.com"))

    for header in ("Subject", "From", "To", "Message-ID", "Date", "List-Unsubscribe"):
        assert str(ours[header]) == str(stdlib[header]), header
    assert ours["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    for kind in ("plain", "html"):
        ours_part, stdlib_part = ours.get_body((kind,)), stdlib.get_body((kind,))
        assert ours_part is not None and stdlib_part is not None
        assert ours_part.get_content() == stdlib_part.get_content()
    raw = build_mime(accented, sender, "zoe@example.com")
    assert raw.isascii() and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_each_run_has_a_browsable_index(
    tmp_path: Path, messages: MessageFactory
) -> None:
    adapter = OutboxAdapter(tmp_path, limiter=Limiter({}))
    batch = messages("outbox", 3)
    more = messages("outbox", 2, prefix="more")
    adapter.deliver(batch)
    adapter.deliver(more)
    adapter.close()

    run = tmp_path / "run1"
    index = (run / "index.html").read_text(encoding="utf-8")
    assert index.count("<tr><td>") == 5
    first, later = batch[0].send_id, more[1].send_id
    assert f'href="view.html#{first}/{first}"' in index
    assert f'href="view.html#{more[0].send_id}/{later}"' in index
    assert f'href="{first}.eml"' in index
    assert sorted(p.name for p in (run / "view").iterdir()) == [
        f"{more[0].send_id}.js",
        f"{first}.js",
    ]
    assert sorted(p.name for p in run.glob("*.html")) == ["index.html", "view.html"]
    rows = [json.loads(line) for line in (run / "index.jsonl").read_text().splitlines()]
    assert [r["send_id"] for r in rows[:3]] == [m.send_id for m in batch]
    assert rows[0]["eml"] == f"{first}.eml"
    assert rows[4]["view"] == f"view.html#{more[0].send_id}/{later}"


def test_the_html_copies_are_written_when_asked(
    tmp_path: Path, messages: MessageFactory
) -> None:
    batch = messages("outbox", 2)
    OutboxAdapter(tmp_path, limiter=Limiter({}), write_html=True).deliver(batch)

    run = tmp_path / "run1"
    for message in batch:
        copy = run / f"{message.send_id}.html"
        assert copy.read_text(encoding="utf-8") == message.message.html
    index = (run / "index.html").read_text(encoding="utf-8")
    assert f'<a href="{batch[1].send_id}.html">html</a>' in index


NODE = shutil.which("node")
needs_node = pytest.mark.skipif(
    NODE is None, reason="node not found: it runs the viewer's script"
)
# Runs view.html's script with a stand-in for the page: the script it asks
# for is loaded from the run folder, and what the page would show is printed.
PAGE_HARNESS = r"""
const fs = require("fs"), path = require("path"), vm = require("vm");
const [page, hash] = process.argv.slice(1);
const node = (tag) => ({tag, children: [], textContent: "", hidden: true,
  append(...more) { this.children.push(...more); }});
const table = Object.assign(node("table"), {insertRow() {
  const row = Object.assign(node("tr"), {insertCell() {
    const cell = node("td");
    this.children.push(cell);
    return cell;
  }});
  this.children.push(row);
  return row;
}});
const byId = {summary: table, problem: node("p"), html: node("iframe"),
  text: node("pre"), head: node("pre"), eml: node("a")};
let asked = null;
globalThis.location = {hash};
globalThis.document = {title: "", getElementById: (id) => byId[id],
  createElement: node, head: {append(script) { asked = script; }}};
vm.runInThisContext(fs.readFileSync(page, "utf8").match(/<script>([^]*)<\/script>/)[1]);
if (asked) {
  const file = path.join(path.dirname(page), asked.src);
  if (fs.existsSync(file)) {
    vm.runInThisContext(fs.readFileSync(file, "utf8"));
    asked.onload();
  } else {
    asked.onerror();
  }
}
console.log(JSON.stringify({
  title: document.title,
  summary: table.children.map((row) => row.children.map((cell) => cell.textContent)),
  html: byId.html.srcdoc ?? null,
  text: byId.text.textContent,
  head: byId.head.textContent,
  eml: byId.eml.href || null,
  problem: byId.problem.hidden ? null : byId.problem.textContent,
}));
"""


def view(run: Path, link: str) -> dict[str, Any]:
    """Return what the run's view.html shows for an index link."""
    assert NODE is not None
    page, _, fragment = link.partition("#")
    done = subprocess.run(
        [NODE, "-e", PAGE_HARNESS, str(run / page), f"#{fragment}" if fragment else ""],
        capture_output=True,
        check=True,
        text=True,
    )
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


@needs_node
def test_the_viewer_shows_each_message_as_written(
    tmp_path: Path, messages: MessageFactory
) -> None:
    plain, tricky = messages("outbox", 2)
    # What a JavaScript template literal would take for its own syntax.
    rendered = dataclasses.replace(
        tricky.message,
        subject="Save `now`: ${5} \\ off",
        text=tricky.message.text + "\nYour code: ${CODE} \\o/ `x`",
        html=tricky.message.html.replace("</body>", "<p>`${x}` \\ $5</p></body>"),
    )
    tricky = dataclasses.replace(tricky, message=rendered)
    accented = dataclasses.replace(
        plain, message=dataclasses.replace(plain.message, subject="Zoë, 20 % off")
    )
    OutboxAdapter(tmp_path, limiter=Limiter({})).deliver([accented, tricky])

    run = tmp_path / "run1"
    rows = [json.loads(line) for line in (run / "index.jsonl").read_text().splitlines()]
    for sent, row in zip((accented, tricky), rows, strict=True):
        shown = view(run, row["view"])
        assert shown["problem"] is None
        assert shown["title"] == sent.message.subject
        assert shown["summary"] == [
            ["subject", sent.message.subject],
            ["to", sent.email],
        ]
        assert shown["html"] == sent.message.html
        assert shown["text"] == sent.message.text
        assert shown["eml"] == f"{sent.send_id}.eml"
        eml = (run / f"{sent.send_id}.eml").read_text().replace("\r\n", "\n")
        assert eml.startswith(shown["head"])
        assert f"\nX-Nudge-Send-Id: {sent.send_id}\n" in shown["head"]
    assert "Subject: Save `now`: ${5} \\ off\n" in view(run, rows[1]["view"])["head"]


ONE_AT_A_TIME = "Open a message from the index: this page shows one at a time."


@needs_node
@pytest.mark.parametrize(
    ("link", "problem"),
    [
        ("view.html", ONE_AT_A_TIME),
        ("view.html#x/../y", ONE_AT_A_TIME),
        ("view.html#gone/snd00000", "view/gone.js could not be read."),
        ("view.html#snd00000/other", "other is not in view/snd00000.js"),
    ],
)
def test_the_viewer_says_what_it_cannot_show(
    tmp_path: Path, messages: MessageFactory, link: str, problem: str
) -> None:
    OutboxAdapter(tmp_path, limiter=Limiter({})).deliver(messages("outbox", 1))

    shown = view(tmp_path / "run1", link)
    assert shown["problem"] == problem
    assert shown["html"] is None


def test_the_eml_on_disk_is_build_mime_s(
    tmp_path: Path, messages: MessageFactory
) -> None:
    batch = messages("outbox", 2)
    adapter = OutboxAdapter(tmp_path, sender="Shop <hi@shop.example>")
    results = adapter.deliver(batch)

    for message, result in zip(batch, results, strict=True):
        path = adapter.path_of(message)
        assert result.esp_id == str(path)
        expected = build_mime(message.message, adapter.sender, message.email)
        assert path.read_bytes() == expected
        assert is_complete(path, message.send_id)


def test_a_send_id_written_before_is_a_duplicate_left_as_it_is(
    tmp_path: Path, messages: MessageFactory
) -> None:
    batch = messages("outbox", 2)
    OutboxAdapter(tmp_path, limiter=Limiter({})).deliver(batch[:1])
    path = tmp_path / "run1" / f"{batch[0].send_id}.eml"
    before = path.read_bytes()

    adapter = OutboxAdapter(tmp_path, limiter=Limiter({}))
    results = adapter.deliver(batch)
    adapter.close()

    assert [(r.ok, r.duplicate) for r in results] == [(True, True), (True, False)]
    assert results[0].esp_id == str(path)
    assert path.read_bytes() == before
    assert len(list((tmp_path / "run1").glob("*.eml"))) == 2
    rows = (tmp_path / "run1" / "index.jsonl").read_text().splitlines()
    assert [json.loads(r)["send_id"] for r in rows] == [m.send_id for m in batch]


@pytest.mark.parametrize("cut", [0, 1, 5_000, -40, -1])
def test_a_file_cut_short_is_not_a_send_and_is_written_again(
    tmp_path: Path, messages: MessageFactory, cut: int
) -> None:
    message = messages("outbox", 1)[0]
    whole = build_mime(message.message, "nudge <hello@nudge.invalid>", message.email)
    path = tmp_path / "run1" / f"{message.send_id}.eml"
    path.parent.mkdir()
    path.write_bytes(whole[:cut])

    assert not is_complete(path, message.send_id)
    [result] = OutboxAdapter(tmp_path, limiter=Limiter({})).deliver([message])

    assert result.ok and not result.duplicate
    assert path.read_bytes() == whole
    assert is_complete(path, message.send_id)


def test_only_the_send_s_own_ending_makes_a_file_complete(
    tmp_path: Path, messages: MessageFactory
) -> None:
    one, other = messages("outbox", 2)
    path = tmp_path / "one.eml"
    path.write_bytes(build_mime(other.message, "a <a@b.example>", other.email))

    assert is_complete(path, other.send_id)
    assert not is_complete(path, one.send_id)
    assert not is_complete(tmp_path / "missing.eml", one.send_id)


def test_a_write_that_fails_leaves_no_file(
    tmp_path: Path, messages: MessageFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = messages("outbox", 2)
    adapter = OutboxAdapter(tmp_path, limiter=Limiter({}))

    def full_disk(fd: int, pieces: Any) -> int:
        os.write(fd, b"Subject: half a message\r\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "writev", full_disk)
    with pytest.raises(OSError, match="No space left"):
        adapter.deliver(batch)

    assert list((tmp_path / "run1").glob("*.eml")) == []


def test_batches_keep_their_order_in_the_index(
    tmp_path: Path, messages: MessageFactory
) -> None:
    few = messages("outbox", 20)
    batch = [
        dataclasses.replace(few[n % 20], send_id=f"many{n:04d}") for n in range(520)
    ]
    adapter = OutboxAdapter(tmp_path, limiter=Limiter({}), batch_size=200)
    results = adapter.deliver(batch)
    adapter.close()

    assert all(r.ok for r in results)
    run = tmp_path / "run1"
    assert len(list(run.glob("*.eml"))) == 520
    assert sorted(p.name for p in (run / "view").iterdir()) == [
        "many0000.js",
        "many0200.js",
        "many0400.js",
    ]
    index = (run / "index.jsonl").read_text().splitlines()
    assert [json.loads(line)["send_id"] for line in index] == [m.send_id for m in batch]


@pytest.mark.parametrize("size", [0, 1, 56, 57, 58, 114, 5_000, 36_001])
def test_base64_lines_are_the_stdlib_s(size: int) -> None:
    from nudge.delivery.esp.outbox import _base64

    data = bytes(range(256)) * (size // 256 + 1)
    expected = base64.encodebytes(data[:size]).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    assert b"".join(_base64(data[:size])) == expected
