"""Our codec and confluent-kafka's serializers read each other's records through our registry, on the broker."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import admin_credentials, unique_name
from kafka import KafkaConsumer
from kafka.admin import NewTopic

from pdo.core import schemas
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.kafka import admin_client, kafka_python_connection, librdkafka_config, producer
from pdo.core.registry_client import RegistryClient

pytestmark = pytest.mark.integration

RETIRED = schemas.get("pdo.catalog.v1.DatasetRetired")


def retired_event(dataset_id: str) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime(2026, 11, 21, 8, 30, tzinfo=UTC),
        "actor": "provider:transport-bureau",
        "dataset_id": dataset_id,
        "reason": "replaced by traffic-flow-v2",
        "dataset": None,
    }


@pytest.fixture
def topic(kafka_bootstrap) -> str:
    name = unique_name("pdo.test.interop")
    with admin_client(Settings.from_env()) as admin:
        admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    return name


def read_one(bootstrap: str, topic: str) -> bytes:
    consumer = KafkaConsumer(
        topic,
        **kafka_python_connection(Settings.from_env()),
        auto_offset_reset="earliest",
        consumer_timeout_ms=15000,
    )
    try:
        return next(iter(consumer)).value
    finally:
        consumer.close()


def test_a_record_we_produce_is_read_by_confluents_deserializer(kafka_bootstrap, registry_url, topic):
    event = retired_event("traffic-flow")
    with RegistryClient(registry_url, auth=admin_credentials()) as registry:
        data = AvroCodec(registry).encode(topic, RETIRED, event)
    sender = producer(Settings.from_env())
    sender.send(topic, key=b"traffic-flow", value=data).get(timeout=15)
    sender.close()

    with SchemaRegistryClient(
        {"url": registry_url, "basic.auth.user.info": ":".join(admin_credentials())}
    ) as client:
        value = AvroDeserializer(client)(
            read_one(kafka_bootstrap, topic), SerializationContext(topic, MessageField.VALUE)
        )

    assert value == event


def test_a_record_confluent_produces_is_read_by_our_codec(kafka_bootstrap, registry_url, topic):
    event = retired_event("air-quality")
    with SchemaRegistryClient(
        {"url": registry_url, "basic.auth.user.info": ":".join(admin_credentials())}
    ) as client:
        serialize = AvroSerializer(
            client,
            json.dumps(RETIRED.to_json()),
            conf={"subject.name.strategy": topic_record_subject_name_strategy},
        )
        data = serialize(event, SerializationContext(topic, MessageField.VALUE))
    sender = Producer(librdkafka_config(Settings.from_env()))
    sender.produce(topic, key=b"air-quality", value=data)
    assert sender.flush(15) == 0

    with RegistryClient(registry_url, auth=admin_credentials()) as registry:
        decoded = AvroCodec(registry).decode(read_one(kafka_bootstrap, topic))

    assert decoded.schema_name == "pdo.catalog.v1.DatasetRetired"
    assert decoded.value == event


def test_both_sides_agree_on_the_subject_and_the_schema_id(registry_url, topic):
    with RegistryClient(registry_url, auth=admin_credentials()) as registry:
        ours = AvroCodec(registry).encode(topic, RETIRED, retired_event("x"))

    with SchemaRegistryClient(
        {"url": registry_url, "basic.auth.user.info": ":".join(admin_credentials())}
    ) as client:
        latest = client.get_latest_version(f"{topic}-pdo.catalog.v1.DatasetRetired")

    assert int.from_bytes(ours[1:5], "big") == latest.schema_id
