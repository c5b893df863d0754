"""What the sharing worker commits per transaction, under which transactional id and with which ACL; and
that metering's group consumer reads committed records only. No broker."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from aiokafka import TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from pdo.core import access
from pdo.core.deadletters import SourceMessage
from pdo.core.read_committed import (
    READ_COMMITTED,
    ReadCommittedConsumer,
    _ReadCommittedThread,
    read_committed,
)
from pdo.sharing.agents import Outgoing, Prepared
from pdo.sharing.app import APP_ID, by_feed_partition
from pdo.sharing.transactions import transactional_id

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _record(topic: str, partition: int, offset: int) -> tuple[tuple[SourceMessage, datetime], Prepared]:
    message = SourceMessage(topic, partition, offset, b"k", b"v")
    outgoing = [Outgoing("pdo.tenant.acme.d1", b"k", f"{partition}@{offset}".encode())]
    return (message, NOW), Prepared("d1", NOW, outgoing=outgoing)


def test_each_feed_partition_gets_its_outputs_and_the_offset_after_its_last_record():
    pairs = [
        _record("feed.a", 0, 10),
        _record("feed.a", 1, 3),
        _record("feed.a", 0, 11),
        _record("feed.b", 0, 7),
    ]
    batches = by_feed_partition([m for m, _ in pairs], [p for _, p in pairs])
    assert {tp: b.next_offset for tp, b in batches.items()} == {
        TopicPartition("feed.a", 0): 12,
        TopicPartition("feed.a", 1): 4,
        TopicPartition("feed.b", 0): 8,
    }
    assert [o.value for o in batches[TopicPartition("feed.a", 0)].outgoing] == [b"0@10", b"0@11"]


def test_a_dead_lettered_record_still_moves_its_partitions_offset():
    (message, at), _ = _record("feed.a", 2, 40)
    batches = by_feed_partition([(message, at)], [Prepared("d1", NOW)])
    assert batches[TopicPartition("feed.a", 2)].next_offset == 41


def test_the_transactional_id_is_the_feed_partitions_whoever_processes_it():
    one, other = TopicPartition("pdo.feed.d1", 0), TopicPartition("pdo.feed.d1", 1)
    assert transactional_id("sharing", one) == transactional_id("sharing", TopicPartition("pdo.feed.d1", 0))
    assert transactional_id("sharing", one) != transactional_id("sharing", other)


def test_the_sharing_principal_may_use_its_transactional_ids_and_no_other(settings):
    grants = {
        (g.operation, g.resource_name, g.pattern)
        for g in access.desired_service_acls(settings)
        if g.resource_type == "TRANSACTIONAL_ID"
    }
    principals = {
        g.principal for g in access.desired_service_acls(settings) if g.resource_type == "TRANSACTIONAL_ID"
    }
    assert principals == {access.kafka_principal(access.service_user("sharing"))}
    assert grants == {("WRITE", "sharing-tx-", "PREFIXED"), ("DESCRIBE", "sharing-tx-", "PREFIXED")}
    assert transactional_id(APP_ID, TopicPartition("pdo.feed.d1", 0)).startswith("sharing-tx-")


def test_a_read_committed_app_makes_its_group_consumer_read_committed(monkeypatch):
    app = SimpleNamespace(transport=SimpleNamespace(Consumer=None))
    read_committed(app)  # type: ignore[arg-type]  # only its transport is touched
    assert app.transport.Consumer is ReadCommittedConsumer
    # faust's own consumer thread builds a read_uncommitted aiokafka consumer (no exactly-once mode here).
    monkeypatch.setattr(
        AIOKafkaConsumerThread,
        "_create_worker_consumer",
        lambda self, transport: SimpleNamespace(_isolation_level="read_uncommitted"),
    )
    thread = object.__new__(
        _ReadCommittedThread
    )  # only the consumer factory is exercised: no loop, no broker
    assert thread._create_worker_consumer(None)._isolation_level == READ_COMMITTED
