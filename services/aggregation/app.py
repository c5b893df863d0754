"""The aggregation worker: faust app "aggregation" turning dataset feeds into windowed aggregates for the
tenants of AGGREGATE grants (principal `service.aggregation`).

**One reader at a time.** A tumbling window gathers a dataset's records from every partition of its feed, so
one process must see them all: the worker that holds the feeds lease (a row of `aggregation_outbox_lease`,
taken and renewed by a conditional UPDATE, as the outbox relays do) reads; any other worker stands by and takes
over once the lease expires (`LEASE_S` after its holder stopped renewing). The new leader starts from what
SQL holds (state.py), so a takeover neither loses nor doubles a window.

**A step** (run in a thread: kafka-python and SQL block):
1. renew the lease (or stand by);
2. read pdo.authorizations and pdo.catalog up to their current ends, so every grant change and dataset
   registered before the feed records the step reads is applied first (the stream-order rule sharing keeps);
3. follow the feeds of datasets some active aggregate grant reads, from the positions SQL holds;
4. count a batch into its windows, close the windows due, and commit all of it in one transaction
   (state.py: groups, positions, watermarks, closed windows, and the outbox rows of what they publish and
   of late or undecodable records' dead letters);
5. publish the outbox: the aggregates to `pdo.tenant.<tenant>.<dataset>.aggregates` (created when first
   needed), one usage fact per window delivered to pdo.deliveries (metering prices it by the grant's plan),
   a derived data product's rows to its feed `pdo.feed.product-…` in its registered schema (keyed by the
   row's id, timestamped with its window's start), dead letters to pdo.dead-letters. A relay publishes rows
   in order and marks them sent once acknowledged.

A commit that fails (the database away) reloads the state from SQL and reads the batch again: retried, never
skipped. A feed record that does not decode is dead-lettered with its bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import faust
import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge
from sqlalchemy import Engine

from pdo.aggregation import tables as t
from pdo.aggregation.grants import PRODUCT_GRANT_PREFIX, AggregateGrants
from pdo.aggregation.state import Aggregator, Changes, FeedRecord, TopicNames
from pdo.catalog.public import CATALOG_EVENTS, Dataset, dataset_in_event
from pdo.core import db, topics
from pdo.core.codec import AvroCodec, CodecError
from pdo.core.config import Settings
from pdo.core.deadletters import source_message
from pdo.core.errors import PdoError
from pdo.core.events import EventPublisher, utc_now
from pdo.core.ids import PRODUCTS_PROVIDER, is_product_id
from pdo.core.kafka import admin_client, consumer
from pdo.core.outbox import OutboxRelay
from pdo.core.registry_client import RegistryClient
from pdo.core.retry import RETRIES
from pdo.core.streams import make_app
from pdo.core.topics import TopicId, tenant_topic_part
from pdo.core.vocabulary import ProductSpec, product_spec_from_schema

log = logging.getLogger(__name__)

APP_ID = "aggregation"
LEASE_S = 15.0
STANDBY_S = 2.0
POLL_MS = 500
BATCH_RECORDS = 2000
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0

WINDOWS = Counter(
    "pdo_aggregation_windows_total",
    "Windows closed, by outcome (delivered: at least one group published; empty: every group suppressed; "
    "stopped: the grant was no longer active)",
    ["outcome"],
)
GROUPS = Counter("pdo_aggregation_groups_total", "Groups of closed windows, by outcome", ["outcome"])
LATE = Counter("pdo_aggregation_late_records_total", "Feed records that came after their window closed")
LEADER = Gauge("pdo_aggregation_leader", "1 while this worker holds the feeds lease and reads the feeds")


class Lease:
    """The feeds lease: one row of the outbox lease table, held by one worker at a time. Blocking."""

    def __init__(self, engine: Engine, seconds: float = LEASE_S) -> None:
        self.engine = engine
        self.seconds = seconds
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def hold(self, now: datetime) -> bool:
        """Take or renew the lease; whether this worker holds it now."""
        lease = t.outbox_lease
        with self.engine.begin() as conn:
            done = conn.execute(
                lease.update()
                .where(lease.c.name == t.FEEDS_LEASE)
                .where(
                    sa.or_(lease.c.holder.is_(None), lease.c.holder == self.holder, lease.c.expires_at < now)
                )
                .values(holder=self.holder, expires_at=now + timedelta(seconds=self.seconds))
            )
            return done.rowcount == 1

    def release(self) -> None:
        lease = t.outbox_lease
        with self.engine.begin() as conn:
            conn.execute(
                lease.update()
                .where(lease.c.name == t.FEEDS_LEASE)
                .where(lease.c.holder == self.holder)
                .values(holder=None, expires_at=None)
            )


@dataclass(frozen=True)
class ProductSchema:
    """A derived data product's registered record schema: its id in the registry and fastavro's form."""

    schema_id: int
    parsed: Any
    spec: ProductSpec


class OutboxPublisher:
    """Publishes the outbox's rows; an aggregate goes to its tenant's aggregates topic, created if missing,
    and a product's row to the product's feed, in the product's registered schema (`product_schemas`, filled
    by the Reader from pdo.catalog before any step publishes)."""

    def __init__(
        self, settings: Settings, codec: AvroCodec, product_schemas: dict[str, ProductSchema]
    ) -> None:
        self.settings = settings
        self.codec = codec
        self.events = EventPublisher(settings, codec)
        self.product_schemas = product_schemas
        self._topics: set[str] = set()

    def publish(
        self, topic: TopicId, schema_name: str, value: dict[str, Any], key: str | None = None
    ) -> tuple[str, int, int]:
        if topic is TopicId.PRODUCT_FEED:
            return self._publish_product_row(value)
        if topic is not TopicId.TENANT_AGGREGATES:
            return self.events.publish(topic, schema_name, value, key)
        params = {"tenant_id": tenant_topic_part(value["tenant_id"]), "dataset_id": value["dataset_id"]}
        self._ensure_topic(params)
        return self.events.publish(topic, schema_name, value, key, **params)

    def _publish_product_row(self, aggregate: dict[str, Any]) -> tuple[str, int, int]:
        product_id = aggregate["grant_id"].removeprefix(PRODUCT_GRANT_PREFIX)
        schema = self.product_schemas.get(product_id)
        if schema is None:  # the Reader reads pdo.catalog before every publish: the catalog was out of reach
            raise PdoError(
                f"product {product_id} is not (yet) known from pdo.catalog", hint="retried next step"
            )
        name = topics.feed_topic(product_id, self.settings)
        data = self.codec.encode_with_id(
            schema.schema_id, schema.parsed, product_record(aggregate, schema.spec)
        )
        # Event time of the row: its window's start, so a window of the product is one of its source's.
        partition, offset = self.events.publish_encoded(
            name,
            aggregate["aggregate_id"],
            data,
            timestamp_ms=int(aggregate["window_start"].timestamp() * 1000),
        )
        return name, partition, offset

    def _ensure_topic(self, params: dict[str, str]) -> None:
        spec = topics.spec(TopicId.TENANT_AGGREGATES, self.settings).render(**params)
        if spec.name in self._topics:
            return
        with admin_client(self.settings) as admin:
            if spec.name not in admin.list_topics():
                topics.apply(admin, [spec])
                log.info("aggregates topic created: %s", spec.name)
        self._topics.add(spec.name)

    def close(self) -> None:
        self.events.close()


def product_record(aggregate: dict[str, Any], spec: ProductSpec) -> dict[str, Any]:
    """A product's row in its record schema (pdo.products.declaration.record_schema) from the aggregate of
    one published group: window bounds, the group's values, its record count, its measures."""
    measured = {(item["field"], item["function"]): item["value"] for item in aggregate["measures"]}
    return {
        "record_id": aggregate["aggregate_id"],
        "window_start": aggregate["window_start"],
        "window_end": aggregate["window_end"],
        **{name: aggregate["group"].get(name) for name in spec.aggregate.group_by},
        "records": aggregate["count"],
        **{column: measured.get((name, function.value)) for name, function, column in spec.measure_columns()},
        "suppressed_groups": aggregate["suppressed_groups"],
    }


@dataclass
class Reader:
    """The leader's Kafka side: pdo.authorizations and pdo.catalog from the beginning, the feeds it follows."""

    settings: Settings
    codec: AvroCodec
    grants: AggregateGrants
    record_schemas: dict[str, str] = field(default_factory=dict)
    product_schemas: dict[str, ProductSchema] = field(default_factory=dict)
    control: KafkaConsumer | None = None
    feeds: KafkaConsumer | None = None
    followed: set[TopicPartition] = field(default_factory=set)
    datasets_by_feed: dict[str, str] = field(default_factory=dict)

    def catch_up(self) -> None:
        """Apply every grant change and catalog event the broker holds now (the stream-order rule)."""
        control = self._control()
        partitions = list(control.assignment())
        ends = control.end_offsets(partitions)
        while any((control.position(tp) or 0) < ends[tp] for tp in partitions):
            for messages in control.poll(timeout_ms=POLL_MS).values():
                for message in messages:
                    self._apply_control(message)

    def _control(self) -> KafkaConsumer:
        if self.control is None:
            control = _consumer(self.settings)
            names = [
                topics.name(TopicId.AUTHORIZATIONS, self.settings),
                topics.name(TopicId.CATALOG, self.settings),
            ]
            partitions = [
                TopicPartition(name, number)
                for name in names
                for number in sorted(control.partitions_for_topic(name) or ())
            ]
            control.assign(partitions)
            control.seek_to_beginning(*partitions)
            self.control = control
        return self.control

    def _apply_control(self, message: Any) -> None:
        try:
            decoded = self.codec.decode(message.value)
        except CodecError as error:
            if message.topic == topics.name(TopicId.CATALOG, self.settings):
                # The catalog worker dead-letters it; a dataset's k falls back to the operator's floor at worst.
                log.warning("catalog event %s@%d passed over: %s", message.topic, message.offset, error)
                return
            # Fail closed: a grant change it cannot read could be a revocation, so nothing is read or
            # published until it decodes (the step stops here and is retried).
            assert self.control is not None
            self.control.seek(TopicPartition(message.topic, message.partition), message.offset)
            raise PdoError(
                f"authorization event {message.topic}[{message.partition}]@{message.offset} cannot be decoded: "
                f"{error}",
                hint="aggregation waits for it; register its schema again or fix the event",
            ) from None
        if decoded.schema_name in CATALOG_EVENTS:
            dataset = dataset_in_event(decoded.schema_name, decoded.value, self.codec.registry)
            if dataset is not None:
                self.record_schemas[dataset.dataset_id] = dataset.record_schema
                if dataset.provider_id == PRODUCTS_PROVIDER and is_product_id(dataset.dataset_id):
                    self._follow_product(dataset)
            return
        self.grants.apply(decoded.schema_name, decoded.value)

    def _follow_product(self, dataset: Dataset) -> None:
        spec = product_spec_from_schema(dataset.record_schema)
        if spec is None:
            log.warning("product %s carries no computation in its schema: not computed", dataset.dataset_id)
            return
        parsed = fastavro.parse_schema(json.loads(dataset.record_schema))
        self.product_schemas[dataset.dataset_id] = ProductSchema(dataset.schema_id, parsed, spec)
        self.grants.apply_product(dataset.dataset_id, spec, dataset.retired, dataset.version)

    def follow(self, positions: dict[tuple[str, int], int]) -> None:
        """Read the feeds of the datasets active aggregate grants read, from the positions SQL holds."""
        feeds = self._feeds()
        names = TopicNames(self.settings)
        wanted: set[TopicPartition] = set()
        existing = feeds.topics()
        for dataset_id in sorted(self.grants.datasets()):
            name = names.feed(dataset_id)
            self.datasets_by_feed[name] = dataset_id
            if name in existing:
                wanted |= {TopicPartition(name, number) for number in feeds.partitions_for_topic(name) or ()}
        if wanted == self.followed:
            return
        feeds.assign(sorted(wanted))
        log.info(
            "following %d feed partition(s) of %s", len(wanted), ", ".join(sorted(self.grants.datasets()))
        )
        for tp in wanted - self.followed:
            offset = positions.get((tp.topic, tp.partition))
            if offset is None:
                feeds.seek_to_beginning(tp)
            else:
                feeds.seek(tp, offset)
        self.followed = wanted

    def feed_partitions(self) -> dict[str, list[tuple[str, int]]]:
        """The partitions followed, by dataset."""
        found: dict[str, list[tuple[str, int]]] = {}
        for tp in sorted(self.followed):
            found.setdefault(self.datasets_by_feed[tp.topic], []).append((tp.topic, tp.partition))
        return found

    def idle(self, where: tuple[str, int]) -> bool:
        """Whether the partition is read to the end the broker last told (nothing older can be waiting)."""
        tp = TopicPartition(*where)
        feeds = self._feeds()
        end, position = feeds.highwater(tp), feeds.position(tp)
        return end is not None and position is not None and position >= end

    def rewind(self, positions: dict[tuple[str, int], int]) -> None:
        """Back to the positions SQL holds (after a commit failed): the batch is read again."""
        for tp in self.followed:
            offset = positions.get((tp.topic, tp.partition))
            if offset is None:
                self._feeds().seek_to_beginning(tp)
            else:
                self._feeds().seek(tp, offset)

    def batch(self) -> list[FeedRecord]:
        if not self.followed:
            return []
        polled = self._feeds().poll(timeout_ms=POLL_MS, max_records=BATCH_RECORDS)
        return [self._record(message) for messages in polled.values() for message in messages]

    def _record(self, message: Any) -> FeedRecord:
        dataset_id = self.datasets_by_feed[message.topic]
        event_time = datetime.fromtimestamp(message.timestamp / 1000, UTC)
        try:
            value = self.codec.decode(message.value).value
        except CodecError as error:
            return FeedRecord(source_message(message), dataset_id, event_time, None, str(error))
        return FeedRecord(source_message(message), dataset_id, event_time, value)

    def _feeds(self) -> KafkaConsumer:
        if self.feeds is None:
            self.feeds = _consumer(self.settings)
        return self.feeds

    def close(self) -> None:
        for client in (self.control, self.feeds):
            if client is not None:
                client.close()
        self.control = self.feeds = None
        self.followed = set()


def _consumer(settings: Settings) -> KafkaConsumer:
    return consumer(settings, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest")


@dataclass
class Runtime:
    """What one worker process holds; close() releases the lease, the clients and the database."""

    settings: Settings
    engine: Engine
    codec: AvroCodec
    aggregator: Aggregator
    reader: Reader
    lease: Lease
    relay: OutboxRelay
    publisher: OutboxPublisher
    leading: bool = False

    def step(self) -> int:
        """One step (see the module docstring); how many feed records it counted. Blocking."""
        if not self.lease.hold(utc_now()):
            if self.leading:
                log.warning("the feeds lease went to another worker; standing by")
                self._stand_by()
            return 0
        if not self.leading:
            self.aggregator.load()
            self.leading = True
            LEADER.set(1)
            log.info("holding the feeds lease: reading the feeds of aggregate grants")
        self.reader.catch_up()
        self.reader.follow(self.aggregator.positions)
        batch = self.reader.batch()
        changes = self.aggregator.apply(
            batch,
            self.reader.grants,
            self.reader.record_schemas,
            self.reader.feed_partitions(),
            self.reader.idle,
        )
        try:
            self.aggregator.save(changes)
        except Exception:
            self.aggregator.load()  # SQL is the truth: forget what the failed batch did, and read it again
            self.reader.rewind(self.aggregator.positions)
            raise
        _count(changes)
        if changes.closed:
            log.info("closed %d window(s) after %d feed records", len(changes.closed), len(batch))
        self.relay.publish_all()
        return len(batch)

    def _stand_by(self) -> None:
        self.leading = False
        LEADER.set(0)
        self.reader.close()

    def close(self) -> None:
        if self.leading:
            self.lease.release()
        self.reader.close()
        self.publisher.close()
        self.engine.dispose()


def _count(changes: Changes) -> None:
    LATE.inc(changes.late)
    for closed, grant in changes.closed:
        stopped = not grant.active
        outcome = "stopped" if stopped else ("delivered" if closed.rows else "empty")
        WINDOWS.labels(outcome).inc()
        GROUPS.labels("published").inc(0 if stopped else len(closed.rows))
        GROUPS.labels("suppressed").inc(closed.suppressed)


def build_runtime(settings: Settings) -> Runtime:
    engine = db.make_engine(settings.service_database_url(APP_ID))
    codec = AvroCodec(RegistryClient.for_settings(settings))
    aggregator = Aggregator(
        engine,
        settings.aggregation_allowed_lateness_s,
        settings.aggregation_min_group_size,
        TopicNames(settings),
        epsilon_budget=settings.aggregation_epsilon_per_month,
    )
    reader = Reader(settings, codec, AggregateGrants())
    publisher = OutboxPublisher(settings, codec, reader.product_schemas)
    relay = OutboxRelay(t.OUTBOX, engine, publisher, timedelta(seconds=3 * settings.kafka_timeout_s + 5))
    return Runtime(settings, engine, codec, aggregator, reader, Lease(engine), relay, publisher)


async def run_steps(runtime: Runtime) -> None:
    """Steps until cancelled; a failing step (broker, registry or database away) is retried, backing off."""
    backoff = FIRST_BACKOFF_S
    while True:
        try:
            counted = await asyncio.to_thread(runtime.step)
            backoff = FIRST_BACKOFF_S
            if not runtime.leading:
                await asyncio.sleep(STANDBY_S)
            elif counted == 0:
                await asyncio.sleep(0)  # the poll waited already; give the loop a turn
        except asyncio.CancelledError:
            raise
        except Exception as error:
            RETRIES.labels(APP_ID, "aggregating").inc()
            log.warning("aggregation step failed, retrying in %.1f s: %s", backoff, error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)


def create_app(settings: Settings, runtime: Runtime | None = None, app_id: str = APP_ID) -> faust.App:
    """The faust app; the runtime built from settings if not given. `app_id` is its consumer group."""
    runtime = runtime or build_runtime(settings)
    app = make_app(app_id, settings)

    @app.task
    async def aggregate_feeds() -> None:
        await run_steps(runtime)

    return app
