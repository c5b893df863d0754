"""The named types pdo's events share, defined once for every service: the Python side of the `.avsc` enums
(domain, classification, openness, masking rule, price kind, grant status, suspension cause, tenant kind,
usage window, grant kind, aggregate function) and the price plan and aggregate spec records with their one
JSON/Avro mapping, and the spec of a derived data product its record schema carries (`ProductSpec`).

The schemas in `schemas/` are the contract; each `.avsc` file stays self-contained (it is registered as one
subject version), so an enum is written out in every file that uses it. `tests/unit/test_vocabulary.py`
keeps every copy in `schemas/` identical and each enum here equal to it, member for member and in order.
Depends on nothing but the standard library.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

CENTS = Decimal("0.01")


class Domain(StrEnum):
    INDUSTRIAL_MANUFACTURING = "INDUSTRIAL_MANUFACTURING"
    FINANCIAL_SERVICES = "FINANCIAL_SERVICES"
    URBAN_GOVERNANCE = "URBAN_GOVERNANCE"
    TRANSPORT = "TRANSPORT"
    HEALTH = "HEALTH"
    ENVIRONMENT = "ENVIRONMENT"
    MARKET_REGULATION = "MARKET_REGULATION"
    OTHER = "OTHER"


class Classification(StrEnum):
    """GENERAL < IMPORTANT < CORE; core data never leaves the platform."""

    GENERAL = "GENERAL"
    IMPORTANT = "IMPORTANT"
    CORE = "CORE"


class Openness(StrEnum):
    OPEN = "OPEN"
    CONDITIONAL = "CONDITIONAL"
    NOT_OPEN = "NOT_OPEN"


class MaskingRule(StrEnum):
    KEEP_FIRST_LAST = "KEEP_FIRST_LAST"
    MASK_MIDDLE_DIGITS = "MASK_MIDDLE_DIGITS"
    KEYED_HASH = "KEYED_HASH"
    REDACT = "REDACT"
    TRUNCATE_DATE = "TRUNCATE_DATE"
    ROUND_NUMBER = "ROUND_NUMBER"


class PriceKind(StrEnum):
    FREE = "FREE"
    PER_THOUSAND_RECORDS = "PER_THOUSAND_RECORDS"
    PER_MEGABYTE = "PER_MEGABYTE"
    TIERED = "TIERED"


class GrantStatus(StrEnum):
    """Lifecycle state of a grant; REVOKED and EXPIRED are terminal."""

    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


class SuspensionCause(StrEnum):
    OPERATOR = "OPERATOR"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    # The catalog entry changed so that the policy now denies the grant (e.g. reclassified CORE / NOT_OPEN).
    DATASET_CHANGED = "DATASET_CHANGED"


class TenantKind(StrEnum):
    """Companies pay the dataset's price; government departments share for free.

    The Avro symbols are the member names (COMPANY); the values are what the HTTP API and SQL carry."""

    COMPANY = "company"
    GOVERNMENT = "government"


class UsageWindow(StrEnum):
    """The windows metering sums deliveries over."""

    MINUTE = "MINUTE"
    DAY = "DAY"


class GrantKind(StrEnum):
    """What a grant hands the tenant: its records (ROWS, every grant before kinds existed) or only windowed
    aggregates of them (AGGREGATE, "usable but invisible")."""

    ROWS = "ROWS"
    AGGREGATE = "AGGREGATE"


class AggregateFunction(StrEnum):
    """COUNT counts a group's records; the others apply to each numeric field of an aggregate grant."""

    COUNT = "COUNT"
    SUM = "SUM"
    MEAN = "MEAN"
    MIN = "MIN"
    MAX = "MAX"


@dataclass(frozen=True)
class AggregateSpec:
    """What an AGGREGATE grant delivers: per tumbling window of `window_seconds` of event time and per group
    of `group_by` values, the `functions` over the `numeric_fields` (checked against the grant's fields by
    the authorization service)."""

    window_seconds: int
    group_by: tuple[str, ...]
    numeric_fields: tuple[str, ...]
    functions: tuple[AggregateFunction, ...]
    # Differential privacy: the epsilon each window spends (counts only, with noise and a threshold); None: off.
    epsilon: float | None = None

    def fields_read(self) -> tuple[str, ...]:
        """Every field the aggregates read: the group key's, then the numeric ones."""
        return (*self.group_by, *(name for name in self.numeric_fields if name not in self.group_by))


def aggregate_spec_to_avro(spec: AggregateSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    return {
        "window_seconds": spec.window_seconds,
        "group_by": list(spec.group_by),
        "numeric_fields": list(spec.numeric_fields),
        "functions": [function.value for function in spec.functions],
        "epsilon": spec.epsilon,
    }


def aggregate_spec_from_mapping(data: Mapping[str, Any] | None) -> AggregateSpec | None:
    """From a decoded Avro AggregateSpec or its JSON column; an aggregate this version does not know is left out."""
    if data is None:
        return None
    known = set(AggregateFunction)
    return AggregateSpec(
        window_seconds=int(data["window_seconds"]),
        group_by=tuple(data.get("group_by", ())),
        numeric_fields=tuple(data.get("numeric_fields", ())),
        functions=tuple(AggregateFunction(name) for name in data["functions"] if name in known),
        epsilon=data.get("epsilon"),
    )


def aggregate_spec_to_json(spec: AggregateSpec | None) -> str | None:
    value = aggregate_spec_to_avro(spec)
    return None if value is None else json.dumps(value, sort_keys=True)


def aggregate_spec_from_json(text: str | None) -> AggregateSpec | None:
    return None if text is None else aggregate_spec_from_mapping(json.loads(text))


# The record schema of a derived data product carries, under this property, how the product is computed
# (`ProductSpec`): written by pdo.products when it registers the product, read by the aggregation worker that
# computes it. So the computation travels with the catalog event, like a dataset's `pdo.min_group_size`.
PRODUCT_PROPERTY = "pdo.product"


@dataclass(frozen=True)
class ProductSpec:
    """How a derived data product is computed from its one source dataset: the source's records whose `where`
    fields hold one of the listed values, aggregated per tumbling window and group (`aggregate`; no noise), and
    only groups of at least `min_group_size` records published (or the source's k, if larger)."""

    source: str
    aggregate: AggregateSpec
    min_group_size: int
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def admits(self, record: Mapping[str, Any]) -> bool:
        """Whether a source record passes the filter (each `where` field's value, as text, is one listed)."""
        return all(_as_text(record.get(name)) in allowed for name, allowed in self.where)

    def measure_columns(self) -> list[tuple[str, AggregateFunction, str]]:
        """Each numeric field with each function but COUNT, and the product record's field holding it."""
        return [
            (name, function, f"{name}_{function.value.lower()}")
            for name in self.aggregate.numeric_fields
            for function in self.aggregate.functions
            if function is not AggregateFunction.COUNT
        ]

    def fields_read(self) -> tuple[str, ...]:
        """Every source field the product reads: the filter's, then the aggregates'."""
        filtered = tuple(name for name, _ in self.where)
        return (*filtered, *(name for name in self.aggregate.fields_read() if name not in filtered))


def product_spec_to_mapping(spec: ProductSpec) -> dict[str, Any]:
    aggregate = aggregate_spec_to_avro(spec.aggregate)
    assert aggregate is not None
    del aggregate["epsilon"]  # products are published with k-suppression, never with noise
    return {
        "source": spec.source,
        "where": {name: list(allowed) for name, allowed in spec.where},
        "min_group_size": spec.min_group_size,
        **aggregate,
    }


def product_spec_from_schema(record_schema: str) -> ProductSpec | None:
    """The spec a product's record schema carries under PRODUCT_PROPERTY; None for any other schema."""
    data = json.loads(record_schema).get(PRODUCT_PROPERTY)
    if not isinstance(data, Mapping):
        return None
    aggregate = aggregate_spec_from_mapping({**data, "epsilon": None})
    assert aggregate is not None
    return ProductSpec(
        source=str(data["source"]),
        aggregate=aggregate,
        min_group_size=int(data["min_group_size"]),
        where=tuple(
            (str(name), tuple(str(v) for v in allowed)) for name, allowed in data.get("where", {}).items()
        ),
    )


def _as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def grant_kind_from_avro(symbol: str | None) -> GrantKind:
    """None (an event written before kinds existed) is ROWS; a symbol this version does not know reads as
    AGGREGATE, the kind that delivers no row (the enum's default says the same)."""
    if symbol is None:
        return GrantKind.ROWS
    return GrantKind.__members__.get(symbol, GrantKind.AGGREGATE)


@dataclass(frozen=True)
class SensitiveField:
    field: str
    masking: MaskingRule
    doc: str | None = None


@dataclass(frozen=True)
class PriceTier:
    up_to_records: int | None
    unit_price: Decimal


@dataclass(frozen=True)
class PricePlan:
    kind: PriceKind
    unit_price: Decimal = Decimal("0.00")
    tiers: tuple[PriceTier, ...] = ()
    currency: str = "CNY"


def price_plan_to_avro(plan: PricePlan) -> dict[str, Any]:
    """The Avro PricePlan record (decimals of scale 2, as the schemas declare them)."""
    return {
        "kind": plan.kind.value,
        "unit_price": plan.unit_price.quantize(CENTS),
        "tiers": [
            {"up_to_records": tier.up_to_records, "unit_price": tier.unit_price.quantize(CENTS)}
            for tier in plan.tiers
        ],
        "currency": plan.currency,
    }


def price_plan_from_mapping(data: Mapping[str, Any]) -> PricePlan:
    """From a decoded Avro PricePlan or its JSON column (decimals as Decimal or as text)."""
    return PricePlan(
        kind=PriceKind(data["kind"]),
        unit_price=Decimal(data["unit_price"]).quantize(CENTS),
        tiers=tuple(
            PriceTier(tier["up_to_records"], Decimal(tier["unit_price"]).quantize(CENTS))
            for tier in data.get("tiers", ())
        ),
        currency=data.get("currency", "CNY"),
    )


def price_plan_to_json(plan: PricePlan) -> str:
    # Decimals as strings: JSON numbers would pass through floats in some readers.
    value = price_plan_to_avro(plan)
    value["unit_price"] = str(value["unit_price"])
    for tier in value["tiers"]:
        tier["unit_price"] = str(tier["unit_price"])
    return json.dumps(value, sort_keys=True)


def price_plan_from_json(text: str) -> PricePlan:
    return price_plan_from_mapping(json.loads(text))


def free_plan(like: PricePlan) -> PricePlan:
    """What a government tenant pays: nothing, in the dataset's currency."""
    return PricePlan(kind=PriceKind.FREE, unit_price=Decimal("0.00"), tiers=(), currency=like.currency)
