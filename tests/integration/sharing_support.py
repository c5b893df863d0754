"""What the sharing integration tests share: fixtures for an isolated platform and `pdo sharing worker`
processes, the dataset, grants, records, reading topics and waiting. Test modules import fixtures by name.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import avro.schema
import pytest
from conftest import fresh_postgres_database, isolated_namespace
from kafka import KafkaConsumer, TopicPartition

from pdo.authorization.public import AuthorizationService, RequestSpec, load_policy
from pdo.authorization.testing import (
    TRAFFIC_FLOW_SCHEMA,
    approved_grant,
    register_traffic_dataset,
)
from pdo.catalog.public import CatalogService
from pdo.core import db
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.events import EventPublisher, utc_now
from pdo.core.kafka import kafka_python_connection, producer
from pdo.core.topics import feed_topic

PROVIDER = "provider:transport-bureau"
ACME = "tenant:acme-logistics"
CITYLAB = "tenant:citylab"
WAIT_S = 60
DISTRICTS = ("Haidian", "Chaoyang", "Dongcheng")


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def db_url(request, tmp_path) -> Iterator[str]:
    """SQLite unless a test asks for PostgreSQL too (indirect parametrization): workers start slowly."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield f"sqlite:///{tmp_path / 'pdo.db'}"
        return
    yield from fresh_postgres_database(request.getfixturevalue("postgres_url"))


@pytest.fixture
def settings(kafka_bootstrap, registry_url, db_url, tmp_path) -> Iterator[Settings]:
    base = dataclasses.replace(Settings.from_env(), registry_url=registry_url, database_url=db_url)
    with isolated_namespace(base, tmp_path) as configured:
        db.upgrade(configured.database_url)
        yield configured


class PdoProcesses:
    """`pdo <args…>` processes on a test's namespace and database (`extra_env` on top), logs in `folder`;
    stop() ends them (SIGTERM, then SIGKILL after 30 s) and prints each log's tail, shown when a test fails."""

    def __init__(self, settings: Settings, folder: Path, extra_env: dict[str, str] | None = None) -> None:
        self.env = {**settings.environment(), **(extra_env or {})}
        self.folder = folder
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def start(self, *args: str) -> subprocess.Popen:
        log = self.folder / f"{args[0]}-{len(self.started)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "pdo.cli.main", *args],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.started.append((process, log))
        return process

    def stop(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.terminate()
        for process, log in self.started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture
def workers(settings, tmp_path) -> Iterator[Callable[[str], subprocess.Popen]]:
    """Starts `pdo sharing worker` processes in consumer group `group`; stops them after."""
    processes = PdoProcesses(settings, tmp_path)
    yield lambda group: processes.start("sharing", "worker", "--group", group, "--loglevel", "info")
    processes.stop()


@pytest.fixture
def platform(settings) -> Iterator[dict[str, Any]]:
    engine = db.make_engine(settings.database_url)
    publisher = EventPublisher(settings)
    catalog = CatalogService(engine, publisher, publisher.codec.registry, settings)
    service = AuthorizationService(engine, publisher, catalog, load_policy(), settings)
    yield {"catalog": catalog, "service": service, "codec": publisher.codec}
    publisher.close()
    engine.dispose()


# ---------------------------------------------------------------------------------------------- helpers


def register_dataset(catalog: CatalogService) -> str:
    return register_traffic_dataset(catalog)


def grant(
    service: AuthorizationService, tenant: str, dataset_id: str, fields: tuple[str, ...], row_filter=None
) -> str:
    """An approved grant (the operator path), starting a minute ago so every record falls inside it."""
    start = utc_now() - timedelta(minutes=1)
    request = service.submit_request(
        tenant,
        RequestSpec(
            dataset_id=dataset_id,
            purpose="congestion study",
            fields=fields,
            row_filter=row_filter,
            valid_from=start,
            valid_until=start + timedelta(days=30),
        ),
        tenant,
    )
    return approved_grant(service, request.request_id)


class Feed:
    """Publishes TrafficFlow records with our codec, round-robin over the feed's partitions."""

    def __init__(self, settings: Settings, codec: AvroCodec, dataset_id: str) -> None:
        self.topic = feed_topic(dataset_id, settings)
        self.codec = codec
        self.schema = avro.schema.parse(TRAFFIC_FLOW_SCHEMA)
        self.producer = producer(settings)
        self.sent: dict[str, tuple[int, int]] = {}  # record id -> (partition, offset)
        self.records: dict[str, dict[str, Any]] = {}

    def publish(self, count: int, label: str) -> list[str]:
        ids = []
        for number in range(count):
            record = traffic_record(f"{label}-{number}", DISTRICTS[number % len(DISTRICTS)])
            value = self.codec.encode(self.topic, self.schema, record)
            self.raw(value, number % 3, record["record_id"].encode())
            self.records[record["record_id"]] = record
            ids.append(record["record_id"])
        return ids

    def raw(self, value: bytes, partition: int, key: bytes) -> tuple[int, int]:
        metadata = self.producer.send(self.topic, key=key, value=value, partition=partition).get(timeout=10)
        self.sent[key.decode()] = (metadata.partition, metadata.offset)
        return metadata.partition, metadata.offset

    def close(self) -> None:
        self.producer.close()


class TimedFeed:
    """Publishes TrafficFlow records with the event time (Kafka timestamp) a test gives, over 3 partitions."""

    def __init__(self, settings, codec, dataset_id: str) -> None:
        self.topic = feed_topic(dataset_id, settings)
        self.codec = codec
        self.schema = avro.schema.parse(TRAFFIC_FLOW_SCHEMA)
        self.producer = producer(settings)
        self.published: list[dict] = []

    def publish(self, at: datetime, district: str, label: str, vehicle: str = "PASSENGER_CAR") -> None:
        record = traffic_record(f"{label}-{len(self.published)}", district)
        record["vehicle_type"] = vehicle
        record["speed_kmh"] = 40.0 + len(self.published) % 7
        value = self.codec.encode(self.topic, self.schema, record)
        self.producer.send(
            self.topic,
            key=record["record_id"].encode(),
            value=value,
            partition=len(self.published) % 3,
            timestamp_ms=int(at.timestamp() * 1000),
        ).get(timeout=10)
        self.published.append(record)

    def window(
        self, start: datetime, sizes: dict[str, int], label: str, vehicle: str = "PASSENGER_CAR"
    ) -> None:
        for district, size in sizes.items():
            for number in range(size):
                self.publish(start + timedelta(seconds=1 + number % 50), district, label, vehicle)

    def close(self) -> None:
        self.producer.close()


def traffic_record(record_id: str, district: str) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "checkpoint_id": "cp-17",
        "district": district,
        "plate_number": f"京A{uuid.uuid4().int % 100000:05d}",
        "vehicle_type": "PASSENGER_CAR",
        "speed_kmh": 57.5,
        "lane": 2,
        "direction": "NORTHBOUND",
        "observed_at": datetime(2026, 3, 1, 8, 30, tzinfo=UTC),
        "driver_phone": "13812345678",
    }


def topic_messages(settings: Settings, topic: str, timeout_s: float = 20) -> list[Any]:
    """Every message on `topic` now, undecoded, in partition and offset order ([] for a missing topic)."""
    consumer = KafkaConsumer(**kafka_python_connection(settings), enable_auto_commit=False)
    try:
        assigned = [
            TopicPartition(topic, number) for number in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not assigned:
            return []
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        found = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in assigned) and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=500).values():
                found.extend(messages)
        return sorted(found, key=lambda m: (m.partition, m.offset))
    finally:
        consumer.close()


def committed_messages(settings: Settings, topic: str, idle_s: float = 3.0) -> list[Any]:
    """Every record of `topic` a read_committed reader sees now (end offsets are the last stable offsets)."""
    consumer = KafkaConsumer(
        **kafka_python_connection(settings), enable_auto_commit=False, isolation_level="read_committed"
    )
    try:
        assigned = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not assigned:
            return []
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        found: list = []
        quiet_since = time.monotonic()
        while any(consumer.position(tp) < ends[tp] for tp in assigned):
            batch = consumer.poll(timeout_ms=500)
            for messages in batch.values():
                found.extend(messages)
            if batch:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > idle_s:
                break  # only transaction markers left before the end
        return found
    finally:
        consumer.close()


def read_topic(settings: Settings, codec: AvroCodec, topic: str) -> list[tuple[int, int, Any]]:
    """Every record on `topic` now: (partition, offset, decoded value)."""
    return [(m.partition, m.offset, codec.decode(m.value).value) for m in topic_messages(settings, topic)]


def fact_delivery_ids(fact: dict[str, Any]) -> list[str]:
    """The delivery ids a decoded usage fact counts: a RecordsDeliveredBatch lists several, a RecordsDelivered
    (as metering tests write them) one."""
    if "deliveries" in fact:
        return [delivery["delivery_id"] for delivery in fact["deliveries"]]
    return [fact["delivery_id"]]


def wait_for(what: str, check: Callable[[], Any], processes: list[subprocess.Popen]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for process in processes:
            assert process.poll() is None, f"a worker exited with {process.returncode} waiting for {what}"
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"no {what} within {WAIT_S} s")


def haidian_of(feed: Feed, ids: list[str]) -> set[str]:
    return {rid for rid in ids if feed.records[rid]["district"] == "Haidian"}


def record_ids(records: list[tuple[int, int, Any]]) -> list[str]:
    return [value["record_id"] for _, _, value in records]


# ---------------------------------------------------------------------------------------------- tests
