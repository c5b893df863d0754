"""What every delivered record carries and how a delivery is named, shared by the service that delivers
(sharing) and those that count and check deliveries (metering, billing's reconciliation).

- `PROVENANCE_FIELD`: the field of every tenant record holding its `pdo.types.v1.Provenance`
  (`schemas/types/Provenance.avsc`: source dataset, feed position, grant, masking applied);
- `delivery_id`: the id of delivering one source record under one grant, equal on redelivery, which the
  ledger's exactly-once rests on and reconciliation recomputes from a tenant record's provenance.

Depends on `pdo.core.schemas` only.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pdo.core import schemas

PROVENANCE_FIELD = "pdo_provenance"
PROVENANCE_TYPE = "pdo.types.v1.Provenance"
DELIVERY_ID_CHARS = 32


def provenance_schema() -> dict[str, Any]:
    """The Provenance record's Avro schema as JSON, to embed in a tenant record schema (a fresh copy)."""
    schema: dict[str, Any] = json.loads(json.dumps(schemas.get(PROVENANCE_TYPE).to_json()))  # type: ignore[no-untyped-call]  # avro's to_json is unannotated
    return schema


def delivery_id(source_topic: str, source_partition: int, source_offset: int, grant_id: str) -> str:
    """Id of delivering one source record under one grant: unique per (record, grant), equal on redelivery."""
    # Length-prefixed parts, so no two different tuples can join into the same text.
    parts = (source_topic, str(source_partition), str(source_offset), grant_id)
    text = "".join(f"{len(part)}:{part}" for part in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DELIVERY_ID_CHARS]
