"""Aggregate-only grants end to end on the real broker, read the way a tenant reads them (kafka-python, raw).

A tenant's AGGREGATE request on a TrafficFlow dataset is approved by the policy; `pdo aggregation worker`
(a real process) reads the feed. One minute window of event time gets 12 Haidian, 10 Dongcheng and 3 Chaoyang
records (k = 10): only Haidian and Dongcheng are published, each with a count of at least k and Chaoyang counted
as one suppressed group; the tenant's aggregates topic holds no raw value of any record — no plate, phone,
record id, checkpoint id or speed — only the group key (a district) and aggregates. One usage fact is on
pdo.deliveries for the window; a record that arrives after the window closed is on pdo.dead-letters with its
reason. The worker is then stopped and started again mid-way through the next window: that window is published
once, with every record of it, and the first window is not published again.

The namespace, database and process fixtures are sharing_support's.
"""

# ruff: noqa: F811  (pytest fixtures imported from sharing_support are parameters here)
from __future__ import annotations

import io
import json
import struct
import uuid
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import fastavro
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import TopicAuthorizationFailedError
from sharing_support import (  # noqa: F401  (fixtures)
    ACME,
    PdoProcesses,
    TimedFeed,
    db_url,
    platform,
    settings,
    topic_messages,
    traffic_record,
    wait_for,
)

from pdo.authorization.public import RequestSpec
from pdo.authorization.testing import approved_grant, register_traffic_dataset
from pdo.core import access, schemas, topics
from pdo.core.kafka import admin_client
from pdo.core.names import Event
from pdo.core.topics import TopicId, tenant_topic_part
from pdo.core.vocabulary import AggregateFunction, AggregateSpec, GrantKind

pytestmark = pytest.mark.integration

K = 10
LATENESS_S = 5
WINDOW_S = 60
SIZES = {"Haidian": 12, "Dongcheng": 10, "Chaoyang": 3}
SPEC = AggregateSpec(
    WINDOW_S,
    ("district",),
    ("speed_kmh",),
    (AggregateFunction.COUNT, AggregateFunction.MEAN, AggregateFunction.MIN, AggregateFunction.MAX),
)


def decode_aggregates(messages) -> list[dict]:
    """The tenant's view: Confluent framing stripped, the body read with the published schema (fastavro)."""
    parsed = fastavro.parse_schema(json.loads(str(schemas.get(Event.WINDOW_AGGREGATED))))
    decoded = []
    for message in messages:
        assert message.value[0] == 0 and struct.unpack(">I", message.value[1:5])[0] > 0
        decoded.append(fastavro.schemaless_reader(io.BytesIO(message.value[5:]), parsed, None))
    return decoded


def values_in(node) -> set[str]:
    """Every scalar a decoded event holds, as text."""
    if isinstance(node, dict):
        return set().union(*(values_in(value) for value in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(values_in(value) for value in node)) if node else set()
    return {str(node)}


def test_aggregates_reach_the_tenant_without_a_raw_value_small_groups_suppressed_and_once_across_a_restart(
    settings, platform, tmp_path
):
    dataset_id = register_traffic_dataset(platform["catalog"])
    now = datetime.now(UTC)
    request = platform["service"].submit_request(
        ACME,
        RequestSpec(
            dataset_id=dataset_id,
            purpose="congestion statistics",
            fields=("district", "speed_kmh"),
            valid_from=now - timedelta(hours=1),
            valid_until=now + timedelta(days=1),
            kind=GrantKind.AGGREGATE,
            aggregate=SPEC,
        ),
        ACME,
    )
    grant_id = approved_grant(platform["service"], request.request_id)
    assert platform["service"].get_grant(grant_id).kind is GrantKind.AGGREGATE

    processes = PdoProcesses(
        settings,
        tmp_path,
        {"PDO_AGGREGATION_ALLOWED_LATENESS_S": str(LATENESS_S), "PDO_AGGREGATION_MIN_GROUP_SIZE": str(K)},
    )
    feed = TimedFeed(settings, platform["codec"], dataset_id)
    aggregates_topic = topics.name(
        TopicId.TENANT_AGGREGATES, settings, tenant_id=tenant_topic_part(ACME), dataset_id=dataset_id
    )
    first = datetime.fromtimestamp((int(now.timestamp()) // WINDOW_S) * WINDOW_S, UTC)
    second = first + timedelta(seconds=WINDOW_S)
    try:
        worker = processes.start("aggregation", "worker", "--loglevel", "info")
        feed.window(first, SIZES, "w1")
        # A record past the first window's end + lateness closes it (event time, not the clock).
        feed.publish(second + timedelta(seconds=LATENESS_S + 1), "Haidian", "w2")
        wait_for(
            "the first window's aggregates",
            lambda: len(topic_messages(settings, aggregates_topic, 5)) >= 2,
            [worker],
        )
        # A record of the first window after it closed: late, dead-lettered with its reason.
        feed.publish(first + timedelta(seconds=30), "Haidian", "late")
        dead_topic = topics.name(TopicId.DEAD_LETTERS, settings)
        late = wait_for(
            "the late record's dead letter",
            lambda: [m for m in topic_messages(settings, dead_topic, 5) if b"late record" in m.value],
            [worker],
        )
        assert len(late) == 1

        # Restart in the middle of the second window: its state is in SQL, so nothing is lost or doubled.
        feed.window(second, {"Haidian": 4}, "w2")
        processes.stop()
        processes = PdoProcesses(settings, tmp_path, processes.env)
        worker = processes.start("aggregation", "worker", "--loglevel", "info")
        feed.window(second, {"Haidian": 5}, "w2")
        feed.publish(second + timedelta(seconds=WINDOW_S + LATENESS_S + 1), "Dongcheng", "w3")
        everything = wait_for(
            "the second window's aggregate",
            lambda: len(found := topic_messages(settings, aggregates_topic, 5)) >= 3 and found,
            [worker],
        )
    finally:
        processes.stop()
        feed.close()

    aggregates = decode_aggregates(everything)
    by_window = Counter(int(a["window_start"].timestamp()) for a in aggregates)
    assert by_window == {int(first.timestamp()): 2, int(second.timestamp()): 1}  # each once, no repeat
    assert len({a["aggregate_id"] for a in aggregates}) == len(aggregates)
    first_window = {a["group"]["district"]: a for a in aggregates if a["window_start"] == first}
    assert {district: a["count"] for district, a in first_window.items()} == {"Haidian": 12, "Dongcheng": 10}
    assert all(a["count"] >= K and a["min_group_size"] == K for a in aggregates)
    assert all(a["suppressed_groups"] == 1 for a in first_window.values())  # Chaoyang's 3
    (second_window,) = [a for a in aggregates if a["window_start"] == second]
    # 1 record closing window one + 4 before the restart + 5 after: all 10 counted, once.
    assert (second_window["group"], second_window["count"]) == ({"district": "Haidian"}, 10)

    # No raw value of any record is on the tenant's topic: only districts (the group key) and aggregates.
    raw_values = {
        str(record[name])
        for record in feed.published
        for name in ("record_id", "plate_number", "driver_phone", "checkpoint_id", "speed_kmh")
    }
    for message, aggregate in zip(everything, aggregates, strict=True):
        assert not any(value.encode() in message.value for value in raw_values if len(value) > 4)
        measures = aggregate["measures"]
        assert {(m["field"], m["function"]) for m in measures} == {
            ("speed_kmh", "MEAN"),
            ("speed_kmh", "MIN"),
            ("speed_kmh", "MAX"),
        }
        assert set(aggregate["group"].values()) <= set(SIZES)

    facts = [
        platform["codec"].decode(m.value).value
        for m in topic_messages(settings, topics.name(TopicId.DELIVERIES, settings))
    ]
    windows_metered = sorted((f["delivery_id"], f["records"]) for f in facts if f["grant_id"] == grant_id)
    assert windows_metered == [
        (f"agg-{grant_id}-{int(first.timestamp() * 1000)}", 2),
        (f"agg-{grant_id}-{int(second.timestamp() * 1000)}", 1),
    ]

    # The tenant reads its aggregates with its own credentials, and still not the raw feed.
    with tenant_credentials(settings, ACME) as credentials:
        assert len(read_as(credentials, aggregates_topic)) == 3
        with pytest.raises(TopicAuthorizationFailedError):
            read_as(credentials, feed.topic)


@contextmanager
def tenant_credentials(settings, tenant_id: str):
    """The tenant's Kafka user with its ACLs, as the platform issues them; removed afterwards."""
    user, password = access.party_user(tenant_id), f"pw-{uuid.uuid4().hex}"
    with admin_client(settings) as admin:
        access.set_password(admin, user, password)
        access.grant(admin, access.tenant_acls(tenant_id, settings))
    try:
        yield {"user": user, "password": password, "bootstrap": settings.kafka_bootstrap}
    finally:
        with admin_client(settings) as admin:
            access.revoke_principal(admin, user)
            access.delete_user(admin, user)


def read_as(credentials: dict, topic: str) -> list:
    """Every message of `topic` read with kafka-python as the party, outside any group."""
    consumer = KafkaConsumer(
        bootstrap_servers=credentials["bootstrap"],
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username=credentials["user"],
        sasl_plain_password=credentials["password"],
        enable_auto_commit=False,
    )
    try:
        partitions = [TopicPartition(topic, number) for number in range(3)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        found: list = []
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for messages in consumer.poll(timeout_ms=500).values():
                found.extend(messages)
        return found
    finally:
        consumer.close()


def test_a_private_grant_spends_its_budget_and_is_suspended_in_stream_order_when_it_is_spent(
    settings, platform, tmp_path
):
    """Counts with noise (OpenDP) at epsilon 0.6 a window, a budget of 1.0 a month: the first window is
    released, the second is not, and the authorization worker suspends the grant on the notice."""
    dataset_id = register_traffic_dataset(platform["catalog"])
    now = datetime.now(UTC)
    private = AggregateSpec(WINDOW_S, ("district",), (), (AggregateFunction.COUNT,), epsilon=0.6)
    request = platform["service"].submit_request(
        ACME,
        RequestSpec(
            dataset_id=dataset_id,
            purpose="private counts",
            fields=("district",),
            valid_from=now - timedelta(hours=1),
            valid_until=now + timedelta(days=1),
            kind=GrantKind.AGGREGATE,
            aggregate=private,
        ),
        ACME,
    )
    grant_id = approved_grant(platform["service"], request.request_id)
    environment = {
        "PDO_AGGREGATION_ALLOWED_LATENESS_S": str(LATENESS_S),
        "PDO_AGGREGATION_MIN_GROUP_SIZE": str(K),
        "PDO_AGGREGATION_EPSILON_PER_MONTH": "1.0",
    }
    processes = PdoProcesses(settings, tmp_path, environment)
    feed = TimedFeed(settings, platform["codec"], dataset_id)
    aggregates_topic = topics.name(
        TopicId.TENANT_AGGREGATES, settings, tenant_id=tenant_topic_part(ACME), dataset_id=dataset_id
    )
    first = datetime.fromtimestamp((int(now.timestamp()) // WINDOW_S) * WINDOW_S, UTC)
    try:
        workers = [
            processes.start("aggregation", "worker", "--loglevel", "info"),
            processes.start("authorization", "worker"),
        ]
        for window in range(2):
            feed.window(first + timedelta(seconds=WINDOW_S * window), {"Haidian": 60}, f"w{window}")
        feed.publish(first + timedelta(seconds=2 * WINDOW_S + LATENESS_S + 1), "Haidian", "closer")
        wait_for(
            "the suspension for the spent budget",
            lambda: platform["service"].get_grant(grant_id).status.value == "SUSPENDED",
            workers,
        )
    finally:
        processes.stop()
        feed.close()

    released = decode_aggregates(topic_messages(settings, aggregates_topic))
    assert [(a["window_start"], a["group"]) for a in released] == [(first, {"district": "Haidian"})]
    assert released[0]["count"] >= K and released[0]["measures"] == []
    suspended = platform["service"].get_grant(grant_id)
    assert suspended.history[-1].actor == "system:aggregation"
    assert "privacy budget of epsilon 1 " in suspended.status_reason
