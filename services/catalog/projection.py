"""The catalog projection: catalog events into catalog rows, and a rebuild of every row from the topic.

Each event carries the whole entry (DatasetRegistered directly, DatasetUpdated and DatasetRetired in
their `dataset` snapshot), so applying one is an upsert of that entry. An event changes the row only
if it is newer — a higher version, or the retirement of the version the row holds — so replays,
redeliveries and the service's own rows (written before the event comes back) are all harmless.
The snapshot names the record schema by registry id; its text comes from the registry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from pdo.catalog import mapping
from pdo.catalog.models import Dataset
from pdo.catalog.tables import datasets
from pdo.core import kafka, topics
from pdo.core.codec import AvroCodec, CodecError
from pdo.core.config import Settings
from pdo.core.errors import Unavailable
from pdo.core.names import Event
from pdo.core.registry_client import RegistryClient, RegistryError, SchemaIdNotFound
from pdo.core.topics import TopicId

log = logging.getLogger(__name__)

CATALOG_EVENTS = frozenset({Event.DATASET_REGISTERED, Event.DATASET_UPDATED, Event.DATASET_RETIRED})
# Upsert attempts when another writer inserts or changes the same row between our read and our write.
ATTEMPTS = 5


class SchemaSource(Protocol):
    """Where record schema texts come from: a RegistryClient, or a stand-in in unit tests."""

    def schema_by_id(self, schema_id: int) -> str: ...


class InvalidCatalogEvent(Exception):
    """An event that decodes but cannot be applied; `reason_code` is its dead-letter reason."""

    def __init__(self, message: str, reason_code: str = "INVALID_EVENT") -> None:
        super().__init__(message)
        self.reason_code = reason_code


@dataclass(frozen=True)
class Position:
    """Where an event was read: recorded on the row so one can tell which event it reflects."""

    topic: str
    partition: int
    offset: int


def apply_catalog_event(
    engine: Engine,
    schema_name: str,
    value: dict[str, Any],
    *,
    registry: SchemaSource,
    position: Position | None = None,
) -> bool:
    """Bring the dataset's row up to this event; True if the row changed, False if it was already as new.

    Raises InvalidCatalogEvent for an event that can never be applied (dead-letter it), and Unavailable
    when the registry cannot be reached (retry later). Blocking: call it off the event loop.
    """
    if schema_name not in CATALOG_EVENTS:
        raise InvalidCatalogEvent(f"{schema_name} is not a catalog event", reason_code="SCHEMA_MISMATCH")
    dataset = dataset_in_event(schema_name, value, registry)
    if dataset is None:
        return _apply_without_snapshot(engine, schema_name, value, position)
    columns = {
        **mapping.dataset_to_row(dataset),
        **_stamp(value, position),
        "retired_reason": value.get("reason") if schema_name == Event.DATASET_RETIRED else None,
    }
    return _upsert(engine, dataset, columns)


def dataset_in_event(schema_name: str, value: dict[str, Any], registry: SchemaSource) -> Dataset | None:
    """The whole dataset a catalog event carries, its record schema fetched by id; None for an event written
    before snapshots existed. InvalidCatalogEvent for a schema id the registry never had, Unavailable when
    the registry does not answer."""
    entry = _entry(schema_name, value)
    if entry is None:
        return None
    return mapping.dataset_from_snapshot(entry, _record_schema(registry, entry["schema_id"]))


def _entry(schema_name: str, value: dict[str, Any]) -> dict[str, Any] | None:
    """The whole catalog entry the event carries, or None for events written before snapshots existed."""
    if schema_name == Event.DATASET_REGISTERED:
        return {**value, "retired": False}
    return value.get("dataset")


def _record_schema(registry: SchemaSource, schema_id: int) -> str:
    try:
        return registry.schema_by_id(schema_id)
    except SchemaIdNotFound as error:
        raise InvalidCatalogEvent(str(error), reason_code="UNKNOWN_SCHEMA") from None
    except RegistryError as error:
        raise Unavailable(error.message, hint=error.hint) from None


def _stamp(value: dict[str, Any], position: Position | None) -> dict[str, Any]:
    return {
        "updated_at": value["occurred_at"],
        "last_event_id": value["event_id"],
        "last_event_partition": position.partition if position else None,
        "last_event_offset": position.offset if position else None,
    }


def is_newer(version: int, retired: bool, held: Any) -> bool:
    """Whether (version, retired) is a later state than `held` (a row or a Dataset) of the same dataset."""
    # Retirement keeps the version and is final, so (version, retired) orders every state of a dataset.
    return (version, retired) > (held.version, bool(held.retired))


def _upsert(engine: Engine, dataset: Dataset, columns: dict[str, Any]) -> bool:
    for _attempt in range(ATTEMPTS):
        try:
            with engine.begin() as connection:
                row = _select_row(connection, dataset.dataset_id)
                if row is None:
                    connection.execute(sa.insert(datasets).values(**columns))
                    return True
                if not is_newer(dataset.version, dataset.retired, row):
                    return False
                if _replace(connection, row, columns):
                    return True
        except IntegrityError:
            pass  # inserted by another writer meanwhile: read it again and compare versions
    raise Unavailable(f"dataset {dataset.dataset_id!r} kept changing under the projection; retry later")


def _replace(connection: Connection, row: Any, columns: dict[str, Any]) -> bool:
    """Overwrite `row` only if it is still as read (same version and retirement)."""
    result = connection.execute(
        sa.update(datasets)
        .where(
            datasets.c.dataset_id == row.dataset_id,
            datasets.c.version == row.version,
            datasets.c.retired == row.retired,
        )
        .values(**columns)
    )
    return result.rowcount == 1


def _select_row(connection: Connection, dataset_id: str) -> Any:
    return connection.execute(sa.select(datasets).where(datasets.c.dataset_id == dataset_id)).first()


def _apply_without_snapshot(
    engine: Engine, schema_name: str, value: dict[str, Any], position: Position | None
) -> bool:
    """Older events without a snapshot: a retirement marks the row it finds; an update cannot be
    replayed faithfully (its schema text and unchanged fields are unknown) and is skipped with a note."""
    if schema_name == Event.DATASET_UPDATED:
        log.warning(
            "skipping DatasetUpdated %s of %s: it has no snapshot", value["event_id"], value["dataset_id"]
        )
        return False
    with engine.begin() as connection:
        result = connection.execute(
            sa.update(datasets)
            .where(datasets.c.dataset_id == value["dataset_id"], datasets.c.retired == sa.false())
            .values(retired=True, retired_reason=value.get("reason"), **_stamp(value, position))
        )
    return result.rowcount == 1


# ---------------------------------------------------------------- rebuild


@dataclass
class RebuildReport:
    """What a rebuild read: events applied, events already reflected, and events it could not use."""

    applied: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)


def rebuild_from_topic(
    settings: Settings,
    engine: Engine,
    timeout_s: float = 30.0,
    *,
    registry: RegistryClient | None = None,
    only_dataset_ids: Collection[str] | None = None,
) -> RebuildReport:
    """Read pdo.catalog from its beginning to its current end and apply every event (idempotent).

    For a new worker, or one whose database was wiped. Reads without a consumer group, so no group's
    offsets move. `only_dataset_ids` limits it to those keys (tests share the topic with other tests).
    Events it cannot decode or apply are skipped and reported: the stream agent dead-lettered them.
    """
    own_registry = registry is None
    registry = registry or RegistryClient.for_settings(settings)
    codec = AvroCodec(registry)
    consumer = reader(settings)
    report = RebuildReport()
    try:
        for record in records_to_end(consumer, topics.name(TopicId.CATALOG, settings), timeout_s):
            key = record.key.decode(errors="replace") if record.key is not None else None
            if only_dataset_ids is not None and key not in only_dataset_ids:
                continue
            _rebuild_one(engine, codec, registry, record, report)
    finally:
        consumer.close()
        if own_registry:
            registry.close()
    log.info(
        "catalog rebuilt: %d applied, %d unchanged, %d skipped",
        report.applied,
        report.unchanged,
        len(report.skipped),
    )
    return report


def reader(settings: Settings) -> KafkaConsumer:
    """A consumer outside any consumer group, for reading pdo.catalog with `records_to_end`."""
    return kafka.consumer(
        settings,
        group_id=None,
        enable_auto_commit=False,
        request_timeout_ms=settings.kafka_timeout_s * 1000 + 1000,
    )


def records_to_end(
    consumer: KafkaConsumer, topic: str, timeout_s: float, start: Mapping[int, int] | None = None
) -> Iterator[Any]:
    """Every record of `topic` up to the end offsets it had when we started, from the beginning or, for
    the partitions `start` names, from the offset it gives."""
    numbers = consumer.partitions_for_topic(topic)
    if not numbers:
        raise Unavailable(f"topic {topic} does not exist", hint="create it with `pdo topics apply`")
    partitions = [TopicPartition(topic, number) for number in sorted(numbers)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    for partition in partitions:
        if start and partition.partition in start:
            consumer.seek(partition, start[partition.partition])
    end = consumer.end_offsets(partitions)
    deadline = time.monotonic() + timeout_s
    # Positions, not record offsets, mark progress: compaction leaves gaps in a partition's offsets. A position
    # not known yet (None) counts as 0.
    while any((consumer.position(partition) or 0) < end[partition] for partition in partitions):
        if time.monotonic() > deadline:
            raise Unavailable(f"reading {topic} to its end took longer than {timeout_s} s")
        for batch in consumer.poll(timeout_ms=500).values():
            for record in batch:
                if record.offset < end[TopicPartition(record.topic, record.partition)]:
                    yield record


def _rebuild_one(
    engine: Engine, codec: AvroCodec, registry: SchemaSource, record: Any, report: RebuildReport
) -> None:
    where = f"{record.topic}[{record.partition}]@{record.offset}"
    try:
        decoded = codec.decode(record.value)
        position = Position(record.topic, record.partition, record.offset)
        changed = apply_catalog_event(
            engine, decoded.schema_name, decoded.value, registry=registry, position=position
        )
    except (CodecError, InvalidCatalogEvent) as error:
        report.skipped.append(f"{where}: {error}")
        return
    if changed:
        report.applied += 1
    else:
        report.unchanged += 1
