"""The authorization service's domain objects: data requests, grants, and what callers send to make them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from pdo.core.vocabulary import (
    AggregateSpec,
    GrantKind,
    GrantStatus,
    MaskingRule,
    PricePlan,
    SuspensionCause,
    TenantKind,
)


class RequestStatus(StrEnum):
    """Where a data request stands. SUBMITTED and PENDING_REVIEW are undecided; the rest are final."""

    SUBMITTED = "SUBMITTED"
    PENDING_REVIEW = "PENDING_REVIEW"
    APPROVED = "APPROVED"
    DENIED = "DENIED"
    WITHDRAWN = "WITHDRAWN"


@dataclass(frozen=True)
class RequestSpec:
    """What a tenant asks for. request_id is optional: clients that send one get idempotency by id."""

    dataset_id: str
    purpose: str
    fields: tuple[str, ...]
    valid_from: datetime
    valid_until: datetime
    row_filter: str | None = None
    expected_daily_records: int | None = None
    request_id: str | None = None
    # ROWS hands the tenant records; AGGREGATE only the windowed aggregates `aggregate` fixes.
    kind: GrantKind = GrantKind.ROWS
    aggregate: AggregateSpec | None = None


@dataclass(frozen=True)
class Narrowing:
    """What an operator may tighten when approving; None keeps what the tenant asked for."""

    fields: tuple[str, ...] | None = None
    row_filter: str | None = None
    daily_quota_records: int | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True)
class DataRequest:
    request_id: str
    tenant_id: str
    tenant_kind: TenantKind
    dataset_id: str
    purpose: str
    fields: tuple[str, ...]
    row_filter: str | None
    valid_from: datetime
    valid_until: datetime
    expected_daily_records: int | None
    status: RequestStatus
    created_at: datetime
    updated_at: datetime
    # Which policy rule (or None for a person) moved it to its status, who, and why.
    decided_by_rule: str | None = None
    decision_reason: str | None = None
    decided_by: str | None = None
    kind: GrantKind = GrantKind.ROWS
    aggregate: AggregateSpec | None = None

    @property
    def grant_id(self) -> str | None:
        """The grant this request produced, once approved (one grant per request)."""
        return grant_id_for(self.request_id) if self.status == RequestStatus.APPROVED else None


@dataclass(frozen=True)
class Grant:
    grant_id: str
    request_id: str
    tenant_id: str
    dataset_id: str
    fields: tuple[str, ...]
    masking: dict[str, MaskingRule]
    row_filter: str | None
    daily_quota_records: int | None
    valid_from: datetime
    valid_until: datetime
    price_plan: PricePlan
    status: GrantStatus
    version: int
    created_at: datetime
    updated_at: datetime
    status_reason: str | None = None
    suspension_cause: SuspensionCause | None = None
    kind: GrantKind = GrantKind.ROWS
    aggregate: AggregateSpec | None = None
    history: tuple[GrantTransition, ...] = field(default=(), compare=False)
    # Whether this version's event is on pdo.authorizations (the broker acknowledged it): false between the
    # commit and the publish, and while the broker is unreachable. Sharing follows the event, not the row.
    published: bool = field(default=True, compare=False)


@dataclass(frozen=True)
class GrantTransition:
    """One line of a grant's history: from (None when granted) → to, who, why, when, and by which event."""

    grant_id: str
    from_status: GrantStatus | None
    to_status: GrantStatus
    actor: str
    reason: str | None
    at: datetime
    event_id: str


def grant_id_for(request_id: str) -> str:
    """One grant per request, so its id follows from the request's."""
    return f"g-{request_id}"
