"""An attacker with a Kafka client, against the whole platform as `pdo up` runs it (every service as its own
Kafka principal) in a topic namespace of its own on the suite's secured broker.

The attacker's side uses only public clients (kafka-python, confluent-kafka, httpx) and what the platform
handed it over HTTP (its API key, the Kafka credentials it issued itself). pdo's code only sets the stage:
`pdo up` and `pdo principals add`, as an operator would. Each attack from issue #10 must be refused by the
broker or the registry, and each legitimate path — a provider publishing over Kafka with Confluent's
serializer, a tenant consuming its stream with Confluent's deserializer — must keep working.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer
from confluent_kafka import TopicPartition as ConfluentPartition
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from conftest import free_port
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError as KafkaPythonError
from kafka.errors import TopicAuthorizationFailedError

from pdo.authorization.testing import isolated_home
from pdo.core.config import PROJECT_ROOT

pytestmark = [
    pytest.mark.integration,
    # kafka-python leaves the socket of a refused login to the garbage collector: the attacker's client, not ours.
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

RUN = uuid.uuid4().hex[:6]
PROVIDER, TENANT, OTHER_TENANT, OPERATOR = f"bureau-{RUN}", f"acme-{RUN}", f"globex-{RUN}", f"alice-{RUN}"
DATASET = f"trips-{RUN}"
SCHEMA = {
    "type": "record",
    "name": "Trip",
    "namespace": "hostile.test.v1",
    "fields": [
        {"name": "record_id", "type": "string"},
        {"name": "plate", "type": "string"},
        {"name": "district", "type": "string"},
        {"name": "speed_kmh", "type": "double"},
    ],
}
AUTHORIZATION_FAILED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}
PLATES = [f"浙A{n:05d}" for n in range(6)]


@pytest.fixture(autouse=True)
def collect_the_attackers_sockets() -> Iterator[None]:
    """Refused clients leave sockets to the garbage collector; collect them here, where this module's filter
    applies, not in whichever later test the collector happens to run."""
    yield
    gc.collect()


@dataclass
class Stage:
    env: dict[str, str]
    gateway: str
    registry: str
    bootstrap: str
    tag: str
    keys: dict[str, str]

    def topic(self, kind: str, *parts: str) -> str:
        return ".".join(["pdo", self.tag, kind, *parts])

    def call(self, who: str, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        return httpx.request(method, f"{self.gateway}{path}", headers=headers, timeout=60, **kwargs)


def _pdo(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pdo.cli.main", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _wait_for(url: str, process: subprocess.Popen, log, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"pdo up exited early:\n{log.read_text()}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer:\n{log.read_text()}")


@pytest.fixture(scope="module")
def stage(kafka_bootstrap, tmp_path_factory) -> Iterator[Stage]:
    folder = tmp_path_factory.mktemp("hostile")
    tag = f"t-{uuid.uuid4().hex[:10]}"
    registry_port, gateway_port = free_port(), free_port()
    env = {
        **os.environ,
        "PDO_HOME": str(isolated_home(folder, tag)),
        "PDO_RUN_DIR": str(folder / "run"),
        "PDO_REGISTRY_PORT": str(registry_port),
        "PDO_REGISTRY_URL": f"http://127.0.0.1:{registry_port}",
        "PDO_GATEWAY_PORT": str(gateway_port),
        "PDO_DATABASE_URL": f"sqlite:///{folder / 'pdo.db'}",
        "PDO_REGISTRY_DATABASE_URL": f"sqlite:///{folder / 'registry.db'}",
    }
    log = folder / "up.log"
    with log.open("w") as output:
        up = subprocess.Popen(
            [sys.executable, "-m", "pdo.cli.main", "up"],
            env=env,
            cwd=PROJECT_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    gateway = f"http://127.0.0.1:{gateway_port}"
    try:
        _wait_for(f"{gateway}/healthz", up, log)
        keys = {
            name: _pdo(env, "principals", "add", "--kind", kind, "--id", name)
            for kind, name in (
                ("provider", PROVIDER),
                ("tenant", TENANT),
                ("tenant", OTHER_TENANT),
                ("operator", OPERATOR),
            )
        }
        yield Stage(env, gateway, env["PDO_REGISTRY_URL"], kafka_bootstrap, tag, keys)
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)


@dataclass
class Parties:
    provider: dict
    tenant: dict
    other_tenant: dict
    tenant_topic: str
    feed: str


def _granted_and_published(stage: Stage, request_id: str) -> bool:
    """Approved, and the grant's event is on pdo.authorizations: records published from now on are delivered
    (the stream-order rule; an approval committed in SQL is published by the outbox a moment later)."""
    request = stage.call(TENANT, "GET", f"/v1/requests/{request_id}").json()
    if request["status"] != "APPROVED":
        return False
    grant = stage.call(TENANT, "GET", f"/v1/grants/{request['grant_id']}").json()
    return grant["status"] == "ACTIVE" and grant["published"]


def _credentials(stage: Stage, who: str) -> dict:
    response = stage.call(who, "POST", "/v1/kafka-credentials")
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.json()


@pytest.fixture(scope="module")
def parties(stage) -> Parties:
    """A dataset, a granted tenant, a tenant with no grant; each party with the credentials it issued itself."""
    registration = {
        "dataset_id": DATASET,
        "owner_department": "Transport Bureau",
        "title": "Trips",
        "domain": "TRANSPORT",
        "classification": "GENERAL",
        "openness": "OPEN",
        "record_schema": SCHEMA,
        "sensitive_fields": [{"field": "plate", "masking": "KEEP_FIRST_LAST"}],
        "price_plan": {"kind": "PER_THOUSAND_RECORDS", "unit_price": "2.00"},
    }
    registered = stage.call(PROVIDER, "POST", "/v1/datasets", json=registration)
    assert registered.status_code == 201, registered.text
    now = datetime.now(UTC)
    request = {
        "dataset_id": DATASET,
        "purpose": "traffic research",
        "fields": ["record_id", "district", "speed_kmh"],  # no sensitive field: approved by the policy
        "valid_from": (now - timedelta(minutes=1)).isoformat(),
        "valid_until": (now + timedelta(days=30)).isoformat(),
    }
    submitted = stage.call(TENANT, "POST", "/v1/requests", json=request)
    assert submitted.status_code == 202, submitted.text
    request_id = submitted.json()["request_id"]
    deadline = time.monotonic() + 60
    while not _granted_and_published(stage, request_id):
        assert time.monotonic() < deadline, (
            "the policy did not approve the request, or its grant is unpublished"
        )
        time.sleep(0.5)
    return Parties(
        provider=_credentials(stage, PROVIDER),
        tenant=_credentials(stage, TENANT),
        other_tenant=_credentials(stage, OTHER_TENANT),
        tenant_topic=stage.topic("tenant", TENANT, DATASET),
        feed=stage.topic("feed", DATASET),
    )


# ---------------------------------------------------------------------------------------------- clients


def sasl(credentials: dict) -> dict:
    return {
        "bootstrap_servers": credentials["bootstrap_servers"],
        "security_protocol": credentials["security_protocol"],
        "sasl_mechanism": credentials["sasl_mechanism"],
        "sasl_plain_username": credentials["username"],
        "sasl_plain_password": credentials["password"],
    }


def librdkafka(credentials: dict, **extra: str) -> dict:
    return {
        "bootstrap.servers": credentials["bootstrap_servers"],
        "security.protocol": credentials["security_protocol"],
        "sasl.mechanisms": credentials["sasl_mechanism"],
        "sasl.username": credentials["username"],
        "sasl.password": credentials["password"],
        **extra,
    }


def registry_client(stage: Stage, credentials: dict | None) -> SchemaRegistryClient:
    config = {"url": stage.registry}
    if credentials is not None:
        config["basic.auth.user.info"] = f"{credentials['username']}:{credentials['password']}"
    return SchemaRegistryClient(config)


def read_as(credentials: dict, topic: str, timeout_s: float = 8) -> list:
    """Every record a kafka-python consumer with these credentials fetches from `topic`'s partitions 0-2,
    assigned directly (a subscription would only leave an unauthorized topic out of its metadata)."""
    consumer = KafkaConsumer(
        **sasl(credentials),
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=5000,
        request_timeout_ms=5000,
    )
    try:
        consumer.assign([TopicPartition(topic, partition) for partition in range(3)])
        return list(consumer)
    finally:
        consumer.close()


def refused_read(credentials: dict, topic: str, timeout_s: float = 15) -> set[int]:
    """Try to read `topic` with confluent-kafka as these credentials: assert no record arrives; the error codes."""
    consumer = Consumer(
        librdkafka(
            credentials,
            **{"group.id": f"{credentials.get('topic_prefix') or ''}probe", "auto.offset.reset": "earliest"},
        )
    )
    consumer.subscribe([topic])
    codes: set[int] = set()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not codes & AUTHORIZATION_FAILED:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is not None, f"{credentials['username']} read a record of {topic}"
            codes.add(message.error().code())
    finally:
        consumer.close()
    return codes


def write_as(credentials: dict, topic: str, key: bytes, value: bytes) -> None:
    producer = KafkaProducer(**sasl(credentials), max_block_ms=8000, request_timeout_ms=8000, retries=0)
    try:
        producer.send(topic, key=key, value=value).get(timeout=10)
    finally:
        producer.close(timeout=5)


# ---------------------------------------------------------------------------------------------- legitimate paths


def test_a_provider_publishes_over_kafka_and_the_tenant_consumes_with_confluents_deserializer(stage, parties):
    provider, tenant = parties.provider, parties.tenant
    assert parties.feed in provider["feeds"]
    with registry_client(stage, provider) as provider_registry:
        publish_as_provider(provider, provider_registry, parties.feed)
    assert parties.tenant_topic.startswith(tenant["topic_prefix"])
    with registry_client(stage, tenant) as tenant_registry:
        received = consume_as_tenant(tenant, tenant_registry, parties.tenant_topic, len(PLATES))
    assert sorted(r["record_id"] for r in received) == [f"r-{i}" for i in range(len(PLATES))]
    assert all("plate" not in record for record in received)  # not granted: never delivered
    assert all(record["district"] == "西湖区" for record in received)


def publish_as_provider(provider: dict, registry: SchemaRegistryClient, feed: str) -> None:
    """Confluent's serializer under the schema the catalog registered (no auto-registration)."""
    serializer = AvroSerializer(
        registry,
        json.dumps(SCHEMA),
        conf={
            "auto.register.schemas": False,
            "use.latest.version": True,
            "subject.name.strategy": topic_record_subject_name_strategy,
        },
    )
    producer = Producer(librdkafka(provider, **{"enable.idempotence": True}))
    for index, plate in enumerate(PLATES):
        record = {"record_id": f"r-{index}", "plate": plate, "district": "西湖区", "speed_kmh": 40.0 + index}
        value = serializer(record, SerializationContext(feed, MessageField.VALUE))
        producer.produce(feed, key=record["record_id"].encode(), value=value)
    assert producer.flush(30) == 0


def consume_as_tenant(tenant: dict, registry: SchemaRegistryClient, topic: str, count: int) -> list[dict]:
    """Up to `count` records of the tenant's topic, every partition read from its start with the tenant's
    credentials, decoded by Confluent's deserializer (90 s at most). Partitions are assigned, not
    subscribed: the topic appears only once sharing applies the grant, and a group joined before that
    would add a rebalance's timing to what this test measures."""
    deserializer = AvroDeserializer(registry)
    consumer = Consumer(
        librdkafka(
            tenant,
            **{"group.id": f"{tenant['topic_prefix']}analytics", "isolation.level": "read_committed"},
        )
    )
    received: list[dict] = []
    deadline = time.monotonic() + 90
    try:
        partitions = _partitions_when_created(consumer, topic, deadline)
        consumer.assign([ConfluentPartition(topic, number, OFFSET_BEGINNING) for number in partitions])
        while len(received) < count and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            assert message.error() is None, message.error()
            context = SerializationContext(message.topic(), MessageField.VALUE)
            received.append(deserializer(message.value(), context))
        # Not the offsets' span: sharing writes in transactions, whose commit markers take offsets too.
        assert len(received) == count, f"read {len(received)} of the {count} records on {topic}"
        extra = consumer.poll(2.0)
        assert extra is None, f"a record beyond the {count} published: {extra.value()!r}"
    finally:
        consumer.close()
    return received


def _partitions_when_created(consumer: Consumer, topic: str, deadline: float) -> list[int]:
    """The topic's partitions once the broker lists it (sharing creates it when it applies the grant)."""
    while time.monotonic() < deadline:
        listed = consumer.list_topics(topic, timeout=5).topics.get(topic)
        if listed is not None and listed.error is None and listed.partitions:
            return sorted(listed.partitions)
        time.sleep(0.5)
    raise AssertionError(f"{topic} was not created in time")


# ---------------------------------------------------------------------------------------------- attacks


def test_without_credentials_nobody_gets_in(stage, parties):
    with pytest.raises(KafkaPythonError):
        KafkaConsumer(
            parties.feed,
            bootstrap_servers=stage.bootstrap,
            security_protocol="PLAINTEXT",
            request_timeout_ms=3000,
            bootstrap_timeout_ms=3000,
        )
    wrong = {**parties.tenant, "password": "guessed"}
    with pytest.raises(KafkaPythonError):
        read_as(wrong, parties.tenant_topic)


def test_a_tenant_cannot_read_a_raw_feed(parties):
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in refused_read(parties.tenant, parties.feed)


def test_a_tenant_cannot_read_another_tenants_stream(parties):
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in refused_read(parties.other_tenant, parties.tenant_topic)


def test_a_provider_cannot_read_tenant_streams_or_control_topics(stage, parties):
    for topic in (parties.tenant_topic, stage.topic("authorizations"), stage.topic("deliveries")):
        # A provider may use no consumer group at all: the broker refuses the group or the topic first.
        assert refused_read(parties.provider, topic) & AUTHORIZATION_FAILED


def test_no_party_can_forge_a_grant(stage, parties):
    forged = b"\x00\x00\x00\x00\x01forged AuthorizationGranted for a tenant that never asked"
    for credentials in (parties.tenant, parties.other_tenant, parties.provider):
        with pytest.raises(TopicAuthorizationFailedError):
            write_as(credentials, stage.topic("authorizations"), f"g-forged-{RUN}".encode(), forged)


def test_no_party_can_forge_usage_or_write_where_only_services_write(stage, parties):
    fact = b"\x00\x00\x00\x00\x01forged RecordsDelivered"
    for topic in (stage.topic("deliveries"), stage.topic("usage"), parties.tenant_topic):
        with pytest.raises(TopicAuthorizationFailedError):
            write_as(parties.provider, topic, b"k", fact)
    with pytest.raises(TopicAuthorizationFailedError):
        write_as(parties.tenant, stage.topic("deliveries"), b"k", fact)
    with pytest.raises(TopicAuthorizationFailedError):
        write_as(parties.tenant, parties.feed, b"k", fact)  # a tenant is no provider


def test_a_provider_writes_only_its_own_feeds(stage, parties):
    other_feed = stage.topic("feed", f"someone-else-{RUN}")
    with pytest.raises(TopicAuthorizationFailedError):
        write_as(parties.provider, other_feed, b"k", b"\x00\x00\x00\x00\x01x")


def test_no_provider_can_pose_as_a_derived_data_product(stage, parties):
    """Product ids are reserved, and a product's feed is written by the aggregation service alone: a provider
    can neither register a `product-…` dataset nor write into a product's feed with its Kafka client."""
    product = f"product-{RUN}"
    registration = {
        "dataset_id": product,
        "owner_department": "Transport Bureau",
        "title": "Not really a product",
        "domain": "TRANSPORT",
        "classification": "GENERAL",
        "openness": "OPEN",
        "record_schema": SCHEMA,
        "price_plan": {"kind": "FREE", "unit_price": "0.00"},
    }
    refused = stage.call(PROVIDER, "POST", "/v1/datasets", json=registration)
    assert refused.status_code == 422, refused.text
    assert "reserved for derived data products" in refused.text
    with pytest.raises(TopicAuthorizationFailedError):
        write_as(parties.provider, stage.topic("feed", product), b"k", b"\x00\x00\x00\x00\x01forged window")


def test_revoked_credentials_stop_working_at_once(stage, parties):
    spare = _credentials(stage, OTHER_TENANT)  # rotation: the newest password is the one that works
    with pytest.raises(KafkaPythonError):
        read_as(parties.other_tenant, stage.topic("tenant", OTHER_TENANT, DATASET), timeout_s=3)
    revoked = stage.call(OTHER_TENANT, "DELETE", "/v1/kafka-credentials")
    assert revoked.status_code == 200 and revoked.json()["acls_removed"] >= 2
    with pytest.raises(KafkaPythonError):
        read_as(spare, stage.topic("tenant", OTHER_TENANT, DATASET), timeout_s=3)


def test_operators_get_no_kafka_credentials_and_tenants_cannot_revoke_others(stage):
    refused = stage.call(OPERATOR, "POST", "/v1/kafka-credentials")
    assert refused.status_code == 403
    other = stage.call(TENANT, "DELETE", f"/v1/principals/tenant:{OTHER_TENANT}/kafka-credentials")
    assert other.status_code == 403


# ---------------------------------------------------------------------------------------------- the registry


def test_the_registry_refuses_anonymous_changes_and_deletes(stage, parties):
    subject = f"{stage.topic('authorizations')}-pdo.authorizations.v1.AuthorizationRevoked"
    attempts = [
        ("POST", f"/subjects/{subject}/versions", {"schema": '"string"'}),
        ("PUT", "/config", {"compatibility": "NONE"}),
        ("PUT", f"/config/{subject}", {"compatibility": "NONE"}),
        ("DELETE", f"/subjects/{subject}", None),
        ("DELETE", f"/subjects/{subject}?permanent=true", None),
        ("GET", "/subjects", None),
    ]
    for method, path, body in attempts:
        response = httpx.request(method, f"{stage.registry}{path}", json=body, timeout=30)
        assert response.status_code == 401, (method, path, response.text)
    wrong = httpx.get(f"{stage.registry}/subjects", auth=(parties.tenant["username"], "guessed"), timeout=30)
    assert wrong.status_code == 401


def test_the_registry_lets_parties_read_only_their_own_subjects_and_change_nothing(stage, parties):
    tenant, other = parties.tenant, _credentials(stage, OTHER_TENANT)  # its first ones may be revoked by now
    revocation = f"{stage.topic('authorizations')}-pdo.authorizations.v1.AuthorizationRevoked"
    as_tenant = (tenant["username"], tenant["password"])
    listed = httpx.get(f"{stage.registry}/subjects", auth=as_tenant, timeout=30).json()
    assert listed and all(subject.startswith(tenant["topic_prefix"]) for subject in listed)
    for method, path, body in [
        ("PUT", "/config", {"compatibility": "NONE"}),
        ("PUT", f"/config/{revocation}", {"compatibility": "NONE"}),
        ("DELETE", f"/subjects/{revocation}", None),
        ("DELETE", f"/subjects/{listed[0]}", None),
        ("GET", f"/subjects/{revocation}/versions/latest", None),
    ]:
        response = httpx.request(method, f"{stage.registry}{path}", json=body, auth=as_tenant, timeout=30)
        assert response.status_code == 403, (method, path, response.text)
    feed_subject = f"{parties.feed}-hostile.test.v1.Trip"
    as_other = (other["username"], other["password"])
    for subject in (listed[0], feed_subject):
        refused = httpx.get(f"{stage.registry}/subjects/{subject}/versions/latest", auth=as_other, timeout=30)
        assert refused.status_code == 403
    with (
        registry_client(stage, parties.provider) as provider_registry,  # Confluent's own client
        pytest.raises(SchemaRegistryError) as refused,
    ):
        provider_registry.get_latest_version(revocation)
    assert refused.value.http_status_code == 403
