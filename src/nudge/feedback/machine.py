"""Opens that a machine made: privacy proxies that fetch every image on delivery.

Apple Mail Privacy Protection loads a message's images through Apple's proxies
as soon as it arrives, whether or not anyone reads it; other clients and
security scanners do the like. Such opens are flagged and never treated as
interest. Three signs are read: what the payload says (an ESP's own flag, a
proxy's user agent or address), an open within seconds of delivery, and a
customer whose every e-mail is opened at once and never clicked.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select, update

from nudge.store.feedback_models import CLICK, OPEN, RECEIVED, EngagementEvent
from nudge.store.send_models import Send

# An open this soon after delivery is a proxy fetching the images.
PREFETCH = timedelta(seconds=10)
# A customer whose every opened e-mail (at least MIN_SENDS) was opened this
# soon after delivery, and not clicked, reads none of them by hand.
INSTANT = timedelta(seconds=120)
MIN_SENDS = 3

# Apple owns 17.0.0.0/8; Mail Privacy Protection fetches from there.
PROXY_NETWORKS = (ipaddress.ip_network("17.0.0.0/8"),)
# Apple's proxy sends a bare "Mozilla/5.0"; scanners name themselves.
PROXY_AGENTS = ("mozilla/5.0",)
SCANNER_WORDS = ("bot", "scanner", "proofpoint", "barracuda", "mimecast")
FLAG_KEYS = (
    "machine_open",
    "$machine_open",
    "Machine Open",
    "is_machine_open",
    "Apple Privacy Open",
    "apple_privacy_open",
)
AGENT_KEYS = ("user_agent", "User Agent", "$user_agent", "UserAgent")
ADDRESS_KEYS = ("ip", "$ip", "IP Address", "ip_address")


def proxy_sign(
    *, user_agent: Any = None, ip: Any = None, flagged: Any = None
) -> str | None:
    """Return why an open's own details mark it as a machine's, or None."""
    if flagged is True or (isinstance(flagged, str) and flagged.lower() == "true"):
        return "esp_flag"
    if isinstance(ip, str) and ip:
        try:
            address = ipaddress.ip_address(ip.strip())
        except ValueError:
            address = None
        if address is not None and any(address in net for net in PROXY_NETWORKS):
            return "proxy_address"
    if isinstance(user_agent, str):
        agent = user_agent.strip().lower()
        if agent in PROXY_AGENTS or any(word in agent for word in SCANNER_WORDS):
            return "proxy_agent"
    return None


def sign_in(properties: Mapping[str, Any]) -> str | None:
    """Return the proxy sign in a payload's properties, under the usual keys."""
    flagged = next((properties[k] for k in FLAG_KEYS if k in properties), None)
    agent = next((properties[k] for k in AGENT_KEYS if k in properties), None)
    address = next((properties[k] for k in ADDRESS_KEYS if k in properties), None)
    return proxy_sign(user_agent=agent, ip=address, flagged=flagged)


def flag_opens(conn: Connection, customer_ids: Iterable[int]) -> int:
    """Flag the machine opens of these customers by timing; return how many."""
    ids = sorted(set(customer_ids))
    if not ids:
        return 0
    opens = _opens(conn, ids)
    if not opens:
        return 0
    sends = {row["send_id"] for row in opens}
    delivered = _delivery_times(conn, sends)
    clicked = _clicked(conn, sends)

    flagged: set[int] = set()
    by_customer: dict[int, dict[int, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in opens:
        by_customer[row["customer_id"]][row["send_id"]].append(row)
        at = delivered.get(row["send_id"])
        if at is not None and row["occurred_at"] - at <= PREFETCH:
            flagged.add(row["id"])

    # The customer's pattern: every opened e-mail opened at once.
    for per_send in by_customer.values():
        firsts = [
            min(r["occurred_at"] for r in rows) - delivered[send_id]
            for send_id, rows in per_send.items()
            if send_id in delivered
        ]
        if len(firsts) < MIN_SENDS or any(gap > INSTANT for gap in firsts):
            continue
        for send_id, rows in per_send.items():
            if send_id not in clicked:
                flagged.update(r["id"] for r in rows)

    fresh = [r["id"] for r in opens if r["id"] in flagged and not r["machine_open"]]
    for start in range(0, len(fresh), 500):
        conn.execute(
            update(EngagementEvent)
            .where(EngagementEvent.id.in_(fresh[start : start + 500]))
            .values(machine_open=True)
        )
    return len(fresh)


def _opens(conn: Connection, ids: list[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for start in range(0, len(ids), 500):
        query = select(
            EngagementEvent.id,
            EngagementEvent.send_id,
            EngagementEvent.customer_id,
            EngagementEvent.occurred_at,
            EngagementEvent.machine_open,
        ).where(
            EngagementEvent.kind == OPEN,
            EngagementEvent.send_id.is_not(None),
            EngagementEvent.customer_id.in_(ids[start : start + 500]),
        )
        rows.extend(dict(r._mapping) for r in conn.execute(query))
    return rows


def _delivery_times(conn: Connection, sends: set[int]) -> dict[int, datetime]:
    """Return when each send arrived: its received event, else its submission."""
    ordered = sorted(sends)
    times: dict[int, datetime] = {}
    for start in range(0, len(ordered), 500):
        part = ordered[start : start + 500]
        for send_id, submitted in conn.execute(
            select(Send.id, Send.submitted_at).where(Send.id.in_(part))
        ):
            if submitted is not None:
                times[send_id] = submitted
        received = (
            select(EngagementEvent.send_id, func.min(EngagementEvent.occurred_at))
            .where(EngagementEvent.kind == RECEIVED, EngagementEvent.send_id.in_(part))
            .group_by(EngagementEvent.send_id)
        )
        for arrived, at in conn.execute(received):
            if arrived is not None:
                times[arrived] = at
    return times


def _clicked(conn: Connection, sends: set[int]) -> set[int]:
    ordered = sorted(sends)
    found: set[int] = set()
    for start in range(0, len(ordered), 500):
        query = (
            select(EngagementEvent.send_id)
            .where(
                EngagementEvent.kind == CLICK,
                EngagementEvent.send_id.in_(ordered[start : start + 500]),
            )
            .distinct()
        )
        found.update(s for (s,) in conn.execute(query) if s is not None)
    return found
