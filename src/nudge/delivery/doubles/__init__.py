"""Local doubles of the ESPs nudge talks to, for tests, benchmarks and demos.

`KlaviyoDouble` and `MailchimpDouble` are HTTP servers on 127.0.0.1 that answer
like the real APIs and record every request; `SmtpServer` runs a real SMTP
server process; `ApiSpec` checks recorded bodies against the published specs.
Each is started and stopped by its user; nothing here starts on import.
"""

from __future__ import annotations

from nudge.delivery.doubles.klaviyo import KlaviyoDouble
from nudge.delivery.doubles.mailchimp import MailchimpDouble
from nudge.delivery.doubles.openapi import MAILCHIMP_FALSE_ALARMS, ApiSpec
from nudge.delivery.doubles.server import DoubleServer, Fault, Request, Response
from nudge.delivery.doubles.smtp import SmtpServer

__all__ = [
    "MAILCHIMP_FALSE_ALARMS",
    "ApiSpec",
    "DoubleServer",
    "Fault",
    "KlaviyoDouble",
    "MailchimpDouble",
    "Request",
    "Response",
    "SmtpServer",
]
