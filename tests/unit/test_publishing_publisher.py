"""FeedPublisher without a broker: what it sends, under which key and schema id, what it refuses, and how it
fails when the broker does. A fake producer stands in for kafka-python's; the integration tests use the real one.
"""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import fastavro
import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from pdo.catalog.public import Dataset
from pdo.core.codec import HEADER, AvroCodec
from pdo.core.config import Settings
from pdo.core.errors import Conflict, Unavailable
from pdo.core.registry_client import RegistryClient
from pdo.core.vocabulary import Classification, Domain, Openness, PriceKind, PricePlan
from pdo.publishing.conversion import parse_schema
from pdo.publishing.public import FeedPublisher, FeedPublishers
from pdo.publishing.publisher import FEED_BATCH_BYTES, MAX_RECORD_BYTES

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_TEXT = json.dumps(
    json.loads((ROOT / "deploy/examples/air-quality.dataset.json").read_text())["record_schema"]
)
RECORDS = [
    json.loads(line) for line in (ROOT / "deploy/examples/air-quality.records.jsonl").read_text().splitlines()
]


def dataset(**changes) -> Dataset:
    base = Dataset(
        dataset_id="air-quality",
        provider_id="provider:ecology-bureau",
        owner_department="Ecology and Environment Bureau",
        title="Air quality",
        domain=Domain.ENVIRONMENT,
        classification=Classification.GENERAL,
        openness=Openness.OPEN,
        schema_subject="pdo.feed.air-quality-pdo.datasets.v1.AirQuality",
        schema_id=42,
        record_schema=SCHEMA_TEXT,
        price_plan=PricePlan(PriceKind.FREE),
    )
    return dataclasses.replace(base, **changes)


class FakeAck:
    """kafka-python's send future, settled at once: get() returns the metadata or raises the failure."""

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout=None):
        if self.error is not None:
            raise self.error
        return "metadata"


class FakeProducer:
    """Records what was sent; `fail` fails the ack of record `fail_index` (of every record when None)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail: Exception | None = None
        self.fail_index: int | None = None
        self.closed = False

    def send(self, topic: str, key: bytes, value: bytes) -> FakeAck:
        failing = self.fail is not None and self.fail_index in (None, len(self.sent))
        self.sent.append((topic, key, value))
        return FakeAck(self.fail if failing else None)

    def close(self, timeout=None) -> None:
        self.closed = True


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def publisher(producer):
    codec = AvroCodec(RegistryClient("http://127.0.0.1:9"))  # never called: the id comes from the catalog
    with FeedPublisher(Settings.from_env(), dataset(), codec, producer_factory=lambda: producer) as feed:
        yield feed


def decode(value: bytes) -> tuple[int, dict]:
    magic, schema_id = HEADER.unpack_from(value)
    assert magic == 0
    return schema_id, fastavro.schemaless_reader(
        io.BytesIO(value[HEADER.size :]), parse_schema(SCHEMA_TEXT), None
    )


def test_records_go_to_the_feed_keyed_by_record_id_under_the_catalogs_schema_id(publisher, producer):
    report = publisher.publish_json(RECORDS)

    assert (report.accepted, report.rejected, report.topic) == (20, [], "pdo.feed.air-quality")
    assert [key.decode() for _, key, _ in producer.sent] == [record["record_id"] for record in RECORDS]
    schema_id, first = decode(producer.sent[0][2])
    assert schema_id == 42
    assert first["observed_at"] == datetime(2026, 3, 1, 5, tzinfo=UTC)
    assert {topic for topic, _, _ in producer.sent} == {"pdo.feed.air-quality"}


def test_invalid_records_are_reported_by_index_and_not_sent(publisher, producer):
    batch = [RECORDS[0], {**RECORDS[1], "pm25": "high"}, RECORDS[2], {**RECORDS[3], "extra": 1}]

    report = publisher.publish_json(batch)

    assert report.accepted == 2
    assert [(r.index, r.reason) for r in report.rejected] == [
        (1, "pm25: expected double, got 'high'"),
        (
            3,
            "extra: is not a field of AirQuality (its fields: record_id, station_id, district, pm25, pm10, no2, "
            "o3, aqi, observed_at, station_manager_phone)",
        ),
    ]
    assert [key.decode() for _, key, _ in producer.sent] == [RECORDS[0]["record_id"], RECORDS[2]["record_id"]]
    assert report.total == 4


def test_python_values_are_published_as_they_are(publisher, producer):
    record = {**RECORDS[0], "observed_at": datetime(2026, 3, 1, 5, tzinfo=UTC)}

    assert publisher.publish([record]).accepted == 1
    assert (
        publisher.publish([RECORDS[0]])
        .rejected[0]
        .reason.startswith("observed_at: expected timestamp-millis")
    )


def test_an_oversized_record_is_refused_by_its_index(publisher, producer):
    huge = {**RECORDS[0], "district": "x" * MAX_RECORD_BYTES}

    report = publisher.publish_json([huge, RECORDS[1]])

    assert report.accepted == 1
    assert report.rejected[0].index == 0
    assert f"a feed record may have at most {MAX_RECORD_BYTES}" in report.rejected[0].reason


def test_a_record_the_broker_finds_too_large_is_a_rejection(publisher, producer):
    producer.fail, producer.fail_index = MessageSizeTooLargeError("too large"), 1

    report = publisher.publish_json(RECORDS[:3])

    assert report.accepted == 2
    assert [(r.index, r.reason) for r in report.rejected] == [
        (1, "the broker refused the record as too large")
    ]


def test_a_broker_that_does_not_acknowledge_is_unavailable(publisher, producer):
    producer.fail, producer.fail_index = KafkaTimeoutError("no ack"), 2

    with pytest.raises(Unavailable) as caught:
        publisher.publish_json(RECORDS[:4])

    assert "record 2 was not acknowledged" in caught.value.message
    assert "2 record(s) of this batch were acknowledged" in caught.value.message


def test_a_batch_with_nothing_valid_never_connects():
    def no_broker():
        raise AssertionError("connected to Kafka for a batch with nothing to send")

    with FeedPublisher(Settings.from_env(), dataset(), producer_factory=no_broker) as feed:
        report = feed.publish_json([{"record_id": "x"}, "not a record"])

    assert report.accepted == 0
    assert [r.index for r in report.rejected] == [0, 1]


def test_a_retired_dataset_is_a_conflict():
    with pytest.raises(Conflict, match="retired"):
        FeedPublisher(Settings.from_env(), dataset(retired=True))


def test_a_null_record_id_is_refused():
    schema = json.loads(SCHEMA_TEXT)
    schema["fields"][0] = {"name": "record_id", "type": ["null", "string"], "default": None}
    with FeedPublisher(Settings.from_env(), dataset(record_schema=json.dumps(schema))) as feed:
        report = feed.publish_json([{k: v for k, v in RECORDS[0].items() if k != "record_id"}])

    assert report.rejected[0].reason == "record_id: must not be null: the feed is keyed by it"


def test_a_decimal_schema_is_written_exactly():
    schema = {
        "type": "record",
        "name": "Fee",
        "fields": [
            {"name": "record_id", "type": "long"},
            {"name": "fee", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        ],
    }
    sent = FakeProducer()
    with FeedPublisher(
        Settings.from_env(), dataset(record_schema=json.dumps(schema)), producer_factory=lambda: sent
    ) as feed:
        report = feed.publish_json([{"record_id": 7, "fee": "19.9"}])

    assert report.accepted == 1
    _, key, value = sent.sent[0]
    assert key == b"7"
    assert fastavro.schemaless_reader(io.BytesIO(value[5:]), parse_schema(schema), None)["fee"] == Decimal(
        "19.90"
    )


# -- the gateway's cache ------------------------------------------------------------------------------------


def test_feed_publishers_share_one_producer_and_follow_schema_changes(monkeypatch):
    made: list[FakeProducer] = []
    configs: list[dict] = []

    def make(_settings, **config):
        configs.append(config)
        made.append(FakeProducer())
        return made[-1]

    monkeypatch.setattr("pdo.publishing.publisher.kafka_producer", make)
    feeds = FeedPublishers(Settings.from_env())
    first = feeds.for_dataset(dataset())
    other = feeds.for_dataset(dataset(dataset_id="water-quality"))

    assert feeds.for_dataset(dataset()) is first
    assert feeds.for_dataset(dataset(schema_id=43)) is not first
    first.publish_json(RECORDS[:1])
    other.publish_json(RECORDS[:1])
    assert len(made) == 1 and len(made[0].sent) == 2
    assert configs == [
        {"batch_size": FEED_BATCH_BYTES}
    ]  # a call's records in few batches, not one per 16 KiB
    with pytest.raises(Conflict):
        feeds.for_dataset(dataset(retired=True))
    feeds.close()
    assert made[0].closed


def test_an_unreachable_broker_is_unavailable(monkeypatch):
    from pdo.core.errors import PdoError

    def unreachable(_settings, **_config):
        raise PdoError("cannot reach the Kafka broker", hint="start it")

    monkeypatch.setattr("pdo.publishing.publisher.kafka_producer", unreachable)
    with (
        FeedPublisher(Settings.from_env(), dataset()) as feed,
        pytest.raises(Unavailable, match="cannot reach"),
    ):
        feed.publish_json(RECORDS[:1])
