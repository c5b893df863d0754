"""The audit log's mirror on Kafka: every entry and signed checkpoint, in the log's order, on `pdo.audit`.

Guarantee: the topic holds the log as the SQL store holds it — entries in seq order, each signed checkpoint
after the entries it covers — so an auditor can verify from Kafka alone (`pdo audit verify --from-topic`).
Only the audit service may write the topic (ACLs declared in topics/audit.yaml); it is never compacted and
never expires.

Publishing (`publish_tail`) waits for the broker's acknowledgements, then records how far it got in SQL
(`audit_mirror_progress`). A crash between the two publishes that tail again, so a reader may meet an entry
twice; `read_topic` keeps the first copy and reports a later copy that differs, an entry out of order or a
gap, as the problems they are. One writer at a time: the worker mirrors from its leader's timer.

Reading needs no other pdo service: the values are decoded with the schemas shipped in `schemas/audit/`,
chosen by the record's key (`entry:<seq>` or `checkpoint:<size>`), not through the schema registry.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

import fastavro
from kafka import TopicPartition

from pdo.audit.checkpoints import Checkpoint
from pdo.audit.store import AuditStore, LoggedEntry
from pdo.core import schemas, topics
from pdo.core.codec import HEADER
from pdo.core.config import Settings
from pdo.core.events import EventPublisher, OutgoingEvent
from pdo.core.kafka import consumer
from pdo.core.names import Event
from pdo.core.topics import TopicId

ACTOR = "service.audit"
# At most this many entries per pass: a long backlog goes out over several timer ticks, none of them long.
MAX_ENTRIES_PER_PASS = 2000
_EVENT_IDS = uuid.UUID("6f0c7d1e-4f0b-4b8e-9d35-5c0a7f3e1a42")


def entry_key(seq: int) -> str:
    return f"entry:{seq}"


def checkpoint_key(size: int) -> str:
    return f"checkpoint:{size}"


def entry_event(origin: str, entry: LoggedEntry) -> dict[str, Any]:
    occurred_at = datetime.fromisoformat(json.loads(entry.body)["occurred_at"].replace("Z", "+00:00"))
    return {
        "event_id": str(uuid.uuid5(_EVENT_IDS, f"{origin}/{entry_key(entry.seq)}")),
        "occurred_at": occurred_at,
        "actor": ACTOR,
        "origin": origin,
        "seq": entry.seq,
        "body": entry.body,
        "leaf_hash": entry.leaf_hash,
    }


def checkpoint_event(signed: Checkpoint) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid5(_EVENT_IDS, f"{signed.origin}/{checkpoint_key(signed.size)}")),
        "occurred_at": signed.signed_at,
        "actor": ACTOR,
        "origin": signed.origin,
        "size": signed.size,
        "root": signed.root,
        "key_id": signed.key_id,
        "signature": signed.signature,
    }


def tail_events(
    origin: str, fresh: Sequence[LoggedEntry], signed: Sequence[Checkpoint]
) -> list[OutgoingEvent]:
    """The records to publish, in the topic's order: each checkpoint right after the last entry it covers
    (or first, when its entries went out in an earlier pass)."""
    ordered: list[tuple[tuple[int, int], OutgoingEvent]] = [
        (
            (entry.seq, 0),
            OutgoingEvent(Event.AUDIT_ENTRY_LOGGED, entry_event(origin, entry), entry_key(entry.seq)),
        )
        for entry in fresh
    ]
    ordered += [
        (
            (checkpoint.size - 1, 1),
            OutgoingEvent(
                Event.AUDIT_CHECKPOINT_SIGNED, checkpoint_event(checkpoint), checkpoint_key(checkpoint.size)
            ),
        )
        for checkpoint in signed
    ]
    return [outgoing for _, outgoing in sorted(ordered, key=lambda pair: pair[0])]


def publish_tail(store: AuditStore, publisher: EventPublisher, origin: str) -> int:
    """Publish what the mirror does not hold yet (entries first in seq order, at most MAX_ENTRIES_PER_PASS);
    returns how many records went out. Blocking; raises Unavailable when the broker does not take them."""
    entries_upto, checkpoints_upto = store.mirror_progress()
    fresh = store.entries(entries_upto, entries_upto + MAX_ENTRIES_PER_PASS)
    mirrored_upto = fresh[-1].seq + 1 if fresh else entries_upto
    # A checkpoint goes out only once every entry it covers has.
    signed = [c for c in store.checkpoints() if checkpoints_upto < c.size <= mirrored_upto]
    outgoing = tail_events(origin, fresh, signed)
    if not outgoing:
        return 0
    publisher.publish_all(TopicId.AUDIT, outgoing)
    store.set_mirror_progress(mirrored_upto, signed[-1].size if signed else checkpoints_upto)
    return len(outgoing)


@dataclass
class Mirrored:
    """The log as read back from the topic, and what was wrong with the topic itself."""

    entries: list[LoggedEntry] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TopicRecord:
    """What the reader needs of one Kafka record: where it was, its key and value bytes."""

    offset: int
    key: bytes | None
    value: bytes | None


def fetch_topic(settings: Settings) -> Iterator[TopicRecord]:
    """Every record of the mirror topic from its start to its end as of the call (committed ones only)."""
    partition = TopicPartition(topics.name(TopicId.AUDIT, settings), 0)
    reader = consumer(settings, enable_auto_commit=False, isolation_level="read_committed")
    try:
        reader.assign([partition])
        end = reader.end_offsets([partition])[partition]
        reader.seek_to_beginning(partition)
        while (reader.position(partition) or 0) < end:
            for batch in reader.poll(timeout_ms=1000).values():
                yield from (TopicRecord(r.offset, r.key, r.value) for r in batch if r.offset < end)
    finally:
        reader.close()


def read_topic(records: Iterable[TopicRecord]) -> Mirrored:
    """The entries and checkpoints of the mirror, in order; a repeated copy equal to the first is dropped
    (a republished tail), anything else that breaks the log's order is a problem named with its offset."""
    mirrored = Mirrored()
    by_seq: dict[int, LoggedEntry] = {}
    by_size: dict[int, Checkpoint] = {}
    for record in records:
        try:
            kind, number, value = _decode(record)
        except ValueError as error:
            mirrored.problems.append(f"offset {record.offset}: {error}")
            continue
        if kind == "entry":
            _take_entry(mirrored, by_seq, record.offset, number, value)
        else:
            _take_checkpoint(mirrored, by_size, record.offset, number, value)
    return mirrored


def _take_entry(
    mirrored: Mirrored, by_seq: dict[int, LoggedEntry], offset: int, seq: int, value: dict[str, Any]
) -> None:
    entry = LoggedEntry(seq=value["seq"], body=value["body"], leaf_hash=bytes(value["leaf_hash"]))
    if entry.seq != seq:
        mirrored.problems.append(f"offset {offset}: key says entry {seq}, the value is entry {entry.seq}")
    elif seq in by_seq:
        if by_seq[seq] != entry:
            mirrored.problems.append(f"offset {offset}: a second, different copy of entry {seq}")
    elif seq != len(mirrored.entries):
        mirrored.problems.append(
            f"offset {offset}: entry {seq} where entry {len(mirrored.entries)} was due (missing or reordered)"
        )
    else:
        by_seq[seq] = entry
        mirrored.entries.append(entry)


def _take_checkpoint(
    mirrored: Mirrored, by_size: dict[int, Checkpoint], offset: int, size: int, value: dict[str, Any]
) -> None:
    signed = Checkpoint(
        origin=value["origin"],
        size=value["size"],
        root=bytes(value["root"]),
        signed_at=_aware(value["occurred_at"]),
        signature=bytes(value["signature"]),
        key_id=value["key_id"],
    )
    if signed.size != size:
        mirrored.problems.append(
            f"offset {offset}: key says checkpoint {size}, the value is checkpoint {signed.size}"
        )
    elif size in by_size:
        if by_size[size] != signed:
            mirrored.problems.append(f"offset {offset}: a second, different copy of checkpoint {size}")
    else:
        by_size[size] = signed
        mirrored.checkpoints.append(signed)


def _decode(record: TopicRecord) -> tuple[str, int, dict[str, Any]]:
    key = (record.key or b"").decode("utf-8", "replace")
    kind, _, number = key.partition(":")
    schema_name = {"entry": Event.AUDIT_ENTRY_LOGGED, "checkpoint": Event.AUDIT_CHECKPOINT_SIGNED}.get(kind)
    if schema_name is None or not number.isdigit():
        raise ValueError(f"key {key[:60]!r} is neither entry:<seq> nor checkpoint:<size>")
    data = record.value or b""
    if len(data) <= HEADER.size or data[0] != 0:
        raise ValueError("the value is not Confluent-framed Avro")
    try:
        value = fastavro.schemaless_reader(io.BytesIO(data[HEADER.size :]), _parsed(schema_name), None)
    except Exception as error:  # fastavro raises many kinds on bytes that do not fit the schema
        raise ValueError(f"the value does not decode as {schema_name}: {type(error).__name__}") from None
    assert isinstance(value, dict)
    return kind, int(number), value


@cache
def _parsed(schema_name: str) -> Any:
    return fastavro.parse_schema(json.loads(str(schemas.get(schema_name))))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
