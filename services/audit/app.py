"""The audit worker: faust app "audit" recording every platform event once as an audit entry.

The same shape as every stream worker:

    runtime = build_runtime(settings)           # what the process holds: engine, codec, store, signer
    app = create_app(settings, runtime)         # the faust app: one agent per source topic, the checkpoint timer
    streams.run_worker(app)                     # what `pdo audit worker` does
    runtime.close()

- one agent per source topic (pdo.requests, pdo.authorizations, pdo.catalog, pdo.quota-exceeded,
  pdo.statements, pdo.dead-letters, pdo.delivery-digests, pdo.access) takes the events in batches, turns each into an
  entry (pdo.audit.recorder) and appends the batch in one transaction (AuditStore.append). faust
  acknowledges a batch only after the loop body returns, i.e. after the commit; a crash before that
  redelivers the batch, and the store appends nothing for a source position it already holds, so each
  event is recorded once;
- an event that does not decode is recorded as "event.undecodable" with its source and the reason: the log
  never skips an event silently;
- a backing service that does not answer (the database, the registry) stalls the batch until it does
  (pdo.core.retry): the stall shows as consumer lag, and no event is lost. Anything else is a bug: the agent
  stops with the error rather than leave a hole in the log;
- the `sign_checkpoint` timer (leader only) signs a checkpoint of the log every
  PDO_AUDIT_CHECKPOINT_INTERVAL_S seconds, when it grew;
- the `mirror` timer (leader only: one writer) publishes what the `pdo.audit` topic does not hold yet, every
  MIRROR_INTERVAL_S (pdo.audit.mirror); a broker that does not take it is tried again at the next tick.
- every append transaction writes the log's liveness mark, and the `mark_appendable` timer writes it every
  LIVENESS_INTERVAL_S seconds besides, so an idle log stays marked (pdo.audit.liveness). Always a write: the
  mark proves the log can be appended to. `pdo_audit_log_appendable_timestamp_seconds` is the time of the
  last successful one; the gateway and the authorization worker hold access-widening changes when the mark
  grows older than PDO_AUDIT_FAIL_CLOSED_AFTER_S, and the alert PdoAuditLogNotAppendable fires on the gauge.
Nothing blocking runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import faust
from prometheus_client import Gauge
from sqlalchemy import Engine

from pdo.audit import mirror
from pdo.audit.checkpoints import Signer
from pdo.audit.recorder import entry_for, undecodable_message
from pdo.audit.store import AuditStore, Entry
from pdo.core import db, streams
from pdo.core.codec import AvroCodec, CodecError
from pdo.core.config import Settings
from pdo.core.deadletters import SourceMessage, source_message
from pdo.core.events import EventPublisher
from pdo.core.registry_client import RegistryClient, SchemaIdNotFound
from pdo.core.retry import retrying
from pdo.core.topics import TopicId

log = logging.getLogger(__name__)

APP_ID = "audit"
BATCH_SIZE = 500
BATCH_WITHIN_S = 0.5
MIRROR_INTERVAL_S = 1.0
SOURCES = (
    TopicId.REQUESTS,
    TopicId.AUTHORIZATIONS,
    TopicId.CATALOG,
    TopicId.QUOTA_EXCEEDED,
    TopicId.STATEMENTS,
    TopicId.DEAD_LETTERS,
    TopicId.DELIVERY_DIGESTS,
    TopicId.ACCESS,
)
# Well below any sensible PDO_AUDIT_FAIL_CLOSED_AFTER_S: an idle log never looks stuck.
LIVENESS_INTERVAL_S = 5.0

APPENDABLE = Gauge(
    "pdo_audit_log_appendable_timestamp_seconds",
    "When the audit worker last wrote to the audit log (an append or its liveness mark), Unix time",
)


@dataclass
class Runtime:
    """What one worker process holds; close() releases the registry client and the pool."""

    engine: Engine
    codec: AvroCodec
    store: AuditStore
    signer: Signer
    publisher: EventPublisher
    # The agents append from threads of their own; one at a time keeps them from racing for the same next
    # seq (on SQLite a transaction takes its write lock only when it first writes).
    appending: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        self.publisher.close()
        self.codec.registry.close()
        self.engine.dispose()

    def entries(self, messages: Sequence[SourceMessage]) -> list[Entry]:
        """One entry per message, in order. Blocking (the registry); a registry that does not answer
        propagates, for the caller to retry: only the event's own faults become undecodable entries."""
        return [self._entry(message) for message in messages]

    def _entry(self, message: SourceMessage) -> Entry:
        try:
            decoded = self.codec.decode(message.value)
        except (CodecError, SchemaIdNotFound) as error:
            return undecodable_message(message, f"{type(error).__name__}: {error}")
        try:
            return entry_for(decoded.schema_name, decoded.value, message.position)
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            # A writer schema without a field the recorder reads: the event is recorded, its fault named.
            return undecodable_message(
                message, f"{decoded.schema_name} lacks what the audit log reads: {error!r}"
            )

    def append(self, entries: Sequence[Entry]) -> int:
        with self.appending:
            appended = self.store.append(entries)
        APPENDABLE.set_to_current_time()
        return appended

    def mark_appendable(self) -> None:
        self.store.mark_appendable()
        APPENDABLE.set_to_current_time()

    def mirror(self) -> None:
        published = mirror.publish_tail(self.store, self.publisher, self.signer.origin)
        if published:
            log.debug("mirrored %d audit records to the topic", published)

    def checkpoint(self) -> None:
        signed = self.store.checkpoint(self.signer)
        if signed is not None:
            log.info("signed an audit checkpoint at size %d", signed.size)


def build_runtime(settings: Settings) -> Runtime:
    engine = db.make_engine(settings.service_database_url("audit"))
    codec = AvroCodec(RegistryClient.for_settings(settings))
    return Runtime(
        engine, codec, AuditStore(engine), Signer.from_settings(settings), EventPublisher(settings, codec)
    )


async def record(runtime: Runtime, messages: list[SourceMessage]) -> int:
    """Record one batch; returns how many entries were new. Waits out a backing service that does not answer."""
    entries = await retrying("decoding events", runtime.entries, messages)
    return await retrying("appending audit entries", runtime.append, entries)


def create_app(
    settings: Settings,
    runtime: Runtime | None = None,
    app_id: str = APP_ID,
    batch_size: int = BATCH_SIZE,
    within_s: float = BATCH_WITHIN_S,
) -> faust.App:
    """The faust app; `app_id` is its consumer group (another one only for side-by-side runs, e.g. tests).

    Without a `runtime` one is built from `settings` (then it lives as long as the process).
    """
    runtime = runtime or build_runtime(settings)
    app = streams.make_app(app_id, settings)

    async def follow(stream: faust.StreamT[bytes]) -> None:
        # take_events is faust's Stream's, missing from the StreamT interface.
        async for events in stream.take_events(batch_size, within_s):  # type: ignore[attr-defined]
            await record(runtime, [source_message(event.message) for event in events])

    for topic in SOURCES:
        app.agent(streams.source(app, topic, settings), name=f"record_{topic.replace('-', '_')}")(follow)

    @app.timer(interval=settings.audit_checkpoint_interval_s, on_leader=True, name="sign_checkpoint")
    async def sign_checkpoint() -> None:
        try:
            await asyncio.to_thread(runtime.checkpoint)
        except Exception:  # signed at the next tick; it must never stop the worker
            log.exception("signing an audit checkpoint failed")

    @app.timer(interval=MIRROR_INTERVAL_S, on_leader=True, name="mirror")
    async def mirror_to_topic() -> None:
        try:
            await asyncio.to_thread(runtime.mirror)
        except Exception:  # the same tail goes out at the next tick; it must never stop the worker
            log.exception("mirroring the audit log to its topic failed")

    @app.timer(interval=LIVENESS_INTERVAL_S, name="mark_appendable")
    async def mark_appendable() -> None:
        try:
            await asyncio.to_thread(runtime.mark_appendable)
        except Exception as error:  # the gauge ages, the guard and the alert act; the next tick tries again
            log.warning("the audit log's liveness mark could not be written: %s", type(error).__name__)

    return app
