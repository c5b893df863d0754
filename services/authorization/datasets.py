"""The authorization worker's own view of the catalog: datasets projected from pdo.catalog into its tables.

The worker never reads the catalog's tables. The `enforce_catalog_changes` agent applies every catalog
event to `authz_datasets` (`ProjectedDatasets.apply`) before acting on it, and records in
`authz_catalog_progress` how far it has read each partition. An event changes a row only if it carries a
later state (version, then retirement: `pdo.catalog.projection.is_newer`), so redeliveries, replays and
two writers racing are harmless.

**Ordering rule.** A view fed from another topic may lag behind it: the request for a dataset can be read
before the dataset's registration has been projected (another partition, another worker, a slow agent).
So `get` never concludes "unknown" from the view alone: on a miss it first catches the view up to the
current end of pdo.catalog (`catch_up`: reads the topic from the recorded progress, or its beginning, to
the end offsets it has now, applying every event), then looks again; only then is the dataset unknown.
A dataset that is in the view is taken as the view holds it: a later change reaches the worker as its
catalog event, which re-examines the dataset's grants (`AuthorizationService.enforce_dataset_terms`).

Blocking (SQL, the broker): call it off the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from pdo.authorization import tables as t
from pdo.catalog.public import (
    CATALOG_EVENTS,
    Dataset,
    InvalidCatalogEvent,
    Position,
    SchemaSource,
    dataset_from_row,
    dataset_in_event,
    dataset_to_row,
    is_newer,
    reader,
    records_to_end,
)
from pdo.core import topics
from pdo.core.codec import AvroCodec, CodecError
from pdo.core.config import Settings
from pdo.core.errors import NotFound
from pdo.core.names import Event
from pdo.core.topics import TopicId

log = logging.getLogger(__name__)


class ProjectedDatasets:
    """Datasets as pdo.catalog says they are; the worker's `DatasetLookup` (see the ordering rule)."""

    def __init__(
        self, engine: Engine, registry: SchemaSource, catch_up: Callable[[ProjectedDatasets], None]
    ) -> None:
        self.engine = engine
        self.registry = registry
        self._catch_up = catch_up

    def get(self, dataset_id: str) -> Dataset:
        """The dataset, after catching up with pdo.catalog if the view does not hold it; else NotFound."""
        found = self.held(dataset_id)
        if found is None:
            self.catch_up()
            found = self.held(dataset_id)
        if found is None:
            raise NotFound(f"no dataset {dataset_id!r} on pdo.catalog")
        return found

    def catch_up(self) -> None:
        """Apply what pdo.catalog holds beyond the view's progress, up to the topic's current end."""
        self._catch_up(self)

    def held(self, dataset_id: str) -> Dataset | None:
        """What the view holds now, without catching up."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.datasets).where(t.datasets.c.dataset_id == dataset_id)).first()
        return None if row is None else dataset_from_row(row)

    def apply(self, schema_name: str, value: dict[str, Any], position: Position | None) -> bool:
        """Bring the view up to this catalog event; True if a row changed.

        An event without a snapshot (written before snapshots existed) retires what the view holds if it is
        a retirement, and is otherwise passed over (its whole entry is unknown). InvalidCatalogEvent for an
        event that can never be applied.
        """
        if schema_name not in CATALOG_EVENTS:
            raise InvalidCatalogEvent(f"{schema_name} is not a catalog event", reason_code="SCHEMA_MISMATCH")
        dataset = dataset_in_event(schema_name, value, self.registry)
        try:
            return self._write(schema_name, value["dataset_id"], dataset, position)
        except IntegrityError:  # another writer inserted the row or the progress meanwhile: compare again
            return self._write(schema_name, value["dataset_id"], dataset, position)

    def _write(
        self, schema_name: str, dataset_id: str, dataset: Dataset | None, position: Position | None
    ) -> bool:
        with self.engine.begin() as conn:
            if dataset is not None:
                changed = _upsert(conn, dataset)
            else:
                changed = schema_name == Event.DATASET_RETIRED and _retire(conn, dataset_id)
            if position is not None:
                _advance(conn, position)
        return changed

    def progress(self, topic: str) -> dict[int, int]:
        """Per partition of `topic`, the offset after the last event the view applied."""
        query = sa.select(t.catalog_progress).where(t.catalog_progress.c.topic == topic)
        with self.engine.connect() as conn:
            return {row.partition: row.next_offset for row in conn.execute(query)}


def _upsert(conn: Connection, dataset: Dataset) -> bool:
    row = conn.execute(
        sa.select(t.datasets.c.version, t.datasets.c.retired).where(
            t.datasets.c.dataset_id == dataset.dataset_id
        )
    ).first()
    columns = dataset_to_row(dataset)
    if row is None:
        conn.execute(sa.insert(t.datasets).values(**columns))
        return True
    if not is_newer(dataset.version, dataset.retired, row):
        return False
    conn.execute(sa.update(t.datasets).where(t.datasets.c.dataset_id == dataset.dataset_id).values(**columns))
    return True


def _retire(conn: Connection, dataset_id: str) -> bool:
    result = conn.execute(
        sa.update(t.datasets)
        .where(t.datasets.c.dataset_id == dataset_id, t.datasets.c.retired == sa.false())
        .values(retired=True)
    )
    return result.rowcount == 1


def _advance(conn: Connection, position: Position) -> None:
    """Record that the view has read `position`; progress only moves forward."""
    key = (t.catalog_progress.c.topic == position.topic) & (
        t.catalog_progress.c.partition == position.partition
    )
    updated = conn.execute(
        sa.update(t.catalog_progress)
        .where(key, t.catalog_progress.c.next_offset <= position.offset)
        .values(next_offset=position.offset + 1)
    )
    if updated.rowcount == 0 and conn.execute(sa.select(t.catalog_progress).where(key)).first() is None:
        conn.execute(
            sa.insert(t.catalog_progress).values(
                topic=position.topic, partition=position.partition, next_offset=position.offset + 1
            )
        )


class CatalogCatchUp:
    """Reads pdo.catalog from the view's progress to the topic's current end into the view. Blocking."""

    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        self.settings = settings
        self.codec = codec
        self.topic = topics.name(TopicId.CATALOG, settings)

    def __call__(self, view: ProjectedDatasets) -> None:
        consumer = reader(self.settings)
        try:
            start = view.progress(self.topic)
            for record in records_to_end(consumer, self.topic, self.settings.kafka_timeout_s, start):
                self._apply(view, record)
        finally:
            consumer.close()

    def _apply(self, view: ProjectedDatasets, record: Any) -> None:
        position = Position(record.topic, record.partition, record.offset)
        try:
            decoded = self.codec.decode(record.value)
            view.apply(decoded.schema_name, decoded.value, position)
        except (CodecError, InvalidCatalogEvent) as error:
            # The agent dead-letters it when it reads it; here it is only passed over.
            log.warning(
                "catching up: %s[%d]@%d passed over: %s", record.topic, record.partition, record.offset, error
            )
            with view.engine.begin() as conn:
                _advance(conn, position)
