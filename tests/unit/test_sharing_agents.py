"""The sharing worker's per-record handler with stand-ins: an in-memory registry and catalog, no broker."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import avro.schema
import pytest
from prometheus_client import REGISTRY

from pdo.authorization import records
from pdo.authorization.testing import InMemoryCatalog, traffic_dataset
from pdo.core import schemas
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.deadletters import SourceMessage
from pdo.core.provenance import delivery_id
from pdo.core.registry_client import SchemaIdNotFound
from pdo.core.topics import tenant_topic, tenant_topic_part
from pdo.core.vocabulary import MaskingRule
from pdo.sharing import agents
from pdo.sharing.agents import FeedHandler, PartitionBatch, Prepared, feed_dataset_id, feed_pattern
from pdo.sharing.grants import GrantBook
from pdo.sharing.masking import mask, pseudonym_key

PUBLISHED = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
DATASET = "traffic-flow"
FEED = f"pdo.feed.{DATASET}"


class MemoryRegistry:
    """The two registry calls the codec makes, in memory."""

    def __init__(self) -> None:
        self.by_id: dict[int, str] = {}
        self.ids: dict[tuple[str, str], int] = {}

    def register(self, subject: str, schema_json: str) -> int:
        key = (subject, schema_json)
        if key not in self.ids:
            self.ids[key] = len(self.by_id) + 1
            self.by_id[self.ids[key]] = schema_json
        return self.ids[key]

    def schema_by_id(self, schema_id: int) -> str:
        try:
            return self.by_id[schema_id]
        except KeyError:
            raise SchemaIdNotFound(schema_id) from None

    def close(self) -> None:
        pass


@pytest.fixture
def codec() -> AvroCodec:
    return AvroCodec(MemoryRegistry())


@pytest.fixture
def catalog() -> InMemoryCatalog:
    return InMemoryCatalog(traffic_dataset(DATASET), traffic_dataset("old-traffic", retired=True))


@pytest.fixture
def book() -> GrantBook:
    book = GrantBook()
    book.apply(
        records.GRANTED, granted("grant-acme", "tenant:acme", ("record_id", "district", "plate_number"))
    )
    book.apply(
        records.GRANTED,
        granted(
            "grant-lab",
            "tenant:citylab",
            ("record_id", "district", "speed_kmh"),
            row_filter="district == 'Haidian'",
        ),
    )
    return book


@pytest.fixture
def handler(codec, catalog, book) -> FeedHandler:
    return FeedHandler(Settings.from_env(), codec, catalog.get, book, b"test-key")


def granted(grant_id: str, tenant: str, fields: tuple[str, ...], row_filter: str | None = None) -> dict:
    return {
        "event_id": f"e-{grant_id}",
        "occurred_at": PUBLISHED - timedelta(hours=1),
        "actor": "operator:alice",
        "grant_id": grant_id,
        "request_id": f"r-{grant_id}",
        "tenant_id": tenant,
        "dataset_id": DATASET,
        "fields": list(fields),
        "masking": {"plate_number": "KEEP_FIRST_LAST"} if "plate_number" in fields else {},
        "row_filter": row_filter,
        "daily_quota_records": None,
        "valid_from": PUBLISHED - timedelta(days=1),
        "valid_until": PUBLISHED + timedelta(days=1),
        "price_plan": {"kind": "FREE", "unit_price": 0, "tiers": [], "currency": "CNY"},
        "decided_by_rule": None,
        "reason": None,
    }


def traffic_record(record_id: str = "r-1", district: str = "Haidian") -> dict[str, Any]:
    return {
        "record_id": record_id,
        "checkpoint_id": "cp-17",
        "district": district,
        "plate_number": "京A12345",
        "vehicle_type": "BUS",
        "speed_kmh": 41.0,
        "lane": 1,
        "direction": "EASTBOUND",
        "observed_at": PUBLISHED,
        "driver_phone": "13812345678",
    }


def feed_message(value: bytes, topic: str = FEED, offset: int = 7) -> SourceMessage:
    return SourceMessage(topic=topic, partition=1, offset=offset, key=b"r-1", value=value)


def encoded_record(codec: AvroCodec, record: dict[str, Any], topic: str = FEED) -> bytes:
    dataset = traffic_dataset(DATASET)
    return codec.encode(topic, avro.schema.parse(dataset.record_schema), record)


def decoded(codec: AvroCodec, prepared: Prepared) -> list[tuple[str, dict[str, Any]]]:
    return [(item.topic, codec.decode(item.value).value) for item in prepared.outgoing]


def usage_facts(codec: AvroCodec, partition: PartitionBatch) -> list[tuple[str, dict[str, Any]]]:
    return [
        (item.topic, codec.decode(item.value).value)
        for item in partition.outgoing
        if item.topic == "pdo.deliveries"
    ]


def dead_letter_count(reason: str) -> float:
    return REGISTRY.get_sample_value("pdo_sharing_dead_letters_total", {"reason": reason}) or 0.0


# ---------------------------------------------------------------------------------------------- delivery


def test_each_active_grant_gets_its_fields_masked_with_provenance_and_a_usage_fact(handler, codec):
    message = feed_message(encoded_record(codec, traffic_record()))
    prepared = handler.handle(message, PUBLISHED)
    out = decoded(codec, prepared)
    acme_topic, lab_topic = tenant_topic("tenant:acme", DATASET), tenant_topic("tenant:citylab", DATASET)
    assert [topic for topic, _ in out] == [acme_topic, lab_topic]
    acme = out[0][1]
    assert set(acme) == {"record_id", "district", "plate_number", "pdo_provenance"}
    assert acme["plate_number"] == "京*****5"
    assert acme["pdo_provenance"]["grant_id"] == "grant-acme"
    assert (acme["pdo_provenance"]["source_partition"], acme["pdo_provenance"]["source_offset"]) == (1, 7)
    assert set(out[1][1]) == {"record_id", "district", "speed_kmh", "pdo_provenance"}
    assert prepared.outgoing[0].key == b"r-1"
    assert prepared.delivered == [("tenant:acme", DATASET), ("tenant:citylab", DATASET)]
    assert prepared.masked == ["KEEP_FIRST_LAST"]

    _, partitions = handler.share_batch([(message, PUBLISHED)])
    facts = {v["grant_id"]: v for topic, v in usage_facts(codec, partitions[(FEED, 1)])}
    assert set(facts) == {"grant-acme", "grant-lab"}
    assert facts["grant-acme"]["target_topic"] == acme_topic
    assert facts["grant-acme"]["deliveries"] == [
        {
            "delivery_id": delivery_id(FEED, 1, 7, "grant-acme"),
            "source_offset": 7,
            "bytes": len(prepared.outgoing[0].value),
        }
    ]


def test_a_batch_has_one_usage_fact_per_grant_and_feed_partition_listing_each_delivery(handler, codec):
    value = encoded_record(codec, traffic_record())
    batch = [
        (SourceMessage(FEED, partition, offset, b"r-1", value), PUBLISHED)
        for partition, offset in ((1, 7), (2, 3), (1, 8), (1, 9))
    ]
    prepared, partitions = handler.share_batch(batch)
    assert {feed: part.next_offset for feed, part in partitions.items()} == {(FEED, 1): 10, (FEED, 2): 4}
    one = {v["grant_id"]: v for _, v in usage_facts(codec, partitions[(FEED, 1)])}
    assert [d["source_offset"] for d in one["grant-acme"]["deliveries"]] == [7, 8, 9]
    assert one["grant-acme"]["source_partition"] == 1
    other = {v["grant_id"]: v for _, v in usage_facts(codec, partitions[(FEED, 2)])}
    assert [d["delivery_id"] for d in other["grant-lab"]["deliveries"]] == [
        delivery_id(FEED, 2, 3, "grant-lab")
    ]
    # Every tenant record of a partition is in its transaction, beside the facts that count it.
    tenant_records = [item for item in partitions[(FEED, 1)].outgoing if item.topic != "pdo.deliveries"]
    assert tenant_records == [
        item for record in (prepared[0], prepared[2], prepared[3]) for item in record.outgoing
    ]


def test_redelivery_gives_the_same_delivery_and_event_ids(handler, codec):
    batch = [(feed_message(encoded_record(codec, traffic_record())), PUBLISHED)]
    first = usage_facts(codec, handler.share_batch(batch)[1][(FEED, 1)])
    again = usage_facts(codec, handler.share_batch(batch)[1][(FEED, 1)])
    ids = [(v["deliveries"][0]["delivery_id"], v["event_id"]) for _, v in first]
    assert ids == [(v["deliveries"][0]["delivery_id"], v["event_id"]) for _, v in again]
    assert len(set(ids)) == 2


def test_the_row_filter_keeps_other_rows_from_the_filtered_grant(handler, codec):
    prepared = handler.handle(
        feed_message(encoded_record(codec, traffic_record(district="Chaoyang"))), PUBLISHED
    )
    assert [topic for topic, _ in decoded(codec, prepared)] == [tenant_topic("tenant:acme", DATASET)]
    assert [delivery.scope.grant_id for delivery in prepared.usage] == ["grant-acme"]


def test_an_inactive_grant_receives_nothing(handler, codec, book):
    suspension = {
        "event_id": "e-s",
        "occurred_at": PUBLISHED - timedelta(minutes=5),
        "actor": "operator:alice",
        "grant_id": "grant-acme",
        "tenant_id": "tenant:acme",
        "dataset_id": DATASET,
        "reason": "audit",
        "grant": {
            **{
                k: v
                for k, v in granted("grant-acme", "tenant:acme", ("record_id",)).items()
                if k not in ("event_id", "occurred_at", "actor", "decided_by_rule", "reason")
            },
            "status": "SUSPENDED",
            "status_reason": "audit",
            "version": 2,
        },
    }
    book.apply(records.SUSPENDED, suspension)
    prepared = handler.handle(feed_message(encoded_record(codec, traffic_record())), PUBLISHED)
    assert {v.get("grant_id") or v["pdo_provenance"]["grant_id"] for _, v in decoded(codec, prepared)} == {
        "grant-lab"
    }
    # Outside every grant's validity window nobody receives it.
    assert (
        handler.handle(
            feed_message(encoded_record(codec, traffic_record())), PUBLISHED + timedelta(days=2)
        ).outgoing
        == []
    )


# ---------------------------------------------------------------------------------------------- dead letters


@pytest.mark.parametrize(
    ("make_message", "reason"),
    [
        (lambda codec: feed_message(b"\x07garbage"), "UNDECODABLE"),
        (lambda codec: feed_message(b""), "UNDECODABLE"),
        (lambda codec: feed_message(b"\x00\x00\x00\x03\xe7body"), "UNKNOWN_SCHEMA"),
        (lambda codec: feed_message(encoded_record(codec, traffic_record())[:-3]), "SCHEMA_MISMATCH"),
        (
            lambda codec: feed_message(
                codec.encode(
                    FEED,
                    schemas.get(records.DENIED),
                    {
                        "event_id": "e",
                        "occurred_at": PUBLISHED,
                        "actor": "a",
                        "request_id": "r",
                        "tenant_id": "t",
                        "dataset_id": DATASET,
                        "rule": "x",
                        "reason": "y",
                    },
                )
            ),
            "SCHEMA_MISMATCH",
        ),
        (
            lambda codec: feed_message(encoded_record(codec, traffic_record()), topic="pdo.feed.nobody"),
            "UNKNOWN_DATASET",
        ),
        (
            lambda codec: feed_message(encoded_record(codec, traffic_record()), topic="pdo.feed.old-traffic"),
            "RETIRED_DATASET",
        ),
    ],
)
def test_what_cannot_be_shared_is_dead_lettered_with_its_reason_and_bytes(
    handler, codec, make_message, reason
):
    message = make_message(codec)
    before = dead_letter_count(reason)
    prepared = handler.handle(message, PUBLISHED)
    ((topic, letter),) = decoded(codec, prepared)
    assert topic == "pdo.dead-letters"
    assert letter["reason_code"] == reason
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        message.topic,
        1,
        7,
    )
    assert letter["original_value"] == message.value
    assert letter["service"] == "sharing"
    prepared.count()
    assert dead_letter_count(reason) == before + 1


def test_a_value_that_does_not_fit_the_tenant_schema_delivers_nothing(handler, codec, catalog):
    # The catalog's schema says district is a string; a writer schema with an int district decodes, but
    # its shaped record cannot be encoded for the tenant: all or nothing, the record is dead-lettered.
    odd = json.loads(traffic_dataset(DATASET).record_schema)
    for field in odd["fields"]:
        if field["name"] == "district":
            field["type"] = "int"
    value = codec.encode(FEED, avro.schema.parse(json.dumps(odd)), {**traffic_record(), "district": 5})
    prepared = handler.handle(feed_message(value), PUBLISHED)
    assert [v["reason_code"] for _, v in decoded(codec, prepared)] == ["SCHEMA_MISMATCH"]


def test_a_broken_catalog_dataset_lookup_is_retried_not_dead_lettered(codec, book):
    from pdo.core.errors import Unavailable

    def down(dataset_id: str):
        raise Unavailable("database down")

    handler = FeedHandler(Settings.from_env(), codec, down, book, b"k")
    with pytest.raises(Unavailable):
        handler.handle(feed_message(encoded_record(codec, traffic_record())), PUBLISHED)


# ---------------------------------------------------------------------------------------------- names


def test_feed_and_tenant_topic_names_follow_the_declarations():
    assert feed_dataset_id("pdo.feed.air-quality") == "air-quality"
    assert feed_dataset_id("pdo.tenant.acme.air-quality") is None
    assert feed_dataset_id("pdo.t-123.feed.air-quality") is None  # another namespace
    assert feed_pattern().pattern.startswith("^pdo\\.feed\\.")
    assert tenant_topic_part("tenant:acme") == "acme"
    assert tenant_topic_part("acme") == "acme"
    assert tenant_topic("tenant:acme", "air-quality") == "pdo.tenant.acme.air-quality"


def test_a_dataset_retired_on_the_catalog_topic_is_refused_from_the_next_record_on(codec, catalog, book):
    handler = FeedHandler(Settings.from_env(), codec, catalog.get, book, b"k")
    value = encoded_record(codec, traffic_record())
    assert handler.handle(feed_message(value), PUBLISHED).dead_letter_reason is None
    catalog.add(replace(catalog.get(DATASET), retired=True))
    assert handler.handle(feed_message(value), PUBLISHED).dead_letter_reason == "RETIRED_DATASET"


def test_a_record_too_large_for_a_tenant_topic_is_dead_lettered_not_retried(handler, codec, monkeypatch):
    monkeypatch.setattr(agents, "MAX_TENANT_RECORD_BYTES", 40)  # every shaped traffic record is larger
    prepared = handler.handle(feed_message(encoded_record(codec, traffic_record())), PUBLISHED)
    letters = [value for _, value in decoded(codec, prepared)]
    assert [letter["reason_code"] for letter in letters] == ["OTHER"]
    assert "over the 40 bytes a tenant topic takes" in letters[0]["reason"]
    assert prepared.delivered == []


# ---------------------------------------------------------------------------------------------- grant scope


def forged(book: GrantBook, grant_id: str, fields: tuple[str, ...], row_filter: str, **changes: Any) -> None:
    """A grant event the authorization service would never write (a forged or stale one), in the book."""
    book.apply(records.GRANTED, {**granted(grant_id, "tenant:mallory", fields, row_filter), **changes})


def tenant_deliveries(codec: AvroCodec, prepared: Prepared, tenant: str) -> list[dict[str, Any]]:
    return [value for topic, value in decoded(codec, prepared) if topic == tenant_topic(tenant, DATASET)]


@pytest.mark.parametrize(
    ("fields", "row_filter", "changes", "named"),
    [
        # The attack: record_id only, the filter reads a phone the grant does not deliver.
        (("record_id",), "driver_phone == '13812345678'", {}, "'driver_phone' is not granted"),
        (("record_id",), "driver_phone != '13812345678'", {}, "'driver_phone' is not granted"),
        # Beside a pseudonym: the filter would link it to the clear plate.
        (
            ("record_id", "plate_number"),
            "plate_number == '京A12345'",
            {"masking": {"plate_number": "KEYED_HASH"}},
            "'plate_number' is delivered masked (KEYED_HASH)",
        ),
        (("record_id", "district"), "district ==", {}, "row filter: expected a value"),
    ],
)
def test_a_grant_whose_filter_reads_beyond_its_scope_delivers_nothing_and_is_dead_lettered_once(
    handler, codec, book, fields, row_filter, changes, named
):
    forged(book, "grant-forged", fields, row_filter, **changes)
    before = dead_letter_count("INVALID_EVENT")
    first = handler.handle(feed_message(encoded_record(codec, traffic_record()), offset=7), PUBLISHED)
    second = handler.handle(feed_message(encoded_record(codec, traffic_record()), offset=8), PUBLISHED)

    assert tenant_deliveries(codec, first, "tenant:mallory") == []
    assert tenant_deliveries(codec, second, "tenant:mallory") == []
    # The other grants are not held hostage by a bad one.
    assert len(tenant_deliveries(codec, first, "tenant:acme")) == 1
    letters = [value for topic, value in decoded(codec, first) if topic == "pdo.dead-letters"]
    assert [(v["reason_code"], v["source_offset"]) for v in letters] == [("INVALID_EVENT", 7)]
    assert "grant-forged" in letters[0]["reason"] and named in letters[0]["reason"]
    # The record is fine and went to the other grants: the letter carries none of its bytes.
    assert (letters[0]["original_key"], letters[0]["original_value"], letters[0]["headers"]) == (
        None,
        b"",
        [],
    )
    assert "pdo.dead-letters" not in [topic for topic, _ in decoded(codec, second)]
    first.count()
    assert dead_letter_count("INVALID_EVENT") == before + 1


def test_a_batch_handled_again_writes_the_refusal_letter_again(handler, codec, book):
    forged(book, "grant-forged", ("record_id",), "driver_phone == '13812345678'")
    message = feed_message(encoded_record(codec, traffic_record()))
    handler.handle(message, PUBLISHED)

    again = handler.handle(message, PUBLISHED)  # e.g. the batch was retried after a transient failure

    assert [v["reason_code"] for t, v in decoded(codec, again) if t == "pdo.dead-letters"] == [
        "INVALID_EVENT"
    ]


def test_a_newer_grant_version_within_scope_delivers_again(handler, codec, book):
    forged(book, "grant-forged", ("record_id",), "driver_phone == '13812345678'")
    corrected = {
        **{k: v for k, v in granted("grant-forged", "tenant:mallory", ("record_id", "district")).items()},
        "row_filter": "district == 'Haidian'",
        "status": "ACTIVE",
        "status_reason": None,
        "version": 2,
    }
    book.apply(records.RESUMED, {"occurred_at": PUBLISHED - timedelta(minutes=1), "grant": corrected})

    prepared = handler.handle(feed_message(encoded_record(codec, traffic_record())), PUBLISHED)

    assert [set(v) for v in tenant_deliveries(codec, prepared, "tenant:mallory")] == [
        {"record_id", "district", "pdo_provenance"}
    ]


# ---------------------------------------------------------------------------------------------- keys


def test_the_tenant_key_is_the_record_id_only_where_the_grant_delivers_it_in_clear(handler, codec, book):
    book.apply(
        records.GRANTED,
        {
            **granted("grant-hashed", "tenant:hashed", ("record_id", "district")),
            "masking": {"record_id": "REDACT"},
        },
    )
    book.apply(records.GRANTED, granted("grant-without", "tenant:without", ("district",)))
    book.apply(records.GRANTED, granted("grant-without-2", "tenant:without2", ("district",)))
    message = feed_message(encoded_record(codec, traffic_record("secret-record-17")))

    keys = {item.topic: item.key for item in handler.handle(message, PUBLISHED).outgoing}
    again = {item.topic: item.key for item in handler.handle(message, PUBLISHED).outgoing}

    assert keys[tenant_topic("tenant:acme", DATASET)] == b"secret-record-17"  # granted in clear
    pseudonyms = [
        keys[tenant_topic(t, DATASET)] for t in ("tenant:hashed", "tenant:without", "tenant:without2")
    ]
    for key in pseudonyms:
        assert b"secret-record-17" not in key and b"r-1" not in key and len(key) == 32
    assert len(set(pseudonyms)) == 3  # one key per grant: not joinable across grants
    assert again == keys  # stable: the tenant's partitioning and per-key order hold


# ---------------------------------------------------------------------------------------------- pseudonyms


def test_keyed_hash_pseudonyms_are_derived_per_tenant_and_cannot_be_joined_across_tenants(codec, catalog):
    book = GrantBook()
    for grant_id, tenant in (("grant-acme", "tenant:acme"), ("grant-globex", "tenant:globex")):
        grant = granted(grant_id, tenant, ("record_id", "plate_number"))
        book.apply(records.GRANTED, {**grant, "masking": {"plate_number": "KEYED_HASH"}})
    handler = FeedHandler(Settings.from_env(), codec, catalog.get, book, b"test-key")

    out = decoded(codec, handler.handle(feed_message(encoded_record(codec, traffic_record())), PUBLISHED))

    plates = {topic: value["plate_number"] for topic, value in out if topic != "pdo.deliveries"}
    acme, globex = (
        plates[tenant_topic("tenant:acme", DATASET)],
        plates[tenant_topic("tenant:globex", DATASET)],
    )
    assert acme != globex
    assert acme == mask(
        "京A12345", MaskingRule.KEYED_HASH, pseudonym_key(b"test-key", "tenant:acme", DATASET)
    )
    assert acme != mask("京A12345", MaskingRule.KEYED_HASH, b"test-key")  # never the master key itself


def test_a_grant_whose_tenant_id_predates_the_id_rule_delivers_nothing_and_stops_no_one(codec, catalog, book):
    """`tenant:acme.corp` (allowed before pdo.core.ids) names no topic; the dataset's other grants go on."""
    book.apply(records.GRANTED, granted("grant-legacy", "tenant:acme.corp", ("record_id", "district")))
    handler = FeedHandler(Settings.from_env(), codec, catalog.get, book, b"test-key")

    prepared = handler.handle(feed_message(encoded_record(codec, traffic_record())), PUBLISHED)

    topics = [topic for topic, _ in decoded(codec, prepared)]
    assert (
        tenant_topic("tenant:acme", DATASET) in topics and tenant_topic("tenant:citylab", DATASET) in topics
    )
    assert not any("acme.corp" in topic or "dead-letters" in topic for topic in topics)
