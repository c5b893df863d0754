"""The catalog's public module: the one module of `pdo.catalog` other packages may import (an import
contract in `pyproject.toml` enforces it).

It offers what the catalog shares without sharing its tables: the dataset as catalog events describe it
(`Dataset`, and `dataset_from_snapshot` to read one from a DatasetRegistered/DatasetUpdated snapshot), the
shapes of the commands the gateway accepts for it (`DatasetRegistration`, `DatasetChanges`), and its
command side (`CatalogService`, `get_dataset`, `list_datasets`), which runs against the catalog's own
tables and so only in a process holding the catalog's database privileges (the gateway, the catalog
worker, the operator's CLI).

A service that only needs to know datasets follows pdo.catalog and keeps its own view (authorization and
sharing do): the catalog events (`CATALOG_EVENTS`), how to read the dataset an event carries
(`dataset_in_event`, `InvalidCatalogEvent`, `SchemaSource`), which of two versions wins (`is_newer`), how to
read the topic to its end (`reader`, `records_to_end`, `Position`), and a dataset's row form
(`dataset_to_row`, `dataset_from_row`) for a view kept in a table of the follower's own.
"""

from pdo.catalog.mapping import dataset_from_row, dataset_from_snapshot, dataset_to_row
from pdo.catalog.models import Dataset, DatasetChanges, DatasetRegistration
from pdo.catalog.projection import (
    CATALOG_EVENTS,
    InvalidCatalogEvent,
    Position,
    SchemaSource,
    dataset_in_event,
    is_newer,
    reader,
    records_to_end,
)
from pdo.catalog.service import CatalogService, get_dataset, list_datasets
from pdo.catalog.tables import metadata

__all__ = [
    "CATALOG_EVENTS",
    "CatalogService",
    "InvalidCatalogEvent",
    "Position",
    "SchemaSource",
    "dataset_from_row",
    "dataset_in_event",
    "dataset_to_row",
    "is_newer",
    "reader",
    "records_to_end",
    "Dataset",
    "DatasetChanges",
    "DatasetRegistration",
    "dataset_from_snapshot",
    "get_dataset",
    "list_datasets",
    "metadata",
]
