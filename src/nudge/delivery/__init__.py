"""Hand rendered messages to an ESP: batching, rate limits, retries, results.

`registry.create("klaviyo", settings)` returns an adapter; its
`deliver(batch)` takes `Outgoing` records and returns one `Result` per message
for the send ledger.
"""

from __future__ import annotations

from nudge.delivery.base import (
    Accepted,
    Adapter,
    CampaignResult,
    CampaignSend,
    DeliveryError,
    EspError,
    ItemData,
    OfferData,
    Outgoing,
    Rejected,
    Result,
    RetryPolicy,
    UnsupportedFeature,
)
from nudge.delivery.limits import LIMITS, Limiter, Rate, Window
from nudge.delivery.registry import MissingSdkError, UnknownAdapterError, create

__all__ = [
    "LIMITS",
    "Accepted",
    "Adapter",
    "CampaignResult",
    "CampaignSend",
    "DeliveryError",
    "EspError",
    "ItemData",
    "Limiter",
    "MissingSdkError",
    "OfferData",
    "Outgoing",
    "Rate",
    "Rejected",
    "Result",
    "RetryPolicy",
    "UnknownAdapterError",
    "UnsupportedFeature",
    "Window",
    "create",
]
