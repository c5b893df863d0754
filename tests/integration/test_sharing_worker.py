"""The sharing worker end to end: `pdo sharing worker` (faust) as processes on the real broker, registry and
database, in an isolated topic namespace.

One worker: tenants receive only granted fields, masked, only filtered rows, with provenance; records
published after a revocation or suspension are not delivered under it, after a resumption they are;
garbage on a feed is dead-lettered with its reason and bytes; one usage fact per delivery, with stable ids.
Two workers in one group on a 3-partition feed: each record delivered exactly once per grant.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import avro.schema
import pytest
from conftest import fresh_postgres_database
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

from pdo.authorization.models import RequestSpec
from pdo.authorization.policy import load_policy
from pdo.authorization.service import AuthorizationService
from pdo.authorization.testing import TRAFFIC_FLOW_SCHEMA, create_topics, isolated_home
from pdo.catalog.models import (
    Classification,
    DatasetRegistration,
    Domain,
    MaskingRule,
    Openness,
    PriceKind,
    PricePlan,
    SensitiveField,
)
from pdo.catalog.service import CatalogService, feed_topic
from pdo.core import db, topics
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.events import EventPublisher, utc_now
from pdo.core.kafka import admin_client, producer
from pdo.core.topics import TopicId
from pdo.sharing.agents import tenant_topic
from pdo.sharing.transform import delivery_id

pytestmark = pytest.mark.integration

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
    tag = f"t-{uuid.uuid4().hex[:10]}"
    database_url = db_url
    configured = dataclasses.replace(
        Settings.from_env(),
        registry_url=registry_url,
        database_url=database_url,
        home=isolated_home(tmp_path, tag),
        run_dir=tmp_path / "run",
    )
    create_topics(configured)
    db.upgrade(configured.database_url)
    yield configured
    with admin_client(configured) as admin:
        # Feeds and tenant streams were created during the test: everything in the namespace goes.
        admin.delete_topics([name for name in admin.list_topics() if name.startswith(f"pdo.{tag}.")])


@pytest.fixture
def workers(settings, tmp_path) -> Iterator[Callable[[str], subprocess.Popen]]:
    """Starts `pdo sharing worker` processes on this test's namespace and database; stops them after."""
    started: list[tuple[subprocess.Popen, Path]] = []
    env = {
        **os.environ,
        "PDO_HOME": str(settings.home),
        "PDO_RUN_DIR": str(settings.run_dir),
        "PDO_REGISTRY_URL": settings.registry_url,
        "PDO_DATABASE_URL": settings.database_url,
        "PDO_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
    }

    def start(group: str) -> subprocess.Popen:
        log = tmp_path / f"worker-{len(started)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pdo.cli.main",
                    "sharing",
                    "worker",
                    "--group",
                    group,
                    "--loglevel",
                    "info",
                ],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        started.append((process, log))
        return process

    yield start
    for process, _ in started:
        process.terminate()
    for process, log in started:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")  # shown when a test fails


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
    dataset_id = f"traffic-{uuid.uuid4().hex[:8]}"
    catalog.register(
        PROVIDER,
        DatasetRegistration(
            dataset_id=dataset_id,
            owner_department="Transport Bureau",
            title="Traffic flow",
            domain=Domain.TRANSPORT,
            classification=Classification.GENERAL,
            openness=Openness.OPEN,
            record_schema=TRAFFIC_FLOW_SCHEMA,
            sensitive_fields=(
                SensitiveField("plate_number", MaskingRule.KEEP_FIRST_LAST),
                SensitiveField("driver_phone", MaskingRule.MASK_MIDDLE_DIGITS),
            ),
            price_plan=PricePlan(PriceKind.PER_THOUSAND_RECORDS, Decimal("2.50")),
        ),
        PROVIDER,
    )
    return dataset_id


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
    return service.approve(request.request_id, "operator:alice").grant_id


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


def read_topic(settings: Settings, codec: AvroCodec, topic: str) -> list[tuple[int, int, Any]]:
    """Every record on `topic` now: (partition, offset, decoded value or the raw bytes)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap.split(","), enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, number) for number in partitions]
        if not assigned:
            return []
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        ends = consumer.end_offsets(assigned)
        found = []
        deadline = time.monotonic() + 20
        while any(consumer.position(tp) < ends[tp] for tp in assigned) and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=500).items():
                found.extend((tp.partition, m.offset, codec.decode(m.value).value) for m in messages)
        return found
    finally:
        consumer.close()


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


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_one_worker_shares_masks_filters_stops_and_dead_letters(settings, workers, platform):
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    acme = grant(
        service,
        ACME,
        dataset_id,
        ("record_id", "district", "plate_number", "speed_kmh"),
        row_filter="district == 'Haidian'",
    )
    citylab = grant(service, CITYLAB, dataset_id, ("record_id", "district", "speed_kmh"))
    acme_topic = tenant_topic(ACME, dataset_id, settings)
    citylab_topic = tenant_topic(CITYLAB, dataset_id, settings)
    assert acme_topic.endswith(f".tenant.acme-logistics.{dataset_id}")
    feed = Feed(settings, codec, dataset_id)
    started = time.monotonic()
    worker = workers(f"sharing-{uuid.uuid4().hex[:8]}")
    try:
        # 1. Both grants receive the first batch: citylab everything, acme only Haidian rows.
        first = feed.publish(9, "a")
        haidian = [rid for rid in first if feed.records[rid]["district"] == "Haidian"]
        wait_for(
            "first deliveries",
            lambda: (
                len(read_topic(settings, codec, citylab_topic)) >= 9
                and len(read_topic(settings, codec, acme_topic)) >= len(haidian)
            ),
            [worker],
        )
        print(f"worker start to first deliveries: {time.monotonic() - started:.1f} s")
        delivered = read_topic(settings, codec, acme_topic)
        assert sorted(record_ids(delivered)) == sorted(haidian)
        for _, _, value in delivered:
            source = feed.records[value["record_id"]]
            assert set(value) == {"record_id", "district", "plate_number", "speed_kmh", "pdo_provenance"}
            assert value["plate_number"] != source["plate_number"]
            assert re.fullmatch(r"京\*+\d", value["plate_number"]), value["plate_number"]
            provenance = value["pdo_provenance"]
            assert (provenance["source_partition"], provenance["source_offset"]) == feed.sent[
                value["record_id"]
            ]
            assert (provenance["grant_id"], provenance["dataset_id"]) == (acme, dataset_id)
            assert provenance["source_topic"] == feed.topic
        assert sorted(record_ids(read_topic(settings, codec, citylab_topic))) == sorted(first)

        # 2. Interleaved around a revocation: records stream in while citylab's grant is revoked.
        before, after = [], []
        for number in range(30):
            (after if number >= 15 else before).extend(feed.publish(1, f"b{number}"))
            if number == 14:
                service.revoke(citylab, "operator:alice", "contract ended")
        # 3. acme suspended: nothing; resumed: delivered again.
        service.suspend(acme, "operator:alice", "audit")
        suspended = feed.publish(6, "c")
        service.resume(acme, "operator:alice")
        resumed = feed.publish(6, "d")
        garbage_position = feed.raw(b"\x07 not avro at all", 1, b"garbage")
        resumed_haidian = {rid for rid in resumed if feed.records[rid]["district"] == "Haidian"}
        wait_for(
            "deliveries after the resumption",
            lambda: resumed_haidian <= set(record_ids(read_topic(settings, codec, acme_topic))),
            [worker],
        )
        # Every partition got a resumed record, so everything published before them was processed.
        assert {feed.sent[rid][0] for rid in resumed} == {0, 1, 2}

        citylab_ids = set(record_ids(read_topic(settings, codec, citylab_topic)))
        assert citylab_ids & set(after) == set(), "delivered under a revoked grant"
        assert citylab_ids & set(suspended + resumed) == set()
        assert set(first) <= citylab_ids <= set(first) | set(before)
        acme_ids = record_ids(read_topic(settings, codec, acme_topic))
        assert set(acme_ids) & set(suspended) == set(), "delivered under a suspended grant"
        # Records published before the suspension may be dropped if processed after it (never more).
        assert set(acme_ids) >= haidian_of(feed, first + resumed)
        assert set(acme_ids) <= haidian_of(feed, first + before + after + resumed)
        assert len(acme_ids) == len(set(acme_ids))

        # 4. The garbage went to the dead-letter topic with its reason, position and bytes.
        dead_letters_topic = topics.name(TopicId.DEAD_LETTERS, settings)
        letters = wait_for("dead letter", lambda: read_topic(settings, codec, dead_letters_topic), [worker])
        assert [(v["reason_code"], v["original_value"]) for _, _, v in letters] == [
            ("UNDECODABLE", b"\x07 not avro at all")
        ]
        letter = letters[0][2]
        assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
            feed.topic,
            *garbage_position,
        )

        # 5. One usage fact per delivery, keyed by a delivery id derived from source and grant.
        facts = [v for _, _, v in read_topic(settings, codec, topics.name(TopicId.DELIVERIES, settings))]
        tenant_records = [
            (v["pdo_provenance"], topic)
            for topic in (acme_topic, citylab_topic)
            for _, _, v in read_topic(settings, codec, topic)
        ]
        expected_ids = sorted(
            delivery_id(p["source_topic"], p["source_partition"], p["source_offset"], p["grant_id"])
            for p, _ in tenant_records
        )
        assert sorted(f["delivery_id"] for f in facts) == expected_ids
        assert len(set(expected_ids)) == len(expected_ids)
        assert all(f["records"] == 1 and f["bytes"] > 0 for f in facts)
        assert {f["target_topic"] for f in facts} == {acme_topic, citylab_topic}

        # 6. A dataset registered while the worker runs: its feed is discovered and shared.
        late_dataset = register_dataset(catalog)
        grant(service, ACME, late_dataset, ("record_id", "district"))
        late_feed = Feed(settings, codec, late_dataset)
        discovered = time.monotonic()
        late_ids = late_feed.publish(3, "late")
        late_feed.close()
        late_topic = tenant_topic(ACME, late_dataset, settings)
        wait_for(
            "deliveries from a new feed",
            lambda: set(record_ids(read_topic(settings, codec, late_topic))) == set(late_ids),
            [worker],
        )
        print(f"new feed to first deliveries: {time.monotonic() - discovered:.1f} s")
        assert worker.poll() is None
    finally:
        feed.close()


def test_two_workers_deliver_each_record_once_per_grant(settings, workers, platform):
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    first = grant(service, ACME, dataset_id, ("record_id", "district"))
    second = grant(service, CITYLAB, dataset_id, ("record_id", "speed_kmh"))
    group = f"sharing-{uuid.uuid4().hex[:8]}"
    processes = [workers(group), workers(group)]
    wait_for("two workers sharing the feed", lambda: _group_is_stable(settings, group, 2), processes)
    feed = Feed(settings, codec, dataset_id)
    try:
        ids = feed.publish(60, "x")
        topics_by_grant = {
            first: tenant_topic(ACME, dataset_id, settings),
            second: tenant_topic(CITYLAB, dataset_id, settings),
        }

        def delivered() -> Counter:
            return Counter(
                (v["pdo_provenance"]["source_partition"], v["pdo_provenance"]["source_offset"], grant_id)
                for grant_id, topic in topics_by_grant.items()
                for _, _, v in read_topic(settings, codec, topic)
            )

        wait_for("every record under both grants", lambda: len(delivered()) >= 2 * len(ids), processes)
        time.sleep(2)  # a duplicate would arrive now
        counts = delivered()
        assert set(counts) == {(*feed.sent[rid], g) for rid in ids for g in topics_by_grant}
        assert set(counts.values()) == {1}
        assert all(process.poll() is None for process in processes)
    finally:
        feed.close()


def _group_is_stable(settings: Settings, group: str, members: int) -> bool:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap.split(","))
    try:
        description = admin.describe_groups([group])[group]
        return description["group_state"] == "Stable" and len(description["members"]) == members
    finally:
        admin.close()
