"""Adapters by name, imported only when asked for."""

from __future__ import annotations

import builtins
import importlib
import sys
from typing import Any

import pytest

from nudge.delivery import registry
from nudge.delivery.esp.outbox import OutboxAdapter
from nudge.settings import Settings


def test_names_map_to_adapter_classes() -> None:
    assert registry.names() == ["klaviyo", "mailchimp", "outbox", "smtp"]
    for name in registry.names():
        assert registry.load(name).name == name


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(registry.UnknownAdapterError, match="known: klaviyo, mailchimp"):
        registry.load("sendgrid")


def test_a_missing_sdk_names_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def without_klaviyo(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("klaviyo_api"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "nudge.delivery.esp.klaviyo", raising=False)
    monkeypatch.delitem(sys.modules, "klaviyo_api", raising=False)
    monkeypatch.setattr(builtins, "__import__", without_klaviyo)
    with pytest.raises(registry.MissingSdkError, match=r"pip install 'klaviyo-api=="):
        registry.load("klaviyo")
    monkeypatch.undo()
    importlib.import_module("nudge.delivery.esp.klaviyo")


def test_the_delivery_package_imports_no_sdk() -> None:
    code = (
        "import sys, nudge.delivery, nudge.delivery.registry;"
        "print(any(m in sys.modules for m in ('klaviyo_api', 'mailchimp_marketing')))"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_create_configures_from_settings(settings: Settings) -> None:
    adapter = registry.create("outbox", settings)
    assert isinstance(adapter, OutboxAdapter)
    assert adapter.folder == settings.outbox_dir
    assert adapter.sender == "Demo Shop <hello@demo-shop.example>"


def test_esps_without_a_key_say_which_setting(settings: Settings) -> None:
    from nudge.errors import ConfigError

    with pytest.raises(ConfigError, match="NUDGE_KLAVIYO_API_KEY"):
        registry.create("klaviyo", settings)
    with pytest.raises(ConfigError, match="NUDGE_MAILCHIMP_API_KEY"):
        registry.create("mailchimp", settings)
