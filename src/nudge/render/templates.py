"""Load e-mail templates, compile them once per variant and ESP, fill per customer.

Each template file is read by two Jinja stages. The compile stage, with its own
delimiters (``[% %]``, ``[[ ]]``, ``[# #]``), expands layouts, partials and
choices by variant or ESP into MJML that still holds the per-customer tags
(``{{ }}``, ``{% %}``); mjml2html turns that into HTML once, and a sandboxed fill
stage renders the HTML for each customer. A template whose per-customer tags do
not survive the MJML compile is filled as MJML and compiled for each customer
instead, and a log line says so.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    pass_context,
)
from jinja2 import TemplateError as JinjaError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import concat
from markupsafe import Markup, escape
from mjml import mjml2html
from pydantic import SecretStr

from nudge.errors import NudgeError
from nudge.logging import get_logger
from nudge.render.links import (
    ESP_UNSUBSCRIBE_TAGS,
    ONE_CLICK,
    Links,
    Secret,
    absolute,
    tracking_query,
    unsubscribe_for,
)
from nudge.render.mime import date_header, message_id
from nudge.render.model import Esp, Offer, RenderedMessage, RenderRequest
from nudge.settings import Settings

log = get_logger(__name__)

SUBJECT = "subject.txt.j2"
BODY_MJML = "body.mjml.j2"
BODY_TEXT = "body.txt.j2"
PARTS = (SUBJECT, BODY_MJML, BODY_TEXT)
SUBJECT_LIMIT = 200
MIME_ESPS = frozenset({"outbox", "smtp"})

# Per-customer tags, compared before and after the MJML compile.
TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
# MRML parses sizes itself and silently drops a tag inside them.
_SIZED = re.compile(r"\b(?:width|height)\s*=\s*\"[^\"]*\{[{%]")
_ANY_TAG = re.compile(
    r"\[%.*?%\]|\[\[.*?\]\]|\[#.*?#\]|\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S
)
_MARK = re.compile("\ue000" r"(\d+):(\d+)" "\ue001")
# What a template can raise while it is filled (a filter given the wrong type).
FILL_ERRORS = (JinjaError, TypeError, ValueError, LookupError, ArithmeticError)
_MJML_POSITION = re.compile(r"\s*at position (\d+):(\d+)")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
_SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$", "AUD": "A$", "CAD": "C$", "JPY": "¥"}

MJML_ELEMENTS = frozenset(
    {
        "mjml",
        "mj-head",
        "mj-body",
        "mj-attributes",
        "mj-all",
        "mj-class",
        "mj-breakpoint",
        "mj-font",
        "mj-html-attributes",
        "mj-html-attribute",
        "mj-selector",
        "mj-preview",
        "mj-style",
        "mj-title",
        "mj-accordion",
        "mj-accordion-element",
        "mj-accordion-title",
        "mj-accordion-text",
        "mj-button",
        "mj-carousel",
        "mj-carousel-image",
        "mj-column",
        "mj-divider",
        "mj-group",
        "mj-hero",
        "mj-image",
        "mj-include",
        "mj-navbar",
        "mj-navbar-link",
        "mj-raw",
        "mj-section",
        "mj-social",
        "mj-social-element",
        "mj-spacer",
        "mj-table",
        "mj-text",
        "mj-wrapper",
    }
)
_MJ_TAG = re.compile(r"<(/?)(mjml|mj-[a-z-]+)\b((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_BARE_LT = re.compile(r"<(?![A-Za-z/!?])")


class TemplateError(NudgeError, ValueError):
    """A template cannot be compiled or filled; names the file and line."""

    def __init__(
        self, message: str, *, file: Path | str | None = None, line: int | None = None
    ) -> None:
        where = f"{file}:{line}" if file is not None and line else file
        super().__init__(f"{where}: {message}" if where is not None else message)
        self.reason = message
        self.file = None if file is None else str(file)
        self.line = line


# ---------------------------------------------------------------- environments


def _guard(value: Any) -> Any:
    # Customer data must never read as an ESP merge tag ({{ }}, {% %}, *|X|*);
    # entities show the same characters without giving the ESP anything to run.
    if type(value) is str and ("{" in value or "*|" in value):
        safe = str(escape(value)).replace("{", "&#123;").replace("*|", "*&#124;")
        return Markup(safe)
    return value


@pass_context
def _track(context: Context, url: str) -> str:
    links: Links = context["_links"]
    return links(str(url))


class _FillEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with a quick path for the plain dicts nudge fills with."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Read a plain dict's key directly; anything else goes through the sandbox."""
        # A dict key is data, not an attribute, so the sandbox has nothing to
        # guard; skipping its failed attribute lookup halves the fill time.
        if type(obj) is dict and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def _fill_env(*, html: bool) -> ImmutableSandboxedEnvironment:
    env = _FillEnvironment(
        autoescape=html,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_guard if html else None,
    )
    env.filters["track"] = _track
    return env


HTML_ENV = _fill_env(html=True)
TEXT_ENV = _fill_env(html=False)
_GLOBALS = dict(HTML_ENV.globals)


class _Loader(FileSystemLoader):
    """Read template files; when tracing, mark where every line came from."""

    def __init__(self, root: Path, *, trace: bool = False) -> None:
        super().__init__(str(root), encoding="utf-8")
        self.trace = trace
        self.files: list[Path] = []

    def get_source(
        self, environment: Any, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        """Return a file's source, with line marks when tracing."""
        source, filename, uptodate = super().get_source(environment, template)
        if self.trace:
            self.files.append(Path(filename))
            source = _mark_lines(source, len(self.files) - 1)
        return source, filename, uptodate


def _compile_env(loader: _Loader) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=loader,
        block_start_string="[%",
        block_end_string="%]",
        variable_start_string="[[",
        variable_end_string="]]",
        comment_start_string="[#",
        comment_end_string="#]",
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )


# ------------------------------------------------------------ source tracing


def _mark_lines(source: str, file_index: int) -> str:
    """Prefix each line with an invisible mark of its origin, outside any tag."""
    spans = [(m.start(), m.end()) for m in _ANY_TAG.finditer(source)]
    starts = [s for s, _ in spans]
    out: list[str] = []
    offset = 0
    for number, line in enumerate(source.splitlines(keepends=True), start=1):
        i = bisect.bisect_right(starts, offset) - 1
        if i < 0 or spans[i][1] <= offset:
            out.append(f"\ue000{file_index}:{number}\ue001")
        out.append(line)
        offset += len(line)
    return "".join(out)


@dataclass(frozen=True)
class Traced:
    """An expanded template with the file and line each part came from."""

    text: str
    files: list[Path]
    offsets: list[int] = field(default_factory=list)
    origins: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def parse(cls, marked: str, files: list[Path]) -> Traced:
        """Strip the marks from an expansion, keeping where each one stood."""
        parts: list[str] = []
        offsets: list[int] = []
        origins: list[tuple[int, int]] = []
        size = last = 0
        for m in _MARK.finditer(marked):
            parts.append(marked[last : m.start()])
            size += m.start() - last
            offsets.append(size)
            origins.append((int(m.group(1)), int(m.group(2))))
            last = m.end()
        parts.append(marked[last:])
        return cls("".join(parts), files, offsets, origins)

    def at(self, offset: int) -> tuple[Path | None, int | None]:
        """Return the file and line that produced the text at an offset."""
        i = bisect.bisect_right(self.offsets, offset) - 1
        if i < 0:
            return (self.files[0] if self.files else None), None
        index, line = self.origins[i]
        return self.files[index], line

    def at_line(self, number: int) -> tuple[Path | None, int | None]:
        """Return the file and line that produced a line of the expansion."""
        start = 0
        for _ in range(number - 1):
            start = self.text.find("\n", start) + 1
            if start == 0:
                return self.at(len(self.text))
        end = self.text.find("\n", start)
        end = len(self.text) if end < 0 else end
        i = bisect.bisect_left(self.offsets, start)
        if i < len(self.offsets) and self.offsets[i] <= end:
            return self.at(self.offsets[i])
        return self.at(start)

    def error_at(self, offset: int, message: str) -> TemplateError:
        """Return an error located at an offset of the expansion."""
        file, line = self.at(offset)
        return TemplateError(message, file=file, line=line)

    def error_on_line(self, number: int | None, message: str) -> TemplateError:
        """Return an error located on a line of the expansion."""
        if number is None:
            return TemplateError(message, file=self.files[0] if self.files else None)
        file, line = self.at_line(number)
        return TemplateError(message, file=file, line=line)


def _template_frames(err: BaseException) -> list[tuple[str, int]]:
    frames: list[tuple[str, int]] = []
    tb = err.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if name == "<template>" or name.endswith(".j2"):
            frames.append((name, tb.tb_lineno))
        tb = tb.tb_next
    return frames


def describe_error(err: BaseException) -> str:
    """Say in one line what went wrong in a template, without file or line."""
    message = getattr(err, "message", None) or str(err) or type(err).__name__
    if isinstance(err, UndefinedError):
        return f"unknown variable or attribute: {message}"
    if isinstance(err, TemplateNotFound):
        return f"template not found: {err.name}"
    if isinstance(err, TemplateSyntaxError):
        return f"syntax error: {message}"
    return message


def _expand(
    env: ImmutableSandboxedEnvironment, name: str, context: Mapping[str, str]
) -> str:
    """Run the compile stage over one template file."""
    try:
        return env.get_template(name).render(context)
    except TemplateSyntaxError as err:
        raise TemplateError(
            describe_error(err), file=err.filename, line=err.lineno
        ) from err
    except JinjaError as err:
        frames = [f for f in _template_frames(err) if f[0] != "<template>"]
        file, line = frames[-1] if frames else (name, None)
        raise TemplateError(describe_error(err), file=file, line=line) from err


def trace(root: Path, name: str, context: Mapping[str, str]) -> Traced:
    """Expand a template file with the origin of every line kept."""
    loader = _Loader(root, trace=True)
    marked = _expand(_compile_env(loader), name, context)
    return Traced.parse(marked, loader.files)


def blank_out(match: re.Match[str]) -> str:
    """Replace a match with spaces, so offsets (and source lines) stay put."""
    return " " * len(match.group())


def lint_mjml(text: str) -> tuple[int, str] | None:
    """Return the offset and text of the first unknown or unbalanced MJML tag."""
    masked = TAG.sub(blank_out, _COMMENT.sub(blank_out, text))
    bare = _BARE_LT.search(masked)
    if bare is not None:
        return bare.start(), "MJML: a bare '<' in text; write &lt;"
    start = masked.find("<mjml")
    if start < 0 or masked[:start].strip():
        return max(start, 0), "MJML: text before <mjml>, or no <mjml> at all"

    stack: list[tuple[str, int]] = []
    for m in _MJ_TAG.finditer(masked):
        closing, name, attrs = m.groups()
        if name not in MJML_ELEMENTS:
            return m.start(), f"MJML: unknown element <{name}>"
        if attrs.rstrip().endswith("/"):
            continue
        if not closing:
            stack.append((name, m.start()))
        elif stack and stack[-1][0] == name:
            stack.pop()
        elif any(open_name == name for open_name, _ in stack):
            open_name, at = stack[-1]
            return at, f"MJML: <{open_name}> is not closed before </{name}>"
        else:
            return m.start(), f"MJML: </{name}> closes nothing"
    if stack:
        name, at = stack[-1]
        return at, f"MJML: <{name}> is never closed"
    return None


def _mjml_error(err: ValueError, traced: Traced) -> TemplateError:
    message = str(err)
    found = _MJML_POSITION.search(message)
    text = "MJML: " + _MJML_POSITION.sub("", message)
    if found is None:
        return traced.error_on_line(None, text)
    # MRML counts bytes; Python counts characters.
    start = int(found.group(1))
    offset = len(traced.text.encode()[:start].decode(errors="ignore"))
    return traced.error_at(offset, text)


def diagnose(
    root: Path,
    template: str,
    part: str,
    compile_context: Mapping[str, str],
    fills: Sequence[Mapping[str, Any]],
) -> TemplateError | None:
    """Find the first problem in one part of a template, located in its source."""
    try:
        traced = trace(root, f"{template}/{part}", compile_context)
    except TemplateError as err:
        return err

    env = TEXT_ENV if part.endswith(".txt.j2") else HTML_ENV
    try:
        fill = env.from_string(traced.text)
    except TemplateSyntaxError as err:
        return traced.error_on_line(err.lineno, describe_error(err))

    if part == BODY_MJML:
        lint = lint_mjml(traced.text)
        if lint is not None:
            return traced.error_at(*lint)
        try:
            mjml2html(traced.text)
        except ValueError as err:
            return _mjml_error(err, traced)

    for context in fills:
        try:
            fill.render(context)
        except FILL_ERRORS as err:
            frames = _template_frames(err)
            line = frames[-1][1] if frames else None
            return traced.error_on_line(line, describe_error(err))
    return None


# ------------------------------------------------------------------- compile


def lost_tags(mjml_source: str, html: str) -> str | None:
    """Say why per-customer tags did not survive the MJML compile, if they did not."""
    if _SIZED.search(mjml_source):
        return "a per-customer tag sits in a width or height, which MRML drops"
    before, after = set(TAG.findall(mjml_source)), set(TAG.findall(html))
    if before - after:
        return "lost in the MJML compile: " + ", ".join(sorted(before - after)[:3])
    if after - before:
        return "changed by the MJML compile: " + ", ".join(sorted(after - before)[:3])
    return None


def _fill(template: Template, context: dict[str, Any]) -> str:
    """Render a fill-stage template over a context that already holds the globals."""
    # Template.render copies the context and merges the globals on every call,
    # a third of the fill time; a failure is rendered again the usual way so
    # that the error carries its template line.
    try:
        return concat(template.root_render_func(template.new_context(context, True)))
    except Exception:
        template.render(context)
        raise


@dataclass(frozen=True)
class CompiledTemplate:
    """One template compiled for one variant and ESP, ready to fill per customer."""

    name: str
    variant: str
    esp: str
    subject: Template
    body: Template
    text: Template
    mjml: str
    per_customer_mjml: bool
    note: str | None = None

    def fill_html(self, context: dict[str, Any]) -> str:
        """Render the HTML body for one customer."""
        filled = _fill(self.body, context)
        if self.per_customer_mjml:
            return str(mjml2html(filled, disable_comments=True))
        return filled


def template_names(root: Path) -> list[str]:
    """List the templates under a template root (folders not starting with _)."""
    return sorted(
        p.name
        for p in Path(root).iterdir()
        if p.is_dir() and not p.name.startswith("_") and (p / BODY_MJML).is_file()
    )


# ----------------------------------------------------------------- fill stage


def money(price: Decimal | None, currency: str) -> str:
    """Format a price for an e-mail, or return an empty string without one."""
    if price is None:
        return ""
    symbol = _SYMBOLS.get(currency.upper())
    return f"{symbol}{price:,.2f}" if symbol else f"{price:,.2f} {currency}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _tidy_text(text: str) -> str:
    # Plain string work: a regular expression here costs as much as the fill.
    text = "\n".join([line.rstrip() for line in text.split("\n")])
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.strip() + "\n"


def _offer_view(offer: Offer | None) -> dict[str, Any] | None:
    if offer is None:
        return None
    expires = offer.expires_at
    return {
        "code": offer.code,
        "description": offer.description,
        "expires_at": expires,
        "expires_display": f"{expires:%A} {expires.day} {expires:%B}"
        if expires
        else "",
    }


def fill_context(request: RenderRequest, unsubscribe: str) -> dict[str, Any]:
    """Return what the fill stage sees for one customer, every link tagged."""
    shop = request.shop
    links = Links(
        shop.url, tracking_query(request.campaign, request.variant, request.send_id)
    )
    items = [
        {
            "product_id": i.product_id,
            "title": i.title,
            "url": links(i.url),
            "image_url": absolute(i.image_url, shop.url) if i.image_url else None,
            "price": i.price,
            "price_display": money(i.price, i.currency),
            "currency": i.currency,
            "reason": i.reason,
            "reason_code": i.reason_code,
            "category": i.category,
        }
        for i in request.items
    ]
    return {
        **_GLOBALS,
        "send_id": request.send_id,
        "campaign": request.campaign,
        "variant": request.variant,
        "sent_at": request.sent_at,
        "recipient": {
            "customer_id": request.recipient.customer_id,
            "email": request.recipient.email,
            "first_name": request.recipient.first_name,
        },
        "items": items,
        "offer": _offer_view(request.offer),
        "shop": {
            "name": shop.name,
            "url": links(shop.url),
            "postal_address": shop.postal_address,
            "logo_url": absolute(shop.logo_url, shop.url) if shop.logo_url else None,
        },
        # An ESP's merge tag must reach the ESP untouched.
        "unsubscribe_url": Markup(unsubscribe)
        if unsubscribe in ESP_UNSUBSCRIBE_TAGS.values()
        else unsubscribe,
        "_links": links,
    }


class Renderer:
    """Render e-mails from a template folder, caching each compiled template.

    Template files are read once; make a new renderer to pick up edits.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        signing_secret: Secret | None = None,
        per_customer_mjml: bool = False,
    ) -> None:
        self.root = Path(root)
        self.signing_secret = signing_secret
        self.per_customer_mjml = per_customer_mjml
        self._env = _compile_env(_Loader(self.root))
        self._compiled: dict[tuple[str, str, str, bool], CompiledTemplate] = {}
        self._snippets: dict[str, Template] = {}

    @classmethod
    def from_settings(cls, settings: Settings, root: Path | None = None) -> Renderer:
        """Return a renderer for the project's `email_templates` folder."""
        secret: SecretStr | None = settings.signing_secret
        folder = root if root is not None else settings.path(Path("email_templates"))
        return cls(folder, signing_secret=secret)

    def compile(
        self,
        template: str,
        variant: str = "a",
        esp: Esp = "outbox",
        *,
        per_customer_mjml: bool | None = None,
    ) -> CompiledTemplate:
        """Return the template compiled for a variant and ESP, from cache if done.

        ``per_customer_mjml`` (default: the renderer's setting) skips the
        compile-once path and compiles MJML for every customer.
        """
        if per_customer_mjml is None:
            per_customer_mjml = self.per_customer_mjml
        key = (template, variant, esp, per_customer_mjml)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compile(template, variant, esp, per_customer_mjml)
            self._compiled[key] = compiled
        return compiled

    def _compile(
        self, template: str, variant: str, esp: Esp, forced: bool
    ) -> CompiledTemplate:
        folder = self.root / template
        if not _NAME.match(template) or not folder.is_dir():
            raise TemplateError(f"no template named {template!r}", file=folder)
        for part in PARTS:
            if not (folder / part).is_file():
                raise TemplateError("file is missing", file=folder / part)

        context = {"template": template, "variant": variant, "esp": esp}
        try:
            sources = {p: _expand(self._env, f"{template}/{p}", context) for p in PARTS}
            mjml = sources[BODY_MJML]
            html = "" if forced else str(mjml2html(mjml, disable_comments=True))
            note = (
                "per-customer MJML was asked for" if forced else lost_tags(mjml, html)
            )
            compiled = CompiledTemplate(
                name=template,
                variant=variant,
                esp=esp,
                subject=TEXT_ENV.from_string(sources[SUBJECT]),
                body=HTML_ENV.from_string(mjml if note else html),
                text=TEXT_ENV.from_string(sources[BODY_TEXT]),
                mjml=mjml,
                per_customer_mjml=note is not None,
                note=note,
            )
        except (JinjaError, ValueError) as err:
            if isinstance(err, TemplateError):
                raise
            raise self._locate(template, context, []) or TemplateError(
                str(err), file=folder / BODY_MJML
            ) from err

        if note and not forced:
            log.warning(
                "template filled as mjml per customer",
                template=template,
                variant=variant,
                esp=esp,
                reason=note,
            )
        return compiled

    def _locate(
        self,
        template: str,
        context: Mapping[str, str],
        fills: Sequence[Mapping[str, Any]],
    ) -> TemplateError | None:
        for part in PARTS:
            found = diagnose(self.root, template, part, context, fills)
            if found is not None:
                return found
        return None

    def _snippet(self, source: str) -> Template:
        template = self._snippets.get(source)
        if template is None:
            template = self._snippets[source] = TEXT_ENV.from_string(source)
        return template

    def render(self, request: RenderRequest) -> RenderedMessage:
        """Render one customer's e-mail; raise rather than return part of one."""
        compiled = self.compile(request.template, request.variant, request.esp)
        context = self._context(request, compiled)
        try:
            html = compiled.fill_html(context)
            text = _tidy_text(_fill(compiled.text, context))
        except FILL_ERRORS as err:
            raise self._explain(request, context, "body", err) from err

        unsubscribe = context["unsubscribe_url"]
        return RenderedMessage(
            send_id=request.send_id,
            subject=context["subject"],
            preheader=context["preheader"],
            html=html,
            text=text,
            unsubscribe_url=str(unsubscribe),
            headers=_headers(request, unsubscribe),
        )

    def fill_mjml(self, request: RenderRequest) -> str:
        """Return one customer's MJML as it stands before the MJML compile."""
        compiled = self.compile(
            request.template, request.variant, request.esp, per_customer_mjml=True
        )
        context = self._context(request, compiled)
        try:
            return _fill(compiled.body, context)
        except FILL_ERRORS as err:
            raise self._explain(request, context, "body", err) from err

    def _context(
        self, request: RenderRequest, compiled: CompiledTemplate
    ) -> dict[str, Any]:
        """Return the fill context with the subject and preheader rendered."""
        unsubscribe = unsubscribe_for(
            request.esp, request.shop.url, request.send_id, self.signing_secret
        )
        context = fill_context(request, unsubscribe)

        stage = "subject"
        try:
            subject_template = (
                self._snippet(request.subject) if request.subject else compiled.subject
            )
            subject = context["subject"] = _one_line(_fill(subject_template, context))
            stage = "preheader"
            context["preheader"] = (
                _one_line(_fill(self._snippet(request.preheader), context))
                if request.preheader
                else ""
            )
        except FILL_ERRORS as err:
            raise self._explain(request, context, stage, err) from err

        # A subject this long is a mistake in the template or the campaign.
        if len(subject) > SUBJECT_LIMIT:
            raise TemplateError(
                f"subject is {len(subject)} characters once rendered "
                f"(at most {SUBJECT_LIMIT})",
                file=self._snippet_file(request, "subject"),
                line=1,
            )
        return context

    def _snippet_file(self, request: RenderRequest, label: str) -> str:
        if label == "subject" and not request.subject:
            return str(self.root / request.template / SUBJECT)
        return f"campaign {request.campaign} variant {request.variant} {label}"

    def _explain(
        self,
        request: RenderRequest,
        context: Mapping[str, Any],
        stage: str,
        err: Exception,
    ) -> TemplateError:
        if stage != "body":
            return TemplateError(
                describe_error(err), file=self._snippet_file(request, stage), line=1
            )
        compile_context = {
            "template": request.template,
            "variant": request.variant,
            "esp": request.esp,
        }
        found = self._locate(request.template, compile_context, [context])
        return found or TemplateError(
            describe_error(err), file=self.root / request.template / BODY_MJML
        )


def _headers(request: RenderRequest, unsubscribe: str) -> dict[str, str]:
    # ESPs add their own unsubscribe and identity headers; only the paths where
    # nudge builds the MIME message need them here.
    if request.esp not in MIME_ESPS:
        return {}
    domain = urlsplit(request.shop.url).hostname or "nudge"
    return {
        "Message-ID": message_id(request.send_id, domain),
        "Date": date_header(request.sent_at),
        "List-Unsubscribe": f"<{unsubscribe}>",
        "List-Unsubscribe-Post": ONE_CLICK,
        "X-Nudge-Send-Id": request.send_id,
    }
