"""Metering's own projection of other services' events: grants' terms and datasets' facts, in its own tables.

Metering reads no other service's table. It learns what it needs from their events:

- **grants** (`metering_grants`) from pdo.authorizations: AuthorizationGranted creates a grant at version 1;
  Suspended / Resumed / Revoked / Expired carry a GrantSnapshot, whose terms replace the row's when its
  version is higher. The ledger reads valid_from and daily_quota_records from here, billing the price plan.
  A denial, or a transition without a snapshot (written before snapshots existed), changes no terms;
- **datasets** (`metering_datasets`) from pdo.catalog: the title and provider billing's asset report shows,
  and the lineage (`derived_from`) it attributes a derived product's revenue by. DatasetRegistered carries the entry, Updated and Retired a DatasetSnapshot; (version, retired) orders them.

**Idempotent and in order.** An event changes a row only when it is newer than what the row holds (an upsert
whose update is conditional on the version), so a redelivered, replayed or stale event changes nothing, and
two appliers (the worker's agents, a catch-up) may apply the same events in any interleaving. Every apply
also moves `metering_projection_positions` forward to the offset after the events it applied, in the same
transaction: where a catch-up resumes reading.

**Ordering rule: catch up before calling a grant unknown.** The projection may lag the deliveries: the
agent following pdo.authorizations and the one metering pdo.deliveries run side by side, and a usage fact
can arrive before the grant event its delivery followed is applied. Sharing delivers under a grant only
after that grant's event is on pdo.authorizations, so before the ledger sets a fact aside as UNKNOWN_GRANT,
`catch_up` reads pdo.authorizations from the stored positions to the end offsets it takes when called and
applies what it reads; only a grant still unknown after that is UNKNOWN_GRANT (the handler's `know_grants`
step does this before each ledger transaction that would otherwise meet an unknown grant). An event that
cannot be decoded is skipped here and counted (the topic's own consumers dead-letter it): a grant it would
have created stays unknown and its usage is set aside for review, never dropped.

Blocking (SQL, Kafka): callers on an event loop use a thread.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import Counter
from sqlalchemy import Connection, Engine

from pdo.core import kafka, topics
from pdo.core.codec import AvroCodec, CodecError
from pdo.core.config import Settings
from pdo.core.db import dialect_insert
from pdo.core.deadletters import SourceMessage
from pdo.core.errors import Unavailable
from pdo.core.topics import TopicId
from pdo.metering import tables as t
from pdo.metering.ledger import as_utc

log = logging.getLogger(__name__)

GRANTED = "pdo.authorizations.v1.AuthorizationGranted"
GRANT_TRANSITIONS = frozenset(
    "pdo.authorizations.v1." + name
    for name in (
        "AuthorizationSuspended",
        "AuthorizationResumed",
        "AuthorizationRevoked",
        "AuthorizationExpired",
    )
)
DATASET_REGISTERED = "pdo.catalog.v1.DatasetRegistered"
DATASET_SNAPSHOTS = frozenset({"pdo.catalog.v1.DatasetUpdated", "pdo.catalog.v1.DatasetRetired"})
CHUNK = 500  # events per transaction when catching up; ids per IN (...) list

PROJECTED = Counter(
    "pdo_metering_projection_events_total",
    "Events metering's projection read, by topic and outcome (applied, unchanged, ignored, undecodable)",
    ["topic", "outcome"],
)


@dataclass(frozen=True)
class GrantTerms:
    """One row of metering_grants: what metering and billing need of a grant."""

    grant_id: str
    tenant_id: str
    dataset_id: str
    valid_from: datetime
    valid_until: datetime
    daily_quota_records: int | None
    price_plan: str  # JSON, as authorization keeps it
    version: int


@dataclass(frozen=True)
class DatasetFacts:
    """One row of metering_datasets."""

    dataset_id: str
    title: str
    provider_id: str
    version: int
    retired: bool
    derived_from: str = "[]"  # JSON list of source ids, in id order as the catalog keeps them


@dataclass(frozen=True)
class TopicEvent:
    """An event read from a followed topic; `schema_name` None when it could not be decoded."""

    partition: int
    offset: int
    schema_name: str | None
    value: Mapping[str, Any]


# ---------------------------------------------------------------------------------------------- events


def grant_terms(schema_name: str, value: Mapping[str, Any]) -> GrantTerms | None:
    """The terms an authorization event states, or None when it states none (a denial, no snapshot)."""
    if schema_name == GRANTED:
        return _terms(value, 1)
    if schema_name in GRANT_TRANSITIONS and value.get("grant") is not None:
        return _terms(value["grant"], int(value["grant"]["version"]))
    return None


def _terms(value: Mapping[str, Any], version: int) -> GrantTerms:
    return GrantTerms(
        grant_id=value["grant_id"],
        tenant_id=value["tenant_id"],
        dataset_id=value["dataset_id"],
        valid_from=as_utc(value["valid_from"]),
        valid_until=as_utc(value["valid_until"]),
        daily_quota_records=value.get("daily_quota_records"),
        price_plan=price_plan_json(value["price_plan"]),
        version=version,
    )


def price_plan_json(plan: Mapping[str, Any]) -> str:
    """A decoded Avro PricePlan as the JSON authorization stores (decimal(18, 2) amounts as text, keys sorted)."""
    return json.dumps(dict(plan), default=str, sort_keys=True)


def dataset_facts(schema_name: str, value: Mapping[str, Any]) -> DatasetFacts | None:
    """The facts a catalog event states, or None (an update or retirement written without its snapshot)."""
    if schema_name == DATASET_REGISTERED:
        entry, retired = value, False
    elif schema_name in DATASET_SNAPSHOTS and value.get("dataset") is not None:
        entry, retired = value["dataset"], bool(value["dataset"]["retired"])
    else:
        return None
    return DatasetFacts(
        entry["dataset_id"],
        entry["title"],
        entry["provider_id"],
        int(entry["version"]),
        retired,
        # absent from events written before lineage existed (the schema's default is empty)
        json.dumps(list(entry.get("derived_from") or ())),
    )


def decode_event(
    codec: AvroCodec, where: str, partition: int, offset: int, value: bytes | None
) -> TopicEvent:
    """The event at `where`; undecodable (schema_name None) when its bytes cannot be read. A registry that does
    not answer raises: the caller retries rather than skip an event it could read later."""
    try:
        decoded = codec.decode(value)
    except CodecError as error:
        log.error("%s skipped by metering's projection: %s", where, error)
        return TopicEvent(partition, offset, None, {})
    return TopicEvent(partition, offset, decoded.schema_name, decoded.value)


# ---------------------------------------------------------------------------------------------- applying


def apply_events(
    conn: Connection, topic: str, events: Sequence[TopicEvent], reached: Mapping[int, int]
) -> int:
    """Apply `events` read from `topic` and move its positions to `reached` (partition -> next offset), in
    the caller's transaction; how many rows changed. Rows are written in key order (no deadlock between
    two appliers on PostgreSQL)."""
    grants: dict[str, GrantTerms] = {}
    datasets: dict[str, DatasetFacts] = {}
    for event in events:
        if event.schema_name is None:
            PROJECTED.labels(topic, "undecodable").inc()
            continue
        if (terms := grant_terms(event.schema_name, event.value)) is not None:
            grants[terms.grant_id] = _newest(grants.get(terms.grant_id), terms)
        elif (facts := dataset_facts(event.schema_name, event.value)) is not None:
            datasets[facts.dataset_id] = _newest(datasets.get(facts.dataset_id), facts)
        else:
            PROJECTED.labels(topic, "ignored").inc()
    changed = _upsert_grants(conn, [grants[key] for key in sorted(grants)])
    changed += _upsert_datasets(conn, [datasets[key] for key in sorted(datasets)])
    PROJECTED.labels(topic, "applied").inc(changed)
    PROJECTED.labels(topic, "unchanged").inc(len(grants) + len(datasets) - changed)
    _advance(conn, topic, reached)
    return changed


def _newest(held: Any, new: Any) -> Any:
    return new if held is None or _order(new) > _order(held) else held


def _order(row: GrantTerms | DatasetFacts) -> tuple[int, bool]:
    return (row.version, getattr(row, "retired", False))


def _upsert_grants(conn: Connection, rows: Sequence[GrantTerms]) -> int:
    if not rows:
        return 0
    insert = dialect_insert(conn, t.grants)
    columns = [c.name for c in t.grants.columns if c.name != "grant_id"]
    statement = insert.on_conflict_do_update(
        index_elements=["grant_id"],
        set_={name: insert.excluded[name] for name in columns},
        where=t.grants.c.version < insert.excluded.version,
    ).returning(t.grants.c.grant_id)
    return sum(1 for row in rows if conn.execute(statement, [asdict(row)]).first() is not None)


def _upsert_datasets(conn: Connection, rows: Sequence[DatasetFacts]) -> int:
    if not rows:
        return 0
    insert = dialect_insert(conn, t.datasets)
    columns = [c.name for c in t.datasets.columns if c.name != "dataset_id"]
    held, new = t.datasets.c, insert.excluded
    statement = insert.on_conflict_do_update(
        index_elements=["dataset_id"],
        set_={name: new[name] for name in columns},
        where=sa.or_(
            held.version < new.version,
            sa.and_(held.version == new.version, held.retired == sa.false(), new.retired == sa.true()),
        ),
    ).returning(t.datasets.c.dataset_id)
    return sum(1 for row in rows if conn.execute(statement, [asdict(row)]).first() is not None)


def _advance(conn: Connection, topic: str, reached: Mapping[int, int]) -> None:
    if not reached:
        return
    insert = dialect_insert(conn, t.positions)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=["topic", "partition"],
            set_={"next_offset": insert.excluded.next_offset},
            where=t.positions.c.next_offset < insert.excluded.next_offset,
        ),
        [{"topic": topic, "partition": p, "next_offset": reached[p]} for p in sorted(reached)],
    )


def stored_positions(conn: Connection, topic: str) -> dict[int, int]:
    rows = conn.execute(
        sa.select(t.positions.c.partition, t.positions.c.next_offset).where(t.positions.c.topic == topic)
    )
    return {partition: next_offset for partition, next_offset in rows}


def known_grants(engine: Engine, grant_ids: Iterable[str]) -> set[str]:
    """Which of `grant_ids` the projection holds."""
    ordered = sorted(set(grant_ids))
    found: set[str] = set()
    with engine.connect() as conn:
        for start in range(0, len(ordered), CHUNK):
            chunk = ordered[start : start + CHUNK]
            found.update(
                conn.execute(sa.select(t.grants.c.grant_id).where(t.grants.c.grant_id.in_(chunk))).scalars()
            )
    return found


# ---------------------------------------------------------------------------------------------- following


class TopicLog(Protocol):
    """A followed topic as the catch-up reads it (Kafka in the worker; a list in unit tests)."""

    topic: str

    def end_offsets(self) -> dict[int, int]: ...

    def read(self, start: Mapping[int, int], end: Mapping[int, int]) -> Iterator[TopicEvent]: ...


class Projection:
    """Applies the followed topics' events to metering's tables; catches the grants up on demand. Blocking."""

    def __init__(self, engine: Engine, codec: AvroCodec, authorizations: TopicLog) -> None:
        self.engine = engine
        self.codec = codec
        self.authorizations = authorizations

    def apply_messages(self, messages: Sequence[SourceMessage]) -> int:
        """Decode and apply what an agent read (one topic per call); rows changed. A registry that does not
        answer raises (retry the batch); an undecodable event is counted and skipped."""
        if not messages:
            return 0
        events = [
            decode_event(self.codec, message.position, message.partition, message.offset, message.value)
            for message in messages
        ]
        reached: dict[int, int] = {}
        for message in messages:
            reached[message.partition] = max(reached.get(message.partition, 0), message.offset + 1)
        with self.engine.begin() as conn:
            return apply_events(conn, messages[0].topic, events, reached)

    def catch_up(self) -> int:
        """Apply pdo.authorizations from the stored positions to its end offsets of now; rows changed."""
        source = self.authorizations
        end = source.end_offsets()
        with self.engine.connect() as conn:
            held = stored_positions(conn, source.topic)
        start = {partition: held.get(partition, 0) for partition in end}
        if all(start[partition] >= end[partition] for partition in end):
            return 0
        changed, batch = 0, []
        for event in source.read(start, end):
            batch.append(event)
            if len(batch) >= CHUNK:
                changed += self._apply_read(batch, {})
                batch = []
        changed += self._apply_read(batch, end)  # everything below `end` is applied now
        log.info("grants caught up with %s: %d changed", source.topic, changed)
        return changed

    def _apply_read(self, events: list[TopicEvent], reached: Mapping[int, int]) -> int:
        with self.engine.begin() as conn:
            return apply_events(conn, self.authorizations.topic, events, reached)


class KafkaTopicLog:
    """A topic read with a consumer outside any group, so no group's offsets move; decoded by `codec`."""

    def __init__(self, settings: Settings, topic: TopicId, codec: AvroCodec, timeout_s: float = 60.0) -> None:
        self.settings = settings
        self.topic = topics.name(topic, settings)
        self.codec = codec
        self.timeout_s = timeout_s
        self._consumer: KafkaConsumer | None = None

    def _reader(self) -> KafkaConsumer:
        if self._consumer is None:
            self._consumer = kafka.consumer(
                self.settings,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # a stored position below the log's start reads from its start
                request_timeout_ms=max(self.settings.kafka_timeout_s * 1000, 5000),
            )
        return self._consumer

    def end_offsets(self) -> dict[int, int]:
        consumer = self._reader()
        numbers = consumer.partitions_for_topic(self.topic)
        if not numbers:
            raise Unavailable(
                f"topic {self.topic} is not on the broker", hint="create it with `pdo topics apply`"
            )
        ends = consumer.end_offsets([TopicPartition(self.topic, number) for number in sorted(numbers)])
        return {tp.partition: offset for tp, offset in ends.items()}

    def read(self, start: Mapping[int, int], end: Mapping[int, int]) -> Iterator[TopicEvent]:
        """Every event at [start, end) per partition (compaction leaves gaps: positions mark progress)."""
        consumer = self._reader()
        wanted = [TopicPartition(self.topic, p) for p in sorted(end) if start[p] < end[p]]
        consumer.assign(wanted)
        for tp in wanted:
            consumer.seek(tp, start[tp.partition])
        deadline = time.monotonic() + self.timeout_s
        while any((consumer.position(tp) or 0) < end[tp.partition] for tp in wanted):  # None: not known yet
            if time.monotonic() > deadline:
                raise Unavailable(f"reading {self.topic} to its end took longer than {self.timeout_s:.0f} s")
            for tp, records in consumer.poll(timeout_ms=500).items():
                for record in records:
                    if record.offset < end[tp.partition]:
                        where = f"{record.topic}[{record.partition}]@{record.offset}"
                        yield decode_event(self.codec, where, record.partition, record.offset, record.value)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
