"""pdo's row-filter language: which records of a dataset a grant delivers. Parsed by hand, never eval'd.

    district == 'Haidian' and (speed_kmh >= 60 or not lane in ('bus', 'emergency'))

Grammar (keywords are case-insensitive):

    filter     := or
    or         := and ('or' and)*
    and        := unary ('and' unary)*
    unary      := 'not' unary | '(' or ')' | comparison
    comparison := FIELD op literal | FIELD ['not'] 'in' '(' literal (',' literal)* ')'
    op         := '==' | '!=' | '<' | '<=' | '>' | '>='
    literal    := 'single-quoted string' ('' inside is one quote) | number | true | false | null

Matching: a missing field reads as null; `==`/`!=`/`in` compare like values (a string never equals a
number, true never equals 1); ordering compares numbers with numbers and strings with strings (a
timestamp field with an ISO-8601 string) and is false otherwise. Inputs are bounded in length, nesting
and list size, so hostile text costs little and cannot exhaust the stack.

**Scope rule** (`parse_in_scope`): a grant's filter may name only fields the grant delivers in clear —
granted and not masked. Which rows arrive tells the tenant about every field the filter reads: a filter
on a hidden ID-card number, repeated with narrowing ranges, would read it out digit by digit, and one
beside a pseudonymised field would link each pseudonym to its clear value. So a filter never reads more
than the tenant sees anyway. The authorization service refuses other filters when a request is submitted
and approved; the sharing worker checks again before it compiles a grant's filter, so a forged or stale
grant event cannot make it evaluate one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from pdo.core.errors import InvalidInput

MAX_LENGTH = 4096
MAX_DEPTH = 32
MAX_LIST_ITEMS = 1000

KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}

Literal = str | int | float | bool | None


class RowFilterError(InvalidInput):
    """The filter text does not parse or names a field the dataset lacks; says where and why."""

    def __init__(self, text: str, position: int, reason: str, hint: str = "") -> None:
        snippet = text[max(0, position - 20) : position + 20]
        super().__init__(
            f"row filter: {reason} at position {position} (near {snippet!r})",
            hint=hint or "see the row-filter grammar: field == 'value', and/or/not, in ('a', 'b')",
        )
        self.position = position
        self.reason = reason


# ---------------------------------------------------------------------------------------------- lexer


@dataclass(frozen=True)
class Token:
    kind: str  # FIELD, KEYWORD, OP, STRING, NUMBER, LPAREN, RPAREN, COMMA, END
    text: str
    position: int
    value: Any = None


_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PUNCTUATION = {"(": "LPAREN", ")": "RPAREN", ",": "COMMA"}


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char.isspace():
            position += 1
        elif char in _PUNCTUATION:
            tokens.append(Token(_PUNCTUATION[char], char, position))
            position += 1
        elif char == "'":
            token = _string(text, position)
            tokens.append(token)
            position += len(token.text)
        elif text.startswith(("==", "!=", "<=", ">="), position) or char in "<>":
            operator = text[position : position + 2] if text[position + 1 : position + 2] == "=" else char
            tokens.append(Token("OP", operator, position))
            position += len(operator)
        elif number := _NUMBER.match(text, position):
            tokens.append(Token("NUMBER", number.group(), position, _number_value(number)))
            position = number.end()
        elif name := _NAME.match(text, position):
            word = name.group()
            kind = "KEYWORD" if word.lower() in KEYWORDS else "FIELD"
            tokens.append(Token(kind, word.lower() if kind == "KEYWORD" else word, position))
            position = name.end()
        else:
            raise RowFilterError(text, position, f"unexpected character {char!r}")
    tokens.append(Token("END", "", len(text)))
    return tokens


def _string(text: str, start: int) -> Token:
    chars = []
    position = start + 1
    while position < len(text):
        if text[position] == "'":
            if text[position + 1 : position + 2] == "'":  # '' is an escaped quote, as in SQL
                chars.append("'")
                position += 2
                continue
            return Token("STRING", text[start : position + 1], start, "".join(chars))
        chars.append(text[position])
        position += 1
    raise RowFilterError(text, start, "string is never closed (missing ')")


def _number_value(match: re.Match) -> int | float:
    text = match.group()
    return float(text) if match.group(1) or match.group(2) else int(text)


# ---------------------------------------------------------------------------------------------- tree


@dataclass(frozen=True)
class Comparison:
    field: str
    operator: str
    value: Literal

    def matches(self, record: dict) -> bool:
        return _compare(record.get(self.field), self.operator, self.value)


@dataclass(frozen=True)
class Membership:
    field: str
    values: tuple[Literal, ...]
    negated: bool = False

    def matches(self, record: dict) -> bool:
        actual = record.get(self.field)
        found = any(_equal(actual, value) for value in self.values)
        return found != self.negated


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Node, ...]

    def matches(self, record: dict) -> bool:
        return all(part.matches(record) for part in self.parts)


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Node, ...]

    def matches(self, record: dict) -> bool:
        return any(part.matches(record) for part in self.parts)


@dataclass(frozen=True)
class Negation:
    part: Node

    def matches(self, record: dict) -> bool:
        return not self.part.matches(record)


Node = Comparison | Membership | AllOf | AnyOf | Negation


@dataclass(frozen=True)
class Filter:
    """A parsed row filter: `matches(record)` says whether a record (a dict of field values) passes."""

    text: str
    root: Node
    fields: frozenset[str]

    def matches(self, record: dict) -> bool:
        return self.root.matches(record)


# ---------------------------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str, allowed_fields: Iterable[str]) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0
        self.allowed = list(allowed_fields)
        self.allowed_set = set(self.allowed)
        self.fields: set[str] = set()

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def fail(self, reason: str, token: Token | None = None, hint: str = "") -> RowFilterError:
        return RowFilterError(self.text, (token or self.current).position, reason, hint)

    def at_keyword(self, word: str) -> bool:
        return self.current.kind == "KEYWORD" and self.current.text == word

    def parse(self) -> Node:
        if self.current.kind == "END":
            raise self.fail("the filter is empty")
        node = self.parse_or()
        if self.current.kind != "END":
            raise self.fail(f"expected 'and', 'or' or the end, found {_describe(self.current)}")
        return node

    def parse_or(self) -> Node:
        parts = [self.parse_and()]
        while self.at_keyword("or"):
            self.advance()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def parse_and(self) -> Node:
        parts = [self.parse_unary()]
        while self.at_keyword("and"):
            self.advance()
            parts.append(self.parse_unary())
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def parse_unary(self) -> Node:
        if self.at_keyword("not"):
            with self.nested():
                self.advance()
                return Negation(self.parse_unary())
        if self.current.kind == "LPAREN":
            with self.nested():
                opening = self.advance()
                node = self.parse_or()
                if self.current.kind != "RPAREN":
                    raise self.fail(
                        f"expected ')' to close the '(' at position {opening.position}, "
                        f"found {_describe(self.current)}"
                    )
                self.advance()
                return node
        return self.parse_comparison()

    def nested(self) -> _Depth:
        return _Depth(self)

    def parse_comparison(self) -> Node:
        token = self.current
        if token.kind != "FIELD":
            raise self.fail(f"expected a field name, '(' or 'not', found {_describe(token)}")
        self.advance()
        field = self.check_field(token)
        if self.at_keyword("in") or self.at_keyword("not"):
            negated = self.at_keyword("not")
            self.advance()
            if negated and not self.at_keyword("in"):
                raise self.fail(f"expected 'in' after '{field} not', found {_describe(self.current)}")
            if negated:
                self.advance()
            return Membership(field, self.parse_list(), negated)
        if self.current.kind != "OP":
            raise self.fail(
                f"expected a comparison (==, !=, <, <=, >, >=) or 'in' after {field!r}, "
                f"found {_describe(self.current)}"
            )
        operator = self.advance().text
        return Comparison(field, operator, self.parse_literal())

    def parse_list(self) -> tuple[Literal, ...]:
        if self.current.kind != "LPAREN":
            raise self.fail(f"expected '(' to start the list after 'in', found {_describe(self.current)}")
        self.advance()
        values = [self.parse_literal()]
        while self.current.kind == "COMMA":
            self.advance()
            values.append(self.parse_literal())
            if len(values) > MAX_LIST_ITEMS:
                raise self.fail(f"an 'in' list may hold at most {MAX_LIST_ITEMS} values")
        if self.current.kind != "RPAREN":
            raise self.fail(f"expected ',' or ')' in the 'in' list, found {_describe(self.current)}")
        self.advance()
        return tuple(values)

    def parse_literal(self) -> Literal:
        token = self.current
        if token.kind in ("STRING", "NUMBER"):
            self.advance()
            return token.value
        if token.kind == "KEYWORD" and token.text in ("true", "false", "null"):
            self.advance()
            return {"true": True, "false": False, "null": None}[token.text]
        hint = "quote text values with single quotes: district == 'Haidian'" if token.kind == "FIELD" else ""
        raise self.fail(
            f"expected a value ('text', number, true, false, null), found {_describe(token)}", hint=hint
        )

    def check_field(self, token: Token) -> str:
        if token.text not in self.allowed_set:
            close = difflib.get_close_matches(token.text, self.allowed, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else ""
            known = ", ".join(self.allowed) or "(none)"
            raise self.fail(f"unknown field {token.text!r} (the dataset's fields: {known})", token, hint)
        self.fields.add(token.text)
        return token.text


class _Depth:
    """Counts nesting so hostile input like '((((…' fails cleanly instead of exhausting the stack."""

    def __init__(self, parser: _Parser) -> None:
        self.parser = parser

    def __enter__(self) -> None:
        self.parser.depth += 1
        if self.parser.depth > MAX_DEPTH:
            raise self.parser.fail(f"nested more than {MAX_DEPTH} levels deep")

    def __exit__(self, *exc) -> None:
        self.parser.depth -= 1


def _describe(token: Token) -> str:
    if token.kind == "END":
        return "the end of the filter"
    return f"{token.text!r}"


def parse(text: str, allowed_fields: Sequence[str] | Iterable[str]) -> Filter:
    """Parse `text`; every field it names must be in `allowed_fields`. RowFilterError (InvalidInput) if not."""
    if not isinstance(text, str):
        raise InvalidInput(f"row filter must be text, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise RowFilterError(text, MAX_LENGTH, f"the filter is longer than {MAX_LENGTH} characters")
    parser = _Parser(text, allowed_fields)
    root = parser.parse()
    return Filter(text=text, root=root, fields=frozenset(parser.fields))


class FilterScopeError(InvalidInput):
    """The filter names a field the grant does not deliver in clear; `fields` are those fields."""

    def __init__(self, message: str, hint: str, fields: Sequence[str]) -> None:
        super().__init__(message, hint=hint)
        self.fields = tuple(fields)


def clear_fields(granted: Iterable[str], masking: Mapping[str, Any]) -> tuple[str, ...]:
    """The granted fields delivered unmasked: the only ones a filter may name (see "Scope rule")."""
    return tuple(name for name in granted if name not in masking)


def require_in_scope(parsed: Filter, granted: Sequence[str], masking: Mapping[str, Any]) -> Filter:
    """`parsed` if every field it names is granted and unmasked; FilterScopeError naming the others."""
    readable = clear_fields(granted, masking)
    hidden = sorted(parsed.fields.difference(readable))
    if not hidden:
        return parsed
    why = "; ".join(
        f"{name!r} is delivered masked ({masking[name]})" if name in granted else f"{name!r} is not granted"
        for name in hidden
    )
    hint = (
        f"filter only on granted fields delivered in clear (here: {', '.join(readable)})"
        if readable
        else "no granted field is delivered in clear, so this grant cannot have a row filter"
    )
    raise FilterScopeError(
        f"row filter names {', '.join(map(repr, hidden))}, which the grant does not deliver in clear ({why}): "
        "a filter may only name fields that are granted and not masked, or the rows it lets through "
        "would reveal what the masking hides",
        hint=f"{hint}; or drop the filter",
        fields=hidden,
    )


def parse_in_scope(
    text: str, dataset_fields: Iterable[str], granted: Sequence[str], masking: Mapping[str, Any]
) -> Filter:
    """`parse` against the dataset's fields, then `require_in_scope` for the grant's fields and masking."""
    return require_in_scope(parse(text, dataset_fields), granted, masking)


def conjunction(first: str | None, second: str | None) -> str | None:
    """Both filters at once: what a narrowing does to a requested filter (it can only remove rows)."""
    if not first or not second:
        return first or second
    return f"({first}) and ({second})"


# ---------------------------------------------------------------------------------------------- matching


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _equal(actual: Any, expected: Literal) -> bool:
    if expected is None or actual is None:
        return actual is None and expected is None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and actual == expected
    if _is_number(expected):
        return _is_number(actual) and actual == expected
    if isinstance(actual, datetime | date) and isinstance(expected, str):
        moment = _as_moment(expected, actual)
        return moment is not None and actual == moment
    return isinstance(actual, str) and actual == expected


def _compare(actual: Any, operator: str, expected: Literal) -> bool:
    if operator == "==":
        return _equal(actual, expected)
    if operator == "!=":
        return not _equal(actual, expected)
    right: Any  # the literal, or the moment a date literal stands for
    if _same_order_kind(actual, expected):
        left, right = actual, expected
    elif isinstance(actual, datetime | date) and isinstance(expected, str):
        right = _as_moment(expected, actual)
        if right is None:
            return False
        left = actual
    else:
        return False  # null, booleans and mixed kinds have no order: such a record does not match
    if operator == "<":
        return left < right
    if operator == "<=":
        return left <= right
    if operator == ">":
        return left > right
    return left >= right


def _same_order_kind(actual: Any, expected: Literal) -> bool:
    both_numbers = _is_number(actual) and _is_number(expected)
    return both_numbers or (isinstance(actual, str) and isinstance(expected, str))


def _as_moment(text: str, like: date | datetime) -> date | datetime | None:
    """An ISO-8601 literal as the same kind of value as the field (aware datetimes in UTC)."""
    if isinstance(like, datetime):
        moment = _parse_datetime(text)
        if moment is None:
            return None
        if like.tzinfo is None:
            return moment.replace(tzinfo=None)
        return moment
    return _parse_date(text)


@lru_cache(maxsize=1024)
def _parse_datetime(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@lru_cache(maxsize=1024)
def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None
