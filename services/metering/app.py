"""The metering worker: faust app "metering" counting every usage fact on pdo.deliveries exactly once.

- the agent `meter_deliveries` takes the facts in batches (`stream.take_events(batch_size, within)`: up to
  `batch_size` facts, or whatever arrived within `within` seconds) and runs the handler's steps for each
  batch in a thread (handler.py): decode, dead-letter the refused, catch the grants projection up when a
  fact names a grant it lacks, write the ledger in one transaction (pdo.metering.ledger), announce quotas
  reached. faust acknowledges a batch's events only after the loop
  body returns, i.e. after the ledger transaction committed; a crash before that redelivers the batch and
  the ledger ignores the delivery ids it already holds. The failure policy is the core's (pdo.core.retry):
  a step whose backing service does not answer is retried until it does (a stalled worker shows as
  consumer lag), a bad fact is dead-lettered with its reason, and a step failing for any other reason
  dead-letters its facts as OTHER: never skipped silently, replayable once fixed;
- the `publish_usage` timer (leader only) publishes UsageRecorded for closed windows, each window version
  once (pdo.metering.usage), and retries QuotaExceeded notices still pending;
- the agents `project_authorizations` and `project_catalog` keep metering's projection of the grants and the
  datasets (pdo.metering.projection) from pdo.authorizations and pdo.catalog, in the same consumer group.
  The projection may lag the deliveries; before a fact is set aside as UNKNOWN_GRANT the handler catches it
  up to the current end of pdo.authorizations (the ordering rule, pdo.metering.projection);
- the `digest_deliveries` timer (leader only, every PDO_METERING_DIGEST_INTERVAL_S) claims the deliveries
  not in a digest yet and publishes DeliveriesDigested for each digest (pdo.metering.digests);
- the `publish_outbox` timer (leader only) publishes metering's outbox of access events (a billing period
  closed, pdo.metering.outbox) that the closing command could not publish itself;
- `timers` given by the entry point run on the leader too (`pdo metering worker` adds billing's gauge
  export, pdo.billing.gauges): metering itself knows nothing of billing.

Several workers may run in the group: they split pdo.deliveries' partitions, and the ledger's unique key
holds across them (a fact redelivered to another worker after a rebalance is ignored there too).
Nothing blocking runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import faust
from sqlalchemy import Engine

from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.db import make_engine
from pdo.core.deadletters import SourceMessage, source_message
from pdo.core.events import EventPublisher
from pdo.core.outbox import OutboxRelay
from pdo.core.read_committed import read_committed
from pdo.core.registry_client import RegistryClient
from pdo.core.retry import retrying
from pdo.core.streams import make_app, source
from pdo.core.topics import TopicId
from pdo.metering import outbox
from pdo.metering.handler import MeteringHandler, Refusal
from pdo.metering.ledger import Ledger
from pdo.metering.projection import KafkaTopicLog, Projection

log = logging.getLogger(__name__)

APP_ID = "metering"
BATCH_SIZE = 1000
BATCH_WITHIN_S = 0.5
PUBLISH_INTERVAL_S = 5.0
# Projection events per transaction: grant and catalog events are few; a replay from the start is batched.
PROJECTION_BATCH = 500


@dataclass(frozen=True)
class LeaderTimer:
    """Blocking work an entry point has the worker run every `interval_s` seconds on the leader, in a thread."""

    name: str
    interval_s: float
    work: Callable[[], object]


@dataclass
class Runtime:
    """What one worker process holds; close() releases the producer, the registries, the consumer, the pool."""

    handler: MeteringHandler
    projection: Projection
    authorizations: KafkaTopicLog
    publisher: EventPublisher
    engine: Engine
    relay: OutboxRelay

    def close(self) -> None:
        self.publisher.close()
        self.authorizations.close()
        self.handler.codec.registry.close()
        self.engine.dispose()


def build_runtime(settings: Settings) -> Runtime:
    engine = make_engine(settings.service_database_url("metering"))
    publisher = EventPublisher(settings)
    codec = AvroCodec(RegistryClient.for_settings(settings))
    authorizations = KafkaTopicLog(settings, TopicId.AUTHORIZATIONS, codec)
    projection = Projection(engine, codec, authorizations)
    handler = MeteringHandler(Ledger(engine), publisher, codec, projection.catch_up)
    relay = outbox.relay(engine, publisher, settings.kafka_timeout_s)
    return Runtime(handler, projection, authorizations, publisher, engine, relay)


async def meter(handler: MeteringHandler, messages: list[SourceMessage]) -> None:
    """One batch through the handler's steps (pdo.core.retry's policy): a backing service that does not
    answer stalls the step until it does; a fact that is bad is dead-lettered with its reason at decode;
    a step that fails for any other reason (a bug) dead-letters the batch's facts as OTHER with the error,
    so deliveries go on being counted and `pdo deadletters replay` brings them back once it is fixed (the
    ledger counts a replayed delivery id once)."""
    batch = await retrying("decoding usage facts", handler.decode, messages)
    if batch.refused:
        await retrying("dead-lettering refused usage facts", handler.dead_letter, batch.refused)
    if not batch.facts:
        return
    try:
        await retrying("catching the grants up with pdo.authorizations", handler.know_grants, batch.facts)
        result = await retrying("writing usage facts", handler.record, batch.facts)
    except Exception as error:
        log.exception("metering a batch of %d usage facts failed; dead-lettering them", len(batch.facts))
        refused = {refusal.message for refusal in batch.refused}
        faulty = [
            Refusal(m, "OTHER", f"{type(error).__name__}: {error}") for m in messages if m not in refused
        ]
        await retrying("dead-lettering refused usage facts", handler.dead_letter, faulty)
        return
    if result.notices:
        await asyncio.to_thread(handler.announce, result.notices)


async def project(projection: Projection, messages: list[SourceMessage]) -> None:
    """Apply one batch of authorization or catalog events to metering's projection. Stalls while a backing
    service does not answer; on any other failure the batch is logged and left: its positions do not move,
    so the catch-up before a fact's grant counts as unknown reads those events again."""
    try:
        await retrying("projecting events", projection.apply_messages, messages)
    except Exception:
        log.exception("projecting %d events failed; the catch-up will read them again", len(messages))


def create_app(
    settings: Settings,
    runtime: Runtime | None = None,
    app_id: str = APP_ID,
    batch_size: int = BATCH_SIZE,
    within_s: float = BATCH_WITHIN_S,
    timers: Sequence[LeaderTimer] = (),
) -> faust.App:
    """The faust app; `app_id` is its consumer group (another one only for side-by-side runs, e.g. tests).

    Without a `runtime` one is built from `settings` (the caller then leaves closing it to the process end).
    """
    runtime = runtime or build_runtime(settings)
    # Usage facts come in sharing's transactions: an aborted batch's facts must never be counted.
    app = read_committed(make_app(app_id, settings))
    handler, projection = runtime.handler, runtime.projection

    @app.agent(source(app, TopicId.DELIVERIES, settings), name="meter_deliveries")
    async def meter_deliveries(stream: faust.StreamT[bytes]) -> None:
        # take_events is faust's Stream's, missing from the StreamT interface.
        async for events in stream.take_events(batch_size, within_s):  # type: ignore[attr-defined]
            await meter(handler, [source_message(event.message) for event in events])

    async def follow(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(PROJECTION_BATCH, within_s):  # type: ignore[attr-defined]
            await project(projection, [source_message(event.message) for event in events])

    for topic, name in (
        (TopicId.AUTHORIZATIONS, "project_authorizations"),
        (TopicId.CATALOG, "project_catalog"),
    ):
        app.agent(source(app, topic, settings), name=name)(follow)

    # One worker publishes: the others would only find nothing left to do.
    own = (
        LeaderTimer("publish_usage", PUBLISH_INTERVAL_S, handler.publish_due),
        LeaderTimer("digest_deliveries", settings.metering_digest_interval_s, handler.digest_deliveries),
        LeaderTimer("publish_outbox", PUBLISH_INTERVAL_S, lambda: outbox.publish_and_prune(runtime.relay)),
    )
    for timer in (*own, *timers):
        app.timer(interval=timer.interval_s, on_leader=True, name=timer.name)(_leader_work(timer))
    return app


def _leader_work(timer: LeaderTimer) -> Callable[[], Any]:
    async def run() -> None:
        try:
            await asyncio.to_thread(timer.work)
        except Exception:  # retried at the next tick; it must never stop the worker
            log.exception("%s failed", timer.name)

    return run
