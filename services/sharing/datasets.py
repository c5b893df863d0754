"""The sharing worker's own view of the catalog: each dataset's latest state, in memory, from pdo.catalog.

The worker never reads the catalog's tables (it has no database at all). The follower (app.py) reads
pdo.catalog — compacted, so it holds each dataset's latest events — from the beginning into a
`DatasetView`. An event replaces what the view holds only if it carries a later state (version, then
retirement: `pdo.catalog.projection.is_newer`), so reading a partition again is harmless.

An event the view cannot use (it does not decode, names a schema the registry never had, or meets a bug)
is passed over, logged and counted: the catalog worker dead-letters it, and the dataset stays as its last readable
event said — as the catalog's own table does. A registry that does not answer is retried (pdo.core.retry).

**Ordering rule.** The view may lag behind pdo.catalog: a feed record can arrive before the registration
of its dataset has been read. So the view alone never decides that a dataset is unknown: before the feed
agent hands over a record whose dataset the view does not hold, it catches the view up to the current end
of pdo.catalog (`know_datasets`); only a dataset still missing then is unknown (UNKNOWN_DATASET).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any

from prometheus_client import Counter

from pdo.catalog.public import (
    CATALOG_EVENTS,
    Dataset,
    InvalidCatalogEvent,
    SchemaSource,
    dataset_in_event,
    is_newer,
)
from pdo.core.codec import AvroCodec, CodecError
from pdo.core.errors import NotFound
from pdo.core.names import Event
from pdo.core.retry import is_transient

log = logging.getLogger(__name__)

CATALOG_EVENTS_READ = Counter(
    "pdo_sharing_catalog_events_total",
    "Catalog events the sharing worker's follower read, by outcome (applied, unchanged, passed_over)",
    ["outcome"],
)


class DatasetView:
    """Datasets by id as pdo.catalog says they are. Written by the follower, read by the feed handler."""

    def __init__(self) -> None:
        self._datasets: dict[str, Dataset] = {}

    def __contains__(self, dataset_id: object) -> bool:
        return dataset_id in self._datasets

    def __len__(self) -> int:
        return len(self._datasets)

    def get(self, dataset_id: str) -> Dataset:
        """The dataset as the view holds it; NotFound if it holds none (see the ordering rule)."""
        try:
            return self._datasets[dataset_id]
        except KeyError:
            raise NotFound(f"no dataset {dataset_id!r} on pdo.catalog") from None

    def apply(self, schema_name: str, value: dict[str, Any], registry: SchemaSource) -> bool:
        """Bring the view up to one decoded catalog event; True if it changed. Blocking (the registry)."""
        if schema_name not in CATALOG_EVENTS:
            raise InvalidCatalogEvent(f"{schema_name} is not a catalog event", reason_code="SCHEMA_MISMATCH")
        dataset = dataset_in_event(schema_name, value, registry)
        held = self._datasets.get(value["dataset_id"])
        if dataset is None:  # an event from before snapshots: only a retirement can be applied
            if schema_name != Event.DATASET_RETIRED or held is None or held.retired:
                return False
            dataset = replace(held, retired=True)
        if held is not None and not is_newer(dataset.version, dataset.retired, held):
            return False
        self._datasets[dataset.dataset_id] = dataset
        return True

    def apply_message(self, codec: AvroCodec, value: bytes | None, where: str) -> bool:
        """Decode and apply one pdo.catalog message; an unusable one is passed over. Blocking."""
        try:
            decoded = codec.decode(value)
            changed = self.apply(decoded.schema_name, decoded.value, codec.registry)
        except Exception as error:
            if is_transient(error):
                raise  # the registry does not answer: the follower retries this event
            if isinstance(error, CodecError | InvalidCatalogEvent):
                log.warning("%s passed over (the catalog worker dead-letters it): %s", where, error)
            else:  # a bug must not stop the follower (every fence waits for it)
                log.exception("%s passed over", where)
            CATALOG_EVENTS_READ.labels("passed_over").inc()
            return False
        CATALOG_EVENTS_READ.labels("applied" if changed else "unchanged").inc()
        return changed


async def know_datasets(
    view: DatasetView, dataset_ids: Iterable[str | None], catch_up: Callable[[], Awaitable[object]]
) -> None:
    """The ordering rule: if the view lacks any of these datasets, catch it up to pdo.catalog's end once."""
    if any(dataset_id is not None and dataset_id not in view for dataset_id in dataset_ids):
        await catch_up()
