"""From the platform's events to audit entries: pure functions, one per event kind.

The guarantee: an entry says who did what to which subject, when and why, and nothing more. Its details are
a few identifiers and grades (tenant, dataset, classification, fields granted, a dead letter's reason code
and source position); never a secret, never a record value, never a masked field's clear value, never a dead
letter's payload. An event the audit log cannot read is recorded as "event.undecodable" with its source and
the reason, so nothing on the source topics passes unrecorded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from pdo.audit.store import Entry, iso_millis
from pdo.core.deadletters import SourceMessage
from pdo.core.names import Event

# The audit worker's own principal: the actor of what it records on its own account (undecodable events).
AUDIT_ACTOR = "service.audit"
UNDECODABLE = "event.undecodable"

Value = Mapping[str, Any]


def entry_for(name: str, value: Value, source: str) -> Entry:
    """The entry of one decoded event (`name`: its schema's full name); `source` is "<topic>[<p>]@<offset>".

    An event of a kind the audit log does not know becomes an "event.undecodable" entry naming its kind.
    """
    kind = _KINDS.get(name)
    if kind is None:
        return undecodable_entry(source, f"not an event the audit log knows: {name}")
    action, subject, reason, details = kind
    return Entry(
        actor=value["actor"],
        action=action,
        subject=subject(value),
        reason=reason(value),
        source=source,
        occurred_at=_millis(value["occurred_at"]),
        details={key: text for key, text in details(value).items() if text is not None},
    )


def undecodable_entry(
    source: str, reason: str, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> Entry:
    """The entry of an event that does not decode: recorded by the audit worker itself, when it met it."""
    return Entry(
        actor=AUDIT_ACTOR,
        action=UNDECODABLE,
        subject=f"source:{source}",
        reason=reason,
        source=source,
        occurred_at=_millis(now()),
        details={},
    )


def undecodable_message(message: SourceMessage, reason: str) -> Entry:
    return undecodable_entry(message.position, reason)


def _millis(at: datetime) -> datetime:
    # The body carries milliseconds; an aware UTC datetime keeps the entry's time unambiguous.
    at = at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _day(at: datetime | date) -> str:
    return at.date().isoformat() if isinstance(at, datetime) else at.isoformat()


def _dataset(v: Value) -> str:
    return f"dataset:{v['dataset_id']}"


def _request(v: Value) -> str:
    return f"request:{v['request_id']}"


def _grant(v: Value) -> str:
    return f"grant:{v['grant_id']}"


def _statement(v: Value) -> str:
    return f"statement:{v['tenant_id']}/{_day(v['period_start'])}..{_day(v['period_end'])}"


def _dead_letter(v: Value) -> str:
    return f"dead_letter:{_position(v)}"


def _position(v: Value) -> str:
    return f"{v['source_topic']}[{v['source_partition']}]@{v['source_offset']}"


def _own_reason(v: Value) -> str | None:
    return v.get("reason")


def _no_reason(v: Value) -> str | None:
    return None


def _grant_reason(v: Value) -> str | None:
    # A grant decided by a policy rule has the rule as its reason; one an operator approved, the operator's.
    return v.get("reason") or v.get("decided_by_rule")


def _parties(v: Value) -> dict[str, str | None]:
    return {"tenant": v.get("tenant_id"), "dataset": v.get("dataset_id")}


def _budget_details(v: Value) -> dict[str, str | None]:
    return {**_parties(v), "period": v["period"], "epsilon_spent": str(v["epsilon_spent"])}


def _dataset_details(v: Value) -> dict[str, str | None]:
    return {
        "classification": v.get("classification"),
        "openness": v.get("openness"),
        "provider": v.get("provider_id"),
        "version": str(v["version"]),
    }


def _request_details(v: Value) -> dict[str, str | None]:
    return {**_parties(v), "fields": ",".join(v["fields"])}


def _rule_details(v: Value) -> dict[str, str | None]:
    return {**_parties(v), "rule": v["rule"]}


def _granted_details(v: Value) -> dict[str, str | None]:
    return {
        **_parties(v),
        "request": v["request_id"],
        "fields": ",".join(v["fields"]),
        "valid_until": v["valid_until"].isoformat(),
    }


def _suspended_details(v: Value) -> dict[str, str | None]:
    return {**_parties(v), "cause": v["cause"]}


def _quota_details(v: Value) -> dict[str, str | None]:
    return {
        **_parties(v),
        "day": _day(v["day"]),
        "quota_records": str(v["quota_records"]),
        "used_records": str(v["used_records"]),
    }


def _statement_details(v: Value) -> dict[str, str | None]:
    return {
        "tenant": v["tenant_id"],
        "statement": v["statement_id"],
        "total": f"{v['total']} {v['currency']}",
    }


def _digest_details(v: Value) -> dict[str, str | None]:
    # `tenant` lets a tenant find the digests about it; the root is what its own records must hash to.
    return {
        **_parties(v),
        "digest": v["digest_id"],
        "period": v["period"],
        "count": str(v["count"]),
        "root": v["root"],
        "first_delivered_at": iso_millis(_millis(v["first_delivered_at"])),
        "last_delivered_at": iso_millis(_millis(v["last_delivered_at"])),
    }


def _dead_letter_details(v: Value) -> dict[str, str | None]:
    # The reason code and where the message came from; its key, value and headers stay out.
    return {"reason_code": v["reason_code"], "service": v["service"], "source": _position(v)}


def _principal(v: Value) -> str:
    return f"principal:{v['principal_id']}"


def _tenant_of(principal_id: str) -> str | None:
    # Entries about a tenant name it, so a tenant can later find the entries that concern it.
    return principal_id if principal_id.startswith("tenant:") else None


def _principal_details(v: Value) -> dict[str, str | None]:
    return {"tenant": _tenant_of(v["principal_id"])}


def _created_details(v: Value) -> dict[str, str | None]:
    return {
        **_principal_details(v),
        "kind": v["kind"],
        "display_name": v["display_name"],
        "government": "yes" if v["is_government"] else None,
    }


def _key_details(v: Value) -> dict[str, str | None]:
    # The key's public id only: the key, its hash and its salt are never in an event.
    return {**_principal_details(v), "key_id": v["key_id"]}


def _kafka_issued_details(v: Value) -> dict[str, str | None]:
    return {**_principal_details(v), "username": v["username"], "acls": "; ".join(v["acls"])}


def _kafka_revoked_details(v: Value) -> dict[str, str | None]:
    return {**_principal_details(v), "username": v["username"]}


def _acls_details(v: Value) -> dict[str, str | None]:
    return {
        "command": v["command"],
        "added": "; ".join(v["added"]) or None,
        "removed": "; ".join(v["removed"]) or None,
        "service_users": ", ".join(v["service_users"]) or None,
    }


def _topics_details(v: Value) -> dict[str, str | None]:
    return {"command": v["command"], "topics": ", ".join(v["topics"])}


def _failure_details(v: Value) -> dict[str, str | None]:
    return {
        "ordered_event": v["ordered_event_id"],
        "ordered_action": v["action"],
        "error": v["error"],
        "tenant": v.get("tenant_id"),
    }


def _policy_details(v: Value) -> dict[str, str | None]:
    return {"sha256": v["sha256"], "previous_sha256": v.get("previous_sha256")}


def _replay_details(v: Value) -> dict[str, str | None]:
    return {
        "dead_letter": v["dead_letter"],
        "to": f"{v['source_topic']}[{v['source_partition']}]",
        "reason_code": v["reason_code"],
        "service": v["service"],
    }


Kind = tuple[
    str,
    Callable[[Value], str],
    Callable[[Value], str | None],
    Callable[[Value], Mapping[str, str | None]],
]

_KINDS: Mapping[str, Kind] = {
    Event.DATASET_REGISTERED: ("dataset.registered", _dataset, _no_reason, _dataset_details),
    Event.DATASET_UPDATED: ("dataset.updated", _dataset, _no_reason, _dataset_details),
    Event.DATASET_RETIRED: ("dataset.retired", _dataset, _own_reason, lambda v: {}),
    Event.REQUEST_SUBMITTED: ("request.submitted", _request, _no_reason, _request_details),
    Event.REQUEST_REFERRED: ("request.referred", _request, _own_reason, _rule_details),
    Event.REQUEST_WITHDRAWN: ("request.withdrawn", _request, _own_reason, _parties),
    Event.AUTHORIZATION_GRANTED: ("grant.granted", _grant, _grant_reason, _granted_details),
    Event.AUTHORIZATION_DENIED: ("request.denied", _request, _own_reason, _rule_details),
    Event.AUTHORIZATION_SUSPENDED: ("grant.suspended", _grant, _own_reason, _suspended_details),
    Event.AUTHORIZATION_RESUMED: ("grant.resumed", _grant, _own_reason, _parties),
    Event.AUTHORIZATION_REVOKED: ("grant.revoked", _grant, _own_reason, _parties),
    Event.AUTHORIZATION_EXPIRED: ("grant.expired", _grant, _no_reason, _parties),
    Event.QUOTA_EXCEEDED: ("quota.exceeded", _grant, _no_reason, _quota_details),
    Event.PRIVACY_BUDGET_EXHAUSTED: ("privacy_budget.exhausted", _grant, _no_reason, _budget_details),
    Event.STATEMENT_ISSUED: ("statement.issued", _statement, _no_reason, _statement_details),
    Event.DEAD_LETTER: ("dead_letter.written", _dead_letter, _own_reason, _dead_letter_details),
    Event.DELIVERIES_DIGESTED: ("deliveries.digested", _grant, _no_reason, _digest_details),
    Event.PRINCIPAL_CREATED: ("principal.created", _principal, _own_reason, _created_details),
    Event.PRINCIPAL_DISABLED: ("principal.disabled", _principal, _own_reason, _principal_details),
    Event.PRINCIPAL_ENABLED: ("principal.enabled", _principal, _own_reason, _principal_details),
    Event.API_KEY_ISSUED: ("api_key.issued", _principal, _own_reason, _key_details),
    Event.API_KEY_REVOKED: ("api_key.revoked", _principal, _own_reason, _key_details),
    Event.KAFKA_CREDENTIALS_ISSUED: (
        "kafka_credentials.issued",
        _principal,
        _own_reason,
        _kafka_issued_details,
    ),
    Event.KAFKA_CREDENTIALS_REVOKED: (
        "kafka_credentials.revoked",
        _principal,
        _own_reason,
        _kafka_revoked_details,
    ),
    Event.ACLS_APPLIED: ("acls.applied", lambda v: "acls:services", _own_reason, _acls_details),
    Event.TOPICS_CREATED: ("topics.created", lambda v: "topics:declared", _own_reason, _topics_details),
    Event.ACCESS_CHANGE_FAILED: (
        "access_change.failed",
        lambda v: v["subject"],
        _no_reason,
        _failure_details,
    ),
    Event.POLICY_IN_FORCE: (
        "policy.in_force",
        lambda v: f"policy:{v['policy']}",
        _no_reason,
        _policy_details,
    ),
    Event.DEAD_LETTER_REPLAYED: ("dead_letter.replayed", _dead_letter, _own_reason, _replay_details),
    Event.PERIOD_CLOSED: (
        "period.closed",
        lambda v: f"period:{v['period']}",
        _own_reason,
        lambda v: {"statements": str(v["statements"])},
    ),
}
