"""The sharing worker's feed consumer without a broker: a batch is fenced once per feed partition, a stop or a
rebalance waits for a batch whose transaction is committing and cancels one that is not (e.g. held at a
fence by an undecodable authorization), and a fenced partition still ours is read again from the batch's
first offset. The broker-backed behaviour (kills, two workers, SIGTERM): tests/integration/test_sharing_*."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from pdo.sharing import worker as worker_module
from pdo.sharing.agents import PartitionBatch, Prepared
from pdo.sharing.worker import FeedWorker

FEED = "pdo.feed.traffic-flow"
P0, P1 = TopicPartition(FEED, 0), TopicPartition(FEED, 1)


def record(partition: int, offset: int) -> SimpleNamespace:
    """What aiokafka's getmany hands over (its timestamp in milliseconds)."""
    return SimpleNamespace(
        topic=FEED,
        partition=partition,
        offset=offset,
        key=b"k",
        value=b"v",
        headers=[],
        timestamp=1_800_000_000_000,
    )


class Follower:
    """Fences answer at once, or never while `held` (an undecodable authorization)."""

    def __init__(self, held: bool = False) -> None:
        self.held, self.fences = held, 0

    async def fence(self) -> None:
        self.fences += 1
        if self.held:
            await asyncio.Event().wait()

    async def catalog_fence(self) -> None:
        return None


class Handler:
    def share_batch(self, batch):
        published = datetime.now(UTC)
        partitions: dict[tuple[str, int], PartitionBatch] = {}
        for message, _ in batch:
            partitions.setdefault((message.topic, message.partition), PartitionBatch()).next_offset = (
                message.offset + 1
            )
        return [Prepared("traffic-flow", published) for _ in batch], partitions


class Writer:
    """Records what it was asked to commit; `release` lets a commit finish; `fenced` is its answer."""

    def __init__(self, fenced: set[TopicPartition] | None = None, instant: bool = True) -> None:
        self.fenced = fenced or set()
        self.release = asyncio.Event()
        if instant:
            self.release.set()
        self.started = asyncio.Event()
        self.written: list[dict] = []

    async def write(self, partitions):
        self.started.set()
        await self.release.wait()
        self.written.append(partitions)
        return self.fenced


class Consumer:
    def __init__(self, assigned: set[TopicPartition]) -> None:
        self.assigned, self.seeks = assigned, []

    def assignment(self):
        return self.assigned

    def seek(self, partition, offset):
        self.seeks.append((partition, offset))


@pytest.fixture(autouse=True)
def datasets_known(monkeypatch):
    async def known(*_):
        return None

    monkeypatch.setattr(worker_module, "know_datasets", known)


def feed_worker(settings, follower: Follower, writer: Writer) -> FeedWorker:
    runtime = SimpleNamespace(follower=follower, handler=Handler(), datasets=None)
    worker = FeedWorker(settings, runtime, "sharing")  # type: ignore[arg-type]  # only these parts are used
    worker.writer = writer  # type: ignore[assignment]
    return worker


def test_each_batch_waits_for_one_fence_of_the_grants_whatever_its_partitions(settings):
    async def scenario():
        follower, writer = Follower(), Writer()
        worker = feed_worker(settings, follower, writer)
        consumer = Consumer({P0, P1})
        await worker._share(consumer, {P0: [record(0, 3), record(0, 4)], P1: [record(1, 9)]})
        after_first = follower.fences
        await worker._share(consumer, {P0: [record(0, 5)]})
        return after_first, follower.fences, writer.written

    after_first, fences, written = asyncio.run(scenario())

    assert (after_first, fences) == (1, 2)
    assert [sorted(batch) for batch in written] == [[(FEED, 0), (FEED, 1)], [(FEED, 0)]]
    assert written[0][(FEED, 0)].next_offset == 5


def test_a_stop_cancels_at_once_a_batch_held_at_a_fence(settings):
    async def scenario():
        writer = Writer()
        worker = feed_worker(settings, Follower(held=True), writer)
        worker._batch = asyncio.create_task(worker._share(Consumer({P0}), {P0: [record(0, 0)]}))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await worker._settle(grace_s=30)
        return worker._batch, time.monotonic() - started, writer.written

    batch, took_s, written = asyncio.run(scenario())

    assert batch.cancelled() and written == []  # nothing committed, the feed is read again from its offsets
    assert took_s < 5  # not the grace: nothing was being committed


def test_a_batch_being_committed_is_awaited_before_its_partitions_go(settings):
    async def scenario():
        writer = Writer(instant=False)
        worker = feed_worker(settings, Follower(), writer)
        worker._batch = asyncio.create_task(worker._share(Consumer({P0}), {P0: [record(0, 0)]}))
        await writer.started.wait()
        asyncio.get_running_loop().call_later(0.1, writer.release.set)
        await worker._settle(grace_s=30)
        return worker._batch, writer.written

    batch, written = asyncio.run(scenario())

    assert batch.done() and not batch.cancelled()
    assert [sorted(batch) for batch in written] == [[(FEED, 0)]]


def test_a_fenced_partition_still_ours_is_read_again_from_the_batch_start(settings):
    async def scenario():
        worker = feed_worker(settings, Follower(), Writer(fenced={P0, P1}))
        consumer = Consumer({P0})  # P1 went to another worker: it reads P1 from the committed offsets
        await worker._share(consumer, {P0: [record(0, 7), record(0, 8)], P1: [record(1, 2)]})
        return consumer.seeks

    assert asyncio.run(scenario()) == [(P0, 7)]
