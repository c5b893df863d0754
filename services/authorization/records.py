"""Conversions between the domain objects, SQL rows and Avro event values, kept in one place.

The service writes rows and events from the same objects, and the projection rebuilds rows from events
with the same functions, so a rebuilt table equals the original column for column.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pdo.authorization.models import DataRequest, Grant, GrantTransition, RequestStatus
from pdo.core.events import utc
from pdo.core.names import Event
from pdo.core.vocabulary import (
    GrantKind,
    GrantStatus,
    MaskingRule,
    SuspensionCause,
    TenantKind,
    aggregate_spec_from_json,
    aggregate_spec_from_mapping,
    aggregate_spec_to_avro,
    aggregate_spec_to_json,
    grant_kind_from_avro,
    price_plan_from_json,
    price_plan_from_mapping,
    price_plan_to_avro,
    price_plan_to_json,
)

SUBMITTED = Event.REQUEST_SUBMITTED
REFERRED = Event.REQUEST_REFERRED
WITHDRAWN = Event.REQUEST_WITHDRAWN
GRANTED = Event.AUTHORIZATION_GRANTED
DENIED = Event.AUTHORIZATION_DENIED
SUSPENDED = Event.AUTHORIZATION_SUSPENDED
RESUMED = Event.AUTHORIZATION_RESUMED
REVOKED = Event.AUTHORIZATION_REVOKED
EXPIRED = Event.AUTHORIZATION_EXPIRED
QUOTA_EXCEEDED = Event.QUOTA_EXCEEDED


# ---------------------------------------------------------------------------------------------- price plans


# ---------------------------------------------------------------------------------------------- rows


def request_to_row(request: DataRequest) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "tenant_id": request.tenant_id,
        "tenant_kind": request.tenant_kind.value,
        "dataset_id": request.dataset_id,
        "purpose": request.purpose,
        "fields": json.dumps(list(request.fields)),
        "row_filter": request.row_filter,
        "valid_from": utc(request.valid_from),
        "valid_until": utc(request.valid_until),
        "expected_daily_records": request.expected_daily_records,
        "status": request.status.value,
        "decided_by_rule": request.decided_by_rule,
        "decision_reason": request.decision_reason,
        "decided_by": request.decided_by,
        "kind": request.kind.value,
        "aggregate": aggregate_spec_to_json(request.aggregate),
        "created_at": utc(request.created_at),
        "updated_at": utc(request.updated_at),
    }


def request_from_row(row: Mapping[Any, Any]) -> DataRequest:
    return DataRequest(
        request_id=row["request_id"],
        tenant_id=row["tenant_id"],
        tenant_kind=TenantKind(row["tenant_kind"]),
        dataset_id=row["dataset_id"],
        purpose=row["purpose"],
        fields=tuple(json.loads(row["fields"])),
        row_filter=row["row_filter"],
        valid_from=utc(row["valid_from"]),
        valid_until=utc(row["valid_until"]),
        expected_daily_records=row["expected_daily_records"],
        status=RequestStatus(row["status"]),
        decided_by_rule=row["decided_by_rule"],
        decision_reason=row["decision_reason"],
        decided_by=row["decided_by"],
        kind=GrantKind(row["kind"]),
        aggregate=aggregate_spec_from_json(row["aggregate"]),
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
    )


def grant_to_row(grant: Grant) -> dict[str, Any]:
    return {
        "grant_id": grant.grant_id,
        "request_id": grant.request_id,
        "tenant_id": grant.tenant_id,
        "dataset_id": grant.dataset_id,
        "fields": json.dumps(list(grant.fields)),
        "masking": json.dumps({name: rule.value for name, rule in grant.masking.items()}, sort_keys=True),
        "row_filter": grant.row_filter,
        "daily_quota_records": grant.daily_quota_records,
        "valid_from": utc(grant.valid_from),
        "valid_until": utc(grant.valid_until),
        "price_plan": price_plan_to_json(grant.price_plan),
        "status": grant.status.value,
        "status_reason": grant.status_reason,
        "suspension_cause": grant.suspension_cause.value if grant.suspension_cause else None,
        "version": grant.version,
        "kind": grant.kind.value,
        "aggregate": aggregate_spec_to_json(grant.aggregate),
        "created_at": utc(grant.created_at),
        "updated_at": utc(grant.updated_at),
    }


def grant_from_row(row: Mapping[Any, Any], history: tuple[GrantTransition, ...] = ()) -> Grant:
    return Grant(
        grant_id=row["grant_id"],
        request_id=row["request_id"],
        tenant_id=row["tenant_id"],
        dataset_id=row["dataset_id"],
        fields=tuple(json.loads(row["fields"])),
        masking={name: MaskingRule(rule) for name, rule in json.loads(row["masking"]).items()},
        row_filter=row["row_filter"],
        daily_quota_records=row["daily_quota_records"],
        valid_from=utc(row["valid_from"]),
        valid_until=utc(row["valid_until"]),
        price_plan=price_plan_from_json(row["price_plan"]),
        status=GrantStatus(row["status"]),
        status_reason=row["status_reason"],
        suspension_cause=SuspensionCause(row["suspension_cause"]) if row["suspension_cause"] else None,
        version=row["version"],
        kind=GrantKind(row["kind"]),
        aggregate=aggregate_spec_from_json(row["aggregate"]),
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
        history=history,
    )


def transition_to_row(transition: GrantTransition) -> dict[str, Any]:
    return {
        "grant_id": transition.grant_id,
        "from_status": transition.from_status.value if transition.from_status else None,
        "to_status": transition.to_status.value,
        "actor": transition.actor,
        "reason": transition.reason,
        "at": utc(transition.at),
        "event_id": transition.event_id,
    }


def transition_from_row(row: Mapping[Any, Any]) -> GrantTransition:
    return GrantTransition(
        grant_id=row["grant_id"],
        from_status=GrantStatus(row["from_status"]) if row["from_status"] else None,
        to_status=GrantStatus(row["to_status"]),
        actor=row["actor"],
        reason=row["reason"],
        at=utc(row["at"]),
        event_id=row["event_id"],
    )


# ---------------------------------------------------------------------------------------------- events


def head(event_id: str, at: datetime, actor: str) -> dict[str, Any]:
    return {"event_id": event_id, "occurred_at": utc(at), "actor": actor}


def submitted_event(request: DataRequest, event_id: str, actor: str) -> dict[str, Any]:
    return {
        **head(event_id, request.created_at, actor),
        "request_id": request.request_id,
        "tenant_id": request.tenant_id,
        "dataset_id": request.dataset_id,
        "purpose": request.purpose,
        "fields": list(request.fields),
        "row_filter": request.row_filter,
        "valid_from": utc(request.valid_from),
        "valid_until": utc(request.valid_until),
        "expected_daily_records": request.expected_daily_records,
        "tenant_kind": tenant_kind_to_avro(request.tenant_kind),
        "kind": request.kind.value,
        "aggregate": aggregate_spec_to_avro(request.aggregate),
    }


def tenant_kind_to_avro(kind: TenantKind) -> str:
    """The Avro TenantKind symbol (COMPANY, GOVERNMENT) of a tenant kind."""
    return TenantKind(kind).name


def tenant_kind_from_avro(symbol: str | None) -> TenantKind:
    """The tenant kind of an event's symbol. None (an event written before the field existed) is COMPANY,
    and so is a symbol this version does not know, as the enum's default says."""
    return TenantKind.__members__.get(symbol or "", TenantKind.COMPANY)


def request_from_submitted(event: Mapping[str, Any]) -> DataRequest:
    """The request as it stood when submitted (SUBMITTED).

    Events written before DataRequestSubmitted had `tenant_kind` lack it, or hold null: a company.
    """
    return DataRequest(
        request_id=event["request_id"],
        tenant_id=event["tenant_id"],
        tenant_kind=tenant_kind_from_avro(event.get("tenant_kind")),
        dataset_id=event["dataset_id"],
        purpose=event["purpose"],
        fields=tuple(event["fields"]),
        row_filter=event["row_filter"],
        valid_from=utc(event["valid_from"]),
        valid_until=utc(event["valid_until"]),
        expected_daily_records=event["expected_daily_records"],
        kind=grant_kind_from_avro(event.get("kind")),
        aggregate=aggregate_spec_from_mapping(event.get("aggregate")),
        status=RequestStatus.SUBMITTED,
        created_at=utc(event["occurred_at"]),
        updated_at=utc(event["occurred_at"]),
    )


def referred_event(request: DataRequest, event_id: str, actor: str) -> dict[str, Any]:
    """DataRequestReferred for a request the policy has just moved to PENDING_REVIEW: its rule and reason."""
    return {
        **head(event_id, request.updated_at, actor),
        "request_id": request.request_id,
        "tenant_id": request.tenant_id,
        "dataset_id": request.dataset_id,
        "rule": request.decided_by_rule,
        "reason": request.decision_reason,
    }


def grant_snapshot(grant: Grant) -> dict[str, Any]:
    return {
        "grant_id": grant.grant_id,
        "request_id": grant.request_id,
        "tenant_id": grant.tenant_id,
        "dataset_id": grant.dataset_id,
        "fields": list(grant.fields),
        "masking": {name: rule.value for name, rule in grant.masking.items()},
        "row_filter": grant.row_filter,
        "daily_quota_records": grant.daily_quota_records,
        "valid_from": utc(grant.valid_from),
        "valid_until": utc(grant.valid_until),
        "price_plan": price_plan_to_avro(grant.price_plan),
        "status": grant.status.value,
        "status_reason": grant.status_reason,
        "version": grant.version,
        "kind": grant.kind.value,
        "aggregate": aggregate_spec_to_avro(grant.aggregate),
    }


def granted_event(grant: Grant, event_id: str, actor: str, rule: str | None, reason: str | None) -> dict:
    snapshot = grant_snapshot(grant)
    for local in ("status", "status_reason", "version"):
        del snapshot[local]  # a Granted event is version 1, ACTIVE, by definition
    return {**head(event_id, grant.created_at, actor), **snapshot, "decided_by_rule": rule, "reason": reason}


def grant_from_granted(event: Mapping[str, Any]) -> Grant:
    return grant_from_snapshot(
        {**event, "status": GrantStatus.ACTIVE.value, "status_reason": None, "version": 1},
        created_at=event["occurred_at"],
        updated_at=event["occurred_at"],
    )


def grant_from_snapshot(
    snapshot: Mapping[str, Any],
    created_at: datetime,
    updated_at: datetime,
    suspension_cause: SuspensionCause | None = None,
) -> Grant:
    status = GrantStatus(snapshot["status"])
    return Grant(
        grant_id=snapshot["grant_id"],
        request_id=snapshot["request_id"],
        tenant_id=snapshot["tenant_id"],
        dataset_id=snapshot["dataset_id"],
        fields=tuple(snapshot["fields"]),
        masking={name: MaskingRule(rule) for name, rule in snapshot["masking"].items()},
        row_filter=snapshot["row_filter"],
        daily_quota_records=snapshot["daily_quota_records"],
        valid_from=utc(snapshot["valid_from"]),
        valid_until=utc(snapshot["valid_until"]),
        price_plan=price_plan_from_mapping(snapshot["price_plan"]),
        status=status,
        status_reason=snapshot["status_reason"],
        suspension_cause=suspension_cause if status == GrantStatus.SUSPENDED else None,
        version=snapshot["version"],
        kind=grant_kind_from_avro(snapshot.get("kind")),
        aggregate=aggregate_spec_from_mapping(snapshot.get("aggregate")),
        created_at=utc(created_at),
        updated_at=utc(updated_at),
    )


def transition_event(grant: Grant, event_id: str, actor: str, **extra: Any) -> dict:
    """Suspended / Resumed / Revoked / Expired: who, which grant, the event's own fields, the snapshot."""
    return {
        **head(event_id, grant.updated_at, actor),
        "grant_id": grant.grant_id,
        "tenant_id": grant.tenant_id,
        "dataset_id": grant.dataset_id,
        **extra,
        "grant": grant_snapshot(grant),
    }
