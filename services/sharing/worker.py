"""The sharing worker's feed consumer: reads every feed topic in the "sharing" consumer group, one fetched
batch at a time, and commits what each batch became with its offsets (pdo.sharing.transactions).

**Why a plain aiokafka group consumer, not a faust agent** (measured for #17 with bench/pipeline.py): with
faust's stream and `take_events`, sharing reached 0.15-0.20 of a plain aiokafka loop doing the same decode,
shape and encode, while its own per-record work (FeedHandler) measured a ceiling of 18,000 records/s; a
profile showed the rest in faust's per-event machinery. `getmany` hands over what the fetcher has already
buffered, so a backlog comes in batches of up to BATCH_MAX_RECORDS with no wait, and a quiet feed's record
goes out as soon as it arrives (no batching delay). It also subscribes by pattern, so a new dataset's feed
is picked up at the next metadata refresh (DISCOVERY_INTERVAL_S) without the resubscription faust needed.

**A batch** (offsets only move forward after its transaction committed):
1. one fence (ControlFollower.fence): the grant events acknowledged before its records were appended are
   applied (the stream-order rule of pdo.sharing.app);
2. the datasets it names are known (the catalog ordering rule);
3. FeedHandler.share_batch in a thread (the registry and Avro block);
4. TransactionalWriter.write: per feed partition one transaction with the consumed offsets.

**Rebalances.** Partitions are revoked only after the batch in flight is settled: a batch that is committing
is awaited (its transaction decides), one that is not yet committing is cancelled (nothing of it was
written; its records are read again by whichever worker gets the partition, from the committed offsets).
A fenced partition (another worker wrote under its transactional id since) is read again from the batch's
first offset if it is still ours.

**Stop** (SIGTERM, SIGINT): the same settlement, bounded by STOP_GRACE_S for a committing batch (a transaction
left open is aborted by the partition's next owner), then the worker leaves the group so the others take its
partitions at once. A worker held at a fence (an undecodable authorization event) stops immediately.

Depends on: pdo.sharing.app (runtime, follower), pdo.sharing.transactions, pdo.core.worker_metrics.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from pdo.core import worker_metrics
from pdo.core.config import Settings
from pdo.core.deadletters import SourceMessage, source_message
from pdo.core.kafka import RETRY_MAX_BACKOFF_S, aiokafka_connection
from pdo.core.retry import retrying
from pdo.core.streams import HEARTBEAT_INTERVAL_S, SESSION_TIMEOUT_S
from pdo.sharing.agents import dataset_of_feed, feed_pattern
from pdo.sharing.app import PROCESSING, Runtime
from pdo.sharing.datasets import know_datasets
from pdo.sharing.transactions import TransactionalWriter

log = logging.getLogger(__name__)

# A batch is what the consumer has fetched when the worker is ready for it, up to this many records: the
# writes of a whole batch are in flight together and each feed partition's are committed in one transaction.
BATCH_MAX_RECORDS = 1000
POLL_TIMEOUT_MS = 500
# How often the consumer refreshes the topic list: a new dataset's feed is read within this.
DISCOVERY_INTERVAL_S = 5.0
# How long a stop waits for a batch whose transaction is being committed.
STOP_GRACE_S = 10.0
FIRST_BACKOFF_S = 0.5


class FeedWorker:
    """Shares the feeds batch by batch in consumer group `group` (see the module docstring)."""

    def __init__(self, settings: Settings, runtime: Runtime, group: str) -> None:
        self.settings = settings
        self.runtime = runtime
        self.group = group
        self.pattern = feed_pattern(settings)
        self.writer = TransactionalWriter(settings, group)
        self._batch: asyncio.Task[None] | None = None
        self._committing = False

    # -- lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Share until `stop` is set; a crash of the sharing loop propagates after the same clean stop."""
        follower = asyncio.create_task(self.runtime.follower.run(), name="follow authorizations")
        consumer = await self._started_consumer()
        _exempt_from_full_collections()
        progress = worker_metrics.watch_consumer(consumer, self.group)
        lag = asyncio.create_task(worker_metrics.follow_lag(consumer, progress), name="sample lag")
        sharing = asyncio.create_task(self._share_forever(consumer, progress), name="share feeds")
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({sharing, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if sharing.done():
                sharing.result()  # the loop only ends by crashing: raise it
        finally:
            log.info("sharing worker stopping")
            await self._settle(STOP_GRACE_S)
            for task in (sharing, stopping, lag, follower):
                task.cancel()
            await asyncio.gather(sharing, stopping, lag, follower, return_exceptions=True)
            await self.writer.close()
            await consumer.stop()  # leaves the group: the other workers take its partitions now

    async def _started_consumer(self) -> AIOKafkaConsumer:
        backoff = FIRST_BACKOFF_S
        while True:
            consumer = AIOKafkaConsumer(
                **aiokafka_connection(self.settings),
                group_id=self.group,
                client_id=f"pdo-{self.group}",
                enable_auto_commit=False,  # offsets commit in the batches' transactions only
                auto_offset_reset="earliest",
                isolation_level="read_committed",  # a provider's aborted write is never shared
                metadata_max_age_ms=int(DISCOVERY_INTERVAL_S * 1000),
                session_timeout_ms=int(SESSION_TIMEOUT_S * 1000),
                heartbeat_interval_ms=int(HEARTBEAT_INTERVAL_S * 1000),
            )
            consumer.subscribe(pattern=self.pattern.pattern, listener=_SettleOnRevoke(self))
            try:
                await consumer.start()
            except KafkaError as error:
                await consumer.stop()
                log.warning("the broker does not answer (%r); trying again in %.1f s", error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_MAX_BACKOFF_S)
                continue
            return consumer

    async def _settle(self, grace_s: float) -> None:
        """Let the batch in flight finish if it is committing (up to `grace_s`), else cancel it."""
        batch = self._batch
        if batch is None or batch.done():
            return
        if self._committing:
            await asyncio.wait({batch}, timeout=grace_s)
        if not batch.done():
            batch.cancel()
            await asyncio.wait({batch})

    # -- the loop

    async def _share_forever(
        self, consumer: AIOKafkaConsumer, progress: worker_metrics.ConsumerProgress
    ) -> None:
        while True:
            fetched = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=BATCH_MAX_RECORDS)
            if not fetched:
                continue
            progress.last_record_at = time.time()
            # Marked in flight before any await, so a revocation always settles it first.
            self._batch = batch = asyncio.create_task(self._share(consumer, fetched))
            await asyncio.wait({batch})
            self._batch, self._committing = None, False
            if not batch.cancelled():
                batch.result()  # a crash (never a transient failure: those are retried) stops the worker

    async def _share(self, consumer: AIOKafkaConsumer, fetched: dict[TopicPartition, list[Any]]) -> None:
        follower, handler, datasets = self.runtime.follower, self.runtime.handler, self.runtime.datasets
        batch: list[tuple[SourceMessage, datetime]] = []
        await follower.fence()  # every record fetched was appended before it: the stream-order rule
        for messages in fetched.values():
            batch.extend(
                (source_message(message), datetime.fromtimestamp(message.timestamp / 1000, UTC))
                for message in messages
            )
        await know_datasets(
            datasets,
            {dataset_of_feed(self.pattern, message.topic) for message, _ in batch},
            follower.catalog_fence,
        )
        prepared, partitions = await retrying("sharing feed records", handler.share_batch, batch)
        self._committing = True
        fenced = await self.writer.write(partitions)
        self._read_again(consumer, fenced, fetched)
        finished = time.time()
        for (message, _), record in zip(batch, prepared, strict=True):
            if TopicPartition(message.topic, message.partition) not in fenced:
                record.count()
                PROCESSING.observe(finished - record.published_at.timestamp())

    def _read_again(
        self,
        consumer: AIOKafkaConsumer,
        fenced: Iterable[TopicPartition],
        fetched: dict[TopicPartition, list[Any]],
    ) -> None:
        """A fenced partition's batch was dropped: if the partition is still ours, read it again."""
        assigned = consumer.assignment()
        for partition in fenced:
            if partition in assigned:
                consumer.seek(partition, fetched[partition][0].offset)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._settle(STOP_GRACE_S)
        await self.writer.release(revoked)


def _exempt_from_full_collections() -> None:
    """What the worker has built by now (modules, schemas, grants, clients) lives as long as it does: move it
    out of the collector's reach. Each full collection walked it all and held the event loop 40-65 ms every
    few seconds (10 grants at 200 records/s, a broker with 2,181 topics); frozen, they take 3-10 ms."""
    gc.collect()
    gc.freeze()


class _SettleOnRevoke(ConsumerRebalanceListener):
    """aiokafka awaits this before it gives up partitions (a rebalance)."""

    def __init__(self, worker: FeedWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            log.info(
                "feed partitions assigned: %s",
                ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)),
            )


async def serve(settings: Settings, runtime: Runtime, group: str) -> None:
    """Run a sharing worker until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await FeedWorker(settings, runtime, group).run(stop)
