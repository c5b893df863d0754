"""Under which transactional id and with which ACL the sharing worker commits (what goes in a transaction:
test_sharing_agents); and that metering's group consumer reads committed records only. No broker."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.errors import ConcurrentTransactions
from aiokafka.producer.sender import AddPartitionsToTxnHandler
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from pdo.core import access
from pdo.core.read_committed import (
    READ_COMMITTED,
    ReadCommittedConsumer,
    _ReadCommittedThread,
    read_committed,
)
from pdo.sharing.app import APP_ID
from pdo.sharing.transactions import (
    CONCURRENT_TRANSACTIONS_BACKOFF_S,
    TransactionalWriter,
    transactional_id,
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_the_transactional_id_is_the_feed_partitions_whoever_processes_it():
    one, other = TopicPartition("pdo.feed.d1", 0), TopicPartition("pdo.feed.d1", 1)
    assert transactional_id("sharing", one) == transactional_id("sharing", TopicPartition("pdo.feed.d1", 0))
    assert transactional_id("sharing", one) != transactional_id("sharing", other)


def test_a_transaction_begun_before_the_last_ones_markers_asks_again_after_the_short_backoff(settings):
    """Guards the aiokafka hook the writer tunes: if an upgrade renames or drops it, this fails."""
    TransactionalWriter(settings, "sharing")
    idle = SimpleNamespace(_retry_backoff=0.1, _txn_manager=SimpleNamespace(txn_partitions=set()))
    handler = AddPartitionsToTxnHandler(idle, [TopicPartition("pdo.deliveries", 0)])
    answer = SimpleNamespace(errors=[("pdo.deliveries", [(0, ConcurrentTransactions.errno)])])
    assert handler.handle_response(answer) == CONCURRENT_TRANSACTIONS_BACKOFF_S == 0.005


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
    assert grants == {("WRITE", "sharing", "PREFIXED"), ("DESCRIBE", "sharing", "PREFIXED")}
    assert transactional_id(APP_ID, TopicPartition("pdo.feed.d1", 0)).startswith("sharing-tx-")
    assert transactional_id("sharing-blue", TopicPartition("pdo.feed.d1", 0)).startswith("sharing")


def test_the_sharing_principal_may_create_no_topics_of_its_group_and_faust_apps_may(settings):
    """The sharing worker is no faust app: it needs no `sharing-…` internal topics, so it may not have them."""

    def group_topics(service: str) -> set[tuple[str, str]]:
        principal = access.kafka_principal(access.service_user(service))
        return {
            (g.resource_name, g.operation)
            for g in access.desired_service_acls(settings)
            if g.principal == principal and g.resource_type == "TOPIC" and g.resource_name.startswith(service)
        }

    assert group_topics("sharing") == set()
    assert group_topics("metering") == {("metering-", "ALL")}


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
