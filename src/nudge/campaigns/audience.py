"""Audiences: a small filter language over customer profiles.

A campaign's ``audience`` is one expression, checked when the campaign file is
validated and evaluated at once over every customer when a plan is made::

    stage in [at_risk, churned] and churn_band = high and clv >= 40
    orders >= 2 and affinity_categories has [Candles, Tea]
    days_until_next_order <= 7 or favourite_categories has Candles
    not (segment = champions) and country in [GB, IE]

Grammar, loosest binding first::

    expression := term ("or" term)*
    term       := factor ("and" factor)*
    factor     := "not" factor | "(" expression ")" | condition
    condition  := FIELD | FIELD operator value
    operator   := "=" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in" | "has"
    value      := number | word | 'quoted text' | "quoted text" | true | false
                | "[" value ("," value)* "]"

Fields (``FIELDS`` holds the same list):

============================  ======  ==========================================
field                         kind    meaning
============================  ======  ==========================================
stage                         text    lifecycle stage: new, active, reactivated,
                                      at_risk, churned; prospect without a purchase
segment                       text    RFM segment (champions, loyal, …); none
                                      without a purchase
churn_band                    text    low, medium, high; none without a purchase
churn_risk                    number  1 - P(alive), 0 to 1
p_alive                       number  probability the customer is still active
clv                           number  expected value of the next 12 months
orders                        number  orders placed (0 without a purchase)
purchase_days                 number  days with a purchase (RFM frequency)
total_spent                   number  spend over all purchases
avg_order_value               number  average purchase-day value
days_since_last_order         number  days from the last purchase to the plan
days_since_first_order        number  days from the first purchase to the plan
days_until_next_order         number  days to the expected next order (negative:
                                      overdue; missing when none is expected)
country                       text    the customer's country as imported
consent                       yes/no  marketing consent given and not withdrawn
favourite_categories          list    categories the customer named (preference
                                      centre)
max_emails_per_week           number  the customer's own e-mail limit
affinity_categories           list    the customer's top categories by purchases,
                                      carts and views
affinity_brands               list    top brands, likewise
affinity_price_bands          list    top price bands: budget, mid, premium
top_category                  text    the single strongest category
============================  ======  ==========================================

Operators by kind: numbers take ``= != < <= > >= in``; text takes ``= != in``
and ``not in``; yes/no fields take ``= true``, ``= false`` or stand alone
(``consent``); lists take ``has`` with one value or a list, true when the
customer's list holds any of them, or stand alone (true when not empty).
Words are case-sensitive values; quote a value with spaces or one that is a
keyword (``and or not in has true false``). A condition on a missing value is
false whatever the operator, so ``days_until_next_order != 3`` leaves out
customers with no expected order; ``not (…)`` takes them back in.

The planner enforces consent, unsubscribes and caps whatever the audience
says; filtering on ``consent`` only keeps such customers out of the counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from nudge.insight import profiles

Kind = Literal["number", "text", "flag", "list"]
Value = float | str | bool
BoolArray = npt.NDArray[np.bool_]

# The profile's own vocabularies, plus the words for customers without a purchase.
STAGES = (*profiles.STAGES, "prospect")
SEGMENTS = (*profiles.SEGMENTS, "none")
CHURN_BANDS = (*profiles.CHURN_BANDS, "none")
PRICE_BANDS = profiles.PRICE_BANDS
KEYWORDS = frozenset({"and", "or", "not", "in", "has", "true", "false"})
# Separators of an imported favourite_categories cell.
_LIST_SPLIT = re.compile(r"\s*[|;,]\s*")


@dataclass(frozen=True)
class Field:
    """One field an audience can filter on."""

    name: str
    kind: Kind
    choices: tuple[str, ...] | None = None


FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("stage", "text", STAGES),
        Field("segment", "text", SEGMENTS),
        Field("churn_band", "text", CHURN_BANDS),
        Field("churn_risk", "number"),
        Field("p_alive", "number"),
        Field("clv", "number"),
        Field("orders", "number"),
        Field("purchase_days", "number"),
        Field("total_spent", "number"),
        Field("avg_order_value", "number"),
        Field("days_since_last_order", "number"),
        Field("days_since_first_order", "number"),
        Field("days_until_next_order", "number"),
        Field("country", "text"),
        Field("consent", "flag"),
        Field("favourite_categories", "list"),
        Field("max_emails_per_week", "number"),
        Field("affinity_categories", "list"),
        Field("affinity_brands", "list"),
        Field("affinity_price_bands", "list", PRICE_BANDS),
        Field("top_category", "text"),
    )
}
OPERATORS: dict[Kind, tuple[str, ...]] = {
    "number": ("=", "!=", "<", "<=", ">", ">=", "in", "not in"),
    "text": ("=", "!=", "in", "not in"),
    "flag": ("=", "!="),
    "list": ("has",),
}


class AudienceError(ValueError):
    """An audience expression cannot be read; carries the column of the problem."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} (character {column} of the expression)")
        self.reason = message
        self.column = column


# ------------------------------------------------------------------ tokens


@dataclass(frozen=True)
class _Token:
    kind: Literal["number", "string", "word", "op", "punct", "end"]
    text: str
    column: int


_TOKEN = re.compile(
    r"""(?P<number>-?\d+(?:\.\d+)?(?![\w.]))
    |(?P<string>'[^']*'|"[^"]*")
    |(?P<op><=|>=|!=|==|=|<|>)
    |(?P<punct>[\[\](),])
    |(?P<word>[A-Za-z_][\w.&/-]*)""",
    re.VERBOSE,
)


def _tokens(text: str) -> Iterator[_Token]:
    """Split an expression into tokens with their 1-based columns."""
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        found = _TOKEN.match(text, position)
        if found is None:
            if text[position] in "'\"":
                raise AudienceError("quote is never closed", position + 1)
            raise AudienceError(
                f"unexpected character {text[position]!r}", position + 1
            )
        kind = found.lastgroup
        assert kind is not None
        yield _Token(kind, found.group(), position + 1)  # type: ignore[arg-type]
        position = found.end()
    yield _Token("end", "", len(text) + 1)


# ------------------------------------------------------------------ syntax


@dataclass(frozen=True)
class Condition:
    """A field compared with a value (or standing alone: ``op`` is empty)."""

    field: Field
    op: str
    value: Value | tuple[Value, ...] | None

    def evaluate(self, frame: pd.DataFrame) -> BoolArray:
        """Return where the condition holds over an audience frame."""
        column = frame[self.field.name]
        kind = self.field.kind
        if kind == "number":
            return _numbers(column.to_numpy(np.float64), self.op, self.value)
        if kind == "flag":
            truth = column.fillna(False).to_numpy(bool)
            wanted = True if self.value is None else bool(self.value)
            same: BoolArray = np.equal(truth, wanted)
            return same if self.op in ("", "=") else ~same
        if kind == "list":
            return _lists(column.to_numpy(object), self.value)
        return _texts(column, self.op, self.value)


@dataclass(frozen=True)
class Not:
    """The negation of an expression."""

    part: Node

    def evaluate(self, frame: pd.DataFrame) -> BoolArray:
        """Return where the inner expression does not hold."""
        return ~self.part.evaluate(frame)


@dataclass(frozen=True)
class AllOf:
    """Expressions joined by ``and``."""

    parts: tuple[Node, ...]

    def evaluate(self, frame: pd.DataFrame) -> BoolArray:
        """Return where every part holds."""
        result = self.parts[0].evaluate(frame)
        for part in self.parts[1:]:
            result = result & part.evaluate(frame)
        return result


@dataclass(frozen=True)
class AnyOf:
    """Expressions joined by ``or``."""

    parts: tuple[Node, ...]

    def evaluate(self, frame: pd.DataFrame) -> BoolArray:
        """Return where any part holds."""
        result = self.parts[0].evaluate(frame)
        for part in self.parts[1:]:
            result = result | part.evaluate(frame)
        return result


Node = Condition | Not | AllOf | AnyOf


class _Parser:
    """A recursive-descent parser over the tokens of one expression."""

    def __init__(self, text: str) -> None:
        self.tokens = list(_tokens(text))
        self.at = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.at]

    def keyword(self, *words: str) -> bool:
        token = self.token
        return token.kind == "word" and token.text.lower() in words

    def take(self) -> _Token:
        token = self.token
        self.at += 1
        return token

    def expression(self) -> Node:
        parts = [self.term()]
        while self.keyword("or"):
            self.take()
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def term(self) -> Node:
        parts = [self.factor()]
        while self.keyword("and"):
            self.take()
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def factor(self) -> Node:
        token = self.token
        if self.keyword("not"):
            self.take()
            return Not(self.factor())
        if token.kind == "punct" and token.text == "(":
            self.take()
            inner = self.expression()
            closing = self.take()
            if closing.text != ")":
                raise AudienceError(_expected("')'", closing), closing.column)
            return inner
        return self.condition()

    def condition(self) -> Condition:
        token = self.take()
        if token.kind != "word" or token.text.lower() in KEYWORDS:
            raise AudienceError(_expected("a field name", token), token.column)
        field = FIELDS.get(token.text)
        if field is None:
            raise AudienceError(
                f"unknown field {token.text!r}; fields: {', '.join(FIELDS)}",
                token.column,
            )
        op_token = self.token
        op = self.operator()
        if op is None:
            if field.kind in ("flag", "list"):
                return Condition(field, "", None)
            raise AudienceError(
                f"{field.name} needs an operator: {', '.join(OPERATORS[field.kind])}",
                op_token.column,
            )
        if op not in OPERATORS[field.kind]:
            raise AudienceError(
                f"operator {op!r} does not apply to {field.kind} field "
                f"{field.name}; use {', '.join(OPERATORS[field.kind])}",
                op_token.column,
            )
        value_token = self.token
        value = self.value()
        return Condition(field, op, _checked(field, op, value, value_token))

    def operator(self) -> str | None:
        token = self.token
        if token.kind == "op":
            self.take()
            return "=" if token.text == "==" else token.text
        if self.keyword("in", "has"):
            return self.take().text.lower()
        if self.keyword("not") and self.tokens[self.at + 1].text.lower() == "in":
            self.take()
            self.take()
            return "not in"
        return None

    def value(self) -> Value | tuple[Value, ...]:
        token = self.token
        if token.kind == "punct" and token.text == "[":
            self.take()
            items = [self.scalar()]
            while self.token.text == ",":
                self.take()
                items.append(self.scalar())
            closing = self.take()
            if closing.text != "]":
                raise AudienceError(_expected("',' or ']'", closing), closing.column)
            return tuple(items)
        return self.scalar()

    def scalar(self) -> Value:
        token = self.take()
        if token.kind == "number":
            return float(token.text)
        if token.kind == "string":
            return token.text[1:-1]
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            return token.text.lower() == "true"
        if token.kind == "word" and token.text.lower() not in KEYWORDS:
            return token.text
        raise AudienceError(_expected("a value", token), token.column)


def _expected(what: str, token: _Token) -> str:
    found = "the end" if token.kind == "end" else repr(token.text)
    return f"expected {what}, found {found}"


def _checked(
    field: Field, op: str, value: Value | tuple[Value, ...], token: _Token
) -> Value | tuple[Value, ...]:
    """Check that a value suits its field and operator."""
    listed = isinstance(value, tuple)
    if op in ("in", "not in") and not listed:
        raise AudienceError(f"{op} needs a list such as [a, b]", token.column)
    if listed and op not in ("in", "not in", "has"):
        raise AudienceError(f"{op} compares with one value, not a list", token.column)
    values = value if isinstance(value, tuple) else (value,)
    for item in values:
        _check_one(field, item, token)
    return value


def _check_one(field: Field, item: Value, token: _Token) -> None:
    """Check one value against its field's kind and choices."""
    if field.kind == "number":
        if isinstance(item, bool) or not isinstance(item, float):
            raise AudienceError(f"{field.name} compares with numbers", token.column)
    elif field.kind == "flag":
        if not isinstance(item, bool):
            raise AudienceError(f"{field.name} is true or false", token.column)
    elif not isinstance(item, str):
        raise AudienceError(f"{field.name} compares with text", token.column)
    elif field.choices is not None and item not in field.choices:
        raise AudienceError(
            f"unknown {field.name} {item!r}; one of: {', '.join(field.choices)}",
            token.column,
        )


@dataclass(frozen=True)
class Audience:
    """A parsed audience expression, ready to evaluate over profiles."""

    text: str
    root: Node

    @classmethod
    def parse(cls, text: str) -> Audience:
        """Parse and check an expression; raise AudienceError naming the column."""
        if not text.strip():
            raise AudienceError("the audience is empty (use 'orders >= 0' for all)", 1)
        parser = _Parser(text)
        root = parser.expression()
        if parser.token.kind != "end":
            token = parser.token
            raise AudienceError(
                _expected("'and', 'or' or the end", token), token.column
            )
        return cls(text, root)

    @property
    def fields(self) -> set[str]:
        """Return the names of the fields the expression reads."""
        found: set[str] = set()
        stack: list[Node] = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, Condition):
                found.add(node.field.name)
            elif isinstance(node, Not):
                stack.append(node.part)
            else:
                stack.extend(node.parts)
        return found

    def matches(self, frame: pd.DataFrame) -> BoolArray:
        """Return, per row of an audience frame, whether the customer is in."""
        if frame.empty:
            return np.zeros(0, dtype=bool)
        return np.asarray(self.root.evaluate(frame), dtype=bool)


# ------------------------------------------------------------------ evaluation


def _numbers(values: npt.NDArray[np.float64], op: str, value: Any) -> BoolArray:
    """Compare a number column; missing values never match."""
    known = ~np.isnan(values)
    if op in ("in", "not in"):
        inside: BoolArray = np.isin(values, np.asarray(value, dtype=np.float64))
        return known & (inside if op == "in" else ~inside)
    target = float(value)
    compared = {
        "=": values == target,
        "!=": values != target,
        "<": values < target,
        "<=": values <= target,
        ">": values > target,
        ">=": values >= target,
    }[op]
    matched: BoolArray = known & compared
    return matched


def _texts(column: pd.Series, op: str, value: Any) -> BoolArray:
    """Compare a text column; missing values never match."""
    known: BoolArray = column.notna().to_numpy(bool)
    if op in ("in", "not in"):
        inside: BoolArray = column.isin(list(value)).to_numpy(bool)
        return known & (inside if op == "in" else ~inside)
    equal: BoolArray = (column == value).fillna(False).to_numpy(bool)
    return known & (equal if op == "=" else ~equal)


def _lists(cells: npt.NDArray[np.object_], value: Any) -> BoolArray:
    """Tell which list cells hold any of the values (or any value at all)."""
    if value is None:
        return np.fromiter((bool(c) for c in cells), dtype=bool, count=len(cells))
    wanted = frozenset(value if isinstance(value, tuple) else (value,))
    return np.fromiter(
        (bool(c) and not wanted.isdisjoint(c) for c in cells),
        dtype=bool,
        count=len(cells),
    )


# ------------------------------------------------------------------ the frame


def split_list(text: object) -> frozenset[str]:
    """Read an imported list cell such as "Candles|Tea" into a set of names."""
    if not isinstance(text, str) or not text.strip():
        return frozenset()
    return frozenset(p for p in _LIST_SPLIT.split(text.strip()) if p)


def audience_frame(
    profiles: pd.DataFrame, customers: pd.DataFrame, as_of: datetime
) -> pd.DataFrame:
    """Join profiles and customers into one row per customer with every field.

    ``profiles`` are insight profiles (customer_id, stage, segment, churn_band,
    churn_risk, p_alive, clv, orders, frequency, monetary, avg_order_value,
    first_order_at, last_order_at, expected_next_order_at, affinities);
    ``customers`` has id, external_id, country, timezone, accepts_marketing,
    unsubscribed_at, favourite_categories, max_emails_per_week and has_email.
    Customers without a profile are prospects. Day counts are taken from
    ``as_of`` (naive UTC), so a profile a day old still counts days right.
    """
    base = customers.rename(columns={"id": "customer_id"}).reset_index(drop=True)
    found = profiles.drop(
        columns=[c for c in ("external_id", "as_of") if c in profiles.columns]
    ).set_index("customer_id")
    ids = base["customer_id"].to_numpy()
    known = found.index.get_indexer(pd.Index(ids))
    has = known >= 0
    pick = np.maximum(known, 0)

    def column(name: str, missing: Any) -> npt.NDArray[Any]:
        if name not in found.columns or len(found) == 0:
            return np.full(len(base), missing, dtype=object)
        values = found[name].to_numpy(object)[pick]
        return np.where(has, values, missing)

    def days(name: str, sign: int) -> npt.NDArray[np.float64]:
        if name not in found.columns or len(found) == 0:
            return np.full(len(base), np.nan)
        moments = pd.to_datetime(found[name]).to_numpy("datetime64[ns]")[pick]
        delta = (np.datetime64(as_of, "ns") - moments) / np.timedelta64(1, "D")
        return np.where(has, sign * delta.astype(np.float64), np.nan)

    affinities = column("affinities", None)
    out = pd.DataFrame(
        {
            "customer_id": ids,
            "external_id": base["external_id"].astype(str).to_numpy(),
            "timezone": base["timezone"].to_numpy(object),
            "stage": column("stage", "prospect"),
            "segment": column("segment", "none"),
            "churn_band": column("churn_band", "none"),
            "churn_risk": _floats(column("churn_risk", np.nan)),
            "p_alive": _floats(column("p_alive", np.nan)),
            "clv": _floats(column("clv", 0.0)),
            "orders": _floats(column("orders", 0.0)),
            "purchase_days": _floats(column("frequency", 0.0)),
            "total_spent": _floats(column("monetary", 0.0)),
            "avg_order_value": _floats(column("avg_order_value", np.nan)),
            "days_since_last_order": np.floor(days("last_order_at", 1)),
            "days_since_first_order": np.floor(days("first_order_at", 1)),
            "days_until_next_order": np.round(days("expected_next_order_at", -1), 1),
            "country": base["country"].to_numpy(object),
        }
    )
    out["consent"] = base["accepts_marketing"].fillna(False).astype(bool).to_numpy()
    out["unsubscribed"] = base["unsubscribed_at"].notna().to_numpy()
    out["consent"] &= ~out["unsubscribed"].to_numpy()
    out["has_email"] = (
        base["has_email"].fillna(False).astype(bool).to_numpy()
        if "has_email" in base.columns
        else True
    )
    out["favourite_categories"] = pd.Series(
        [split_list(v) for v in base["favourite_categories"].tolist()], dtype=object
    )
    out["max_emails_per_week"] = pd.to_numeric(
        base["max_emails_per_week"], errors="coerce"
    ).to_numpy(np.float64)
    _add_affinities(out, affinities.tolist())
    return out


def _floats(values: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    return pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)


def _add_affinities(out: pd.DataFrame, affinities: Sequence[Any]) -> None:
    """Add the list fields and the top category taken from profile affinities."""
    empty: frozenset[str] = frozenset()
    lists: dict[str, list[frozenset[str]]] = {
        "category": [],
        "brand": [],
        "price_band": [],
    }
    top: list[str | None] = []
    for cell in affinities:
        found = cell if isinstance(cell, dict) else {}
        for dimension, bucket in lists.items():
            shares = found.get(dimension)
            bucket.append(frozenset(shares) if shares else empty)
        categories = found.get("category") or {}
        top.append(max(categories, key=categories.__getitem__) if categories else None)
    for dimension, name in (
        ("category", "affinity_categories"),
        ("brand", "affinity_brands"),
        ("price_band", "affinity_price_bands"),
    ):
        out[name] = pd.Series(lists[dimension], dtype=object, index=out.index)
    out["top_category"] = pd.Series(top, dtype=object, index=out.index)
