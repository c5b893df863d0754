"""The sharing worker (consumer group "sharing") delivering every feed record to each entitled tenant's stream.

Two parts run in every worker process:

- the **follower** (`ControlFollower`) reads ALL of pdo.authorizations and pdo.catalog from the beginning
  with its own aiokafka consumer outside any consumer group, into the worker's `GrantBook` and its
  `DatasetView` (datasets.py). Every worker needs every grant and every dataset: feed partitions are spread
  over the group's workers, grants are keyed by grant id, datasets by dataset id;
- the **feed consumer** (`FeedWorker`, worker.py) reads the feed topics (the "sharing" group splits their
  partitions between workers) and hands each fetched batch to `FeedHandler` (agents.py) in a thread.

**Stream-order rule.** A grant transition (grant, suspension, resumption, revocation, expiry) whose event
the broker acknowledged before a feed record was appended is applied to the book before that record is
processed. How: before processing a fetched batch of feed records the feed consumer waits on a *fence*: it
reads the end offsets of every pdo.authorizations partition and waits until the follower has applied the
topic up to them. Every record of the batch was appended before it was fetched, so before the fence read
those ends: every authorization event acknowledged before such a record was appended is below them and is
in the book. One fence per batch, one round trip: a backlog's batches of up to a thousand records cost one
each, and a quiet feed's record waits for one, not for a read of its feed's end besides (measured for #17:
p99 feed → tenant at 200 records/s and 1 grant from 63–68 to 28–31 ms). (The authorization service
publishes its outbox with acks=all right after the commit and normally before answering, so "revoked"
returned to an operator then means the event is below the ends any later batch's fence reads; when the
broker was unreachable the event follows from the worker's relay, and the stop takes effect at its
position.)

The book then decides by `GrantBook.active_for` (grants.py): a grant whose current state is not ACTIVE
delivers nothing, so transitions applied earlier than strictly needed only ever deliver less (a record
published just before a suspension but processed after it is not delivered); and a resumed grant does not
deliver records published while it was suspended (compared by the feed record's timestamp and the
transitions' `occurred_at`, so that part depends on the provider's and the authorization service's clocks
agreeing; the "nothing after a stop" part depends on no clock).

**Datasets come from events, and the worker has no database.** It never reads the catalog's tables: what
it knows of a dataset (schema, retirement) is the `DatasetView` the follower keeps from pdo.catalog.
**Ordering rule:** that view may lag behind pdo.catalog, so before a record whose dataset the view does
not hold is handled, the feed consumer catches the view up to the current end of pdo.catalog (`catalog_fence`,
like the grants' fence) and looks again (`datasets.know_datasets`); only then is the dataset unknown and
the record dead-lettered UNKNOWN_DATASET.

**Failures** follow the core's one policy (pdo.core.retry): a step that fails because the registry or the
broker does not answer is retried, backing off, forever (the stall shows as consumer lag and in
`pdo_worker_retries_total{service="sharing"}`); a record that is itself at fault is dead-lettered at once
(agents.py).

**Exactly once to read_committed readers.** The consumer takes feed records in fetched batches (worker.py);
what each feed partition's records of a batch became (tenant records, usage facts, dead
letters) is committed in one Kafka transaction together with that partition's consumed offsets
(pdo.sharing.transactions, one transactional producer per feed partition), before the consumer takes the next
batch. A crash before the commit leaves nothing a read_committed reader sees, and the feed is read again
from the last committed offsets (tested by SIGKILLing workers mid-stream); usage facts still carry a
delivery id stable across redelivery, and metering counts each id once.

**Feed topics** are every topic matching the feed declaration's name template (so isolated test namespaces
work), subscribed by pattern: a new dataset's feed is read within worker.DISCOVERY_INTERVAL_S.

**Tenant topics** are created by the follower when it sees a grant ACTIVE, before the grant counts as
applied, so a delivery never waits on a missing topic.

**Fail closed.** An authorization event the follower cannot decode (garbage bytes, a schema the registry no
longer has) is never skipped: the follower stops that partition of pdo.authorizations at the event,
dead-letters it once (reason UNDECODABLE), sets `pdo_sharing_control_blocked{partition}` (alert
`PdoControlEventBlocked`), and tries again every `BLOCKED_RETRY_S`. Since every fence waits for all
authorization partitions, no feed record appended after the event is delivered until it decodes (e.g. the
schema is registered again): the worker never delivers under a grant state it did not see.

Nothing blocking runs on the event loop: the registry, Avro and kafka-python's admin run in threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from pdo.core import schemas, topics
from pdo.core.codec import AvroCodec, CodecError
from pdo.core.config import Settings
from pdo.core.deadletters import DEAD_LETTER, dead_letter_event, source_message
from pdo.core.errors import PdoError
from pdo.core.kafka import admin_client, aiokafka_connection, producer
from pdo.core.registry_client import RegistryClient
from pdo.core.retry import retrying
from pdo.core.topics import TopicId, tenant_topic_part
from pdo.sharing.agents import FeedHandler
from pdo.sharing.datasets import DatasetView
from pdo.sharing.grants import GrantBook
from pdo.sharing.scope import GrantScope, GrantState

log = logging.getLogger(__name__)

APP_ID = "sharing"
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
POLL_TIMEOUT_MS = 500

AUTHORIZATION_EVENTS = Counter(
    "pdo_sharing_authorization_events_total",
    "Authorization events the follower read, by outcome (applied, unchanged, blocked)",
    ["outcome"],
)
CONTROL_BLOCKED = Gauge(
    "pdo_sharing_control_blocked",
    "1 while the follower is stopped at an authorization event it cannot decode (delivery waits), by partition",
    ["partition"],
)
# How often a blocked follower tries the event again (the registry may have the schema back by then).
BLOCKED_RETRY_S = 5.0
GRANTS = Gauge("pdo_sharing_grants", "Grants in the worker's grant book")
FENCES = Counter(
    "pdo_sharing_fences_total",
    "End-offset fences the feed consumer waited on: feed (the grants, once per batch), catalog (the ordering rule)",
    ["kind"],
)
PROCESSING = Histogram(
    "pdo_sharing_processing_seconds",
    "From a feed record's Kafka timestamp to the broker acknowledging its deliveries (queueing included)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


# ---------------------------------------------------------------------------------------------- follower


class ControlFollower:
    """Reads pdo.authorizations into a GrantBook and pdo.catalog into a DatasetView, from the beginning,
    outside any consumer group."""

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec,
        book: GrantBook,
        datasets: DatasetView,
        on_active: Callable[[list[GrantScope]], None],
        dead_letter: Callable[[Any, str], None],
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.book = book
        self.datasets = datasets
        self.on_active = on_active  # blocking (creates topics): run in a thread
        self.dead_letter = dead_letter  # blocking (writes to the dead-letter topic): run in a thread
        self._last_error = ""
        self.topic = topics.name(TopicId.AUTHORIZATIONS, settings)
        self.catalog_topic = topics.name(TopicId.CATALOG, settings)
        self._consumer: AIOKafkaConsumer | None = None
        # End offsets are asked on a connection of their own: a broker answers one connection's requests in
        # order, so on the follower's connection every fence would queue behind its long-polling fetch
        # (fetch_max_wait_ms, 500 ms) twice, once per end-offsets call, and again for each feed partition.
        self._offsets: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []  # of pdo.authorizations
        self._catalog_partitions: list[TopicPartition] = []
        self._applied: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()
        self._started = asyncio.Event()
        self._blocked: dict[TopicPartition, int] = {}  # partition -> offset of the event it cannot decode
        self._dead_lettered: set[tuple[TopicPartition, int]] = set()

    async def run(self) -> None:
        """Follow the topic until cancelled; a failure is logged and the follower starts over."""
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The book is only ever added to, never rolled back: starting over re-applies old events,
                # which the version check makes harmless.
                log.exception("authorizations follower failed; starting over in %.1f s", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _new_consumer(self, client_id: str) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            **aiokafka_connection(self.settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=client_id,
        )

    async def _follow(self) -> None:
        consumer = self._new_consumer("pdo-sharing-follower")
        offsets = self._new_consumer("pdo-sharing-fence")
        await consumer.start()
        try:
            await offsets.start()
            grants, catalog = (
                await self._partitions_of(self.topic),
                await self._partitions_of(self.catalog_topic),
            )
            partitions = grants + catalog
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            self._consumer, self._offsets = consumer, offsets
            self._partitions, self._catalog_partitions = grants, catalog
            self._started.set()
            while True:
                batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
                activated = await self._apply(batch)
                if activated:
                    await retrying("creating tenant topics", self.on_active, activated)
                for tp, offset in self._blocked.items():
                    consumer.seek(tp, offset)  # read the undecodable event again next time, never past it
                await self._advance({tp: await consumer.position(tp) for tp in partitions})
                if self._blocked:
                    await asyncio.sleep(BLOCKED_RETRY_S)
        finally:
            self._started.clear()
            self._consumer = self._offsets = None
            await offsets.stop()
            await consumer.stop()

    async def _partitions_of(self, topic: str) -> list[TopicPartition]:
        while True:
            numbers = await asyncio.to_thread(partition_numbers, self.settings, topic)
            if numbers:
                return [TopicPartition(topic, number) for number in numbers]
            log.warning("%s not found on the broker yet; is `pdo topics apply` done?", topic)
            await asyncio.sleep(2.0)

    async def _apply(self, batch: dict[TopicPartition, list[Any]]) -> list[GrantScope]:
        """Apply one fetched batch in offset order per partition; the grants it left ACTIVE."""
        activated: dict[str, GrantScope] = {}
        for tp, messages in batch.items():
            if tp.topic == self.catalog_topic:
                for message in messages:
                    where = f"{message.topic}[{message.partition}]@{message.offset}"
                    await retrying(
                        "reading a catalog event",
                        self.datasets.apply_message,
                        self.codec,
                        message.value,
                        where,
                    )
                continue
            for message in messages:
                decoded = await retrying("decoding an authorization", self._decode, message)
                if decoded is None:
                    await self._block(tp, message)
                    break  # nothing after it on this partition until it decodes
                self._unblock(tp)
                changed = self.book.apply(decoded.schema_name, decoded.value)
                AUTHORIZATION_EVENTS.labels("applied" if changed else "unchanged").inc()
                if changed is not None:
                    activated[changed.grant_id] = changed
        GRANTS.set(len(self.book))
        return [scope for scope in activated.values() if scope.state is GrantState.ACTIVE]

    def _decode(self, message: Any) -> Any:
        try:
            return self.codec.decode(message.value)
        except CodecError as error:
            log.error(
                "%s[%d]@%d cannot be decoded; delivery waits for it: %s",
                message.topic,
                message.partition,
                message.offset,
                error,
            )
            self._last_error = str(error)
            return None

    async def _block(self, tp: TopicPartition, message: Any) -> None:
        """Stop `tp` at this event (fail closed) and dead-letter it once, so an operator sees why."""
        self._blocked[tp] = message.offset
        CONTROL_BLOCKED.labels(str(tp.partition)).set(1)
        AUTHORIZATION_EVENTS.labels("blocked").inc()
        if (tp, message.offset) not in self._dead_lettered:
            reason = (
                f"authorization event cannot be decoded; delivery is stopped until it can: {self._last_error}"
            )
            await retrying("dead-lettering an authorization", self.dead_letter, message, reason)
            self._dead_lettered.add((tp, message.offset))

    def _unblock(self, tp: TopicPartition) -> None:
        if self._blocked.pop(tp, None) is not None:
            CONTROL_BLOCKED.labels(str(tp.partition)).set(0)
            log.warning("%s[%d] decodes again; the follower goes on", tp.topic, tp.partition)

    async def _advance(self, positions: dict[TopicPartition, int]) -> None:
        async with self._progress:
            self._applied.update(positions)
            self._progress.notify_all()

    async def fence(self) -> None:
        """Wait until every authorization the broker acknowledged before this call is applied.

        Records fetched before the call may then be processed with the book as it stands.
        """
        await self._started.wait()
        offsets = self._offsets
        assert offsets is not None
        FENCES.labels("feed").inc()
        await self._wait_applied(await offsets.end_offsets(self._partitions))

    async def catalog_fence(self) -> None:
        """Wait until the DatasetView holds every catalog event the broker acknowledged before this call."""
        await self._started.wait()
        offsets = self._offsets
        assert offsets is not None
        FENCES.labels("catalog").inc()
        await self._wait_applied(await offsets.end_offsets(self._catalog_partitions))

    async def _wait_applied(self, wanted: dict[TopicPartition, int]) -> None:
        async with self._progress:
            await self._progress.wait_for(
                lambda: all(self._applied.get(tp, -1) >= end for tp, end in wanted.items())
            )


# ---------------------------------------------------------------------------------------------- topics


class TenantTopics:
    """Creates tenant stream topics from topics/tenant-stream.yaml; remembers which exist. Blocking."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._known: set[str] | None = None

    def ensure(self, grants: Iterable[GrantScope]) -> None:
        declaration = topics.spec(TopicId.TENANT_STREAM, self.settings)
        wanted: dict[str, topics.TopicSpec] = {}
        for grant in grants:
            try:
                spec = declaration.render(
                    tenant_id=tenant_topic_part(grant.tenant_id), dataset_id=grant.dataset_id
                )
            except PdoError as error:  # a tenant id no topic name can hold: nothing can be delivered
                log.error("grant %s: no tenant topic: %s", grant.grant_id, error)
                continue
            wanted[spec.name] = spec
        if self._known is not None and wanted.keys() <= self._known:
            return
        with admin_client(self.settings) as admin:
            if self._known is None:
                self._known = set(admin.list_topics())
            missing = [spec for name, spec in wanted.items() if name not in self._known]
            if missing:
                report = topics.apply(admin, missing)
                for line in report.drift:
                    log.warning("tenant topic differs from its declaration: %s", line)
        self._known.update(spec.name for spec in missing)
        if missing:
            log.info("tenant topics ready: %s", ", ".join(spec.name for spec in missing))


class ControlDeadLetters:
    """Writes an undecodable control event to the dead-letter topic, exactly as read. Blocking."""

    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        self.settings = settings
        self.codec = codec
        self.topic = topics.name(TopicId.DEAD_LETTERS, settings)

    def send(self, message: Any, reason: str) -> None:
        letter = dead_letter_event(source_message(message), APP_ID, "UNDECODABLE", reason)
        value = self.codec.encode(
            self.topic, schemas.get(DEAD_LETTER, self.settings.home / "schemas"), letter
        )
        sender = producer(self.settings)
        try:
            sender.send(self.topic, key=message.topic.encode(), value=value).get(
                self.settings.kafka_timeout_s
            )
        finally:
            sender.close()


def partition_numbers(settings: Settings, topic: str) -> list[int]:
    """The partitions `topic` has on the broker; empty if it does not exist."""
    with admin_client(settings) as admin:
        if topic not in admin.list_topics():
            return []
        (described,) = admin.describe_topics([topic])
        return sorted(partition["partition_index"] for partition in described["partitions"])


# ---------------------------------------------------------------------------------------------- runtime


@dataclass
class Runtime:
    """What one worker process holds (no database: see the module docstring); close() releases the registry."""

    settings: Settings
    codec: AvroCodec
    book: GrantBook
    datasets: DatasetView
    handler: FeedHandler
    follower: ControlFollower
    tenant_topics: TenantTopics

    def close(self) -> None:
        self.codec.registry.close()


def masking_key(settings: Settings) -> bytes:
    """The master key of KEYED_HASH pseudonyms; ConfigError for a placeholder or short key (not in development)."""
    return settings.secret("masking_key").encode()


def build_runtime(settings: Settings) -> Runtime:
    codec = AvroCodec(RegistryClient.for_settings(settings))
    book, datasets = GrantBook(), DatasetView()
    tenant_topics = TenantTopics(settings)
    handler = FeedHandler(settings, codec, datasets.get, book, masking_key(settings))
    follower = ControlFollower(
        settings, codec, book, datasets, tenant_topics.ensure, ControlDeadLetters(settings, codec).send
    )
    return Runtime(settings, codec, book, datasets, handler, follower, tenant_topics)
