"""Derived data products declared as data: one YAML file per product in `products/`, read strictly.

**Guarantee.** `load_declarations` returns a product only when its file is entirely understood: an unknown
key, a wrong type, an id outside the product id rule, a window out of range, a function that does not exist,
or a file that is not a YAML mapping is refused with the file's name and what to change — a typo never
becomes a product computed differently from what its author meant. What can only be checked against the
source dataset (its fields, which of them are numeric or sensitive) is checked by `check_against_source`.

A product becomes a catalog dataset (`registration`): its record schema is generated here, one record per
published group of a closed window (window bounds, the group's values, its record count, each measure), and
carries the computation (`ProductSpec`, under `pdo.product`) for the aggregation worker that computes it.
Depends on the catalog's public shapes and the core vocabulary only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from pdo.catalog.public import Dataset, DatasetRegistration
from pdo.core.errors import InvalidInput
from pdo.core.ids import PRODUCT_PREFIX, is_id, is_product_id
from pdo.core.vocabulary import (
    PRODUCT_PROPERTY,
    AggregateFunction,
    AggregateSpec,
    Classification,
    Domain,
    Openness,
    PriceKind,
    PricePlan,
    PriceTier,
    ProductSpec,
    product_spec_to_mapping,
)

MAX_WINDOW_SECONDS = 86_400
MIN_GROUP_SIZE = 2  # a product never publishes a group of one record: that would be the record
MAX_FIELDS = 32
REQUIRED = {
    "id",
    "title",
    "owner_department",
    "domain",
    "classification",
    "openness",
    "price_plan",
    "source",
    "window_seconds",
    "functions",
    "min_group_size",
}
OPTIONAL = {"description", "terms", "asset_registration_number", "where", "group_by", "numeric_fields"}
# The product record's own fields (record_schema), which no group_by field may shadow.
RESERVED_FIELDS = {"record_id", "window_start", "window_end", "records", "suppressed_groups"}
PRICE_KEYS = {"kind", "unit_price", "tiers", "currency"}


@dataclass(frozen=True)
class ProductDeclaration:
    """One product as its file declares it: what the catalog lists, and how it is computed."""

    product_id: str
    title: str
    owner_department: str
    domain: Domain
    classification: Classification
    openness: Openness
    price_plan: PricePlan
    spec: ProductSpec
    description: str | None = None
    terms: str | None = None
    asset_registration_number: str | None = None
    file: str = ""


def load_declarations(folder: Path) -> list[ProductDeclaration]:
    """Every `*.yaml` in `folder`, in file name order; InvalidInput naming the first file that is wrong."""
    if not folder.is_dir():
        raise InvalidInput(f"no products folder at {folder}", hint="give --dir, or create products/")
    found = [
        parse_declaration(path.read_text(encoding="utf-8"), path.name)
        for path in sorted(folder.glob("*.yaml"))
    ]
    seen: dict[str, str] = {}
    for product in found:
        if product.product_id in seen:
            raise InvalidInput(
                f"{product.file}: product {product.product_id!r} is declared in {seen[product.product_id]} too",
                hint="each product id is declared once",
            )
        seen[product.product_id] = product.file
    return found


def parse_declaration(text: str, file: str) -> ProductDeclaration:
    """One file's product, or InvalidInput starting with the file's name."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise InvalidInput(f"{file}: not valid YAML: {error}") from None
    try:
        return _declaration(data, file)
    except InvalidInput as error:
        raise InvalidInput(f"{file}: {error.message}", hint=error.hint) from None


def _declaration(data: Any, file: str) -> ProductDeclaration:
    if not isinstance(data, dict):
        raise InvalidInput("a product declaration is a YAML mapping of keys to values")
    unknown = sorted(set(map(str, data)) - REQUIRED - OPTIONAL)
    if unknown:
        raise InvalidInput(
            f"unknown key(s) {', '.join(unknown)}",
            hint=f"the keys are {', '.join(sorted(REQUIRED | OPTIONAL))}",
        )
    missing = sorted(REQUIRED - set(data))
    if missing:
        raise InvalidInput(f"missing key(s) {', '.join(missing)}")
    product_id = data["id"]
    if not is_id(product_id) or not is_product_id(product_id) or product_id == PRODUCT_PREFIX:
        raise InvalidInput(
            f"id {product_id!r} is not a product id",
            hint=f"a product id starts with {PRODUCT_PREFIX!r}, then lower-case letters, digits and '-' (63 at most)",
        )
    source = data["source"]
    if not is_id(source) or is_product_id(source):
        raise InvalidInput(
            f"source {source!r} is not the id of a dataset", hint="name one registered dataset"
        )
    return ProductDeclaration(
        product_id=product_id,
        title=_text(data, "title"),
        owner_department=_text(data, "owner_department"),
        domain=_member(Domain, data, "domain"),
        classification=_member(Classification, data, "classification"),
        openness=_member(Openness, data, "openness"),
        price_plan=_price_plan(data["price_plan"]),
        spec=ProductSpec(
            source=source,
            aggregate=_aggregate(data),
            min_group_size=_whole(data, "min_group_size", MIN_GROUP_SIZE, 1_000_000),
            where=_where(data.get("where") or {}),
        ),
        description=_optional_text(data, "description"),
        terms=_optional_text(data, "terms"),
        asset_registration_number=_optional_text(data, "asset_registration_number"),
        file=file,
    )


def _aggregate(data: dict[str, Any]) -> AggregateSpec:
    functions = _names(data, "functions")
    known = {function.value for function in AggregateFunction}
    wrong = [name for name in functions if name not in known]
    if wrong or not functions or len(set(functions)) != len(functions):
        raise InvalidInput(
            f"functions {functions!r}: each at most once, at least one, of {', '.join(sorted(known))}"
        )
    numeric = _names(data, "numeric_fields")
    if set(functions) - {"COUNT"} and not numeric:
        raise InvalidInput("SUM, MEAN, MIN and MAX need numeric_fields to compute on")
    group_by = _names(data, "group_by")
    taken = sorted(set(group_by) & RESERVED_FIELDS)
    if taken or len(set(group_by)) != len(group_by):
        raise InvalidInput(
            f"group_by names each field once and none of {', '.join(sorted(RESERVED_FIELDS))}",
            hint="those are the product record's own fields",
        )
    # COUNT always: every product row tells how many records its group holds (`records`).
    counted = ["COUNT", *(name for name in functions if name != "COUNT")]
    return AggregateSpec(
        window_seconds=_whole(data, "window_seconds", 1, MAX_WINDOW_SECONDS),
        group_by=group_by,
        numeric_fields=numeric,
        functions=tuple(AggregateFunction(name) for name in counted),
    )


def _where(data: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(data, dict):
        raise InvalidInput("where maps source fields to the values kept, e.g. {vehicle_type: [BUS, TRUCK]}")
    checked = []
    for name, allowed in sorted(data.items()):
        values = allowed if isinstance(allowed, list) else [allowed]
        if (
            not _field_name(name)
            or not values
            or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values)
        ):
            raise InvalidInput(
                f"where {name!r}: a field name and a value or list of values (text or whole numbers)"
            )
        checked.append((name, tuple(str(value) for value in values)))
    return tuple(checked)


def _names(data: dict[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key) or []
    if not isinstance(value, list) or len(value) > MAX_FIELDS or not all(_field_name(name) for name in value):
        raise InvalidInput(f"{key} is a list of at most {MAX_FIELDS} field names")
    return tuple(value)


def _field_name(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier() and name.isascii()


def _optional_text(data: dict[str, Any], key: str) -> str | None:
    return None if data.get(key) is None else _text(data, key)


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{key} must be a non-empty text")
    return value.strip()


def _member(kind: Any, data: dict[str, Any], key: str) -> Any:
    try:
        return kind(data[key])
    except ValueError:
        raise InvalidInput(f"{key} {data[key]!r} is not one of {', '.join(kind.__members__)}") from None


def _whole(data: dict[str, Any], key: str, low: int, high: int) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{key} must be a whole number from {low} to {high}, not {value!r}")
    return value


def _price_plan(data: Any) -> PricePlan:
    """The plan as the catalog takes it; the catalog's own checks (tiers, currency) run at registration."""
    if not isinstance(data, dict) or set(data) - PRICE_KEYS or "kind" not in data:
        raise InvalidInput(f"price_plan is a mapping of {', '.join(sorted(PRICE_KEYS))} (kind required)")
    try:
        return PricePlan(
            kind=_member(PriceKind, data, "kind"),
            unit_price=Decimal(str(data.get("unit_price", "0.00"))),
            tiers=tuple(
                PriceTier(tier.get("up_to_records"), Decimal(str(tier["unit_price"])))
                for tier in data.get("tiers") or ()
            ),
            currency=str(data.get("currency", "CNY")),
        )
    except (InvalidOperation, KeyError, TypeError, AttributeError):
        raise InvalidInput(
            "price_plan: unit prices are decimal amounts; each tier gives unit_price"
        ) from None


# ---------------------------------------------------------------------------------------------- the catalog


def check_against_source(product: ProductDeclaration, source: Dataset) -> None:
    """InvalidInput unless the product reads only fields the source has, never a sensitive one (a group key,
    a filter or a measure over a protected value would publish it), and computes only on numbers."""
    spec = product.spec
    missing = [name for name in spec.fields_read() if name not in source.field_names]
    if missing:
        raise InvalidInput(f"{product.file}: {source.dataset_id} has no field(s) {', '.join(missing)}")
    sensitive = [name for name in spec.fields_read() if name in source.sensitive]
    if sensitive:
        raise InvalidInput(
            f"{product.file}: reads the sensitive field(s) {', '.join(sensitive)} of {source.dataset_id}",
            hint="a product is published to tenants as it is: group, filter and measure only fields not marked sensitive",
        )
    numeric = source.numeric_fields()
    not_numeric = [name for name in spec.aggregate.numeric_fields if name not in numeric]
    if not_numeric:
        raise InvalidInput(
            f"{product.file}: numeric_fields names fields that are not numbers: {', '.join(not_numeric)}"
        )
    if source.retired:
        raise InvalidInput(f"{product.file}: its source {source.dataset_id} is retired")


def registration(product: ProductDeclaration) -> DatasetRegistration:
    """The catalog registration of the product: its generated schema, its lineage (`derived_from`)."""
    return DatasetRegistration(
        dataset_id=product.product_id,
        owner_department=product.owner_department,
        title=product.title,
        domain=product.domain,
        classification=product.classification,
        openness=product.openness,
        record_schema=record_schema(product),
        sensitive_fields=(),
        price_plan=product.price_plan,
        description=product.description,
        asset_registration_number=product.asset_registration_number,
        terms=product.terms,
        derived_from=(product.spec.source,),
    )


def record_schema(product: ProductDeclaration) -> str:
    """The product's Avro record: one published group of one closed window, and how it is computed."""
    spec = product.spec
    timestamp = {"type": "long", "logicalType": "timestamp-millis"}
    fields: list[dict[str, Any]] = [
        {
            "name": "record_id",
            "type": "string",
            "doc": "product, window start and group: the same row, the same id",
        },
        {"name": "window_start", "type": timestamp, "doc": "start of the tumbling window (inclusive), UTC"},
        {"name": "window_end", "type": timestamp, "doc": "end of the window (exclusive), UTC"},
    ]
    fields += [
        {"name": name, "type": ["null", "string"], "default": None, "doc": f"the group's {name}, as text"}
        for name in spec.aggregate.group_by
    ]
    fields.append(
        {
            "name": "records",
            "type": "long",
            "doc": f"source records in the group (at least {spec.min_group_size})",
        }
    )
    fields += [
        {"name": column, "type": ["null", "double"], "default": None, "doc": f"{function.value} of {name}"}
        for name, function, column in spec.measure_columns()
    ]
    fields.append(
        {
            "name": "suppressed_groups",
            "type": "long",
            "doc": "groups of this window held back (too few records)",
        }
    )
    return json.dumps(
        {
            "type": "record",
            "name": product.product_id.replace("-", "_"),
            "namespace": "pdo.products.v1",
            "doc": f"{product.title}: derived from {spec.source} per {spec.aggregate.window_seconds} s window",
            "fields": fields,
            PRODUCT_PROPERTY: product_spec_to_mapping(spec),
        },
        sort_keys=True,
    )
