"""Catalog events into rows on SQLite, without a broker: idempotent, newest version wins."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from pdo.catalog import mapping
from pdo.catalog.projection import InvalidCatalogEvent, Position, apply_catalog_event
from pdo.catalog.public import Dataset, get_dataset, list_datasets
from pdo.catalog.tables import datasets
from pdo.core import db
from pdo.core.errors import NotFound
from pdo.core.registry_client import SchemaIdNotFound
from pdo.core.vocabulary import (
    Classification,
    Domain,
    MaskingRule,
    Openness,
    PriceKind,
    PricePlan,
    PriceTier,
    SensitiveField,
)

SCHEMA_V1 = '{"type":"record","name":"Reading","fields":[{"name":"record_id","type":"string"}]}'
SCHEMA_V2 = (
    '{"type":"record","name":"Reading","fields":[{"name":"record_id","type":"string"},'
    '{"name":"note","type":["null","string"],"default":null}]}'
)
START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


class Schemas:
    """Stands in for the registry: schema texts by id, counting lookups."""

    def __init__(self) -> None:
        self.texts = {1: SCHEMA_V1, 2: SCHEMA_V2}
        self.lookups = 0

    def schema_by_id(self, schema_id: int) -> str:
        self.lookups += 1
        if schema_id not in self.texts:
            raise SchemaIdNotFound(schema_id)
        return self.texts[schema_id]


@pytest.fixture
def engine(sqlite_url):
    db.upgrade(sqlite_url)
    engine = db.make_engine(sqlite_url)
    yield engine
    engine.dispose()


def dataset(**changes) -> Dataset:
    base = Dataset(
        dataset_id="city-readings",
        provider_id="provider:city",
        owner_department="City Bureau",
        title="Readings",
        domain=Domain.URBAN_GOVERNANCE,
        classification=Classification.GENERAL,
        openness=Openness.CONDITIONAL,
        schema_subject="pdo.feed.city-readings-Reading",
        schema_id=1,
        record_schema=SCHEMA_V1,
        price_plan=PricePlan(
            PriceKind.TIERED,
            Decimal("0.50"),
            (PriceTier(1000, Decimal("1.25")), PriceTier(None, Decimal("0.50"))),
        ),
        sensitive_fields=(SensitiveField("record_id", MaskingRule.KEYED_HASH, "links people"),),
        description="hourly",
    )
    return dataclasses.replace(base, **changes)


def head(minutes: int = 0) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": START + timedelta(minutes=minutes),
        "actor": "provider:city",
    }


def registered(entry: Dataset, minutes: int = 0) -> dict:
    return mapping.registered_event(head(minutes), entry)


def updated(before: Dataset, after: Dataset, minutes: int) -> dict:
    return mapping.updated_event(head(minutes), before, after)


def retired(entry: Dataset, minutes: int, reason: str = "replaced") -> dict:
    return mapping.retired_event(head(minutes), dataclasses.replace(entry, retired=True), reason)


def row(engine, dataset_id="city-readings"):
    with engine.connect() as connection:
        return connection.execute(sa.select(datasets).where(datasets.c.dataset_id == dataset_id)).one()


def test_a_registration_becomes_a_row_with_the_registrys_schema_text(engine):
    event = registered(dataset())

    assert apply_catalog_event(
        engine,
        "pdo.catalog.v1.DatasetRegistered",
        event,
        registry=Schemas(),
        position=Position("pdo.catalog", 2, 41),
    )

    assert get_dataset(engine, "city-readings") == dataset()
    stored = row(engine)
    assert (stored.last_event_id, stored.last_event_partition, stored.last_event_offset) == (
        event["event_id"],
        2,
        41,
    )
    assert json.loads(stored.price_plan)["tiers"][0] == {"up_to_records": 1000, "unit_price": "1.25"}


def test_applying_the_same_event_twice_changes_nothing(engine):
    event = registered(dataset())
    apply_catalog_event(engine, "pdo.catalog.v1.DatasetRegistered", event, registry=Schemas())
    first = row(engine)

    assert not apply_catalog_event(engine, "pdo.catalog.v1.DatasetRegistered", event, registry=Schemas())
    assert row(engine) == first


def test_updates_apply_in_order_and_older_ones_are_ignored(engine):
    v1 = dataset()
    v2 = dataclasses.replace(v1, title="Readings (hourly)", version=2)
    v3 = dataclasses.replace(v2, record_schema=SCHEMA_V2, schema_id=2, version=3)
    schemas = Schemas()
    apply_catalog_event(engine, "pdo.catalog.v1.DatasetRegistered", registered(v1), registry=schemas)
    apply_catalog_event(engine, "pdo.catalog.v1.DatasetUpdated", updated(v2, v3, 2), registry=schemas)

    assert not apply_catalog_event(
        engine, "pdo.catalog.v1.DatasetUpdated", updated(v1, v2, 1), registry=schemas
    )
    assert not apply_catalog_event(
        engine, "pdo.catalog.v1.DatasetRegistered", registered(v1), registry=schemas
    )
    assert get_dataset(engine, "city-readings") == v3


def test_an_update_seen_before_its_registration_still_leaves_the_newest_state(engine):
    v1 = dataset()
    v2 = dataclasses.replace(v1, openness=Openness.OPEN, version=2)

    apply_catalog_event(engine, "pdo.catalog.v1.DatasetUpdated", updated(v1, v2, 1), registry=Schemas())
    apply_catalog_event(engine, "pdo.catalog.v1.DatasetRegistered", registered(v1), registry=Schemas())

    assert get_dataset(engine, "city-readings") == v2


def test_a_retirement_is_final_and_keeps_its_reason(engine):
    v1 = dataset()
    apply_catalog_event(engine, "pdo.catalog.v1.DatasetRegistered", registered(v1), registry=Schemas())

    assert apply_catalog_event(
        engine, "pdo.catalog.v1.DatasetRetired", retired(v1, 5, "superseded"), registry=Schemas()
    )
    assert not apply_catalog_event(
        engine, "pdo.catalog.v1.DatasetRegistered", registered(v1), registry=Schemas()
    )

    assert get_dataset(engine, "city-readings").retired
    assert row(engine).retired_reason == "superseded"
    assert list_datasets(engine) == []
    assert [d.dataset_id for d in list_datasets(engine, include_retired=True)] == ["city-readings"]


def test_a_retirement_without_a_snapshot_marks_a_known_dataset_and_skips_an_unknown_one(engine):
    apply_catalog_event(engine, "pdo.catalog.v1.DatasetRegistered", registered(dataset()), registry=Schemas())
    legacy = {**head(3), "dataset_id": "city-readings", "reason": "old", "dataset": None}
    unknown = {**head(3), "dataset_id": "publisher-probe", "reason": "probe", "dataset": None}

    assert apply_catalog_event(engine, "pdo.catalog.v1.DatasetRetired", legacy, registry=Schemas())
    assert not apply_catalog_event(engine, "pdo.catalog.v1.DatasetRetired", unknown, registry=Schemas())
    assert get_dataset(engine, "city-readings").retired
    with pytest.raises(NotFound):
        get_dataset(engine, "publisher-probe")


def test_an_event_naming_an_unknown_schema_id_cannot_be_applied(engine):
    event = registered(dataset(schema_id=99))

    with pytest.raises(InvalidCatalogEvent) as refused:
        apply_catalog_event(engine, "pdo.catalog.v1.DatasetRegistered", event, registry=Schemas())
    assert refused.value.reason_code == "UNKNOWN_SCHEMA"


def test_an_event_of_another_type_is_a_schema_mismatch(engine):
    with pytest.raises(InvalidCatalogEvent) as refused:
        apply_catalog_event(engine, "pdo.requests.v1.DataRequestSubmitted", {}, registry=Schemas())
    assert refused.value.reason_code == "SCHEMA_MISMATCH"


def test_unknown_enum_symbols_fall_back_to_the_strictest_reading():
    entry = mapping.snapshot(dataset())
    entry.update(classification="SECRET", openness="MAYBE", domain="SPACE")
    entry["sensitive_fields"][0]["masking"] = "SCRAMBLE"

    read = mapping.dataset_from_snapshot(entry, SCHEMA_V1)

    assert (read.classification, read.openness, read.domain) == (
        Classification.CORE,
        Openness.NOT_OPEN,
        Domain.OTHER,
    )
    assert read.sensitive_fields[0].masking is MaskingRule.REDACT


def test_an_updated_event_carries_only_changed_fields_and_the_whole_entry():
    before = dataset()
    after = dataclasses.replace(before, title="New title", version=2)

    event = updated(before, after, 1)

    assert event["title"] == "New title"
    assert event["owner_department"] is None and event["price_plan"] is None
    assert event["version"] == 2
    assert event["dataset"] == mapping.snapshot(after)


def test_the_table_definition_and_migration_0002_agree(engine):
    reflected = sa.inspect(engine)

    columns = {column["name"]: column["nullable"] for column in reflected.get_columns("catalog_datasets")}

    assert columns == {column.name: column.nullable for column in datasets.columns}
    assert [index["name"] for index in reflected.get_indexes("catalog_datasets")] == [
        "ix_catalog_datasets_provider_id"
    ]


def test_the_listing_fields_travel_in_catalog_events_and_their_changes(engine):
    before = dataset()
    after = dataclasses.replace(
        before, version=2, asset_registration_number="SZ-DA-2026-0042", terms="traffic planning only"
    )
    apply_catalog_event(engine, "pdo.catalog.v1.DatasetRegistered", registered(before), registry=Schemas())
    change = updated(before, after, minutes=1)
    apply_catalog_event(engine, "pdo.catalog.v1.DatasetUpdated", change, registry=Schemas())

    assert (change["asset_registration_number"], change["terms"]) == (
        "SZ-DA-2026-0042",
        "traffic planning only",
    )
    assert get_dataset(engine, "city-readings") == after
