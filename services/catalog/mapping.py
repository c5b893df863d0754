"""Conversions between a Dataset, its SQL row and its shape in catalog events (the DatasetSnapshot).

One place for these, so the service that writes rows and events and the projection that reads events
back into rows cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

from pdo.catalog.models import Dataset
from pdo.core.vocabulary import (
    Classification,
    Domain,
    MaskingRule,
    Openness,
    SensitiveField,
    price_plan_from_json,
    price_plan_from_mapping,
    price_plan_to_avro,
    price_plan_to_json,
)

# ---------------------------------------------------------------- price plans and sensitive fields


def sensitive_fields_to_avro(items: tuple[SensitiveField, ...]) -> list[dict[str, Any]]:
    return [{"field": item.field, "masking": item.masking.value, "doc": item.doc} for item in items]


def sensitive_fields_from_avro(items: list[dict[str, Any]]) -> tuple[SensitiveField, ...]:
    return tuple(SensitiveField(i["field"], _masking(i["masking"]), i.get("doc")) for i in items)


def _masking(value: str) -> MaskingRule:
    # The event schema tells readers to treat a rule they do not know as REDACT, the strictest.
    try:
        return MaskingRule(value)
    except ValueError:
        return MaskingRule.REDACT


def sensitive_fields_to_json(items: tuple[SensitiveField, ...]) -> str:
    return json.dumps(sensitive_fields_to_avro(items), separators=(",", ":"), ensure_ascii=False)


def sensitive_fields_from_json(text: str) -> tuple[SensitiveField, ...]:
    return sensitive_fields_from_avro(json.loads(text))


# ---------------------------------------------------------------- rows


def dataset_to_row(dataset: Dataset) -> dict[str, Any]:
    """The columns that hold the dataset itself (not updated_at nor the last event's position)."""
    return {
        "dataset_id": dataset.dataset_id,
        "provider_id": dataset.provider_id,
        "owner_department": dataset.owner_department,
        "title": dataset.title,
        "description": dataset.description,
        "domain": dataset.domain.value,
        "classification": dataset.classification.value,
        "openness": dataset.openness.value,
        "schema_subject": dataset.schema_subject,
        "schema_id": dataset.schema_id,
        "record_schema": dataset.record_schema,
        "sensitive_fields": sensitive_fields_to_json(dataset.sensitive_fields),
        "price_plan": price_plan_to_json(dataset.price_plan),
        "version": dataset.version,
        "retired": dataset.retired,
        "asset_registration_number": dataset.asset_registration_number,
        "terms": dataset.terms,
        "derived_from": json.dumps(list(dataset.derived_from)),
    }


def dataset_from_row(row: Any) -> Dataset:
    return Dataset(
        dataset_id=row.dataset_id,
        provider_id=row.provider_id,
        owner_department=row.owner_department,
        title=row.title,
        description=row.description,
        domain=Domain(row.domain),
        classification=Classification(row.classification),
        openness=Openness(row.openness),
        schema_subject=row.schema_subject,
        schema_id=row.schema_id,
        record_schema=row.record_schema,
        sensitive_fields=sensitive_fields_from_json(row.sensitive_fields),
        price_plan=price_plan_from_json(row.price_plan),
        version=row.version,
        retired=bool(row.retired),
        asset_registration_number=row.asset_registration_number,
        terms=row.terms,
        derived_from=tuple(json.loads(row.derived_from)),
    )


# ---------------------------------------------------------------- events


def snapshot(dataset: Dataset) -> dict[str, Any]:
    """The DatasetSnapshot record: the whole entry but the schema text, which the registry holds by id."""
    return {
        "dataset_id": dataset.dataset_id,
        "owner_department": dataset.owner_department,
        "provider_id": dataset.provider_id,
        "title": dataset.title,
        "description": dataset.description,
        "domain": dataset.domain.value,
        "schema_subject": dataset.schema_subject,
        "schema_id": dataset.schema_id,
        "classification": dataset.classification.value,
        "openness": dataset.openness.value,
        "sensitive_fields": sensitive_fields_to_avro(dataset.sensitive_fields),
        "price_plan": price_plan_to_avro(dataset.price_plan),
        "version": dataset.version,
        "asset_registration_number": dataset.asset_registration_number,
        "terms": dataset.terms,
        "derived_from": list(dataset.derived_from),
        "retired": dataset.retired,
    }


def dataset_from_snapshot(value: dict[str, Any], record_schema: str) -> Dataset:
    """A Dataset from a DatasetSnapshot or a DatasetRegistered event (same field names), with its schema."""
    return Dataset(
        dataset_id=value["dataset_id"],
        provider_id=value["provider_id"],
        owner_department=value["owner_department"],
        title=value["title"],
        description=value.get("description"),
        domain=_member(Domain, value["domain"], Domain.OTHER),
        classification=_member(Classification, value["classification"], Classification.CORE),
        openness=_member(Openness, value["openness"], Openness.NOT_OPEN),
        schema_subject=value["schema_subject"],
        schema_id=value["schema_id"],
        record_schema=record_schema,
        sensitive_fields=sensitive_fields_from_avro(value.get("sensitive_fields", [])),
        price_plan=price_plan_from_mapping(value["price_plan"]),
        version=value["version"],
        retired=bool(value.get("retired", False)),
        asset_registration_number=value.get("asset_registration_number"),
        terms=value.get("terms"),
        derived_from=tuple(value.get("derived_from") or ()),
    )


def _member(kind, value: str, strictest):
    # Each enum's doc in schemas/catalog says which value a reader falls back to for an unknown symbol.
    try:
        return kind(value)
    except ValueError:
        return strictest


def registered_event(head: dict[str, Any], dataset: Dataset) -> dict[str, Any]:
    """A DatasetRegistered event: the head, then the entry's fields (no `retired`: it is new)."""
    fields = snapshot(dataset)
    del fields["retired"]
    return {**head, **fields}


def updated_event(head: dict[str, Any], before: Dataset, after: Dataset) -> dict[str, Any]:
    """A DatasetUpdated event: each changed field's new value (null if unchanged), and the whole entry."""
    old, new = snapshot(before), snapshot(after)
    delta_fields = (
        "owner_department",
        "title",
        "description",
        "domain",
        "schema_subject",
        "schema_id",
        "classification",
        "openness",
        "sensitive_fields",
        "price_plan",
        "asset_registration_number",
        "terms",
    )
    delta = {name: (new[name] if new[name] != old[name] else None) for name in delta_fields}
    return {**head, "dataset_id": after.dataset_id, **delta, "version": after.version, "dataset": new}


def retired_event(head: dict[str, Any], dataset: Dataset, reason: str) -> dict[str, Any]:
    return {**head, "dataset_id": dataset.dataset_id, "reason": reason, "dataset": snapshot(dataset)}
