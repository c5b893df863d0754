"""The aggregate grants the aggregation service serves, as pdo.authorizations tells them.

Only grants of kind AGGREGATE (or a kind this version does not know, which reads as AGGREGATE and then has
no spec it can compute: nothing is published for it) are kept. Every snapshot carries the whole grant, so the
newest version of each grant wins and a redelivered or stale event changes nothing. A grant delivers while its
current state is ACTIVE: a suspension, revocation or expiry stops every window not yet closed (their state is
dropped unpublished at their close), so nothing is published under a grant after it stopped.

Derived data products (pdo.products) are followed the same way, from the catalog: each product is a grant of
id `product:<product id>` on its source dataset, active while the product is not retired, whose windows go
to the product's feed (state.py) rather than to a tenant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pdo.core.ids import PRODUCTS_PROVIDER
from pdo.core.names import Event
from pdo.core.vocabulary import (
    AggregateSpec,
    GrantKind,
    ProductSpec,
    aggregate_spec_from_mapping,
    grant_kind_from_avro,
)

# Derived data products are computed as grants of this id prefix (no grant id has a colon).
PRODUCT_GRANT_PREFIX = "product:"

TRANSITIONS = {
    Event.AUTHORIZATION_SUSPENDED,
    Event.AUTHORIZATION_RESUMED,
    Event.AUTHORIZATION_REVOKED,
    Event.AUTHORIZATION_EXPIRED,
}


@dataclass(frozen=True)
class AggregateGrant:
    grant_id: str
    tenant_id: str
    dataset_id: str
    spec: AggregateSpec
    valid_from: datetime
    valid_until: datetime
    active: bool
    version: int
    # A derived data product computed like a grant (its id is PRODUCT_GRANT_PREFIX + the product's id): its
    # windows go to the product's feed, its source records are filtered, and its k is at least its own.
    product: ProductSpec | None = None

    def counts(self, moment: datetime) -> bool:
        """Whether a record of event time `moment` counts under this grant (active, inside its validity)."""
        return self.active and self.valid_from <= moment < self.valid_until

    def admits(self, record: Mapping[str, Any]) -> bool:
        """Whether a record passes the product's filter (a grant's records all do)."""
        return self.product is None or self.product.admits(record)

    def min_group_size(self, dataset_k: int) -> int:
        """k for this grant's windows: the dataset's (with the operator's floor), or the product's if larger."""
        return max(dataset_k, self.product.min_group_size if self.product is not None else 0)


class AggregateGrants:
    """Aggregate grants by id; the newest version of each wins."""

    def __init__(self) -> None:
        self._grants: dict[str, AggregateGrant] = {}

    def apply(self, schema_name: str, value: Mapping[str, Any]) -> AggregateGrant | None:
        """Apply one authorization event; the grant as it now stands if the event changed it."""
        if schema_name == Event.AUTHORIZATION_GRANTED:
            snapshot: Mapping[str, Any] | None = {**value, "status": "ACTIVE", "version": 1}
        elif schema_name in TRANSITIONS:
            snapshot = value.get("grant")
        else:
            return None
        if snapshot is None or grant_kind_from_avro(snapshot.get("kind")) is not GrantKind.AGGREGATE:
            return None
        spec = aggregate_spec_from_mapping(snapshot.get("aggregate"))
        if spec is None:
            return None  # a kind this version does not know: no spec it could compute
        grant = AggregateGrant(
            grant_id=snapshot["grant_id"],
            tenant_id=snapshot["tenant_id"],
            dataset_id=snapshot["dataset_id"],
            spec=spec,
            valid_from=_utc(snapshot["valid_from"]),
            valid_until=_utc(snapshot["valid_until"]),
            active=snapshot["status"] == "ACTIVE",
            version=int(snapshot["version"]),
        )
        held = self._grants.get(grant.grant_id)
        if held is not None and held.version >= grant.version:
            return None
        self._grants[grant.grant_id] = grant
        return grant

    def apply_product(self, dataset_id: str, spec: ProductSpec, retired: bool, version: int) -> None:
        """Follow a derived data product as a catalog event tells it (a newer version wins; retired: stopped)."""
        grant = AggregateGrant(
            grant_id=f"{PRODUCT_GRANT_PREFIX}{dataset_id}",
            tenant_id=PRODUCTS_PROVIDER,
            dataset_id=spec.source,
            spec=spec.aggregate,
            valid_from=datetime.min.replace(tzinfo=UTC),
            valid_until=datetime.max.replace(tzinfo=UTC),
            active=not retired,
            version=version,
            product=spec,
        )
        held = self._grants.get(grant.grant_id)
        if held is None or held.version < grant.version:
            self._grants[grant.grant_id] = grant

    def get(self, grant_id: str) -> AggregateGrant | None:
        return self._grants.get(grant_id)

    def on_dataset(self, dataset_id: str) -> list[AggregateGrant]:
        """Every aggregate grant on the dataset, active or not, in grant id order."""
        return sorted(
            (grant for grant in self._grants.values() if grant.dataset_id == dataset_id),
            key=lambda grant: grant.grant_id,
        )

    def datasets(self) -> set[str]:
        """Datasets some active aggregate grant reads: the feeds the worker follows."""
        return {grant.dataset_id for grant in self._grants.values() if grant.active}


def _utc(moment: datetime | int) -> datetime:
    if isinstance(moment, int):
        return datetime.fromtimestamp(moment / 1000, UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
