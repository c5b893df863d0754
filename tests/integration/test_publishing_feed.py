"""Publishing on the real broker, schema registry and databases: a dataset registered through the catalog,
records published with FeedPublisher, with `pdo publish` and over HTTP, then read back from the feed with
kafka-python and decoded with confluent-kafka's AvroDeserializer through the registry — the standard
tooling a tenant would use.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import ServerThread, admin_credentials, isolated_namespace, scrape_headers
from kafka import KafkaConsumer, TopicPartition

from pdo.catalog.public import CatalogService, Dataset, DatasetRegistration
from pdo.core import db
from pdo.core.codec import HEADER
from pdo.core.config import Settings
from pdo.core.errors import Conflict, NotFound
from pdo.core.events import EventPublisher
from pdo.core.kafka import kafka_python_connection
from pdo.core.registry_client import RegistryClient
from pdo.core.topics import feed_topic
from pdo.core.vocabulary import Classification, Domain, Openness, PriceKind, PricePlan
from pdo.gateway.app import create_app
from pdo.gateway.principals import PrincipalStore
from pdo.publishing.conversion import from_json
from pdo.publishing.public import FeedPublisher

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = json.loads((ROOT / "deploy/examples/air-quality.dataset.json").read_text())
RECORDS_FILE = ROOT / "deploy/examples/air-quality.records.jsonl"
RECORDS = [json.loads(line) for line in RECORDS_FILE.read_text().splitlines()]


@dataclasses.dataclass
class Platform:
    settings: Settings
    engine: object
    catalog: CatalogService
    provider: str

    def register(self) -> Dataset:
        registration = DatasetRegistration(
            dataset_id=f"aq-{uuid.uuid4().hex[:10]}",
            owner_department=EXAMPLE["owner_department"],
            title=EXAMPLE["title"],
            domain=Domain(EXAMPLE["domain"]),
            classification=Classification(EXAMPLE["classification"]),
            openness=Openness(EXAMPLE["openness"]),
            record_schema=json.dumps(EXAMPLE["record_schema"]),
            sensitive_fields=(),
            price_plan=PricePlan(PriceKind.PER_THOUSAND_RECORDS, Decimal("1.50")),
        )
        return self.catalog.register(self.provider, registration, actor=self.provider)


@pytest.fixture
def platform(kafka_bootstrap, registry_url, database_url, tmp_path) -> Iterator[Platform]:
    db.upgrade(database_url)
    base = dataclasses.replace(Settings.from_env(), registry_url=registry_url, database_url=database_url)
    with isolated_namespace(base, tmp_path / "namespace") as settings:
        engine = db.make_engine(database_url)
        events = EventPublisher(settings)
        registry = RegistryClient(registry_url, auth=admin_credentials())
        provider = f"provider:ecology-{uuid.uuid4().hex[:8]}"
        try:
            yield Platform(settings, engine, CatalogService(engine, events, registry, settings), provider)
        finally:
            events.close()
            registry.close()
            engine.dispose()


def read_feed(settings: Settings, topic: str, count: int, timeout_s: float = 30) -> list:
    """The first `count` records of every partition of `topic`, read from the beginning."""
    consumer = KafkaConsumer(**kafka_python_connection(settings), enable_auto_commit=False)
    try:
        partitions = [
            TopicPartition(topic, number) for number in sorted(consumer.partitions_for_topic(topic))
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        found: list = []
        deadline = time.monotonic() + timeout_s
        while len(found) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                found.extend(batch)
        # Nothing more than expected: refused records must not have been sent.
        for batch in consumer.poll(timeout_ms=1000).values():
            found.extend(batch)
        return found
    finally:
        consumer.close()


def decoded_by_standard_tooling(settings: Settings, topic: str, records: list) -> dict[str, dict]:
    """record_id (the Kafka key) -> value, decoded by confluent-kafka's AvroDeserializer via the registry."""
    with SchemaRegistryClient(
        {"url": settings.registry_url, "basic.auth.user.info": ":".join(admin_credentials())}
    ) as client:
        deserialize = AvroDeserializer(client)
        context = SerializationContext(topic, MessageField.VALUE)
        return {record.key.decode(): deserialize(record.value, context) for record in records}


def assert_feed_holds(platform: Platform, dataset: Dataset, expected: list[dict]) -> None:
    topic = feed_topic(dataset.dataset_id, platform.settings)
    records = read_feed(platform.settings, topic, len(expected))
    assert len(records) == len(expected)
    assert {HEADER.unpack_from(record.value)[1] for record in records} == {dataset.schema_id}
    values = decoded_by_standard_tooling(platform.settings, topic, records)
    schema = json.loads(dataset.record_schema)
    assert values == {item["record_id"]: from_json(schema, item) for item in expected}
    for key, value in values.items():
        assert value["record_id"] == key


def subject_versions(platform: Platform, dataset: Dataset) -> list[int]:
    response = httpx.get(
        f"{platform.settings.registry_url}/subjects/{dataset.schema_subject}/versions",
        auth=admin_credentials(),
    )
    return response.json()


def test_feed_publisher_records_are_read_by_standard_tooling(platform):
    dataset = platform.register()
    batch = [*RECORDS[:10], {**RECORDS[10], "pm25": "high"}, *RECORDS[10:], {**RECORDS[0], "wind": 3}]

    with FeedPublisher.from_catalog(platform.settings, platform.engine, dataset.dataset_id) as publisher:
        report = publisher.publish_json(batch)

    assert report.accepted == 20
    assert [(r.index, r.reason) for r in report.rejected] == [
        (10, "pm25: expected double, got 'high'"),
        (21, report.rejected[1].reason),
    ]
    assert report.rejected[1].reason.startswith("wind: is not a field of AirQuality")
    assert_feed_holds(platform, dataset, RECORDS)
    assert subject_versions(platform, dataset) == [1]  # published under the catalog's id, nothing registered


def test_unknown_and_retired_datasets_are_refused(platform):
    with pytest.raises(NotFound):
        FeedPublisher.from_catalog(platform.settings, platform.engine, "no-such-dataset")
    dataset = platform.register()
    platform.catalog.retire(platform.provider, dataset.dataset_id, "replaced", actor=platform.provider)

    with pytest.raises(Conflict, match="retired"):
        FeedPublisher.from_catalog(platform.settings, platform.engine, dataset.dataset_id)


def run_cli(platform: Platform, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pdo.cli.main", "publish", *args],
        env=platform.settings.environment(),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pdo_publish_sends_a_jsonl_file_and_lists_refusals_by_line(platform, tmp_path):
    dataset = platform.register()

    clean = run_cli(platform, "--dataset", dataset.dataset_id, "--file", str(RECORDS_FILE))
    assert clean.returncode == 0, clean.stderr
    assert (
        f"published 20 record(s) to {feed_topic(dataset.dataset_id, platform.settings)}; 0 refused"
        in clean.stdout
    )

    other = platform.register()
    lines = RECORDS_FILE.read_text().splitlines()
    lines[4] = json.dumps({**json.loads(lines[4]), "aqi": "bad"})
    piped = run_cli(platform, "--dataset", other.dataset_id, "--file", "-", stdin="\n".join(lines) + "\n")
    assert piped.returncode == 1, piped.stderr
    assert "published 19 record(s)" in piped.stdout
    assert "line 5: aqi: expected int, got 'bad'" in piped.stdout

    assert_feed_holds(platform, dataset, RECORDS)
    assert_feed_holds(platform, other, [record for index, record in enumerate(RECORDS) if index != 4])


def test_pdo_publish_to_an_unknown_dataset_exits_2(platform):
    result = run_cli(platform, "--dataset", "no-such-dataset", "--file", str(RECORDS_FILE))

    assert result.returncode == 2
    assert "no dataset 'no-such-dataset'" in result.stderr


def test_http_ingest_publishes_only_for_the_owner(platform):
    dataset = platform.register()
    store = PrincipalStore(platform.engine)
    owner_name, other_name = platform.provider.split(":", 1)[1], f"transport-{uuid.uuid4().hex[:8]}"
    keys = {}
    for name in (owner_name, other_name):
        keys[name] = store.issue_key(store.create_principal("provider", name).principal_id).key
    app = create_app(platform.settings, platform.catalog, None, platform.engine)
    path = f"/v1/datasets/{dataset.dataset_id}/records"

    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:

        def post(who: str, records: list) -> httpx.Response:
            return http.post(
                path, json={"records": records}, headers={"Authorization": f"Bearer {keys[who]}"}
            )

        accepted = post(owner_name, RECORDS[:12])
        partial = post(owner_name, [*RECORDS[12:], {**RECORDS[0], "observed_at": "2026-03-01 05:00"}])
        refused = post(other_name, RECORDS[:1])
        platform.catalog.retire(platform.provider, dataset.dataset_id, "replaced", actor=platform.provider)
        retired = post(owner_name, RECORDS[:1])
        metrics = http.get("/metrics", headers=scrape_headers(platform.settings)).text

    assert accepted.status_code == 200 and accepted.json() == {
        "accepted": 12,
        "rejected": [],
        "duplicates": [],
    }
    assert partial.status_code == 200
    assert partial.json()["accepted"] == 8
    assert partial.json()["rejected"] == [
        {
            "index": 8,
            "reason": "observed_at: '2026-03-01 05:00' has no UTC offset: timestamp-millis is an "
            "instant; add 'Z' or '+08:00'",
        }
    ]
    assert refused.status_code == 403
    assert retired.status_code == 409
    assert (
        f'pdo_gateway_ingested_records_total{{dataset="{dataset.dataset_id}",outcome="accepted"}} 20.0'
        in metrics
    )
    assert_feed_holds(platform, dataset, RECORDS)
