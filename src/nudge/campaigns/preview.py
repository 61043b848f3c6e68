"""Preview a campaign: render real customers' e-mails to files, with a gallery.

`nudge preview` plans one campaign for a few customers (named, or a stable
sample of its audience), renders each one's e-mail through `nudge.render`
and writes ``<customer>.html``, ``<customer>.txt`` and a complete
``<customer>.eml`` per customer, and an ``index.html`` that shows each
customer's decision, why it was taken, and the products with their reasons.
A customer the plan would not mail is still rendered where products can be
found, with the reason beside it. Every e-mail is rendered before any file
is written, so a template error leaves no half-written preview.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from hashlib import blake2b
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, select_autoescape

from nudge.campaigns.holdout import offer_code, unit_numbers, variants
from nudge.campaigns.planner import (
    CHOSEN,
    DEFERRED,
    HOLDOUT,
    REASONS,
    Recommend,
    due_campaigns,
)
from nudge.campaigns.schema import Campaign, CampaignError, check_campaign
from nudge.campaigns.service import Audience, CampaignService, naive_utc, utc_now
from nudge.errors import NudgeError
from nudge.logging import get_logger
from nudge.render import (
    Item,
    Offer,
    Recipient,
    RenderedMessage,
    Renderer,
    RenderRequest,
    ShopInfo,
    to_mime,
)
from nudge.settings import Settings
from nudge.store import queries

log = get_logger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
SCREEN_WIDTH = 640
# Outcomes whose products the plan fetched already.
WINNERS = (CHOSEN, DEFERRED, HOLDOUT)
PREVIEW_SECRET = "nudge-preview-only"


class PreviewError(NudgeError):
    """A preview cannot be made (bad campaign, unknown customer, no browser)."""


@dataclass
class PreviewEntry:
    """One customer of a preview: the decision, and the message if rendered."""

    customer_id: int
    external_id: str
    outcome: str
    reason: str
    detail: str
    variant: str
    expected_value: float | None
    send_at: datetime
    items: list[Item] = field(default_factory=list)
    email: str = ""
    message: RenderedMessage | None = None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def sent(self) -> bool:
        """Tell whether the plan would send this e-mail."""
        return self.outcome in (CHOSEN, DEFERRED)


@dataclass
class PreviewReport:
    """What a preview wrote."""

    campaign: str
    out: Path
    index: Path
    entries: list[PreviewEntry]


def sender(settings: Settings) -> str:
    """Return the From address of the shop's e-mails."""
    return settings.sender


def build_request(
    campaign: Campaign,
    settings: Settings,
    *,
    send_id: str,
    variant: str,
    recipient: Recipient,
    external_id: str,
    items: list[Item],
    send_at: datetime,
) -> RenderRequest:
    """Return the render request of one customer's e-mail of a campaign."""
    chosen = next(v for v in campaign.variants if v.name == variant)
    sent_at = send_at.replace(tzinfo=UTC) if send_at.tzinfo is None else send_at
    offer = None
    if campaign.offer is not None:
        offer = Offer(
            code=offer_code(campaign.offer.code_prefix, campaign.name, external_id),
            description=campaign.offer.description,
            expires_at=sent_at + timedelta(days=campaign.offer.valid_days),
        )
    return RenderRequest(
        send_id=send_id,
        campaign=campaign.name,
        variant=variant,
        template=campaign.template,
        recipient=recipient,
        items=items,
        offer=offer,
        shop=ShopInfo(
            name=settings.shop_name,
            url=settings.shop_url,
            postal_address=settings.shop_postal_address,
        ),
        subject=chosen.subject,
        preheader=chosen.preheader,
        esp=campaign.esp,
        sent_at=sent_at,
    )


def make_items(
    lists: pd.DataFrame, products: pd.DataFrame, settings: Settings
) -> dict[int, list[Item]]:
    """Turn ranked product lists into render items per customer, best first."""
    catalog = products.set_index("id")
    found: dict[int, list[Item]] = {}
    ordered = lists.sort_values(["customer_id", "rank"])
    rows: list[dict[Any, Any]] = ordered.to_dict("records")
    for row in rows:
        product_id = int(row["product_id"])
        if product_id not in catalog.index:
            continue
        info = catalog.loc[product_id]
        price = info["price"]
        found.setdefault(int(row["customer_id"]), []).append(
            Item(
                product_id=product_id,
                title=str(info["title"] or info["external_id"]),
                url=str(info["product_url"] or f"/products/{info['external_id']}"),
                image_url=_text(info["image_url"]),
                price=Decimal(str(price)) if _present(price) else None,
                currency=str(info["currency"] or settings.shop_currency),
                reason=str(row["reason"]),
                reason_code=str(row["reason_code"]),
                category=_text(info["category"]),
            )
        )
    return found


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def _text(value: Any) -> str | None:
    return str(value) if _present(value) and str(value) else None


def preview(
    service: CampaignService,
    name: str,
    *,
    as_of: datetime | None = None,
    customers: Sequence[str] = (),
    sample: int | None = None,
    out: Path,
    screenshot: bool = False,
) -> PreviewReport:
    """Render a campaign for named customers or a sample, and write the gallery."""
    moment = naive_utc(as_of) if as_of is not None else utc_now()
    loaded = service.campaigns([name])[0]
    problems = check_campaign(loaded, service.templates_dir)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PreviewError(f"{problems[0]}{more}")
    campaign = loaded.campaign
    if campaign.recommend is None:
        raise CampaignError(loaded.path, None, "recommend", "preview needs a recipe")

    # Plan the campaign for the chosen customers only, as a dry run.
    audience = service.audience(moment)
    ids = _pick(service, campaign, audience, moment, customers, sample)
    recommend = service.recommender(moment)
    result = service.plan(
        moment,
        [name],
        save=False,
        recommend=recommend,
        restrict_to=ids,
        audience=audience,
    )
    entries = _entries(campaign, audience.frame, result.plan.decisions, ids, moment)

    _attach_items(service, campaign, entries, result.plan.items, recommend)
    _render(service, campaign, entries)
    index = _write(service.settings, campaign, entries, out, screenshot)
    log.info("preview written", campaign=name, customers=len(entries), out=str(out))
    return PreviewReport(name, out, index, entries)


def _pick(
    service: CampaignService,
    campaign: Campaign,
    audience: Audience,
    moment: datetime,
    customers: Sequence[str],
    sample: int | None,
) -> list[int]:
    """Return the store ids to preview: the named customers, or a stable sample."""
    if customers:
        try:
            found = service.customer_ids(list(customers))
        except LookupError as err:
            raise PreviewError(str(err)) from err
        return [found[c] for c in customers]

    # A sample comes from the campaign's candidates (for an event campaign,
    # members with an event due), else from its audience.
    frame = audience.frame
    data = service.inputs(moment, [campaign], audience, [campaign.name], None)
    _, parts = due_campaigns(data)
    rows = parts[0].rows if parts and len(parts[0].rows) else None
    members = (
        frame.iloc[rows]
        if rows is not None
        else frame[campaign.audience_filter.matches(frame)]
    )

    # Members who can be mailed first, in a stable hashed order.
    mailable = members[
        members["consent"].to_numpy(bool) & members["has_email"].to_numpy(bool)
    ]
    pool = mailable if len(mailable) else members
    if pool.empty:
        raise PreviewError(f"the audience of {campaign.name} is empty")
    keys = pool["external_id"].astype(str).tolist()
    order = np.argsort(unit_numbers(campaign.name, "preview", keys), kind="stable")
    picked = pool["customer_id"].to_numpy()[order[: sample or 5]]
    return [int(i) for i in picked]


def _entries(
    campaign: Campaign,
    frame: pd.DataFrame,
    decisions: pd.DataFrame,
    ids: list[int],
    moment: datetime,
) -> list[PreviewEntry]:
    """Return one entry per customer, with the plan's decision or why there is none."""
    by_id = decisions.set_index("customer_id")
    known = frame.set_index("customer_id")
    inside = set(frame.loc[campaign.audience_filter.matches(frame), "customer_id"])
    trigger = campaign.trigger.event
    names = [v.name for v in campaign.variants]
    weights = [v.weight for v in campaign.variants]
    entries = []
    for customer_id in ids:
        external = str(known.loc[customer_id, "external_id"])
        default_variant = str(variants(campaign.name, [external], names, weights)[0])
        if customer_id in by_id.index:
            row: dict[Any, Any] = by_id.loc[customer_id].to_dict()
            send_at = row["send_at"]
            entries.append(
                PreviewEntry(
                    customer_id=customer_id,
                    external_id=external,
                    outcome=str(row["outcome"]),
                    reason=str(row["reason"]),
                    detail=str(row["detail"]),
                    variant=row["variant"]
                    if isinstance(row["variant"], str)
                    else default_variant,
                    expected_value=float(row["expected_value"]),
                    send_at=moment if pd.isna(send_at) else pd.Timestamp(send_at),
                )
            )
            continue
        # No decision: outside the audience, or no event of the trigger due.
        member = customer_id in inside
        entries.append(
            PreviewEntry(
                customer_id=customer_id,
                external_id=external,
                outcome="no trigger" if member else "not in audience",
                reason="trigger" if member else "audience",
                detail=f"no {trigger} event falls due"
                if member
                else f"does not match: {campaign.audience}",
                variant=default_variant,
                expected_value=None,
                send_at=moment,
            )
        )
    return entries


def _attach_items(
    service: CampaignService,
    campaign: Campaign,
    entries: list[PreviewEntry],
    planned: pd.DataFrame,
    recommend: Recommend,
) -> None:
    """Give each entry its products: the plan's, or asked for anew for the rest."""
    recipe = campaign.recommend
    assert recipe is not None
    lists = planned
    missing = [e.customer_id for e in entries if e.outcome not in WINNERS]
    if missing:
        extra = recommend(np.asarray(missing, dtype=object), recipe)
        lists = pd.concat([lists, extra.assign(campaign=campaign.name)])

    # A list too short to send is not rendered either.
    products = queries.products(service.engine)
    found = make_items(lists, products, service.settings)
    for entry in entries:
        entry.items = found.get(entry.customer_id, [])[: recipe.count]
        if len(entry.items) < recipe.min_items:
            entry.items = []


def _render(
    service: CampaignService, campaign: Campaign, entries: list[PreviewEntry]
) -> None:
    """Render every entry that has products; raise on the first template error."""
    settings = service.settings
    # Previews are never sent: without the shop's secret, a preview key signs
    # the unsubscribe links so that the e-mail still renders whole.
    secret = settings.signing_secret or PREVIEW_SECRET
    renderer = Renderer(service.templates_dir, signing_secret=secret)
    contacts = service.contacts([e.customer_id for e in entries]).set_index("id")
    for entry in entries:
        if not entry.items:
            continue
        contact = contacts.loc[entry.customer_id]
        entry.email = str(contact["email"] or "")
        digest = blake2b(
            f"{campaign.name}\x1f{entry.external_id}".encode(), digest_size=8
        )
        request = build_request(
            campaign,
            settings,
            send_id=f"prv_{digest.hexdigest()}",
            variant=entry.variant,
            recipient=Recipient(
                customer_id=entry.customer_id,
                email=entry.email,
                first_name=_text(contact["first_name"]),
            ),
            external_id=entry.external_id,
            items=entry.items,
            send_at=entry.send_at,
        )
        entry.message = renderer.render(request)


def _file_stem(external_id: str) -> str:
    """Return a file name for a customer id, safe on any file system."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in external_id)
    return safe or "customer"


def _write(
    settings: Settings,
    campaign: Campaign,
    entries: list[PreviewEntry],
    out: Path,
    screenshot: bool,
) -> Path:
    """Write each rendered e-mail as HTML, text and .eml, then the gallery."""
    out.mkdir(parents=True, exist_ok=True)
    from_address = sender(settings)
    for entry in entries:
        message = entry.message
        if message is None:
            continue
        stem = _file_stem(entry.external_id)
        html, text, eml = (out / f"{stem}{s}" for s in (".html", ".txt", ".eml"))
        html.write_text(message.html, encoding="utf-8")
        text.write_text(message.text, encoding="utf-8")
        eml.write_bytes(to_mime(message, from_address, entry.email))
        entry.files = {"html": html.name, "text": text.name, "eml": eml.name}
    if screenshot:
        _screenshots(out, [e for e in entries if e.message is not None])
    index = out / "index.html"
    index.write_text(_gallery(settings, campaign, entries), encoding="utf-8")
    return index


_GALLERY = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Preview: {{ campaign.name }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
.entry { border: 1px solid #ddd; border-radius: 8px; padding: 16px; margin: 0 0 24px; }
.entry h2 { margin: 0 0 4px; font-size: 18px; }
.meta { color: #555; margin: 4px 0; }
.outcome { font-weight: 600; }
.sent { color: #1e7b34; } .held { color: #8a6d00; } .none { color: #a12a2a; }
table { border-collapse: collapse; margin: 8px 0; }
td, th { border-bottom: 1px solid #eee; padding: 4px 10px; text-align: left; }
iframe { width: 640px; height: 520px; border: 1px solid #ccc; }
img.shot { width: 320px; border: 1px solid #ccc; }
.row { display: flex; gap: 16px; flex-wrap: wrap; }
</style></head><body>
<h1>{{ campaign.name }}</h1>
<p>{{ campaign.description }}</p>
<p class="meta">Audience: <code>{{ campaign.audience }}</code> · template
{{ campaign.template }} · ESP {{ campaign.esp }} · holdout
{{ "%.0f" % (campaign.holdout * 100) }}% · approval {{ campaign.approval }}</p>
{% for e in entries %}
<div class="entry">
  <h2>Customer {{ e.external_id }}</h2>
  <p class="outcome {{ 'sent' if e.sent else 'held' if e.outcome == 'holdout'
     else 'none' }}">{{ e.outcome }}{% if e.reason in reasons %}:
     {{ reasons[e.reason] }}{% endif %}</p>
  <p class="meta">Why: {{ e.detail }}</p>
  <p class="meta">Variant {{ e.variant }} · send at
  {{ e.send_at.strftime("%Y-%m-%d %H:%M") }} UTC
  {%- if e.expected_value is not none %} · expected value
  {{ "%.2f" % e.expected_value }}{% endif %}</p>
  {% if e.message %}
  <p><b>Subject:</b> {{ e.message.subject }}<br>
  <b>Preheader:</b> {{ e.message.preheader }}</p>
  <table><tr><th>#</th><th>product</th><th>price</th><th>why</th>
  <th>reason code</th></tr>
  {% for item in e.items %}<tr><td>{{ loop.index }}</td><td>{{ item.title }}</td>
  <td>{{ item.price if item.price is not none else "" }} {{ item.currency }}</td>
  <td>{{ item.reason }}</td><td>{{ item.reason_code }}</td></tr>{% endfor %}
  </table>
  <p>{% for kind, name in e.files.items() %}<a href="{{ name }}">{{ kind }}</a>
  {% endfor %}</p>
  <div class="row">
  <iframe src="{{ e.files.html }}" title="e-mail of {{ e.external_id }}"></iframe>
  {% if e.files.png %}<img class="shot" src="{{ e.files.png }}"
  alt="screenshot of the e-mail of {{ e.external_id }}">{% endif %}
  </div>
  {% else %}
  <p class="none">Nothing rendered: too few products for this customer.</p>
  {% endif %}
</div>
{% endfor %}
</body></html>
"""


def _gallery(
    settings: Settings, campaign: Campaign, entries: list[PreviewEntry]
) -> str:
    """Return the gallery page of a preview."""
    env = Environment(autoescape=select_autoescape(default=True))
    return env.from_string(_GALLERY).render(
        campaign=campaign, entries=entries, reasons=REASONS, shop=settings.shop_name
    )


def _placeholder_png(size: int = 8) -> bytes:
    """Return a small grey PNG that stands in for product photos offline."""
    row = b"\x00" + bytes((214, 208, 200)) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


def _screenshots(out: Path, entries: list[PreviewEntry]) -> None:
    """Save a PNG of each rendered e-mail with headless Chromium."""
    if not CHROMIUM.exists():
        raise PreviewError(f"--screenshot needs Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise PreviewError(
            "--screenshot needs the playwright package (pip install playwright)"
        ) from err

    photo = _placeholder_png()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--headless", "--disable-gpu"],
        )
        try:
            page = browser.new_page(viewport={"width": SCREEN_WIDTH, "height": 900})
            # No network: every image becomes the grey stand-in.
            page.route(
                "**/*",
                lambda route: route.fulfill(
                    status=200, content_type="image/png", body=photo
                ),
            )
            for entry in entries:
                assert entry.message is not None
                png = out / f"{_file_stem(entry.external_id)}.png"
                page.set_content(entry.message.html, wait_until="load")
                page.screenshot(path=str(png), full_page=True)
                entry.files["png"] = png.name
        finally:
            browser.close()
