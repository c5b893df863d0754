"""The catalog service's rules and its all-or-nothing writes, with the broker and registry stood in for.

The real broker, registry and PostgreSQL are in tests/integration/test_catalog_on_broker.py; here the
publisher encodes each event with the real codec (so events must fit their schemas) and keeps it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from decimal import Decimal

import pytest
import sqlalchemy as sa

from pdo.catalog.agents import CatalogProjector
from pdo.catalog.public import CatalogService, DatasetChanges, DatasetRegistration
from pdo.catalog.tables import datasets
from pdo.core import db, retry, schemas
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.deadletters import SourceMessage
from pdo.core.errors import Conflict, Forbidden, InvalidInput, NotFound, Unavailable
from pdo.core.ids import PRODUCTS_PROVIDER
from pdo.core.registry_client import RegistryError, SchemaIdNotFound
from pdo.core.vocabulary import (
    Classification,
    Domain,
    MaskingRule,
    Openness,
    PriceKind,
    PricePlan,
    SensitiveField,
)

PROVIDER = "provider:city"
SCHEMA = {
    "type": "record",
    "name": "Reading",
    "namespace": "city.v1",
    "fields": [
        {"name": "record_id", "type": "string"},
        {"name": "holder", "type": "string", "pdo.sensitive": "KEEP_FIRST_LAST"},
        {"name": "value", "type": "double"},
    ],
}


class Registry:
    """In-memory registry: ids per distinct text; refuses with 409 any text listed in `incompatible`."""

    url = "http://registry.invalid"

    def __init__(self) -> None:
        self.texts: dict[int, str] = {}
        self.incompatible: set[str] = set()

    def register(self, subject: str, schema_json: str) -> int:
        if schema_json in self.incompatible:
            error = RegistryError(f'incompatible with an earlier schema for subject "{subject}"')
            error.error_code = 409
            raise error
        for schema_id, text in self.texts.items():
            if text == schema_json:
                return schema_id
        self.texts[len(self.texts) + 1] = schema_json
        return len(self.texts)

    def schema_by_id(self, schema_id: int) -> str:
        if schema_id not in self.texts:
            raise SchemaIdNotFound(schema_id)
        return self.texts[schema_id]

    def close(self) -> None:
        pass


class Publisher:
    """Encodes each event with the real codec, keeps (schema name, value, bytes); can be made to fail."""

    def __init__(self, registry: Registry) -> None:
        self.codec = AvroCodec(registry)
        self.events: list[tuple[str, dict, bytes]] = []
        self.broken = False

    def publish(self, topic, schema_name, value, key=None, **params):
        if self.broken:
            raise Unavailable("could not write to pdo.catalog: broker down")
        data = self.codec.encode("pdo.catalog", schemas.get(schema_name), value)
        self.events.append((schema_name, value, data))
        return "pdo.catalog", 0, len(self.events) - 1

    def close(self) -> None:
        pass


@pytest.fixture
def engine(sqlite_url):
    db.upgrade(sqlite_url)
    engine = db.make_engine(sqlite_url)
    yield engine
    engine.dispose()


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def publisher(registry) -> Publisher:
    return Publisher(registry)


@pytest.fixture
def service(engine, publisher, registry, monkeypatch) -> CatalogService:
    service = CatalogService(engine, publisher, registry, Settings.from_env())
    # No broker nor registry server here: the topic and compatibility calls are integration-tested.
    monkeypatch.setattr(service, "_open_feed", lambda dataset_id, provider_id: None)
    monkeypatch.setattr(service, "_close_feed", lambda dataset_id, provider_id: None)
    monkeypatch.setattr(service, "_require_full_transitive", lambda subject: None)
    return service


def registration(**changes) -> DatasetRegistration:
    base = DatasetRegistration(
        dataset_id="city-readings",
        owner_department="City Bureau",
        title="Meter readings",
        domain=Domain.URBAN_GOVERNANCE,
        classification=Classification.GENERAL,
        openness=Openness.CONDITIONAL,
        record_schema=json.dumps(SCHEMA, indent=2),
        sensitive_fields=(),
        price_plan=PricePlan(PriceKind.PER_THOUSAND_RECORDS, Decimal("1.5")),
    )
    return dataclasses.replace(base, **changes)


def rows(engine) -> list:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(datasets)))


def test_registering_writes_a_row_and_publishes_the_entry(service, publisher, engine):
    dataset = service.register(PROVIDER, registration(), actor="provider:city")

    assert dataset.version == 1 and dataset.schema_id == 1
    assert dataset.schema_subject == "pdo.feed.city-readings-city.v1.Reading"
    assert dataset.record_schema == json.dumps(SCHEMA, separators=(",", ":"))
    assert dataset.sensitive == {"holder": MaskingRule.KEEP_FIRST_LAST}
    assert dataset.price_plan.unit_price == Decimal("1.50")
    assert service.get("city-readings") == dataset
    [(name, event, _data)] = publisher.events
    assert name == "pdo.catalog.v1.DatasetRegistered"
    assert event["dataset_id"] == "city-readings" and event["actor"] == "provider:city"
    assert rows(engine)[0].last_event_id == event["event_id"]


def test_a_duplicate_id_is_a_conflict_and_publishes_nothing(service, publisher):
    service.register(PROVIDER, registration(), actor="provider:city")

    with pytest.raises(Conflict, match="already in the catalog"):
        service.register("provider:other", registration(title="Other"), actor="provider:other")
    assert len(publisher.events) == 1


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"dataset_id": "City_Readings"}, "dataset id"),
        ({"record_schema": '{"type": "record"'}, "not a valid Avro schema"),
        ({"sensitive_fields": (SensitiveField("id_card", MaskingRule.REDACT),)}, "'id_card' is not a field"),
        ({"price_plan": PricePlan(PriceKind.FREE, Decimal("2"))}, "FREE price plan"),
        ({"classification": "SECRET"}, "classification 'SECRET'"),
        ({"title": ""}, "title"),
    ],
)
def test_invalid_registrations_write_nothing(service, publisher, registry, engine, changes, reason):
    with pytest.raises(InvalidInput, match=reason):
        service.register(PROVIDER, registration(**changes), actor="provider:city")

    assert rows(engine) == [] and publisher.events == [] and registry.texts == {}


def test_a_failed_publish_rolls_the_row_back(service, publisher, engine):
    publisher.broken = True

    with pytest.raises(Unavailable):
        service.register(PROVIDER, registration(), actor="provider:city")

    assert rows(engine) == []
    with pytest.raises(NotFound):
        service.get("city-readings")


def test_an_update_bumps_the_version_and_publishes_what_changed(service, publisher):
    service.register(PROVIDER, registration(), actor="provider:city")

    updated = service.update(
        PROVIDER,
        "city-readings",
        DatasetChanges(title="Readings", openness=Openness.OPEN),
        actor="provider:city",
    )

    assert (updated.version, updated.title, updated.openness) == (2, "Readings", Openness.OPEN)
    assert service.get("city-readings") == updated
    name, event, _ = publisher.events[-1]
    assert name == "pdo.catalog.v1.DatasetUpdated"
    assert (event["title"], event["openness"], event["classification"]) == ("Readings", "OPEN", None)
    assert event["dataset"]["version"] == 2


def test_an_update_that_changes_nothing_is_no_event(service, publisher):
    registered = service.register(PROVIDER, registration(), actor="provider:city")

    again = service.update(
        PROVIDER, "city-readings", DatasetChanges(title="Meter readings"), actor="provider:city"
    )

    assert again == registered and len(publisher.events) == 1


def test_a_new_record_schema_is_registered_and_keeps_sensitive_fields_checked(service, registry):
    service.register(PROVIDER, registration(), actor="provider:city")
    wider = {
        **SCHEMA,
        "fields": [*SCHEMA["fields"], {"name": "note", "type": ["null", "string"], "default": None}],
    }

    updated = service.update(
        PROVIDER, "city-readings", DatasetChanges(record_schema=json.dumps(wider)), actor="provider:city"
    )

    assert registry.schema_by_id(updated.schema_id) == updated.record_schema
    assert "note" in updated.field_names
    narrower = {**SCHEMA, "fields": [f for f in SCHEMA["fields"] if f["name"] != "holder"]}
    with pytest.raises(InvalidInput, match="'holder' is not a field"):
        service.update(
            PROVIDER,
            "city-readings",
            DatasetChanges(record_schema=json.dumps(narrower)),
            actor="provider:city",
        )


@pytest.mark.parametrize("text", ["", "   ", "not json", "[1,"])
def test_an_empty_or_unparsable_new_schema_is_invalid_input_not_a_crash(service, publisher, text):
    """`PATCH {"record_schema": ""}` once answered 500: "" was read as "no change", then parsed as JSON."""
    service.register(PROVIDER, registration(), actor="provider:city")

    with pytest.raises(InvalidInput, match="record_schema"):
        service.update(PROVIDER, "city-readings", DatasetChanges(record_schema=text), actor="provider:city")
    assert service.get("city-readings").version == 1 and len(publisher.events) == 1


def test_an_incompatible_schema_is_a_conflict_naming_the_registrys_reason(service, registry, publisher):
    service.register(PROVIDER, registration(), actor="provider:city")
    changed = {**SCHEMA, "fields": [*SCHEMA["fields"], {"name": "extra", "type": "int"}]}
    registry.incompatible.add(json.dumps(changed, separators=(",", ":")))

    with pytest.raises(Conflict, match="not compatible .*FULL_TRANSITIVE.*incompatible with an earlier"):
        service.update(
            PROVIDER, "city-readings", DatasetChanges(record_schema=json.dumps(changed)), actor="p"
        )
    assert service.get("city-readings").version == 1 and len(publisher.events) == 1


def test_renaming_the_record_is_refused(service):
    service.register(PROVIDER, registration(), actor="provider:city")
    renamed = {**SCHEMA, "name": "Meter"}

    with pytest.raises(InvalidInput, match="keep the record's name"):
        service.update(
            PROVIDER, "city-readings", DatasetChanges(record_schema=json.dumps(renamed)), actor="p"
        )


def test_only_the_owner_may_change_a_dataset(service):
    service.register(PROVIDER, registration(), actor="provider:city")

    with pytest.raises(Forbidden, match="belongs to another provider"):
        service.update(
            "provider:other", "city-readings", DatasetChanges(title="Mine"), actor="provider:other"
        )
    with pytest.raises(Forbidden):
        service.retire("provider:other", "city-readings", "mine now", actor="provider:other")
    with pytest.raises(NotFound):
        service.update(PROVIDER, "no.such-dataset", DatasetChanges(title="x"), actor="provider:city")


def test_a_retired_dataset_stays_retired(service, publisher):
    service.register(PROVIDER, registration(), actor="provider:city")

    retired = service.retire(PROVIDER, "city-readings", "replaced by city-readings-v2", actor="provider:city")

    assert retired.retired and retired.version == 1
    name, event, _ = publisher.events[-1]
    assert (name, event["reason"], event["dataset"]["retired"]) == (
        "pdo.catalog.v1.DatasetRetired",
        "replaced by city-readings-v2",
        True,
    )
    with pytest.raises(Conflict, match="already retired"):
        service.retire(PROVIDER, "city-readings", "again", actor="provider:city")
    with pytest.raises(Conflict, match="retired and can no longer be changed"):
        service.update(PROVIDER, "city-readings", DatasetChanges(title="x"), actor="provider:city")
    with pytest.raises(InvalidInput, match="reason"):
        service.retire(PROVIDER, "city-readings", " ", actor="provider:city")
    assert service.list(PROVIDER) == [] and service.list(PROVIDER, include_retired=True) == [retired]


def test_a_derived_dataset_names_its_sources_and_its_lineage_travels_in_the_event(service, publisher, engine):
    service.register(PROVIDER, registration(), actor="provider:city")
    derived = registration(dataset_id="city-readings-daily", derived_from=("city-readings", "city-readings"))

    product = service.register(PROVIDER, derived, actor="provider:city")

    assert product.derived_from == ("city-readings",)  # each source once
    assert service.get("city-readings-daily").derived_from == ("city-readings",)
    assert service.get("city-readings").derived_from == ()
    name, event, _ = publisher.events[-1]
    assert (name, event["derived_from"]) == ("pdo.catalog.v1.DatasetRegistered", ["city-readings"])


@pytest.mark.parametrize(
    ("sources", "reason"),
    [
        (("nowhere",), "derives from 'nowhere', which is not in the catalog"),
        (("city-readings",), "derives from 'city-readings', which is retired"),
        (("city-readings-daily",), "cannot derive from itself"),
        (("Not An Id",), "dataset id"),
    ],
)
def test_lineage_names_only_registered_datasets_in_service(service, publisher, sources, reason):
    service.register(PROVIDER, registration(), actor="provider:city")
    service.retire(PROVIDER, "city-readings", "replaced", actor="provider:city")
    events = len(publisher.events)

    with pytest.raises(InvalidInput, match=reason):
        service.register(
            PROVIDER,
            registration(dataset_id="city-readings-daily", derived_from=sources),
            actor="provider:city",
        )
    assert len(publisher.events) == events


# ---------------------------------------------------------------- the agent's handler


def test_the_projector_rebuilds_the_services_rows_from_its_events(
    service, publisher, registry, sqlite_url, tmp_path
):
    service.register(PROVIDER, registration(), actor="provider:city")
    service.register(
        PROVIDER,
        registration(dataset_id="city-daily", derived_from=("city-readings",)),
        actor="provider:city",
    )
    service.update(PROVIDER, "city-readings", DatasetChanges(title="Readings"), actor="provider:city")
    service.retire(PROVIDER, "city-readings", "done", actor="provider:city")
    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    db.upgrade(fresh_url)
    fresh = db.make_engine(fresh_url)
    projector = CatalogProjector(fresh, AvroCodec(registry), dead_letters=lambda: publisher)

    outcomes = [
        asyncio.run(projector.handle(SourceMessage("pdo.catalog", 0, offset, b"city-readings", data)))
        for offset, (_name, _event, data) in enumerate(publisher.events)
    ]

    assert outcomes == ["applied"] * 4
    assert [tuple(r) for r in rows(fresh)] == [tuple(r) for r in rows(service.engine)]
    fresh.dispose()


def test_the_projector_dead_letters_bad_bytes_with_reason_and_position(engine, registry):
    letters = []

    class DeadLetters:
        def publish(self, topic, schema_name, value, key=None):
            letters.append((topic, schema_name, value))
            return "pdo.dead-letters", 0, 0

    projector = CatalogProjector(engine, AvroCodec(registry), dead_letters=DeadLetters)

    outcome = asyncio.run(
        projector.handle(SourceMessage("pdo.catalog", 1, 17, b"k", b"not avro", (("trace", b"1"),)))
    )
    unknown = asyncio.run(
        projector.handle(SourceMessage("pdo.catalog", 1, 18, b"k", b"\x00\x00\x00\x00\x63rest"))
    )

    assert (outcome, unknown) == ("dead_lettered", "dead_lettered")
    (_topic, name, letter), (_t, _n, second) = letters
    assert name == "pdo.deadletter.v1.DeadLetter"
    assert (letter["reason_code"], letter["source_offset"], letter["original_value"]) == (
        "UNDECODABLE",
        17,
        b"not avro",
    )
    assert letter["headers"] == [{"key": "trace", "value": b"1"}] and letter["service"] == "catalog"
    assert second["reason_code"] == "UNKNOWN_SCHEMA"
    schemas.get(name)  # the letters are encodable: the real publisher would take them
    assert (
        projector.metrics.registry.get_sample_value(
            "pdo_catalog_projected_events_total", {"outcome": "dead_lettered", "reason": "UNDECODABLE"}
        )
        == 1
    )


def test_the_projector_waits_out_an_outage_instead_of_dropping_the_event(
    service, publisher, registry, engine, monkeypatch
):
    service.register(PROVIDER, registration(), actor="provider:city")
    data = publisher.events[0][2]
    waits = []
    calls = {"n": 0}
    flaky = Registry()
    flaky.texts = registry.texts

    def schema_by_id(schema_id):
        calls["n"] += 1
        if calls["n"] < 3:
            raise RegistryError("cannot reach the schema registry")
        return registry.texts[schema_id]

    flaky.schema_by_id = schema_by_id

    async def sleep(seconds):
        waits.append(seconds)

    monkeypatch.setattr(retry.asyncio, "sleep", sleep)
    with engine.begin() as connection:
        connection.execute(sa.delete(datasets))
    projector = CatalogProjector(engine, AvroCodec(flaky), dead_letters=lambda: publisher)

    assert (
        asyncio.run(projector.handle(SourceMessage("pdo.catalog", 0, 0, b"city-readings", data))) == "applied"
    )
    assert waits == [0.5, 1.0]


def test_the_faust_agent_reads_pdo_catalog_and_hands_each_message_to_the_projector():
    from types import SimpleNamespace

    from pdo.catalog.app import Runtime, create_app

    class Recorder:
        def __init__(self) -> None:
            self.seen: list[SourceMessage] = []

        async def handle(self, message: SourceMessage) -> str:
            self.seen.append(message)
            return "applied"

    class Stream:
        """What the agent uses of a faust stream: events carrying the raw message."""

        async def events(self):
            raw = SimpleNamespace(
                topic="pdo.catalog", partition=2, offset=9, key=b"k", value=b"\x00v", headers=[("h", b"1")]
            )
            yield SimpleNamespace(message=raw)

    recorder = Recorder()

    async def run() -> list[str]:
        # Built inside the running loop, so faust uses it rather than making one of its own.
        settings = Settings.from_env()
        runtime = Runtime(settings, db.make_engine("sqlite://"), AvroCodec(Registry()), recorder)
        app = create_app(settings, runtime)
        agent = app.agents["project_catalog"]
        await agent.fun(Stream())
        return list(agent.channel.topics)

    # agent.test_context() would do, but leaves an unclosed consumer-thread event loop behind.
    assert asyncio.run(run()) == ["pdo.catalog"]
    assert recorder.seen == [SourceMessage("pdo.catalog", 2, 9, b"k", b"\x00v", (("h", b"1"),))]


def test_product_ids_are_reserved_to_derived_data_products(service, publisher, engine):
    with pytest.raises(InvalidInput, match="reserved for derived data products"):
        service.register(PROVIDER, registration(dataset_id="product-readings"), actor="provider:city")
    with pytest.raises(InvalidInput, match="starts with 'product-'"):
        service.register(PRODUCTS_PROVIDER, registration(), actor="operator:alice")
    assert rows(engine) == [] and publisher.events == []

    product = service.register(
        PRODUCTS_PROVIDER, registration(dataset_id="product-readings"), "operator:alice"
    )
    assert product.provider_id == PRODUCTS_PROVIDER
