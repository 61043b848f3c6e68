"""Check a template before any send: one line per problem, naming file and line.

A template is rendered with a complete fixture (every field set, so an unknown
variable cannot hide behind a missing one) and with a sparse one (no first
name, offer, images or prices), for each ESP and each variant asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from jinja2 import TemplateError as JinjaError
from jinja2 import TemplateSyntaxError

from nudge.render.model import (
    ESPS,
    Esp,
    Item,
    Offer,
    Recipient,
    RenderRequest,
    ShopInfo,
)
from nudge.render.templates import (
    BODY_MJML,
    FILL_ERRORS,
    PARTS,
    SUBJECT_LIMIT,
    TEXT_ENV,
    Renderer,
    TemplateError,
    blank_out,
    describe_error,
    diagnose,
    fill_context,
    trace,
)

SIZE_LIMIT = 100 * 1024
FIXTURE_SECRET = "fixture-secret"
_DEFAULTS = re.compile(r"<mj-attributes>.*?</mj-attributes>", re.S)
_IMAGE = re.compile(r"<mj-image\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>")
_HREF = re.compile(r"\bhref\s*=\s*\"([^\"]*)\"")
_ALT = re.compile(r"\balt\s*=\s*\"\s*[^\"\s][^\"]*\"")
_PRODUCTS = [
    (
        "Linen apron, sage",
        "/products/linen-apron",
        "Because you bought the oven gloves",
    ),
    ("Stoneware mug", "/products/stoneware-mug?colour=sand", "Popular with tea lovers"),
    ("Beeswax candle", "https://demo-shop.example/p/candle", "New in Home & Living"),
    ("Enamel jug, 1 l", "/products/enamel-jug", "Goes with your teapot"),
    ("Olive-wood spoon", "/products/olive-spoon", "You bought one in March"),
    ("Waffle towel", "/products/waffle-towel#reviews", "Back in stock"),
]


def fixture_request(
    template: str,
    *,
    esp: Esp = "outbox",
    variant: str = "a",
    sparse: bool = False,
    products: int = 6,
) -> RenderRequest:
    """Return a fixed request for previews, validation, golden files and benchmarks.

    ``sparse`` leaves every optional field empty: no first name, offer, images
    or prices.
    """
    items = [
        Item(
            product_id=1000 + n,
            title=title,
            url=url,
            image_url=None if sparse else f"/images/{1000 + n}.jpg",
            price=None if sparse else Decimal("12.50") + n * Decimal("4.25"),
            currency="GBP",
            reason=reason,
            reason_code="fixture",
            category=None if sparse else "Kitchen",
        )
        for n, (title, url, reason) in enumerate(_PRODUCTS * (products // 6 + 1))
    ][:products]
    offer = Offer(
        code="WELCOME10",
        description="10% off your next order",
        expires_at=datetime(2026, 3, 15, tzinfo=UTC),
    )
    return RenderRequest(
        send_id="snd_01HZX3Q8W6FIXTURE",
        campaign="fixture",
        variant=variant,
        template=template,
        recipient=Recipient(
            customer_id=42,
            email="ada@example.com",
            first_name=None if sparse else "Ada",
        ),
        items=items,
        offer=None if sparse else offer,
        shop=ShopInfo(
            name="Demo Shop",
            url="https://demo-shop.example",
            postal_address="1 Example Street, London E1 6AN, UK",
            logo_url=None if sparse else "https://demo-shop.example/logo.png",
        ),
        subject="",
        preheader="" if sparse else "Picked from what you bought before",
        esp=esp,
        sent_at=datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
    )


def _fixture_contexts(template: str, esp: Esp, variant: str) -> list[dict[str, Any]]:
    contexts = []
    for sparse in (False, True):
        request = fixture_request(template, esp=esp, variant=variant, sparse=sparse)
        context = fill_context(request, "https://demo-shop.example/unsubscribe")
        context.update(subject="Fixture subject", preheader=request.preheader)
        contexts.append(context)
    return contexts


def _static_problems(root: Path, template: str, variant: str, esp: Esp) -> list[str]:
    """Find images without alt text and links that cannot carry the send's tags."""
    context = {"template": template, "variant": variant, "esp": esp}
    traced = trace(root, f"{template}/{BODY_MJML}", context)
    # Defaults in <mj-attributes> are not images; blank them, keeping offsets.
    text = _DEFAULTS.sub(blank_out, traced.text)
    problems = []
    for m in _IMAGE.finditer(text):
        if not _ALT.search(m.group(1)):
            problems.append(str(traced.error_at(m.start(), "image without alt text")))
    for m in _HREF.finditer(text):
        url = m.group(1).strip()
        if url.startswith(("{{", "mailto:", "tel:", "#")) or not url:
            continue
        problems.append(
            str(
                traced.error_at(
                    m.start(),
                    f"link {url} carries no UTM tags or send id; "
                    f"write {{{{ '{url}' | track }}}}",
                )
            )
        )
    return problems


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v or "" for k, v in attrs if k == "href")


def _output_problems(renderer: Renderer, template: str, variant: str) -> list[str]:
    """Render the complete fixture and check what a customer would receive."""
    body = renderer.root / template / BODY_MJML
    request = fixture_request(template, variant=variant)
    message = renderer.render(request)
    problems = []
    size = len(message.html.encode())
    if size >= SIZE_LIMIT:
        problems.append(
            f"{body}:1: renders to {size // 1024} KB; Gmail clips e-mails over 100 KB"
        )
    parser = _Links()
    parser.feed(message.html)
    if message.unsubscribe_url not in parser.hrefs:
        problems.append(f"{body}:1: no unsubscribe link ({{{{ unsubscribe_url }}}})")
    if message.unsubscribe_url not in message.text:
        text = renderer.root / template / "body.txt.j2"
        problems.append(f"{text}:1: no unsubscribe link ({{{{ unsubscribe_url }}}})")
    return problems


def validate_template(
    root: Path | str,
    name: str,
    *,
    variants: Sequence[str] = ("a",),
    esps: Iterable[Esp] = ESPS,
) -> list[str]:
    """Return every problem found in one template, each as ``file:line: message``."""
    root = Path(root)
    folder = root / name
    if not folder.is_dir():
        return [f"{folder}: no such template folder"]
    missing = [
        f"{folder / p}: file is missing" for p in PARTS if not (folder / p).exists()
    ]
    if missing:
        return missing

    # Locate compile, syntax, MJML and fill errors in their own files.
    problems: dict[str, None] = {}
    for esp in esps:
        for variant in variants:
            compile_context = {"template": name, "variant": variant, "esp": esp}
            fills = _fixture_contexts(name, esp, variant)
            for part in PARTS:
                found = diagnose(root, name, part, compile_context, fills)
                if found is not None:
                    problems[str(found)] = None
    if problems:
        return list(problems)

    # Then what only shows once the whole e-mail is rendered.
    renderer = Renderer(root, signing_secret=FIXTURE_SECRET)
    for variant in variants:
        try:
            found_here = _static_problems(root, name, variant, "outbox")
            found_here += _output_problems(renderer, name, variant)
        except (TemplateError, JinjaError, ValueError) as err:
            found_here = [str(err)]
        problems.update(dict.fromkeys(found_here))
    return list(problems)


def validate_subject(source: str, *, file: str | Path, line: int = 1) -> list[str]:
    """Check a variant's subject (a Jinja source from campaign config) the same way."""
    try:
        compiled = TEXT_ENV.from_string(source)
    except TemplateSyntaxError as err:
        return [f"{file}:{line + err.lineno - 1}: {describe_error(err)}"]
    for context in _fixture_contexts("subject", "outbox", "a"):
        try:
            subject = " ".join(compiled.render(context).split())
        except FILL_ERRORS as err:
            return [f"{file}:{line}: {describe_error(err)}"]
        if len(subject) > SUBJECT_LIMIT:
            return [
                f"{file}:{line}: subject is {len(subject)} characters once rendered "
                f"(at most {SUBJECT_LIMIT})"
            ]
    return []
