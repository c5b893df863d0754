"""Field masking: what a tenant sees of a sensitive value. Pure functions, no broker, no state.

`mask(value, rule, key)` applies one catalog `MaskingRule` to one field value; `key` is the grant's
`pseudonym_key`, never the master key itself. `None` stays `None` under
every rule. The string rules (KEEP_FIRST_LAST, MASK_MIDDLE_DIGITS, KEYED_HASH) first turn a non-string
value into text with `str()`; their result is always a string. Characters are Unicode code points, so
"张三丰" has three.

KEEP_FIRST_LAST — names, plates, enterprise names
    The first and last character stay, every character between becomes `*`, so the length shows:
    "张三丰" → "张*丰", "京A12345" → "京*****5". A two-character value keeps only its first: "张三" → "张*".
    A one-character value becomes "*" (stricter than "all but the first": kept, it would be the value in
    clear). "" stays "".

MASK_MIDDLE_DIGITS — ID-card numbers, phones, any digit string
    From 11 characters on, the first 3 and the last 4 stay and the rest becomes `*`: phones
    "13812345678" → "138****5678", ID cards "110105194912310021" → "110***********0021". Shorter values
    keep `len // 4` characters at each end, so at most half shows ("62751234" → "62****34", "123" →
    "***"). Never more than 7 characters of the value show.

KEYED_HASH — a pseudonym a tenant can join on within its own stream
    HMAC-SHA256 of the UTF-8 text under the grant's pseudonym key, as lower-case hex, first 16 characters
    (64 bits). The pseudonym key is derived from the master key (PDO_MASKING_KEY) per tenant and dataset
    with HKDF-SHA256 (`pseudonym_key`), so one value has a different pseudonym for every tenant and every
    dataset: two tenants cannot join their streams on it, nor one tenant two datasets. Every worker with
    the same master key gives the same pseudonym, in every run, so a tenant can count and join on it in
    its stream; without the key it cannot be reversed or brute-forced even for small value spaces like
    phone numbers. Rotating the master key changes every pseudonym.

REDACT
    The value becomes `None` (the field is null on the tenant stream).

TRUNCATE_DATE — keeps the value's kind, drops the time of day
    an aware datetime → 00:00 UTC of its UTC day (still a datetime, so a timestamp field stays one);
    a naive datetime → 00:00 of its own day; a date → unchanged; a number → read as epoch milliseconds,
    floored to its UTC day; an ISO-8601 text → "YYYY-MM-DD" of its (UTC) day. Anything else — text
    that is no date, a time of day, a boolean — becomes `None`: unknown input is never passed through.

ROUND_NUMBER — keeps the value's kind, drops precision
    an int → the nearest multiple of 10, halves away from zero (17 → 20, -15 → -20), held inside the
    signed 64-bit range; a float → 1 decimal place (Python's `round`); a Decimal with more than one
    decimal place → 1 decimal place, halves away from zero (fewer places are left as they are, so the
    value still fits its Avro decimal scale); non-finite numbers stay. Anything else — text, booleans —
    becomes `None`.

Bump `pdo.sharing.transform.MASKING_ALGORITHM_VERSION` whenever any of this changes: tenants see it in
every record's provenance.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import UTC, date, datetime, time
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal
from functools import lru_cache
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pdo.core.vocabulary import MaskingRule

MASK_CHAR = "*"
HASH_HEX_CHARS = 16
MIDDLE_DIGITS_KEEP_FIRST = 3
MIDDLE_DIGITS_KEEP_LAST = 4
# From this length on the full 3 + 4 characters show (an 11-digit mobile number is the shortest).
MIDDLE_DIGITS_FULL_LENGTH = 11

LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1
DAY_MS = 86_400_000


def mask(value: Any, rule: MaskingRule | str, key: bytes) -> Any:
    """`value` as a tenant may see it under `rule` (see the module docstring); `key` serves KEYED_HASH."""
    if value is None:
        return None
    try:
        apply = _RULES[rule]
    except KeyError:
        raise ValueError(f"unknown masking rule {rule!r}") from None
    return apply(value, key)


# ---------------------------------------------------------------------------------------------- text rules


def keep_first_last(text: str) -> str:
    length = len(text)
    if length <= 1:
        return MASK_CHAR * length  # a single character kept would be the whole value in clear
    if length == 2:
        return text[0] + MASK_CHAR
    return text[0] + MASK_CHAR * (length - 2) + text[-1]


def mask_middle_digits(text: str) -> str:
    length = len(text)
    if length >= MIDDLE_DIGITS_FULL_LENGTH:
        first, last = MIDDLE_DIGITS_KEEP_FIRST, MIDDLE_DIGITS_KEEP_LAST
    else:
        first = last = length // 4  # short values: never more than half shows
    return text[:first] + MASK_CHAR * (length - first - last) + text[length - last :]


# HKDF's `info` names the purpose and version, so a key derived here serves nothing else.
PSEUDONYM_KEY_INFO = b"pdo keyed-hash pseudonym key v1"
PSEUDONYM_KEY_BYTES = 32


@lru_cache(maxsize=4096)  # one derivation per (tenant, dataset), not per record
def pseudonym_key(master_key: bytes, tenant_id: str, dataset_id: str) -> bytes:
    """The KEYED_HASH key of one tenant's stream of one dataset: HKDF-SHA256 of the master key."""
    # Length-prefixed, so no two different (tenant, dataset) pairs give the same `info`.
    parts = b"".join(len(p).to_bytes(4, "big") + p for p in (tenant_id.encode(), dataset_id.encode()))
    derive = HKDF(
        algorithm=hashes.SHA256(), length=PSEUDONYM_KEY_BYTES, salt=None, info=PSEUDONYM_KEY_INFO + parts
    )
    return derive.derive(master_key)


def keyed_hash(text: str, key: bytes) -> str:
    return hmac.digest(key, text.encode("utf-8"), "sha256").hex()[:HASH_HEX_CHARS]


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


# ---------------------------------------------------------------------------------------------- dates


def truncate_date(value: Any) -> Any:
    if isinstance(value, datetime):  # before date: a datetime is a date too
        return _start_of_day(value)
    if isinstance(value, date):
        return value
    if _is_number(value):
        return _floor_to_day_ms(value)
    if isinstance(value, str):
        return _iso_day(value)
    return None  # a time of day, bytes, a record...: no day to keep, and nothing passes unknown


def _start_of_day(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return datetime.combine(moment.date(), time(0), tzinfo=moment.tzinfo)


def _floor_to_day_ms(millis: int | float | Decimal) -> int | float | Decimal:
    if not isinstance(millis, int) and not _is_finite(millis):
        return millis
    if isinstance(millis, Decimal):  # Decimal's // truncates toward zero; floor it explicitly
        return (millis / DAY_MS).to_integral_value(rounding=ROUND_FLOOR) * DAY_MS
    day = (millis // DAY_MS) * DAY_MS  # floor, so instants before 1970 fall on their own day
    if isinstance(millis, int) and day < LONG_MIN:
        day += DAY_MS  # the first partial day of the long range: stay encodable
    return day


def _iso_day(text: str) -> str | None:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.date().isoformat()


# ---------------------------------------------------------------------------------------------- numbers


def round_number(value: Any) -> Any:
    if isinstance(value, bool) or not _is_number(value):
        return None
    if isinstance(value, int):
        return _round_int(value)
    if isinstance(value, float):
        return round(value, 1) if _is_finite(value) else value
    return _round_decimal(value)


def _round_int(number: int) -> int:
    magnitude = (abs(number) + 5) // 10 * 10  # halves away from zero, unlike round()'s banker's rule
    rounded = magnitude if number >= 0 else -magnitude
    # Rounding up at the very edge of the long range would make the value unencodable.
    if rounded > LONG_MAX:
        return rounded - 10
    if rounded < LONG_MIN:
        return rounded + 10
    return rounded


def _round_decimal(number: Decimal) -> Decimal:
    exponent = number.as_tuple().exponent  # a letter ('n', 'N', 'F') for NaN and infinity
    if not isinstance(exponent, int) or exponent >= -1:
        return number  # already at most one decimal place: keep its scale
    digits = len(number.as_tuple().digits)
    return number.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP, context=Context(prec=digits + 2))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _is_finite(number: float | Decimal) -> bool:
    return number.is_finite() if isinstance(number, Decimal) else number - number == 0


# ---------------------------------------------------------------------------------------------- dispatch


_RULES: dict[str, Callable[[Any, bytes], Any]] = {
    MaskingRule.KEEP_FIRST_LAST: lambda value, _key: keep_first_last(_as_text(value)),
    MaskingRule.MASK_MIDDLE_DIGITS: lambda value, _key: mask_middle_digits(_as_text(value)),
    MaskingRule.KEYED_HASH: lambda value, key: keyed_hash(_as_text(value), key),
    MaskingRule.REDACT: lambda _value, _key: None,
    MaskingRule.TRUNCATE_DATE: lambda value, _key: truncate_date(value),
    MaskingRule.ROUND_NUMBER: lambda value, _key: round_number(value),
}
