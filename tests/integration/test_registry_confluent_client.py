"""confluent-kafka's own SchemaRegistryClient and Avro serde against pdo's registry, on SQLite and PostgreSQL.

No broker is needed: serializing and deserializing with a SerializationContext only talks to the registry.
"""

from __future__ import annotations

import hmac
import json
import struct
import threading
from collections.abc import Iterator

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import admin_credentials, serving_registry, unique_name

pytestmark = pytest.mark.integration

TRIP_V1 = json.dumps(
    {
        "type": "record",
        "name": "Trip",
        "namespace": "pdo.transport",
        "doc": "一次出租车行程",
        "fields": [
            {"name": "trip_id", "type": "string"},
            {"name": "km", "type": "double"},
            {"name": "district", "type": ["null", "string"], "default": None},
        ],
    }
)
TRIP_V2 = json.dumps(
    {
        "type": "record",
        "name": "Trip",
        "namespace": "pdo.transport",
        "doc": "一次出租车行程",
        "fields": [
            {"name": "trip_id", "type": "string"},
            {"name": "km", "type": "double"},
            {"name": "district", "type": ["null", "string"], "default": None},
            {"name": "fare_cents", "type": "long", "default": 0},
        ],
    }
)
TRIP_BROKEN = json.dumps(
    {
        "type": "record",
        "name": "Trip",
        "namespace": "pdo.transport",
        "fields": [{"name": "trip_id", "type": "string"}, {"name": "passengers", "type": "int"}],
    }
)


TENANT = ("tenant.acme", "acme-test-password")
TENANT_TOPICS = "pdo.tenant.acme."  # the prefix its Kafka ACLs would allow


def tenant_guard(metrics):
    """The suite's admin plus one tenant whose ACLs reach its own topics: a stand-in for the Kafka login and
    ACL listing `pdo registry serve` uses."""
    from pdo.registry.auth import Guard

    known = dict([admin_credentials(), TENANT])
    return Guard(
        lambda user, password: hmac.compare_digest(known.get(user, "\0"), password),
        lambda user, topic: user == TENANT[0] and topic.startswith(TENANT_TOPICS),
        metrics,
    )


@pytest.fixture
def registry(database_url) -> Iterator[str]:
    """pdo's registry served over HTTP on an empty database of each supported kind."""
    with serving_registry(database_url, tenant_guard) as url:
        yield url


@pytest.fixture
def client(registry) -> Iterator[SchemaRegistryClient]:
    with SchemaRegistryClient({"url": registry, "basic.auth.user.info": ":".join(admin_credentials())}) as sr:
        yield sr


def test_avro_serializer_round_trip(registry, client):
    topic = unique_name("trips")
    context = SerializationContext(topic, MessageField.VALUE)
    serializer = AvroSerializer(client, TRIP_V1)
    deserializer = AvroDeserializer(client)
    value = {"trip_id": "t-1", "km": 12.5, "district": "浦东"}

    payload = serializer(value, context)
    assert payload[0] == 0  # Confluent wire format: magic byte, then the 4-byte schema id
    (schema_id,) = struct.unpack(">I", payload[1:5])
    assert serializer(value, context) == payload

    # A fresh client (cold cache) must fetch the writer schema from the registry by id.
    with SchemaRegistryClient(
        {"url": registry, "basic.auth.user.info": ":".join(admin_credentials())}
    ) as cold:
        assert AvroDeserializer(cold)(payload, context) == value
    assert deserializer(payload, context) == value

    latest = client.get_latest_version(f"{topic}-value")
    assert latest.schema_id == schema_id and latest.version == 1
    assert json.loads(latest.schema.schema_str) == json.loads(TRIP_V1)
    assert "一次出租车行程" in latest.schema.schema_str  # stored as registered, not \\u-escaped


def test_client_api_end_to_end(registry, client):
    subject = unique_name("trips") + "-value"

    first_id = client.register_schema(subject, Schema(TRIP_V1, "AVRO"))
    assert client.register_schema(subject, Schema(TRIP_V1, "AVRO")) == first_id
    with SchemaRegistryClient(
        {"url": registry, "basic.auth.user.info": ":".join(admin_credentials())}
    ) as cold:
        assert cold.register_schema(subject, Schema(TRIP_V1, "AVRO")) == first_id  # idempotent on the server
        other_subject_id = cold.register_schema(subject.replace("-value", "-copy"), Schema(TRIP_V1, "AVRO"))
        assert other_subject_id == first_id

        assert cold.get_schema(first_id).schema_str == client.get_version(subject, 1).schema.schema_str
        found = cold.lookup_schema(subject, Schema(TRIP_V1, "AVRO"))
        assert (found.schema_id, found.version, found.subject) == (first_id, 1, subject)

    assert client.get_compatibility() == "BACKWARD"
    assert client.test_compatibility(subject, Schema(TRIP_V2, "AVRO")) is True
    assert client.test_compatibility(subject, Schema(TRIP_BROKEN, "AVRO")) is False
    assert client.test_compatibility(subject, Schema(TRIP_BROKEN, "AVRO"), version=1, verbose=True) is False
    assert client.test_compatibility_all_versions(subject, Schema(TRIP_V2, "AVRO")) is True

    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, Schema(TRIP_BROKEN, "AVRO"))
    assert refused.value.http_status_code == 409 and refused.value.error_code == 409
    assert client.get_versions(subject) == [1]

    second_id = client.register_schema(subject, Schema(TRIP_V2, "AVRO"))
    assert second_id != first_id
    latest = client.get_latest_version(subject)
    assert (latest.schema_id, latest.version) == (second_id, 2)
    assert client.get_version(subject, 1).schema_id == first_id
    assert client.get_versions(subject) == [1, 2]
    assert [(v.subject, v.version) for v in client.get_schema_versions(first_id)] == sorted(
        [(subject, 1), (subject.replace("-value", "-copy"), 1)]
    )
    assert sorted(client.get_subjects_by_schema_id(first_id)) == sorted(
        [subject, subject.replace("-value", "-copy")]
    )

    client.set_compatibility(subject_name=subject, level="none")
    assert client.get_compatibility(subject) == "NONE"
    client.set_compatibility(level="FULL")
    assert client.get_compatibility() == "FULL"
    assert client.register_schema(subject, Schema(TRIP_BROKEN, "AVRO")) not in (first_id, second_id)

    assert subject in client.get_subjects()
    assert client.delete_subject(subject) == [1, 2, 3]
    assert subject not in client.get_subjects()
    assert subject in client.get_subjects(deleted=True)
    assert client.delete_subject(subject, permanent=True) == [1, 2, 3]
    assert subject not in client.get_subjects(deleted=True)
    assert client.get_schema_types() == ["AVRO"]


def test_client_sees_confluent_error_codes(client):
    subject = unique_name("missing")
    cases = [
        (lambda: client.get_latest_version(subject), 404, 40401),
        (lambda: client.get_version(subject, 3), 404, 40401),
        (lambda: client.get_schema(987654), 404, 40403),
        (lambda: client.lookup_schema(subject, Schema(TRIP_V1, "AVRO")), 404, 40401),
        (lambda: client.register_schema(subject, Schema("{not avro", "AVRO")), 422, 42201),
        (lambda: client.register_schema(subject, Schema('syntax = "proto3";', "PROTOBUF")), 422, 42201),
        (lambda: client.set_compatibility(level="SIDEWAYS"), 422, 42203),
        (lambda: client.delete_subject(subject), 404, 40401),
    ]
    for call, status, code in cases:
        with pytest.raises(SchemaRegistryError) as failure:
            call()
        assert (failure.value.http_status_code, failure.value.error_code) == (status, code)
    client.register_schema(subject, Schema(TRIP_V1, "AVRO"))
    with pytest.raises(SchemaRegistryError) as failure:
        client.get_version(subject, 2)
    assert failure.value.error_code == 40402


def test_racing_registrations_across_clients(registry):
    """Several registry clients at once, as several producers starting together would."""
    subject = unique_name("race") + "-value"
    with SchemaRegistryClient(
        {"url": registry, "basic.auth.user.info": ":".join(admin_credentials())}
    ) as admin:
        admin.set_compatibility(subject_name=subject, level="NONE")
    schemas = [
        json.dumps({"type": "record", "name": f"R{index}", "fields": [{"name": "a", "type": "int"}]})
        for index in range(6)
    ]
    ids: list = [None] * (2 * len(schemas))
    failures: list = []
    barrier = threading.Barrier(len(ids))

    def run(index: int) -> None:
        try:
            with SchemaRegistryClient(
                {"url": registry, "basic.auth.user.info": ":".join(admin_credentials())}
            ) as sr:
                barrier.wait()
                ids[index] = sr.register_schema(subject, Schema(schemas[index % len(schemas)], "AVRO"))
        except Exception as error:  # reported below, on the test's thread
            failures.append(error)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(len(ids))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures
    # Each schema got one id whichever client registered it, and one version each: no duplicates.
    for index in range(len(schemas)):
        assert ids[index] == ids[index + len(schemas)]
    with SchemaRegistryClient({"url": registry, "basic.auth.user.info": ":".join(admin_credentials())}) as sr:
        assert sr.get_versions(subject) == list(range(1, len(schemas) + 1))


def test_a_tenant_decodes_its_own_topic_with_its_credentials_and_no_other(registry, client):
    """What a tenant's consumer does: Confluent's AvroDeserializer with basic.auth.user.info."""
    value = {"trip_id": "t-9", "km": 3.0, "district": None}
    own = SerializationContext(unique_name(TENANT_TOPICS + "trips"), MessageField.VALUE)
    other = SerializationContext(unique_name("pdo.tenant.globex.trips"), MessageField.VALUE)
    own_payload = AvroSerializer(client, TRIP_V1)(value, own)
    other_payload = AvroSerializer(client, TRIP_V2)(
        value, other
    )  # another schema id, another tenant's subject

    with SchemaRegistryClient({"url": registry, "basic.auth.user.info": ":".join(TENANT)}) as tenant:
        assert AvroDeserializer(tenant)(own_payload, own) == value
        with pytest.raises(SchemaRegistryError) as refused:
            AvroDeserializer(tenant)(other_payload, other)
        assert (refused.value.http_status_code, refused.value.error_code) == (403, 40301)
        assert tenant.get_subjects() == [f"{own.topic}-value"]
        with pytest.raises(SchemaRegistryError) as refused:
            tenant.register_schema(f"{own.topic}-value", Schema(TRIP_V2, "AVRO"))
        assert refused.value.http_status_code == 403


@pytest.mark.parametrize("user_info", [f"{TENANT[0]}:wrong-password", "admin:" + TENANT[1], None])
def test_a_wrong_password_or_none_is_refused(registry, client, user_info):
    subject = unique_name(TENANT_TOPICS + "trips") + "-value"
    schema_id = client.register_schema(subject, Schema(TRIP_V1, "AVRO"))
    config = {"url": registry} | ({"basic.auth.user.info": user_info} if user_info else {})
    with SchemaRegistryClient(config) as intruder:
        for call in (
            lambda: intruder.get_schema(schema_id),
            lambda: intruder.register_schema(subject, Schema(TRIP_V2, "AVRO")),
            lambda: intruder.set_compatibility(level="NONE"),
            lambda: intruder.delete_subject(subject, permanent=False),
        ):
            with pytest.raises(SchemaRegistryError) as refused:
                call()
            assert (refused.value.http_status_code, refused.value.error_code) == (401, 40101)
    assert client.get_versions(subject) == [1] and client.get_compatibility() == "BACKWARD"
