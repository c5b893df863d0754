"""The catalog on the real broker, schema registry and databases: rows and pdo.catalog events agree,
refusals leave nothing behind, and a wiped database is rebuilt from the topic to the same rows."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa
from conftest import admin_credentials, free_port, isolated_namespace, unique_name
from kafka import KafkaConsumer, TopicPartition

from pdo.catalog.projection import rebuild_from_topic
from pdo.catalog.public import CatalogService, DatasetChanges, DatasetRegistration
from pdo.catalog.tables import datasets
from pdo.core import db, schemas, topics
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.errors import Conflict, InvalidInput, Unavailable
from pdo.core.events import EventPublisher
from pdo.core.kafka import admin_client, kafka_python_connection
from pdo.core.registry_client import RegistryClient
from pdo.core.topics import TopicId, feed_topic
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

pytestmark = pytest.mark.integration

PROVIDER = "provider:transport-bureau"
TRAFFIC_FLOW = schemas.path_of("pdo.datasets.v1.TrafficFlow").read_text()


@pytest.fixture
def settings(kafka_bootstrap, registry_url, tmp_path) -> Iterator[Settings]:
    with isolated_namespace(
        dataclasses.replace(Settings.from_env(), registry_url=registry_url), tmp_path
    ) as ours:
        yield ours


@pytest.fixture
def engine(database_url):
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def registry(settings):
    with RegistryClient.for_settings(settings) as client:
        yield client


@pytest.fixture
def service(settings, engine, registry):
    publisher = EventPublisher(settings)
    yield CatalogService(engine, publisher, registry, settings)
    publisher.close()


def registration(dataset_id: str, **changes) -> DatasetRegistration:
    base = DatasetRegistration(
        dataset_id=dataset_id,
        owner_department="Municipal Transport Bureau",
        title="Traffic flow at checkpoints",
        domain=Domain.TRANSPORT,
        classification=Classification.IMPORTANT,
        openness=Openness.CONDITIONAL,
        record_schema=TRAFFIC_FLOW,
        sensitive_fields=(),
        price_plan=PricePlan(
            PriceKind.TIERED,
            Decimal("0.50"),
            (PriceTier(100000, Decimal("2.00")), PriceTier(None, Decimal("1.00"))),
        ),
        description="one record per vehicle passing a checkpoint",
    )
    return dataclasses.replace(base, **changes)


def catalog_end(settings: Settings) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(**kafka_python_connection(settings))
    try:
        topic = topics.name(TopicId.CATALOG, settings)
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return consumer.end_offsets(partitions)
    finally:
        consumer.close()


def events_since(
    settings: Settings, start: dict[TopicPartition, int], dataset_id: str
) -> list[tuple[str, dict]]:
    """(schema name, value) of every catalog event keyed by `dataset_id` written after `start`, in order."""
    end = catalog_end(settings)
    consumer = KafkaConsumer(**kafka_python_connection(settings), consumer_timeout_ms=5000)
    found = []
    try:
        consumer.assign(list(start))
        for partition, offset in start.items():
            consumer.seek(partition, offset)
        while any(consumer.position(p) < end[p] for p in start):
            for batch in consumer.poll(timeout_ms=500).values():
                found += [r for r in batch if r.key == dataset_id.encode()]
    finally:
        consumer.close()
    with RegistryClient.for_settings(settings) as registry:
        codec = AvroCodec(registry)
        decoded = [codec.decode(r.value) for r in sorted(found, key=lambda r: r.offset)]
    return [(d.schema_name, d.value) for d in decoded]


def rows(engine, dataset_ids) -> list[dict]:
    with engine.connect() as connection:
        query = (
            sa.select(datasets).where(datasets.c.dataset_id.in_(dataset_ids)).order_by(datasets.c.dataset_id)
        )
        return [dict(row._mapping) for row in connection.execute(query)]


def comparable(row: dict) -> dict:
    # SQLite keeps no time zone; the instant is what must agree.
    return {**row, "updated_at": row["updated_at"].replace(tzinfo=None)}


def test_register_update_retire_are_rows_and_events_that_agree(service, settings, engine, registry):
    dataset_id = unique_name("it-traffic")
    start = catalog_end(settings)

    registered = service.register(PROVIDER, registration(dataset_id), actor=PROVIDER)
    updated = service.update(
        PROVIDER, dataset_id, DatasetChanges(openness=Openness.OPEN, title="Traffic flow"), actor=PROVIDER
    )
    retired = service.retire(PROVIDER, dataset_id, "replaced by traffic-flow-v2", actor="operator:alice")

    events = events_since(settings, start, dataset_id)
    assert [name for name, _ in events] == [
        "pdo.catalog.v1.DatasetRegistered",
        "pdo.catalog.v1.DatasetUpdated",
        "pdo.catalog.v1.DatasetRetired",
    ]
    (_, reg), (_, upd), (_, ret) = events
    assert registered.sensitive == {
        "plate_number": MaskingRule.KEEP_FIRST_LAST,
        "driver_phone": MaskingRule.MASK_MIDDLE_DIGITS,
    }
    assert (reg["version"], reg["schema_id"], reg["schema_subject"]) == (
        1,
        registered.schema_id,
        f"{feed_topic(dataset_id, settings)}-pdo.datasets.v1.TrafficFlow",
    )
    assert reg["price_plan"]["tiers"][0] == {"up_to_records": 100000, "unit_price": Decimal("2.00")}
    assert (upd["openness"], upd["title"], upd["classification"], upd["version"]) == (
        "OPEN",
        "Traffic flow",
        None,
        2,
    )
    assert upd["dataset"]["openness"] == "OPEN" and upd["dataset"]["version"] == updated.version == 2
    assert (ret["reason"], ret["actor"], ret["dataset"]["retired"]) == (
        "replaced by traffic-flow-v2",
        "operator:alice",
        True,
    )
    [row] = rows(engine, [dataset_id])
    assert row["last_event_id"] == ret["event_id"] and row["retired"] and row["version"] == 2
    assert service.get(dataset_id) == retired
    assert registry.schema_by_id(registered.schema_id) == registered.record_schema


def test_registration_creates_the_feed_topic_and_a_full_transitive_subject(service, settings):
    dataset_id = unique_name("it-feed")

    dataset = service.register(PROVIDER, registration(dataset_id), actor=PROVIDER)

    with admin_client(settings) as admin:
        [described] = admin.describe_topics([feed_topic(dataset_id, settings)])
    assert described["name"] == feed_topic(dataset_id, settings) and len(described["partitions"]) == 3
    level = httpx.get(
        f"{settings.registry_url}/config/{dataset.schema_subject}", auth=admin_credentials()
    ).json()
    assert level == {"compatibilityLevel": "FULL_TRANSITIVE"}


def test_an_incompatible_schema_change_is_a_conflict_and_changes_nothing(service, settings, engine):
    dataset_id = unique_name("it-compat")
    service.register(PROVIDER, registration(dataset_id), actor=PROVIDER)
    before = rows(engine, [dataset_id])
    record = json.loads(TRAFFIC_FLOW)
    record["fields"].append({"name": "weight_kg", "type": "double"})  # no default: old readers break
    start = catalog_end(settings)

    with pytest.raises(Conflict, match="not compatible"):
        service.update(PROVIDER, dataset_id, DatasetChanges(record_schema=json.dumps(record)), actor=PROVIDER)

    assert rows(engine, [dataset_id]) == before
    assert events_since(settings, start, dataset_id) == []
    record["fields"][-1]["default"] = 0.0
    evolved = service.update(
        PROVIDER, dataset_id, DatasetChanges(record_schema=json.dumps(record)), actor=PROVIDER
    )
    assert evolved.version == 2 and "weight_kg" in evolved.field_names


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"sensitive_fields": (SensitiveField("id_card", MaskingRule.REDACT),)}, "'id_card' is not a field"),
        ({"record_schema": '{"type": "record", "name": "R", "fields": [{"name": "x"}]}'}, "not a valid Avro"),
        ({"price_plan": PricePlan(PriceKind.PER_MEGABYTE, Decimal("0.001"))}, "two decimal places"),
    ],
)
def test_invalid_input_writes_no_row_no_event_no_topic(service, settings, engine, changes, reason):
    dataset_id = unique_name("it-bad")
    start = catalog_end(settings)

    with pytest.raises(InvalidInput, match=reason):
        service.register(PROVIDER, registration(dataset_id, **changes), actor=PROVIDER)

    assert rows(engine, [dataset_id]) == []
    assert events_since(settings, start, dataset_id) == []
    with admin_client(settings) as admin:
        assert feed_topic(dataset_id, settings) not in admin.list_topics()


def test_when_the_event_cannot_be_published_no_row_is_kept(settings, engine, registry):
    dataset_id = unique_name("it-down")
    unreachable = dataclasses.replace(settings, registry_url=f"http://127.0.0.1:{free_port()}")
    publisher = EventPublisher(unreachable)
    service = CatalogService(engine, publisher, registry, settings)
    try:
        with pytest.raises(Unavailable):
            service.register(PROVIDER, registration(dataset_id), actor=PROVIDER)
    finally:
        publisher.close()

    assert rows(engine, [dataset_id]) == []


def test_a_wiped_database_is_rebuilt_from_the_topic_to_the_same_rows(
    service, settings, engine, tmp_path, registry
):
    kept, changed, gone = (unique_name(f"it-rebuild-{n}") for n in ("kept", "changed", "gone"))
    service.register(PROVIDER, registration(kept), actor=PROVIDER)
    service.register(PROVIDER, registration(changed, sensitive_fields=()), actor=PROVIDER)
    service.update(
        PROVIDER,
        changed,
        DatasetChanges(price_plan=PricePlan(PriceKind.FREE), classification=Classification.GENERAL),
        actor=PROVIDER,
    )
    service.update(PROVIDER, changed, DatasetChanges(description="now free"), actor="operator:bob")
    service.register("provider:other", registration(gone), actor="provider:other")
    service.retire("provider:other", gone, "withdrawn", actor="provider:other")
    ids = [kept, changed, gone]
    wiped_url = f"sqlite:///{tmp_path / 'wiped.db'}"
    db.upgrade(wiped_url)
    wiped = db.make_engine(wiped_url)

    try:
        report = rebuild_from_topic(settings, wiped, timeout_s=20, only_dataset_ids=set(ids))
        again = rebuild_from_topic(settings, wiped, timeout_s=20, only_dataset_ids=set(ids))
        rebuilt = rows(wiped, ids)
    finally:
        wiped.dispose()

    assert (report.applied, report.skipped) == (6, [])
    assert (again.applied, again.unchanged) == (0, 6)
    assert [comparable(r) for r in rebuilt] == [comparable(r) for r in rows(engine, ids)]
