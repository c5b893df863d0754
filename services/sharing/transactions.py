"""Exactly once to the tenant: the tenant records, usage facts and dead letters made from a feed partition's
records, and the offsets of those records, are committed in ONE Kafka transaction, or not at all.

**Guarantee.** A reader with `isolation.level=read_committed` (a tenant, metering, reconciliation) sees each
delivery of a feed record exactly once, and sees a delivery if and only if it sees its usage fact: the
consumed offsets commit with the outputs, so a worker that dies before the commit leaves an open
transaction that is aborted (its records never become visible to such a reader), and the feed is read
again from the offsets of the last committed transaction. A `read_uncommitted` reader still sees aborted
writes: the README tells tenants to read committed, and metering's ledger stays idempotent per delivery id.

**Why our own transactional producers, not faust's `processing_guarantee="exactly_once"`.** faust's mode
has open issues (ProducerFenced crashes and duplicates on rebalance, faust-streaming 323 / aiokafka 844;
duplicates after SIGKILL, faust 517; `send_soon` outside the transaction, faust 177). Here faust only reads
the feeds and keeps the consumer group; this module owns every write of the feed path and commits the
offsets itself with `send_offsets_to_transaction` (faust's own later commit of the same offsets is a no-op).

**Fencing: one transactional id per feed partition**, `<group>-tx-<feed topic>-<partition>` (Kafka's
original exactly-once model). Whichever worker processes partition P writes under P's id: when P moves to
another worker (a rebalance, or a restart after SIGKILL) the new owner's first InitProducerId bumps the
epoch, aborts the transaction the previous owner left open (read_committed readers move on at once, not
after `transaction.timeout.ms`) and fences the previous owner if it is still alive: its commit fails with
ProducerFenced and its copy of the batch is dropped, so no two workers ever commit the same records. (An id
per worker instance would need the group generation checked at commit, KIP-447, which aiokafka's
`send_offsets_to_transaction` does not do.) The price is one producer per feed partition a worker owns.

**Failures.** A transaction that fails for any other reason (the broker does not answer, a leader moves)
is retried whole, backing off, forever: its producer is closed and a new one started under the same id,
which aborts whatever the failed attempt left open. Nothing of a failed attempt is ever visible to a
read_committed reader, so a retry cannot duplicate.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced
from aiokafka.producer import sender
from prometheus_client import Counter, Histogram

from pdo.core.config import Settings
from pdo.core.kafka import aiokafka_connection
from pdo.core.retry import RETRIES, is_transient
from pdo.sharing.agents import PartitionBatch

log = logging.getLogger(__name__)

SERVICE = "sharing"
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
# Bounds how long read_committed readers of a topic wait on a transaction whose worker died and whose
# partition no worker takes over (a worker taking it over aborts the transaction at once).
TRANSACTION_TIMEOUT_MS = 60_000
# A transaction's records travel in as few produce requests as possible.
LINGER_MS = 0
MAX_BATCH_BYTES = 1024 * 1024
# A transaction begun while the markers of the partition's previous one are still being written has its
# AddPartitionsToTxn answered CONCURRENT_TRANSACTIONS (KAFKA-5477); aiokafka then waits BACKOFF_OVERRIDE, 20 ms
# like the Java client, before asking again. A feed partition's transactions follow each other closely, and
# at 10 grants each writes markers to about 14 partitions, so most quiet-feed records paid one such wait:
# asking again after 5 ms took the p99 feed -> tenant at 10 grants from 59-76 ms to 35-36 ms
# (bench/pipeline.py, alternating runs). A retry is one small request to the transaction coordinator.
CONCURRENT_TRANSACTIONS_BACKOFF_S = 0.005

TRANSACTIONS = Counter(
    "pdo_sharing_transactions_total",
    "Feed-partition transactions of the sharing worker, by outcome (committed, retried, fenced)",
    ["outcome"],
)
TRANSACTION_SECONDS = Histogram(
    "pdo_sharing_transaction_seconds",
    "From beginning a feed partition's transaction to the broker confirming its commit",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def transactional_id(group: str, feed: TopicPartition) -> str:
    """The id every worker of `group` writes feed partition `feed`'s outputs under."""
    return f"{group}-tx-{feed.topic}-{feed.partition}"


class TransactionalWriter:
    """Commits each feed partition's share of a batch in its own transaction (see the module docstring)."""

    def __init__(self, settings: Settings, group: str) -> None:
        self.settings = settings
        self.group = group
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        sender.BACKOFF_OVERRIDE = CONCURRENT_TRANSACTIONS_BACKOFF_S  # aiokafka has no option for it

    async def write(self, batches: dict[tuple[str, int], PartitionBatch]) -> set[TopicPartition]:
        """Commit every (feed topic, partition)'s batch, concurrently; the partitions whose batch was dropped
        because another worker owns the partition now (fenced)."""
        feeds = [TopicPartition(topic, partition) for topic, partition in batches]
        outcomes = await asyncio.gather(
            *(self._write(feed, batch) for feed, batch in zip(feeds, batches.values(), strict=True))
        )
        return {feed for feed, committed in zip(feeds, outcomes, strict=True) if not committed}

    async def _write(self, feed: TopicPartition, batch: PartitionBatch) -> bool:
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                await self._commit(feed, batch)
                TRANSACTIONS.labels("committed").inc()
                return True
            except asyncio.CancelledError:
                raise
            except ProducerFenced:
                TRANSACTIONS.labels("fenced").inc()
                log.warning(
                    "%s[%d] is another worker's now (fenced): its %d messages are left to it",
                    feed.topic,
                    feed.partition,
                    len(batch.outgoing),
                )
                await self._close(feed)
                return False
            except Exception as error:
                TRANSACTIONS.labels("retried").inc()
                RETRIES.labels(SERVICE, "writing a transaction").inc()
                level = logging.WARNING if is_transient(error) else logging.ERROR
                log.log(
                    level,
                    "transaction of %d messages for %s[%d] failed, retrying in %.1f s: %r",
                    len(batch.outgoing),
                    feed.topic,
                    feed.partition,
                    backoff,
                    error,
                )
                await self._close(feed)  # the next producer's InitProducerId aborts what this attempt left
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _commit(self, feed: TopicPartition, batch: PartitionBatch) -> None:
        producer = await self._producer(feed)
        with TRANSACTION_SECONDS.time():
            await producer.begin_transaction()
            pending = [await producer.send(item.topic, item.value, key=item.key) for item in batch.outgoing]
            await asyncio.gather(*pending)
            await producer.send_offsets_to_transaction({feed: batch.next_offset}, self.group)
            await producer.commit_transaction()

    async def _producer(self, feed: TopicPartition) -> AIOKafkaProducer:
        if feed not in self._producers:
            producer = AIOKafkaProducer(
                **aiokafka_connection(self.settings),
                client_id=f"pdo-sharing-tx-{feed.partition}",
                transactional_id=transactional_id(self.group, feed),
                transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
                linger_ms=LINGER_MS,
                max_batch_size=MAX_BATCH_BYTES,
                request_timeout_ms=self.settings.kafka_timeout_s * 1000,
            )
            try:
                await producer.start()  # InitProducerId: aborts and fences the id's previous holder
            except BaseException:
                await producer.stop()
                raise
            self._producers[feed] = producer
        return self._producers[feed]

    async def _close(self, feed: TopicPartition) -> None:
        producer = self._producers.pop(feed, None)
        if producer is not None:
            try:
                await producer.stop()
            except Exception as error:  # a broken producer is dropped either way
                log.warning("closing the transactional producer of %s: %r", feed, error)

    async def release(self, feeds: Iterable[TopicPartition]) -> None:
        """Close the producers of feed partitions this worker gives up. One it is given again later starts a
        fresh producer: a kept one would find itself fenced by the owner in between and drop a batch."""
        for feed in feeds:
            await self._close(feed)

    async def close(self) -> None:
        await self.release(list(self._producers))
