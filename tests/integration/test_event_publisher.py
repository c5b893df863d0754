"""The event publisher writes declared events to declared topics, and refuses anything else."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import admin_credentials
from kafka import KafkaConsumer, TopicPartition

from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.errors import Unavailable
from pdo.core.events import EventPublisher, event_head
from pdo.core.kafka import kafka_python_connection
from pdo.core.registry_client import RegistryClient
from pdo.core.topics import TopicId

pytestmark = pytest.mark.integration


@pytest.fixture
def publisher(kafka_bootstrap, registry_url):
    publisher = EventPublisher(dataclasses.replace(Settings.from_env(), registry_url=registry_url))
    yield publisher
    publisher.close()


def read_at(bootstrap: str, topic: str, partition: int, offset: int) -> tuple[bytes, bytes]:
    consumer = KafkaConsumer(**kafka_python_connection(Settings.from_env()), consumer_timeout_ms=10000)
    try:
        position = TopicPartition(topic, partition)
        consumer.assign([position])
        consumer.seek(position, offset)
        record = next(iter(consumer))
        return record.key, record.value
    finally:
        consumer.close()


def test_an_event_lands_on_its_topic_keyed_by_the_declared_field(publisher, kafka_bootstrap, registry_url):
    event = {**event_head("provider:test"), "dataset_id": "publisher-probe", "reason": "probe"}

    topic, partition, offset = publisher.publish(TopicId.CATALOG, "pdo.catalog.v1.DatasetRetired", event)
    key, value = read_at(kafka_bootstrap, topic, partition, offset)

    assert topic == "pdo.catalog"
    assert key == b"publisher-probe"
    with RegistryClient(registry_url, auth=admin_credentials()) as registry:
        decoded = AvroCodec(registry).decode(value)
    assert decoded.schema_name == "pdo.catalog.v1.DatasetRetired"
    assert decoded.value == {**event, "dataset": None}  # the snapshot defaults to null when not given


def test_an_explicit_key_overrides_the_declared_field(publisher, kafka_bootstrap):
    event = {
        **event_head("system:policy"),
        "request_id": "r-publisher-probe",
        "tenant_id": "acme",
        "dataset_id": "d",
        "rule": "deny-not-open",
        "reason": "the dataset is not open",
    }

    topic, partition, offset = publisher.publish(
        TopicId.AUTHORIZATIONS, "pdo.authorizations.v1.AuthorizationDenied", event, key="r-publisher-probe"
    )

    assert read_at(kafka_bootstrap, topic, partition, offset)[0] == b"r-publisher-probe"


def test_an_event_type_not_declared_on_the_topic_is_refused(publisher):
    event = {**event_head("provider:test"), "dataset_id": "x", "reason": "y"}

    with pytest.raises(ValueError, match="not declared on pdo.requests"):
        publisher.publish(TopicId.REQUESTS, "pdo.catalog.v1.DatasetRetired", event)


def test_an_unreachable_registry_is_reported_as_unavailable(kafka_bootstrap):
    from conftest import free_port

    settings = dataclasses.replace(Settings.from_env(), registry_url=f"http://127.0.0.1:{free_port()}")
    publisher = EventPublisher(settings)
    event = {**event_head("provider:test"), "dataset_id": "x", "reason": "y"}
    try:
        with pytest.raises(Unavailable, match="cannot reach the schema registry"):
            publisher.publish(TopicId.CATALOG, "pdo.catalog.v1.DatasetRetired", event)
    finally:
        publisher.close()
