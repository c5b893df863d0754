"""What every delivered record carries and how a delivery is named, shared by the service that delivers
(sharing) and those that count and check deliveries (metering, billing's reconciliation).

- `PROVENANCE_FIELD`: the field of every tenant record holding its `pdo.types.v1.Provenance`
  (`schemas/types/Provenance.avsc`: source dataset, feed position, grant, masking applied);
- `delivery_id`: the id of delivering one source record under one grant, equal on redelivery, which the
  ledger's exactly-once rests on and reconciliation recomputes from a tenant record's provenance;
- `delivery_root`: the RFC 6962 Merkle root of a set of delivery ids, which metering's delivery digests
  publish and a tenant recomputes from the records it received (`pdo audit verify-statement`).

Depends on `pdo.core.schemas` and `pdo.core.merkle` only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from pdo.core import merkle, schemas

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


def delivery_root(delivery_ids: Iterable[str]) -> bytes:
    """RFC 6962 root over the sorted delivery ids, UTF-8 encoded: one set gives one root, in any order."""
    return merkle.root([merkle.leaf_hash(delivery.encode("utf-8")) for delivery in sorted(delivery_ids)])
