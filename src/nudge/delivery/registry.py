"""Adapters by name: `esp = "klaviyo"` in config becomes a class, imported lazily.

Importing an ESP module pulls in its SDK, so nothing here imports one until it is
asked for; a missing SDK becomes an error that names the package to install.
"""

from __future__ import annotations

import importlib
from typing import Any

from nudge.delivery.base import Adapter, DeliveryError
from nudge.settings import Settings

ADAPTERS: dict[str, str] = {
    "outbox": "nudge.delivery.esp.outbox:OutboxAdapter",
    "smtp": "nudge.delivery.esp.smtp:SmtpAdapter",
    "klaviyo": "nudge.delivery.esp.klaviyo:KlaviyoAdapter",
    "mailchimp": "nudge.delivery.esp.mailchimp:MailchimpAdapter",
}

# The import name of each adapter's SDK and the distribution that provides it.
SDKS: dict[str, tuple[str, str]] = {
    "klaviyo": ("klaviyo_api", "klaviyo-api==25.0.0"),
    "mailchimp": ("mailchimp_marketing", "mailchimp-marketing==3.0.80"),
}


class UnknownAdapterError(DeliveryError, LookupError):
    """No adapter has the name asked for."""

    def __init__(self, name: str) -> None:
        known = ", ".join(sorted(ADAPTERS))
        super().__init__(f"no ESP adapter named {name!r} (known: {known})")
        self.name = name


class MissingSdkError(DeliveryError, ImportError):
    """An adapter's SDK is not installed; says which package to install."""

    def __init__(self, name: str, package: str) -> None:
        super().__init__(
            f"the {name} adapter needs the {package.split('=')[0]} package, which "
            f"is not installed: pip install '{package}'"
        )
        self.adapter = name
        self.package = package


def names() -> list[str]:
    """List the adapter names config may use."""
    return sorted(ADAPTERS)


def load(name: str) -> type[Adapter]:
    """Return the adapter class registered under a name, importing it now."""
    path = ADAPTERS.get(name)
    if path is None:
        raise UnknownAdapterError(name)
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        sdk = SDKS.get(name)
        if sdk is not None and err.name is not None and err.name.startswith(sdk[0]):
            raise MissingSdkError(name, sdk[1]) from err
        raise
    adapter: type[Adapter] = getattr(module, attribute)
    return adapter


def create(name: str, settings: Settings, **options: Any) -> Adapter:
    """Return a ready adapter for an ESP name, configured from settings."""
    adapter_class: Any = load(name)
    adapter: Adapter = adapter_class.from_settings(settings, **options)
    return adapter
