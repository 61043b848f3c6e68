"""`nudge esp setup`: put nudge's templates and fields into Klaviyo or Mailchimp.

A template compiled for an ESP is HTML whose per-customer parts are still
Jinja2 tags (``{{ item.title }}``, ``{% for row in items | batch(2) %}``). The ESP
renders those parts itself, from the event properties (Klaviyo) or the merge
fields (Mailchimp) that the adapters send, so the tags are translated into the
ESP's own language by walking Jinja's syntax tree: anything the translation does
not know fails loudly, naming the ESP, the construct and the line.
"""

from __future__ import annotations

import html as html_escape
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from jinja2 import nodes
from mjml import mjml2html

from nudge.delivery.base import DeliveryError
from nudge.delivery.esp.klaviyo import METRIC, KlaviyoAdapter
from nudge.delivery.esp.mailchimp import ITEM_FIELDS, SLOTS, MailchimpAdapter
from nudge.render.model import ShopInfo
from nudge.render.templates import HTML_ENV, Renderer, lost_tags

Target = Literal["klaviyo", "mailchimp"]

_ITEM_TAGS = {attribute: suffix for suffix, attribute, _ in ITEM_FIELDS}
_OFFER_TAGS = {"code": "OFFERCODE", "description": "OFFERDESC"}
_OFFER_TAGS["expires_display"] = "OFFEREXP"
_EVENT_FIELDS = ("subject", "preheader", "send_id", "campaign", "variant", "run_id")
_PASS_FILTERS = frozenset({"e", "escape", "safe", "track"})


class TranslationError(DeliveryError, ValueError):
    """A template uses something the ESP's template language cannot express."""

    def __init__(self, esp: str, what: str, line: int | None) -> None:
        where = f" (line {line} of the compiled HTML)" if line else ""
        super().__init__(f"{esp} templates cannot express {what}{where}")
        self.esp = esp
        self.line = line


@dataclass(frozen=True)
class _Literal:
    """A value known at setup time (the shop's details)."""

    value: Any


@dataclass(frozen=True)
class _Raw:
    """Text emitted as it is (an ESP's own tag)."""

    text: str


@dataclass
class SetupReport:
    """What a setup did and what a person still has to do by hand."""

    esp: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)


# ----------------------------------------------------------------- translation


class _Translator:
    """Turn the fill-stage Jinja of a compiled template into an ESP's tags."""

    def __init__(self, esp: Target, shop: ShopInfo, slots: int) -> None:
        self.esp = esp
        self.shop = shop
        self.slots = slots

    def translate(self, source: str) -> str:
        tree = HTML_ENV.parse(source)
        return "".join(self._block(tree.body, {}))

    def _fail(self, what: str, node: nodes.Node) -> TranslationError:
        return TranslationError(self.esp, what, getattr(node, "lineno", None))

    # -------------------------------------------------------------- statements

    def _block(
        self, body: Sequence[nodes.Node], scope: dict[str, Any]
    ) -> Iterator[str]:
        for node in body:
            if isinstance(node, nodes.Output):
                for child in node.nodes:
                    yield self._output(child, scope)
            elif isinstance(node, nodes.If):
                yield from self._if(node, scope)
            elif isinstance(node, nodes.For):
                yield from self._for(node, scope)
            else:
                raise self._fail(f"a {type(node).__name__} statement", node)

    def _output(self, node: nodes.Node, scope: dict[str, Any]) -> str:
        if isinstance(node, nodes.TemplateData):
            return str(node.data)
        value = self._value(node, scope)
        if isinstance(value, _Literal):
            return html_escape.escape(str(value.value or ""))
        if isinstance(value, _Raw):
            return value.text
        if self.esp == "klaviyo":
            return f"{{{{ {value} }}}}"
        return f"*|{value}|*"

    def _if(self, node: nodes.If, scope: dict[str, Any]) -> Iterator[str]:
        branches = [(node.test, node.body), *((e.test, e.body) for e in node.elif_)]
        opened = 0
        for test, body in branches:
            condition = self._test(test, scope)
            if isinstance(condition, bool):
                # Known at setup time: keep the branch or drop it.
                if condition:
                    yield from self._block(body, scope)
                    yield from self._close(opened)
                    return
                continue
            yield self._open(condition, first=opened == 0)
            opened += 1
            yield from self._block(body, scope)
        if node.else_:
            if opened:
                yield "{% else %}" if self.esp == "klaviyo" else "*|ELSE:|*"
            yield from self._block(node.else_, scope)
        yield from self._close(opened)

    def _open(self, condition: str, *, first: bool) -> str:
        if self.esp == "klaviyo":
            return f"{{% {'if' if first else 'elif'} {condition} %}}"
        if condition.startswith("!"):
            if not first:
                raise TranslationError(self.esp, "an elif on a negation", None)
            return f"*|IFNOT:{condition[1:]}|*"
        return f"*|{'IF' if first else 'ELSEIF'}:{condition}|*"

    def _close(self, opened: int) -> Iterator[str]:
        if opened:
            yield "{% endif %}" if self.esp == "klaviyo" else "*|END:IF|*"

    def _for(self, node: nodes.For, scope: dict[str, Any]) -> Iterator[str]:
        if node.else_ or node.test is not None or node.recursive:
            raise self._fail("a for loop with else, a filter or recursion", node)
        if not isinstance(node.target, nodes.Name):
            raise self._fail("a for loop over several names", node)
        source: nodes.Node | None = node.iter
        size = 0
        if isinstance(source, nodes.Filter) and source.name == "batch":
            width = source.args[0] if source.args else None
            if not isinstance(width, nodes.Const):
                raise self._fail("a batch filter without a fixed size", node)
            source, size = source.node, int(width.value)
        if _path(source) != ("items",):
            raise self._fail("a loop over anything but items", node)
        if size:
            yield from self._rows(node, size, scope)
        else:
            yield from self._items(node.target.name, node.body, scope)

    def _items(
        self, name: str, body: Sequence[nodes.Node], scope: dict[str, Any]
    ) -> Iterator[str]:
        if self.esp == "klaviyo":
            yield f"{{% for {name} in event.items %}}"
            yield from self._block(body, {**scope, name: ("loop", name)})
            yield "{% endfor %}"
            return
        for slot in range(1, self.slots + 1):
            yield f"*|IF:P{slot}_TITLE|*"
            yield from self._block(body, {**scope, name: ("slot", slot)})
            yield "*|END:IF|*"

    def _rows(self, node: nodes.For, size: int, scope: dict[str, Any]) -> Iterator[str]:
        # `for row in items | batch(n)` around `for item in row`: the part
        # before the inner loop opens a row, the part after closes it.
        assert isinstance(node.target, nodes.Name)
        row = node.target.name
        inner = [
            n for n in node.body if isinstance(n, nodes.For) and _path(n.iter) == (row,)
        ]
        if len(inner) != 1 or not isinstance(inner[0].target, nodes.Name):
            raise self._fail("a batch loop without one loop over its rows", node)
        at = node.body.index(inner[0])
        before, after = node.body[:at], node.body[at + 1 :]
        name = inner[0].target.name

        if self.esp == "klaviyo":
            item_scope = {**scope, name: ("loop", name)}
            yield f"{{% for {name} in event.items %}}"
            yield f"{{% if forloop.counter0|divisibleby:{size} %}}"
            yield from self._block(before, scope)
            yield "{% endif %}"
            yield from self._block(inner[0].body, item_scope)
            yield f"{{% if forloop.counter|divisibleby:{size} or forloop.last %}}"
            yield from self._block(after, scope)
            yield "{% endif %}{% endfor %}"
            return
        for first in range(1, self.slots + 1, size):
            yield f"*|IF:P{first}_TITLE|*"
            yield from self._block(before, scope)
            for slot in range(first, min(first + size, self.slots + 1)):
                yield f"*|IF:P{slot}_TITLE|*"
                yield from self._block(inner[0].body, {**scope, name: ("slot", slot)})
                yield "*|END:IF|*"
            yield from self._block(after, scope)
            yield "*|END:IF|*"

    # -------------------------------------------------------------- expressions

    def _value(self, node: nodes.Node, scope: dict[str, Any]) -> Any:
        if isinstance(node, nodes.Filter):
            if node.name in _PASS_FILTERS and node.node is not None:
                return self._value(node.node, scope)
            if node.name == "default" and node.node is not None:
                inner = self._value(node.node, scope)
                if self.esp == "klaviyo" and isinstance(inner, str) and node.args:
                    fallback = str(getattr(node.args[0], "value", ""))
                    return f"{inner}|default:'{fallback}'"
                return inner
            raise self._fail(f"the filter {node.name!r}", node)
        path = _path(node)
        if path is None:
            raise self._fail(f"the expression {type(node).__name__}", node)
        return self._resolve(path, scope, node)

    def _resolve(
        self, path: tuple[str, ...], scope: dict[str, Any], node: nodes.Node
    ) -> Any:
        head, rest = path[0], path[1:]
        bound = scope.get(head)
        if bound is not None:
            kind, value = bound
            if kind == "loop":
                return ".".join(path)
            if len(rest) != 1 or rest[0] not in _ITEM_TAGS:
                raise self._fail(f"the product field {'.'.join(path)}", node)
            return f"P{value}_{_ITEM_TAGS[rest[0]]}"
        if head == "shop" and len(rest) == 1:
            return _Literal(getattr(self.shop, rest[0], None))
        if path == ("unsubscribe_url",):
            return _Raw(
                "{% unsubscribe_url %}" if self.esp == "klaviyo" else "*|UNSUB|*"
            )
        if self.esp == "klaviyo":
            return self._klaviyo(path, node)
        return self._mailchimp(path, node)

    def _klaviyo(self, path: tuple[str, ...], node: nodes.Node) -> str:
        head, rest = path[0], path[1:]
        if head in _EVENT_FIELDS and not rest:
            return f"event.{head}"
        if head == "offer":
            return ".".join(("event", *path))
        if head == "items" and not rest:
            return "event.items"
        if head == "recipient" and rest in (("first_name",), ("email",)):
            return f"person.{rest[0]}"
        raise self._fail(f"the value {'.'.join(path)}", node)

    def _mailchimp(self, path: tuple[str, ...], node: nodes.Node) -> str:
        head, rest = path[0], path[1:]
        if head == "offer" and not rest:
            return "OFFERCODE"
        if head == "offer" and len(rest) == 1 and rest[0] in _OFFER_TAGS:
            return _OFFER_TAGS[rest[0]]
        simple = {
            ("subject",): "SUBJECT",
            ("preheader",): "PREHEADER",
            ("send_id",): "SENDID",
            ("recipient", "first_name"): "FNAME",
            ("recipient", "email"): "EMAIL",
        }
        if path in simple:
            return simple[path]
        raise self._fail(f"the value {'.'.join(path)}", node)

    def _test(self, node: nodes.Node, scope: dict[str, Any]) -> str | bool:
        if isinstance(node, nodes.Not):
            inner = self._test(node.node, scope)
            if isinstance(inner, bool):
                return not inner
            if self.esp == "klaviyo":
                return f"not {inner}"
            if inner.startswith("!"):
                raise self._fail("a double negation", node)
            return "!" + inner
        if isinstance(node, nodes.And | nodes.Or) and self.esp == "klaviyo":
            left, right = self._test(node.left, scope), self._test(node.right, scope)
            word = "and" if isinstance(node, nodes.And) else "or"
            if isinstance(left, bool) or isinstance(right, bool):
                raise self._fail(f"an {word} on a value known at setup", node)
            return f"{left} {word} {right}"
        value = self._value(node, scope)
        if isinstance(value, _Literal):
            return bool(value.value)
        if isinstance(value, _Raw):
            return True
        return str(value)


def _path(node: nodes.Node | None) -> tuple[str, ...] | None:
    if isinstance(node, nodes.Name):
        return (node.name,)
    if isinstance(node, nodes.Getattr):
        head = _path(node.node)
        return None if head is None else (*head, node.attr)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        head = _path(node.node)
        return None if head is None else (*head, str(node.arg.value))
    return None


def compiled_html(renderer: Renderer, template: str, variant: str, esp: Target) -> str:
    """Return a template's HTML for an ESP, its per-customer tags still Jinja."""
    compiled = renderer.compile(template, variant, esp, per_customer_mjml=True)
    html = str(mjml2html(compiled.mjml, disable_comments=True))
    lost = lost_tags(compiled.mjml, html)
    if lost is not None:
        raise TranslationError(esp, f"template {template}: tags {lost}", None)
    return html


def translate(html: str, esp: Target, shop: ShopInfo, *, slots: int = SLOTS) -> str:
    """Return compiled template HTML with its Jinja turned into the ESP's tags."""
    return _Translator(esp, shop, slots).translate(html)


def esp_html(
    renderer: Renderer,
    template: str,
    variant: str,
    esp: Target,
    shop: ShopInfo,
    *,
    slots: int = SLOTS,
) -> str:
    """Return a template's variant as HTML in the ESP's own template language."""
    return translate(
        compiled_html(renderer, template, variant, esp), esp, shop, slots=slots
    )


# ----------------------------------------------------------------- the setups


def template_name(template: str, variant: str) -> str:
    """Return the name nudge gives a template in an ESP."""
    return f"nudge {template} {variant}"


def setup_klaviyo(
    adapter: KlaviyoAdapter,
    renderer: Renderer,
    shop: ShopInfo,
    templates: Sequence[tuple[str, str]],
    *,
    metric: str = METRIC,
) -> SetupReport:
    """Create or update each (template, variant) in Klaviyo; say how to wire flows."""
    report = SetupReport("klaviyo")
    for template, variant in templates:
        name = template_name(template, variant)
        html = esp_html(renderer, template, variant, "klaviyo", shop)
        template_id, created = adapter.save_template(name, html)
        (report.created if created else report.updated).append(
            f"{name} ({template_id})"
        )

    known = adapter.metric_exists(metric)
    names = ", ".join(f'"{template_name(t, v)}"' for t, v in templates)
    report.steps = [
        "Klaviyo's API cannot attach a template to a flow's e-mail, so in Klaviyo:",
        "1. Flows → Create flow → Build your own; name it after the campaign.",
        f'2. Trigger: Metric → "{metric}"'
        + ("" if known else " (it appears after nudge sends its first event)."),
        '3. Add a trigger filter "variant equals <variant>" when a campaign has '
        "several variants, one flow (or split) per variant.",
        f"4. Add an Email action; Select template → one of {names}.",
        "5. Subject line: {{ event.subject }}; preview text: {{ event.preheader }}.",
        '6. Turn off "Skip recently e-mailed profiles" (nudge caps frequency itself) '
        "and set the e-mail and the flow Live.",
    ]
    return report


def setup_mailchimp(adapter: MailchimpAdapter) -> SetupReport:
    """Create the merge fields nudge's Mailchimp templates read."""
    report = SetupReport("mailchimp")
    created, present = adapter.ensure_merge_fields()
    report.created.extend(created)
    report.unchanged.extend(present)
    report.steps = [
        f"Audience {adapter.list_id} has the merge fields nudge fills for "
        f"{adapter.slots} products a member; campaigns are created per run.",
    ]
    return report
