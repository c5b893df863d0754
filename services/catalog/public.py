"""The catalog's public module: the one module of `pdo.catalog` other packages may import (an import
contract in `pyproject.toml` enforces it).

It offers what the catalog shares without sharing its tables: the dataset as catalog events describe it
(`Dataset`, and `dataset_from_snapshot` to read one from a DatasetRegistered/DatasetUpdated snapshot), the
shapes of the commands the gateway accepts for it (`DatasetRegistration`, `DatasetChanges`), and its
command side (`CatalogService`, `get_dataset`, `list_datasets`), which runs against the catalog's own
tables and so only in a process holding the catalog's database privileges (the gateway, the catalog
worker, the operator's CLI). A service that only needs to know datasets follows pdo.catalog instead.
"""

from pdo.catalog.mapping import dataset_from_snapshot
from pdo.catalog.models import Dataset, DatasetChanges, DatasetRegistration
from pdo.catalog.service import CatalogService, get_dataset, list_datasets
from pdo.catalog.tables import metadata

__all__ = [
    "CatalogService",
    "Dataset",
    "DatasetChanges",
    "DatasetRegistration",
    "dataset_from_snapshot",
    "get_dataset",
    "list_datasets",
    "metadata",
]
