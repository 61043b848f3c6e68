"""Feedback: engagement from every ESP and tracked link, stored once, applied.

`service.pull` reads Klaviyo's and Mailchimp's engagement into
``engagement_events``, linked to the send ledger; `mailchimp.handle_webhook`
and the `tracking` functions record what arrives over HTTP. Unsubscribes, spam
complaints and hard bounces suppress the customer at once; likely machine
opens are flagged. ESP modules are imported on use, so their SDKs load only
when their ESP is read.
"""

from __future__ import annotations

from nudge.feedback.events import Engagement, FeedbackError, PullReport

__all__ = ["Engagement", "FeedbackError", "PullReport"]
