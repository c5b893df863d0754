# ruff: noqa: F811 - test parameters name the fixtures imported from the support modules
"""Grants that cannot outlive their terms or disagree with SQL, end to end on the real broker: the real
`pdo authorization worker` and `pdo sharing worker` as processes.

1. A provider marks a granted field sensitive: the authorization worker re-masks the grant and records
   published after that are delivered masked; the provider reclassifies the dataset CORE: the grant is
   suspended with the reason, and nothing published after the suspension event is delivered.
2. A process that cannot reach the broker (a gateway cut off from Kafka) suspends and revokes a grant: its
   answers come, the changes are committed, and the authorization worker's outbox relay publishes both events,
   in version order; sharing delivers nothing published after the revocation.
"""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition
from metering_support import pdo_workers  # noqa: F401
from sharing_support import (  # noqa: F401
    ACME,
    PROVIDER,
    Feed,
    db_url,
    grant,
    platform,
    read_topic,
    record_ids,
    register_dataset,
    settings,
    wait_for,
)

from pdo.authorization import outbox
from pdo.authorization.public import AuthorizationService, load_policy
from pdo.catalog.public import DatasetChanges
from pdo.core import topics
from pdo.core.config import Settings
from pdo.core.errors import Unavailable
from pdo.core.kafka import kafka_python_connection
from pdo.core.topics import TopicId, tenant_topic
from pdo.core.vocabulary import Classification, GrantStatus, MaskingRule, SensitiveField, SuspensionCause

pytestmark = pytest.mark.integration

FIELDS = ("record_id", "district", "speed_kmh")


def grant_events(settings: Settings, codec, grant_id: str) -> list[tuple[str, int, dict]]:
    """(event name, version, value) of the grant's events on pdo.authorizations, in topic order."""
    found = []
    for _, _, value in read_topic(settings, codec, topics.name(TopicId.AUTHORIZATIONS, settings)):
        if value.get("grant_id") == grant_id:
            version = value["grant"]["version"] if value.get("grant") else 1
            found.append((_event_name(value), version, value))
    return found


def _event_name(value: dict) -> str:
    if value.get("grant") is None:
        return "Granted"
    return {"SUSPENDED": "Suspended", "ACTIVE": "Resumed", "REVOKED": "Revoked"}[value["grant"]["status"]]


def processed_by(settings: Settings, group: str, feed_topic: str) -> bool:
    """True when the sharing group's committed offsets reach the feed's end on every partition: every
    record published so far has been processed (delivered or not)."""
    # A consumer in the group that never subscribes: it only reads the group's committed offsets.
    consumer = KafkaConsumer(**kafka_python_connection(settings), group_id=group, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(feed_topic, p) for p in consumer.partitions_for_topic(feed_topic) or ()]
        ends = consumer.end_offsets(partitions)
        return all((consumer.committed(tp) or 0) >= ends[tp] for tp in partitions)
    finally:
        consumer.close()


def test_a_reclassified_dataset_stops_its_grant_in_stream_order(settings, platform, pdo_workers):
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    acme = grant(service, ACME, dataset_id, FIELDS)
    acme_topic = tenant_topic(ACME, dataset_id, settings)
    tag = uuid.uuid4().hex[:6]
    sharing_group = f"sharing-{tag}"
    processes = [
        pdo_workers("sharing", "worker", "--group", sharing_group),
        pdo_workers("authorization", "worker", "--group", f"authorization-{tag}"),
    ]
    feed = Feed(settings, codec, dataset_id)
    try:
        clear = feed.publish(3, "clear")
        wait_for(
            "clear deliveries",
            lambda: set(clear) <= set(record_ids(read_topic(settings, codec, acme_topic))),
            processes,
        )
        # 1. district becomes sensitive: the worker re-masks the grant (a suspension and a resumption).
        current = catalog.get(dataset_id)
        marked = (*current.sensitive_fields, SensitiveField("district", MaskingRule.REDACT))
        catalog.update(PROVIDER, dataset_id, DatasetChanges(sensitive_fields=marked), PROVIDER)
        # On the topic, not only in SQL: what sharing applies before a record is what the broker acknowledged
        # before it (the relay publishes just after the commit; a record published in between goes first).
        wait_for(
            "the re-masking events",
            lambda: [version for _, version, _ in grant_events(settings, codec, acme)][-1:] == [3],
            processes,
        )
        remasked = service.get_grant(acme)
        assert (remasked.status, remasked.masking) == (GrantStatus.ACTIVE, {"district": MaskingRule.REDACT})
        assert "district (REDACT)" in remasked.status_reason
        masked = feed.publish(3, "masked")
        wait_for(
            "masked deliveries",
            lambda: set(masked) <= set(record_ids(read_topic(settings, codec, acme_topic))),
            processes,
        )
        for _, _, value in read_topic(settings, codec, acme_topic):
            if value["record_id"] in masked:
                assert value["district"] != feed.records[value["record_id"]]["district"]

        # 2. Reclassified CORE: suspended with the rule, and nothing published afterwards is delivered.
        catalog.update(PROVIDER, dataset_id, DatasetChanges(classification=Classification.CORE), PROVIDER)
        wait_for(
            "the suspension event",
            lambda: [name for name, _, _ in grant_events(settings, codec, acme)][-1:] == ["Suspended"],
            processes,
        )
        suspended = service.get_grant(acme)
        assert (suspended.status, suspended.suspension_cause) == (
            GrantStatus.SUSPENDED,
            SuspensionCause.DATASET_CHANGED,
        )
        assert "deny-core-data" in suspended.status_reason
        _, version, event = grant_events(settings, codec, acme)[-1]
        assert (version, event["cause"], event["reason"]) == (4, "DATASET_CHANGED", suspended.status_reason)
        after = feed.publish(9, "after")
        wait_for(
            "sharing to process the records after the suspension",
            lambda: processed_by(settings, sharing_group, feed.topic),
            processes,
        )
        delivered = record_ids(read_topic(settings, codec, acme_topic))
        assert set(delivered) & set(after) == set(), (
            "delivered after the reclassification suspended the grant"
        )
        assert set(clear) | set(masked) <= set(delivered)
    finally:
        feed.close()


class CutOffPublisher:
    """The publisher of a process that cannot reach the broker."""

    def publish(self, topic, schema_name, value, key=None, **_params):
        raise Unavailable("cannot reach the Kafka broker (test: this process is cut off)")


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_changes_committed_while_the_broker_is_unreachable_are_published_by_the_worker_in_order(
    settings, platform, pdo_workers
):
    catalog, service, codec = platform["catalog"], platform["service"], platform["codec"]
    dataset_id = register_dataset(catalog)
    acme = grant(service, ACME, dataset_id, FIELDS)
    acme_topic = tenant_topic(ACME, dataset_id, settings)
    tag = uuid.uuid4().hex[:6]
    sharing_group = f"sharing-{tag}"
    processes = [pdo_workers("sharing", "worker", "--group", sharing_group)]
    feed = Feed(settings, codec, dataset_id)
    cut_off = AuthorizationService(service.engine, CutOffPublisher(), catalog, load_policy(), settings)
    try:
        before = feed.publish(3, "before")
        wait_for(
            "deliveries before",
            lambda: set(before) <= set(record_ids(read_topic(settings, codec, acme_topic))),
            processes,
        )
        # The operator's answers come although no event could be sent; SQL has both changes.
        assert cut_off.suspend(acme, "operator:alice", "audit").status is GrantStatus.SUSPENDED
        assert cut_off.revoke(acme, "operator:alice", "contract ended").status is GrantStatus.REVOKED
        assert outbox.pending_count(service.engine) == 2
        assert [name for name, _, _ in grant_events(settings, codec, acme)] == ["Granted"]
        # The authorization worker's relay reaches the broker and publishes them, in version order.
        processes.append(pdo_workers("authorization", "worker", "--group", f"authorization-{tag}"))
        wait_for("the outbox to drain", lambda: outbox.pending_count(service.engine) == 0, processes)
        events = grant_events(settings, codec, acme)
        assert [(name, version) for name, version, _ in events] == [
            ("Granted", 1),
            ("Suspended", 2),
            ("Revoked", 3),
        ]
        after = feed.publish(6, "after")
        wait_for(
            "sharing to process the records after the revocation",
            lambda: processed_by(settings, sharing_group, feed.topic),
            processes,
        )
        delivered = record_ids(read_topic(settings, codec, acme_topic))
        assert set(delivered) & set(after) == set()
        assert set(before) <= set(delivered)
    finally:
        feed.close()
