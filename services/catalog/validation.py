"""The catalog's rules for what a dataset may look like; each refusal is an InvalidInput naming the problem.

Pure functions, no I/O: the service runs them all before it touches the registry, the broker or the
database, so a refused registration leaves nothing behind.
"""

from __future__ import annotations

import json
import re
import warnings
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Literal, TypeVar, overload

import avro.errors
import avro.schema
from avro.schema import RecordSchema

from pdo.core import schemas
from pdo.core.errors import InvalidInput
from pdo.core.ids import check_id
from pdo.core.vocabulary import MaskingRule, PriceKind, PricePlan, PriceTier, SensitiveField

CURRENCY = re.compile(r"^[A-Z]{3}$")
CENT = Decimal("0.01")
# PricePlan amounts are Avro decimal(18, 2): at most 16 digits before the point.
MAX_PRICE = Decimal("9999999999999999.99")
# The feed declaration (topics/feed.yaml) keys every record by this field.
FEED_KEY_FIELD = "record_id"
MAX_TITLE = 200
MAX_DEPARTMENT = 200
MAX_DESCRIPTION = 4000

E = TypeVar("E", bound=StrEnum)


def check_dataset_id(dataset_id: Any) -> str:
    """It becomes part of topic names (pdo.feed.<id>, pdo.tenant.<tenant>.<id>): see `pdo.core.ids`."""
    return check_id("dataset id", dataset_id)


@overload
def check_text(what: str, value: Any, max_length: int, *, required: Literal[True] = True) -> str: ...


@overload
def check_text(what: str, value: Any, max_length: int, *, required: bool) -> str | None: ...


def check_text(what: str, value: Any, max_length: int, *, required: bool = True) -> str | None:
    """A trimmed-nonempty string of at most `max_length` characters (or None when not required)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} must be a non-empty string")
    if len(value) > max_length:
        raise InvalidInput(f"{what} is {len(value)} characters long; at most {max_length} are allowed")
    return value


def check_enum(kind: type[E], what: str, value: Any) -> E:
    """`value` as a member of `kind`, accepting its plain string too (as the HTTP layer sends it)."""
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidInput(f"{what} {value!r} is not one of {allowed}") from None


def normalize_schema_text(text: str) -> str:
    """The schema text as the registry stores it: JSON without insignificant whitespace."""
    try:
        return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"record_schema is not JSON text: {error}") from None


def parse_record_schema(text: Any) -> RecordSchema:
    """The dataset's Avro record schema, or InvalidInput with avro's reason."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("record_schema must be the JSON text of an Avro record schema")
    try:
        with warnings.catch_warnings():
            # An unknown logical type falls back to its base type; that is the provider's business.
            warnings.simplefilter("ignore", avro.errors.IgnoredLogicalType)
            parsed = avro.schema.parse(text)
    except (ValueError, TypeError, avro.errors.AvroException) as error:
        raise InvalidInput(f"record_schema is not a valid Avro schema: {error}") from None
    if not isinstance(parsed, RecordSchema) or parsed.type != "record":
        raise InvalidInput(f"record_schema must define an Avro record, not a {parsed.type}")
    if FEED_KEY_FIELD not in {field.name for field in parsed.fields}:
        raise InvalidInput(
            f"record schema {parsed.fullname} has no field '{FEED_KEY_FIELD}'",
            hint="feeds are keyed by record_id (topics/feed.yaml); add a field naming each record",
        )
    return parsed


def check_sensitive_fields(
    record: RecordSchema, given: tuple[SensitiveField, ...] | list[SensitiveField] | None
) -> tuple[SensitiveField, ...]:
    """The given sensitive fields, checked against `record`, plus any the schema marks that are not given.

    A field the schema marks `"pdo.sensitive"` stays sensitive even when the caller's list leaves it
    out: the marking can only add protection, and a provider who wants it gone changes the schema.
    """
    names = [field.name for field in record.fields]
    checked: dict[str, SensitiveField] = {}
    for item in given or ():
        if not isinstance(item, SensitiveField):
            raise InvalidInput(f"sensitive field {item!r} must name a field and a masking rule")
        if item.field not in names:
            raise InvalidInput(
                f"sensitive field {item.field!r} is not a field of {record.fullname}",
                hint=f"its fields are {', '.join(names)}",
            )
        if item.field in checked:
            raise InvalidInput(f"sensitive field {item.field!r} is listed twice")
        masking = check_enum(MaskingRule, f"masking rule of {item.field!r}", item.masking)
        doc = check_text(f"doc of sensitive field {item.field!r}", item.doc, 1000, required=False)
        checked[item.field] = SensitiveField(item.field, masking, doc)
    for name, rule in schemas.sensitive_fields(record).items():
        if name not in checked:
            masking = check_enum(MaskingRule, f"pdo.sensitive attribute of field {name!r}", rule)
            checked[name] = SensitiveField(name, masking)
    # Schema order, so the same set always reads (and compares) the same.
    return tuple(checked[name] for name in names if name in checked)


def check_price(what: str, value: Any) -> Decimal:
    """A non-negative amount with at most two decimals, as Decimal quantized to cents."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"{what} {value!r} is not a number") from None
    if isinstance(value, bool) or not amount.is_finite():
        raise InvalidInput(f"{what} {value!r} is not a number")
    if amount < 0:
        raise InvalidInput(f"{what} {amount} is negative")
    if amount > MAX_PRICE:
        raise InvalidInput(f"{what} {amount} is larger than {MAX_PRICE}")
    cents = amount.quantize(CENT)
    # 1.50000 is fine (trailing zeros); 1.005 is not: prices are charged in whole cents.
    if cents != amount:
        raise InvalidInput(f"{what} {amount} has more than two decimal places")
    return cents


def check_price_plan(plan: Any) -> PricePlan:
    """The plan with amounts quantized to cents, or InvalidInput saying which rule it breaks."""
    if not isinstance(plan, PricePlan):
        raise InvalidInput("price_plan must give a kind, a unit price, tiers and a currency")
    kind = check_enum(PriceKind, "price plan kind", plan.kind)
    unit_price = check_price("price plan unit_price", plan.unit_price)
    if not isinstance(plan.currency, str) or not CURRENCY.match(plan.currency):
        raise InvalidInput(f"currency {plan.currency!r} is not an ISO 4217 code like CNY")
    tiers = _check_tiers(kind, tuple(plan.tiers or ()))
    if kind is PriceKind.FREE and unit_price != 0:
        raise InvalidInput(f"a FREE price plan has unit_price 0, not {unit_price}")
    return PricePlan(kind=kind, unit_price=unit_price, tiers=tiers, currency=plan.currency)


def _check_tiers(kind: PriceKind, tiers: tuple[PriceTier, ...]) -> tuple[PriceTier, ...]:
    if kind is not PriceKind.TIERED:
        if tiers:
            raise InvalidInput(f"only a TIERED price plan has tiers, not {kind.value}")
        return ()
    if not tiers:
        raise InvalidInput("a TIERED price plan needs at least one tier")
    checked = []
    previous_bound = 0
    for number, tier in enumerate(tiers, start=1):
        if not isinstance(tier, PriceTier):
            raise InvalidInput(f"tier {number} must give up_to_records and unit_price")
        bound = tier.up_to_records
        if bound is None and number != len(tiers):
            raise InvalidInput(f"tier {number} is open-ended but is not the last tier")
        if bound is not None:
            if isinstance(bound, bool) or not isinstance(bound, int) or bound <= previous_bound:
                raise InvalidInput(
                    f"tier {number} up_to_records {bound!r} must be a whole number above {previous_bound}",
                    hint="tiers go in ascending order of up_to_records",
                )
            previous_bound = bound
        checked.append(PriceTier(bound, check_price(f"tier {number} unit_price", tier.unit_price)))
    return tuple(checked)
