"""The catalog's domain objects, shared with the services that read the catalog (authorization, gateway)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pdo.core.vocabulary import Classification, Domain, MaskingRule, Openness, PricePlan, SensitiveField

NUMERIC_TYPES = {"int", "long", "float", "double"}


@dataclass(frozen=True)
class Dataset:
    """A catalog entry as it stands now (the shape of the DatasetSnapshot in catalog events)."""

    dataset_id: str
    provider_id: str
    owner_department: str
    title: str
    domain: Domain
    classification: Classification
    openness: Openness
    schema_subject: str
    schema_id: int
    record_schema: str  # the dataset's Avro record schema as registered (JSON text)
    price_plan: PricePlan
    sensitive_fields: tuple[SensitiveField, ...] = ()
    description: str | None = None
    version: int = 1
    retired: bool = False
    # For listings on data exchanges: the registration authority's number, and the terms of use in words.
    asset_registration_number: str | None = None
    terms: str | None = None
    # Lineage: the datasets this one derives from (a derived data product's sources), fixed at registration.
    derived_from: tuple[str, ...] = ()

    @property
    def field_names(self) -> list[str]:
        """Top-level fields of the record schema, in schema order."""
        return [item["name"] for item in json.loads(self.record_schema)["fields"]]

    @property
    def field_types(self) -> dict[str, set[str]]:
        """Each top-level field's Avro type names (a union gives several; a named type gives its `type`)."""
        found: dict[str, set[str]] = {}
        for item in json.loads(self.record_schema)["fields"]:
            branches = item["type"] if isinstance(item["type"], list) else [item["type"]]
            found[item["name"]] = {b if isinstance(b, str) else str(b.get("type")) for b in branches}
        return found

    def numeric_fields(self) -> set[str]:
        """Fields an aggregate may sum: a numeric primitive, alone or in a union with null."""
        return {name for name, types in self.field_types.items() if types & NUMERIC_TYPES}

    @property
    def sensitive(self) -> dict[str, MaskingRule]:
        """Sensitive field name -> its default masking rule."""
        return {item.field: item.masking for item in self.sensitive_fields}


@dataclass(frozen=True)
class DatasetChanges:
    """What an update may change; None means unchanged. sensitive_fields replaces the whole list."""

    owner_department: str | None = None
    title: str | None = None
    description: str | None = None
    domain: Domain | None = None
    classification: Classification | None = None
    openness: Openness | None = None
    record_schema: str | None = None
    sensitive_fields: tuple[SensitiveField, ...] | None = None
    price_plan: PricePlan | None = None
    asset_registration_number: str | None = None
    terms: str | None = None


@dataclass(frozen=True)
class DatasetRegistration:
    """What a provider submits to register a dataset (the provider id comes from its API key).

    record_schema is the JSON text of an Avro record; when sensitive_fields is empty, fields the schema
    marks with `"pdo.sensitive"` are taken as the sensitive ones.
    """

    dataset_id: str
    owner_department: str
    title: str
    domain: Domain
    classification: Classification
    openness: Openness
    record_schema: str
    sensitive_fields: tuple[SensitiveField, ...]
    price_plan: PricePlan
    description: str | None = None
    asset_registration_number: str | None = None
    terms: str | None = None
    derived_from: tuple[str, ...] = ()
