"""Templates translated into Klaviyo's and Mailchimp's own template languages."""

from __future__ import annotations

import re

import pytest

from nudge.delivery.setup import TranslationError, esp_html, translate
from nudge.render import Renderer, ShopInfo, template_names

from .conftest import REPO

SHOP = ShopInfo("Demo & Co", "https://demo-shop.example", "1 Example Street")


@pytest.mark.parametrize("template", template_names(REPO / "email_templates"))
def test_every_shipped_template_translates_for_both_esps(
    renderer: Renderer, template: str
) -> None:
    klaviyo = esp_html(renderer, template, "a", "klaviyo", SHOP)
    mailchimp = esp_html(renderer, template, "a", "mailchimp", SHOP)

    assert "{% for item in event.items %}" in klaviyo
    assert "{{ item.title }}" in klaviyo and "{% unsubscribe_url %}" in klaviyo
    assert klaviyo.count("{% if") + klaviyo.count("{% for") == klaviyo.count("{% end")
    assert "Demo &amp; Co" in klaviyo and "{{ shop" not in klaviyo

    assert "{{" not in mailchimp and "{%" not in mailchimp
    assert "*|P4_TITLE|*" in mailchimp and "*|P5_TITLE|*" not in mailchimp
    assert "*|UNSUB|*" in mailchimp
    opened = len(re.findall(r"\*\|IF(?:NOT)?:", mailchimp))
    assert opened == mailchimp.count("*|END:IF|*")


def test_the_two_column_grid_becomes_a_klaviyo_loop_with_rows() -> None:
    source = (
        "{% for row in items | batch(2) %}<tr>{% for item in row %}"
        "<td>{{ item.title }}</td>{% endfor %}</tr>{% endfor %}"
    )
    assert translate(source, "klaviyo", SHOP) == (
        "{% for item in event.items %}{% if forloop.counter0|divisibleby:2 %}<tr>"
        "{% endif %}<td>{{ item.title }}</td>"
        "{% if forloop.counter|divisibleby:2 or forloop.last %}</tr>{% endif %}"
        "{% endfor %}"
    )
    assert translate(source, "mailchimp", SHOP, slots=3) == (
        "*|IF:P1_TITLE|*<tr>*|IF:P1_TITLE|*<td>*|P1_TITLE|*</td>*|END:IF|*"
        "*|IF:P2_TITLE|*<td>*|P2_TITLE|*</td>*|END:IF|*</tr>*|END:IF|*"
        "*|IF:P3_TITLE|*<tr>*|IF:P3_TITLE|*<td>*|P3_TITLE|*</td>*|END:IF|*"
        "</tr>*|END:IF|*"
    )


def test_conditions_on_setup_values_are_decided_at_setup() -> None:
    source = "{% if shop.logo_url %}<img>{% else %}{{ shop.name }}{% endif %}"
    assert translate(source, "klaviyo", SHOP) == "Demo &amp; Co"
    negated = "{% if not offer %}none{% else %}{{ offer.code }}{% endif %}"
    assert translate(negated, "mailchimp", SHOP) == (
        "*|IFNOT:OFFERCODE|*none*|ELSE:|**|OFFERCODE|**|END:IF|*"
    )
    assert translate(negated, "klaviyo", SHOP) == (
        "{% if not event.offer %}none{% else %}{{ event.offer.code }}{% endif %}"
    )


@pytest.mark.parametrize(
    ("source", "what"),
    [
        ("{{ items | length }}", "the filter 'length'"),
        ("{{ recipient.phone }}", "the value recipient.phone"),
        ("{% for x in shop.links %}{% endfor %}", "a loop over anything but items"),
        ("{% set a = 1 %}", "a Assign statement"),
        ("{% if a or b %}{% endif %}", "the expression Or"),
    ],
)
def test_what_an_esp_cannot_express_fails_loudly(source: str, what: str) -> None:
    with pytest.raises(TranslationError, match=re.escape(what)) as raised:
        translate(source, "mailchimp", SHOP)
    assert str(raised.value).startswith("mailchimp templates cannot express")
    assert "(line 1 of the compiled HTML)" in str(raised.value)
