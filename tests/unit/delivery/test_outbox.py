"""The outbox: complete `.eml` files and an index, no server needed."""

from __future__ import annotations

import base64
import dataclasses
import email
import json
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from nudge.delivery import Adapter, Outgoing
from nudge.delivery.esp.outbox import OutboxAdapter, build_mime
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
    adapter.deliver(batch)
    adapter.deliver(messages("outbox", 2, prefix="more"))
    adapter.close()

    run = tmp_path / "run1"
    index = (run / "index.html").read_text(encoding="utf-8")
    assert index.count("<tr><td>") == 5
    assert f'href="{batch[0].send_id}.html"' in index
    assert (run / f"{batch[0].send_id}.html").read_text() == batch[0].message.html
    rows = [json.loads(line) for line in (run / "index.jsonl").read_text().splitlines()]
    assert [r["send_id"] for r in rows[:3]] == [m.send_id for m in batch]
    assert rows[0]["eml"] == f"{batch[0].send_id}.eml"
    assert not list(run.glob("*.part"))


def test_unsafe_send_ids_make_safe_file_names(
    tmp_path: Path, messages: MessageFactory
) -> None:
    message = dataclasses.replace(messages("outbox", 1)[0], send_id="../../etc/x y")
    [result] = OutboxAdapter(tmp_path, limiter=Limiter({})).deliver([message])

    assert result.ok and result.esp_id is not None
    assert Path(result.esp_id).parent == tmp_path / "run1"


def test_big_chunks_are_shared_among_processes(
    tmp_path: Path, messages: MessageFactory
) -> None:
    few = messages("outbox", 20)
    batch = [
        dataclasses.replace(few[n % 20], send_id=f"many{n:04d}") for n in range(520)
    ]
    adapter = OutboxAdapter(tmp_path, limiter=Limiter({}), processes=2)
    results = adapter.deliver(batch)
    adapter.close()

    assert all(r.ok for r in results)
    assert len(list((tmp_path / "run1").glob("*.eml"))) == 520
    index = (tmp_path / "run1" / "index.jsonl").read_text().splitlines()
    assert [json.loads(line)["send_id"] for line in index] == [m.send_id for m in batch]


@pytest.mark.parametrize("size", [0, 1, 56, 57, 58, 114, 5_000, 36_001])
def test_base64_lines_are_the_stdlib_s(size: int) -> None:
    from nudge.delivery.esp.outbox import _base64

    data = bytes(range(256)) * (size // 256 + 1)
    expected = base64.encodebytes(data[:size]).replace(b"\n", b"\r\n").rstrip(b"\r\n")
    assert _base64(data[:size]) == expected
