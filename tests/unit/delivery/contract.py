"""The contract every ESP adapter keeps, run once per adapter (see test_<esp>.py).

A test class for an ESP subclasses `AdapterContract` and provides a `backend`
fixture: the ESP's double, an adapter pointed at it, and a view of what the ESP
holds.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any, Protocol

from nudge.delivery import Adapter, Outgoing, registry
from nudge.render.model import Esp
from nudge.settings import Settings

from .conftest import MessageFactory


class Backend(Protocol):
    """One ESP as the contract sees it."""

    esp: Esp

    def adapter(self, **options: Any) -> Adapter:
        """Return a fresh adapter pointed at the double."""

    def held(self) -> list[str]:
        """Return the send ids the ESP holds, once per copy it holds."""

    def refuse(self, message: Outgoing) -> Outgoing:
        """Return the message with an address the ESP refuses."""

    def oversize(self, message: Outgoing) -> Outgoing:
        """Return the message grown past what the ESP takes."""

    def settings(self, base: Settings) -> tuple[Settings, dict[str, Any]]:
        """Return settings (and options) that point `registry.create` at the double."""


class AdapterContract:
    """What every adapter does, whatever the ESP."""

    def test_every_message_is_accepted_once(
        self, backend: Backend, messages: MessageFactory
    ) -> None:
        batch = messages(backend.esp, 5)
        results = backend.adapter().deliver(batch)

        assert [r.send_id for r in results] == [m.send_id for m in batch]
        assert all(r.ok and r.esp == backend.esp for r in results), results
        assert all(r.attempts == 1 and r.esp_id for r in results)
        assert Counter(backend.held()) == Counter(m.send_id for m in batch)

    def test_no_consent_means_suppressed_and_never_sent(
        self, backend: Backend, messages: MessageFactory
    ) -> None:
        batch = messages(backend.esp, 3)
        batch[1] = dataclasses.replace(batch[1], consented_at=None)
        results = backend.adapter().deliver(batch)

        assert [r.status for r in results] == ["accepted", "suppressed", "accepted"]
        assert results[1].error == "no marketing consent"
        assert batch[1].send_id not in backend.held()

    def test_delivering_again_sends_nothing_twice(
        self, backend: Backend, messages: MessageFactory
    ) -> None:
        batch = messages(backend.esp, 4)
        backend.adapter().deliver(batch[:2])
        results = backend.adapter().deliver(batch)

        assert all(r.ok for r in results)
        assert Counter(backend.held()) == Counter(m.send_id for m in batch)

    def test_a_refused_address_fails_alone_with_a_reason(
        self, backend: Backend, messages: MessageFactory
    ) -> None:
        batch = messages(backend.esp, 6)
        batch[2] = backend.refuse(batch[2])
        results = backend.adapter().deliver(batch)

        refused = results[2]
        assert refused.status == "failed" and refused.permanent
        assert refused.error and backend.esp in refused.error
        assert [r.ok for r in results] == [True, True, False, True, True, True]
        assert batch[2].send_id not in backend.held()

    def test_a_message_too_large_fails_alone_with_a_reason(
        self, backend: Backend, messages: MessageFactory
    ) -> None:
        batch = messages(backend.esp, 3)
        batch[0] = backend.oversize(batch[0])
        results = backend.adapter().deliver(batch)

        assert results[0].status == "failed" and results[0].permanent
        assert "too large" in (results[0].error or "")
        assert [r.ok for r in results[1:]] == [True, True]

    def test_sends_the_ledger_knows_are_skipped(
        self, backend: Backend, messages: MessageFactory
    ) -> None:
        batch = messages(backend.esp, 3)
        known = {batch[0].send_id: "from-the-ledger"}
        adapter = backend.adapter(
            ledger=lambda ids: {i: known[i] for i in ids if i in known}
        )
        results = adapter.deliver(batch)

        assert results[0].duplicate and results[0].esp_id == "from-the-ledger"
        assert batch[0].send_id not in backend.held()

    def test_a_send_id_twice_in_a_batch_is_sent_once(
        self, backend: Backend, messages: MessageFactory
    ) -> None:
        batch = messages(backend.esp, 2)
        results = backend.adapter().deliver([batch[0], batch[1], batch[0]])

        assert results[0] == results[2]
        assert Counter(backend.held())[batch[0].send_id] == 1

    def test_an_empty_batch_asks_nothing(self, backend: Backend) -> None:
        assert backend.adapter().deliver([]) == []
        assert backend.held() == []

    def test_the_registry_builds_it_from_settings(
        self, backend: Backend, settings: Settings, messages: MessageFactory
    ) -> None:
        configured, options = backend.settings(settings)
        adapter = registry.create(backend.esp, configured, **options)

        assert type(adapter) is registry.load(backend.esp)
        assert all(r.ok for r in adapter.deliver(messages(backend.esp, 2)))
        adapter.close()
