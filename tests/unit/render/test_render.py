"""Rendering: golden files for every shipped template and what every e-mail needs.

Golden files live in tests/fixtures/golden/<template>.{html,txt,subject}; run
with NUDGE_UPDATE_GOLDEN=1 to write them after an intended change, then review
the diff.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.etree.ElementTree import Element

import html5lib
import pytest
from structlog.testing import capture_logs

from nudge.errors import ConfigError
from nudge.render import (
    Esp,
    Item,
    RenderedMessage,
    Renderer,
    RenderRequest,
    TemplateError,
    fixture_request,
    sign,
    tag_url,
    template_names,
    verify,
)
from nudge.render.links import unsubscribe_url
from nudge.render.templates import lost_tags

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = REPO / "email_templates"
GOLDEN = REPO / "tests" / "fixtures" / "golden"
SHIPPED = [
    "buy_again",
    "cart_abandonment",
    "cross_sell",
    "new_arrivals",
    "picked_for_you",
    "winback",
]
SECRET = "test-secret"
XHTML = "{http://www.w3.org/1999/xhtml}"
UPDATE = os.environ.get("NUDGE_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    """One renderer for the module, so each template compiles once."""
    return Renderer(TEMPLATES, signing_secret=SECRET)


def parse_strict(html: str) -> Element:
    """Parse as a browser would, failing on any HTML parse error."""
    # MRML's output has parsed without errors so far, so the allow-list of
    # MJML-specific parse errors is empty.
    return html5lib.HTMLParser(strict=True).parse(html)


def links(doc: Element) -> list[str]:
    """Return every href of every anchor in a parsed document."""
    return [a.get("href", "") for a in doc.iter(f"{XHTML}a")]


def with_items(request: RenderRequest, **changes: object) -> RenderRequest:
    """Return the request with the first product changed."""
    first = dataclasses.replace(request.items[0], **changes)  # type: ignore[arg-type]
    return dataclasses.replace(request, items=[first, *request.items[1:]])


def test_every_shipped_template_is_found() -> None:
    assert template_names(TEMPLATES) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_golden(renderer: Renderer, name: str) -> None:
    message = renderer.render(fixture_request(name))
    rendered = {"html": message.html, "txt": message.text, "subject": message.subject}

    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for suffix, text in rendered.items():
            (GOLDEN / f"{name}.{suffix}").write_text(text, encoding="utf-8")
    for suffix, text in rendered.items():
        path = GOLDEN / f"{name}.{suffix}"
        assert path.is_file(), f"{path} missing; run with NUDGE_UPDATE_GOLDEN=1"
        assert text == path.read_text(encoding="utf-8"), f"{path} differs"


@pytest.mark.parametrize("sparse", [False, True], ids=["full", "sparse"])
@pytest.mark.parametrize("name", SHIPPED)
def test_every_email_is_sound(renderer: Renderer, name: str, sparse: bool) -> None:
    request = fixture_request(name, sparse=sparse)
    message = renderer.render(request)
    doc = parse_strict(message.html)

    # Gmail clips anything over 100 KB, unsubscribe link included.
    assert len(message.html.encode()) < 100 * 1024

    # One unsubscribe link in each part; every other link absolute and tagged.
    hrefs = links(doc)
    assert message.unsubscribe_url in hrefs
    assert message.unsubscribe_url in message.text
    for href in hrefs:
        if href == message.unsubscribe_url:
            continue
        parts = urlsplit(href)
        assert parts.scheme == "https" and parts.netloc, href
        query = parse_qs(parts.query)
        assert query["utm_source"] == ["nudge"], href
        assert query["utm_medium"] == ["email"], href
        assert query["utm_campaign"] == [request.campaign], href
        assert query["utm_content"] == [request.variant], href
        assert query["nudge_sid"] == [request.send_id], href

    # Every image says what it shows.
    images = list(doc.iter(f"{XHTML}img"))
    assert images or sparse
    for img in images:
        assert (img.get("alt") or "").strip(), img.get("src")

    # Every product appears with its reason, in both parts.
    for item in request.items:
        assert item.reason.replace("&", "&amp;") in message.html
        assert item.reason in message.text
        assert item.title in message.text


@pytest.mark.parametrize("name", SHIPPED)
def test_compile_once_matches_per_customer_mjml(renderer: Renderer, name: str) -> None:
    request = fixture_request(name)
    slow = Renderer(TEMPLATES, signing_secret=SECRET, per_customer_mjml=True)
    assert not renderer.compile(name).per_customer_mjml
    assert renderer.render(request).html == slow.render(request).html


def test_links_keep_their_query_and_fragment(renderer: Renderer) -> None:
    message = renderer.render(fixture_request("winback"))
    sid = "nudge_sid=snd_01HZX3Q8W6FIXTURE"

    assert "/products/stoneware-mug?colour=sand&amp;utm_source=nudge" in message.html
    assert "/products/waffle-towel?utm_source=nudge" in message.html
    assert f"{sid}#reviews" in message.text
    assert "https://demo-shop.example/images/1000.jpg" in message.html


def test_tag_url_replaces_old_tags() -> None:
    query = "utm_source=nudge&nudge_sid=s1"
    old = "https://shop.example/a?utm_source=other&size=m&nudge_sid=s0#top"

    assert tag_url(old, "https://shop.example", query) == (
        "https://shop.example/a?size=m&utm_source=nudge&nudge_sid=s1#top"
    )
    assert tag_url("p/1", "https://shop.example/en", query) == (
        "https://shop.example/en/p/1?" + query
    )
    assert tag_url("https://shop.example", "x", query).startswith(
        "https://shop.example/?"
    )


def test_outbox_and_smtp_sign_their_own_unsubscribe(renderer: Renderer) -> None:
    for esp in ("outbox", "smtp"):
        request = fixture_request("winback", esp=esp)
        message = renderer.render(request)
        url = unsubscribe_url("https://demo-shop.example", request.send_id, SECRET)

        assert message.unsubscribe_url == url
        query = parse_qs(urlsplit(url).query)
        assert query["sid"] == [request.send_id]
        assert verify(request.send_id, query["sig"][0], SECRET)
        assert not verify("another-send", query["sig"][0], SECRET)
        assert message.headers["List-Unsubscribe"] == f"<{url}>"
        assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert (
            message.headers["Message-ID"] == "<snd_01HZX3Q8W6FIXTURE@demo-shop.example>"
        )


@pytest.mark.parametrize(
    ("esp", "tag"), [("klaviyo", "{% unsubscribe_url %}"), ("mailchimp", "*|UNSUB|*")]
)
def test_esps_get_their_own_merge_tag(renderer: Renderer, esp: Esp, tag: str) -> None:
    message = renderer.render(fixture_request("winback", esp=esp))

    assert message.unsubscribe_url == tag
    assert f'href="{tag}"' in message.html
    assert f"Unsubscribe: {tag}" in message.text
    assert message.headers == {}
    assert "/nudge/unsubscribe" not in message.html


def test_signature_is_stable_and_url_safe() -> None:
    sig = sign("snd_1", SECRET)

    assert sig == sign("snd_1", SECRET.encode())
    assert "=" not in sig and "+" not in sig and "/" not in sig
    assert not verify("snd_1", sig[:-1] + ("A" if sig[-1] != "A" else "B"), SECRET)
    assert not verify("snd_1", "é" + sig[1:], SECRET)


def test_outbox_needs_a_signing_secret() -> None:
    with pytest.raises(ConfigError, match="signing_secret"):
        Renderer(TEMPLATES).render(fixture_request("winback"))


def test_product_data_is_escaped(renderer: Renderer) -> None:
    request = with_items(
        fixture_request("picked_for_you"), title='<script>alert("x")</script>'
    )
    message = renderer.render(request)
    doc = parse_strict(message.html)

    assert "<script>" not in message.html
    assert "&lt;script&gt;" in message.html
    assert not list(doc.iter(f"{XHTML}script"))
    assert '<script>alert("x")</script>' in message.text


def test_customer_data_cannot_become_an_esp_merge_tag(renderer: Renderer) -> None:
    request = with_items(
        fixture_request("winback", esp="klaviyo"),
        title="{{ person.email }} *|EMAIL|*",
    )
    message = renderer.render(request)

    assert "{{ person.email }}" not in message.html
    assert "*|EMAIL|*" not in message.html
    assert "&#123;&#123; person.email }} *&#124;EMAIL|*" in message.html


def test_missing_optional_fields_render_cleanly(renderer: Renderer) -> None:
    message = renderer.render(fixture_request("winback", sparse=True))

    assert message.subject == "We've missed you"
    assert "<img" not in message.html
    assert "Use code" not in message.html
    assert "Demo Shop</a>" in message.html
    assert "£" not in message.text


def test_price_is_formatted_in_the_items_currency(renderer: Renderer) -> None:
    request = with_items(fixture_request("buy_again"), price=Decimal("1234.5"))
    request = dataclasses.replace(
        request,
        items=[
            request.items[0],
            dataclasses.replace(request.items[1], currency="CHF"),
            *request.items[2:],
        ],
    )
    message = renderer.render(request)

    assert "£1,234.50" in message.html
    assert "16.75 CHF" in message.html


def test_variant_subject_and_preheader_come_from_the_request(
    renderer: Renderer,
) -> None:
    request = dataclasses.replace(
        fixture_request("winback"),
        subject="{{ recipient.first_name }}, {{ items | length }} picks\n for you",
        preheader="From {{ shop.name }}",
    )
    message = renderer.render(request)

    assert message.subject == "Ada, 6 picks for you"
    assert message.preheader == "From Demo Shop"
    assert "<title>Ada, 6 picks for you</title>" in message.html
    assert "From Demo Shop" in message.html


def test_variant_b_moves_the_offer_below_the_products(renderer: Renderer) -> None:
    a = renderer.render(fixture_request("winback", variant="a"))
    b = renderer.render(fixture_request("winback", variant="b"))

    assert a.html.index("WELCOME10") < a.html.index("Linen apron")
    assert b.html.index("WELCOME10") > b.html.index("Linen apron")
    assert "utm_content=b" in b.text


def test_a_long_subject_never_renders(renderer: Renderer) -> None:
    request = dataclasses.replace(fixture_request("winback"), subject="x" * 201)

    with pytest.raises(TemplateError, match="201 characters") as caught:
        renderer.render(request)
    assert str(caught.value).startswith("campaign fixture variant a subject:1: ")


def test_a_fill_error_names_the_line_and_returns_nothing(tmp_path: Path) -> None:
    root = tmp_path / "email_templates"
    shutil.copytree(TEMPLATES, root)
    card = root / "_partials" / "product_card.mjml.j2"
    card.write_text(
        card.read_text().replace("{{ item.reason }}", "{{ item.reason.x }}")
    )

    with pytest.raises(TemplateError) as caught:
        Renderer(root, signing_secret=SECRET).render(fixture_request("winback"))
    assert caught.value.file == str(card)
    assert caught.value.line == 10
    assert "'str object' has no attribute 'x'" in str(caught.value)


def test_a_tag_in_a_width_falls_back_to_per_customer_mjml(tmp_path: Path) -> None:
    root = tmp_path / "email_templates"
    shutil.copytree(TEMPLATES, root)
    card = root / "_partials" / "product_card.mjml.j2"
    card.write_text(
        card.read_text().replace('width="258px"', "width=\"{{ '200px' }}\"")
    )
    renderer = Renderer(root, signing_secret=SECRET)

    with capture_logs() as logs:
        compiled = renderer.compile("winback")
    message = renderer.render(fixture_request("winback"))

    assert compiled.per_customer_mjml
    assert "width" in (compiled.note or "")
    assert [e["template"] for e in logs] == ["winback"]
    assert "width:200px" in message.html
    assert "{{" not in message.html


def test_lost_tags_are_detected() -> None:
    mjml = "<mj-text>{{ a }}</mj-text><mj-raw>{% if b %}</mj-raw>"

    assert lost_tags(mjml, "<div>{{ a }}</div>{% if b %}") is None
    assert "{% if b %}" in (lost_tags(mjml, "<div>{{ a }}</div>") or "")
    assert "changed" in (lost_tags(mjml, "{{ a }}{% if b %}{{ a &amp; }}") or "")


def test_rendered_message_is_plain_data(renderer: Renderer) -> None:
    message = renderer.render(fixture_request("cross_sell"))

    assert isinstance(message, RenderedMessage)
    assert message.send_id == "snd_01HZX3Q8W6FIXTURE"
    assert message.text.endswith("\n") and "\n\n\n" not in message.text
    assert isinstance(fixture_request("cross_sell").items[0], Item)


def test_templates_tag_their_own_links_with_track(tmp_path: Path) -> None:
    root = tmp_path / "email_templates"
    shutil.copytree(TEMPLATES, root)
    body = root / "winback" / "body.mjml.j2"
    body.write_text(
        body.read_text().replace(
            "visit to {{ shop.name }}",
            "visit to <a href=\"{{ '/sale?s=1' | track }}\">the sale</a>",
        )
    )
    message = Renderer(root, signing_secret=SECRET).render(fixture_request("winback"))

    assert (
        'href="https://demo-shop.example/sale?s=1&amp;utm_source=nudge&amp;'
        "utm_medium=email&amp;utm_campaign=fixture&amp;utm_content=a&amp;"
        'nudge_sid=snd_01HZX3Q8W6FIXTURE"'
    ) in message.html


def test_an_unknown_template_is_a_template_error(renderer: Renderer) -> None:
    request = dataclasses.replace(fixture_request("winback"), template="../etc")

    with pytest.raises(TemplateError, match=r"no template named '\.\./etc'"):
        renderer.render(request)
