"""The audit recorder: each event kind becomes one entry with its actor, time, action, subject and reason,
and no entry carries a dead letter's payload or a sensitive field's value."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import fastavro
import pytest

from pdo.audit.recorder import AUDIT_ACTOR, UNDECODABLE, entry_for, undecodable_entry
from pdo.core.names import Event

AT = datetime(2026, 11, 30, 9, 15, 42, 123456, tzinfo=UTC)
SOURCE = "pdo.authorizations[0]@17"
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def head(actor: str = "operator:alice") -> dict:
    return {"event_id": "e-1", "occurred_at": AT, "actor": actor}


PARTIES = {"tenant_id": "tenant:acme", "dataset_id": "traffic-flow"}
REGISTERED = {
    **head("provider:transport-bureau"),
    "dataset_id": "traffic-flow",
    "provider_id": "provider:transport-bureau",
    "classification": "IMPORTANT",
    "openness": "CONDITIONAL",
    "version": 1,
}

# (event, value, action, subject, reason, some details)
CASES = [
    (
        Event.DATASET_REGISTERED,
        REGISTERED,
        "dataset.registered",
        "dataset:traffic-flow",
        None,
        {"classification": "IMPORTANT", "openness": "CONDITIONAL", "version": "1"},
    ),
    (
        Event.DATASET_UPDATED,
        {**head(), "dataset_id": "traffic-flow", "classification": "CORE", "openness": None, "version": 2},
        "dataset.updated",
        "dataset:traffic-flow",
        None,
        {"classification": "CORE", "version": "2"},
    ),
    (
        Event.DATASET_RETIRED,
        {**head(), "dataset_id": "traffic-flow", "reason": "superseded"},
        "dataset.retired",
        "dataset:traffic-flow",
        "superseded",
        {},
    ),
    (
        Event.REQUEST_SUBMITTED,
        {
            **head("tenant:acme"),
            **PARTIES,
            "request_id": "r-1",
            "purpose": "planning",
            "fields": ["lane", "speed_kmh"],
        },
        "request.submitted",
        "request:r-1",
        None,
        {"tenant": "tenant:acme", "dataset": "traffic-flow", "fields": "lane,speed_kmh"},
    ),
    (
        Event.REQUEST_REFERRED,
        {
            **head("service.authorization"),
            **PARTIES,
            "request_id": "r-1",
            "rule": "important-review",
            "reason": "IMPORTANT data",
        },
        "request.referred",
        "request:r-1",
        "IMPORTANT data",
        {"rule": "important-review"},
    ),
    (
        Event.REQUEST_WITHDRAWN,
        {**head("tenant:acme"), "tenant_id": "tenant:acme", "request_id": "r-1", "reason": None},
        "request.withdrawn",
        "request:r-1",
        None,
        {"tenant": "tenant:acme"},
    ),
    (
        Event.AUTHORIZATION_GRANTED,
        {
            **head(),
            **PARTIES,
            "grant_id": "g-1",
            "request_id": "r-1",
            "fields": ["lane", "plate_number"],
            "valid_until": AT,
            "decided_by_rule": "open-data",
            "reason": None,
        },
        "grant.granted",
        "grant:g-1",
        "open-data",
        {"request": "r-1", "fields": "lane,plate_number"},
    ),
    (
        Event.AUTHORIZATION_DENIED,
        {
            **head("service.authorization"),
            **PARTIES,
            "request_id": "r-2",
            "rule": "core-never",
            "reason": "CORE data",
        },
        "request.denied",
        "request:r-2",
        "CORE data",
        {"rule": "core-never"},
    ),
    (
        Event.AUTHORIZATION_SUSPENDED,
        {**head("service.authorization"), **PARTIES, "grant_id": "g-1", "reason": "quota", "cause": "QUOTA"},
        "grant.suspended",
        "grant:g-1",
        "quota",
        {"cause": "QUOTA"},
    ),
    (
        Event.AUTHORIZATION_RESUMED,
        {**head(), **PARTIES, "grant_id": "g-1", "reason": "new day"},
        "grant.resumed",
        "grant:g-1",
        "new day",
        {"tenant": "tenant:acme"},
    ),
    (
        Event.AUTHORIZATION_REVOKED,
        {**head(), **PARTIES, "grant_id": "g-1", "reason": "misuse"},
        "grant.revoked",
        "grant:g-1",
        "misuse",
        {"dataset": "traffic-flow"},
    ),
    (
        Event.AUTHORIZATION_EXPIRED,
        {**head("service.authorization"), **PARTIES, "grant_id": "g-1", "expired_at": AT},
        "grant.expired",
        "grant:g-1",
        None,
        {"tenant": "tenant:acme"},
    ),
    (
        Event.QUOTA_EXCEEDED,
        {
            **head("service.metering"),
            **PARTIES,
            "grant_id": "g-1",
            "day": date(2026, 11, 30),
            "quota_records": 100,
            "used_records": 101,
        },
        "quota.exceeded",
        "grant:g-1",
        None,
        {"day": "2026-11-30", "quota_records": "100", "used_records": "101"},
    ),
    (
        Event.STATEMENT_ISSUED,
        {
            **head("service.metering"),
            "statement_id": "s-1",
            "tenant_id": "tenant:acme",
            "period_start": datetime(2026, 10, 1, tzinfo=UTC),
            "period_end": datetime(2026, 11, 1, tzinfo=UTC),
            "lines": [],
            "total": Decimal("12.50"),
            "currency": "CNY",
        },
        "statement.issued",
        "statement:tenant:acme/2026-10-01..2026-11-01",
        None,
        {"statement": "s-1", "total": "12.50 CNY"},
    ),
]


@pytest.mark.parametrize(
    ("event", "value", "action", "subject", "reason", "details"), CASES, ids=[c[2] for c in CASES]
)
def test_each_event_kind_becomes_its_entry(event, value, action, subject, reason, details):
    entry = entry_for(event, value, SOURCE)
    assert (entry.actor, entry.action, entry.subject, entry.reason, entry.source) == (
        value["actor"],
        action,
        subject,
        reason,
        SOURCE,
    )
    assert entry.details.items() >= details.items()
    assert all(isinstance(text, str) for text in entry.details.values())


def test_the_time_is_the_events_own_in_utc_milliseconds():
    entry = entry_for(Event.DATASET_REGISTERED, REGISTERED, SOURCE)
    assert entry.occurred_at == datetime(2026, 11, 30, 9, 15, 42, 123000, tzinfo=UTC)


def test_an_event_kind_the_log_does_not_know_is_recorded_as_undecodable():
    entry = entry_for(Event.USAGE_RECORDED, head(), SOURCE)
    assert (entry.action, entry.actor, entry.source) == (UNDECODABLE, AUDIT_ACTOR, SOURCE)
    assert Event.USAGE_RECORDED in (entry.reason or "")


def test_an_undecodable_event_names_its_source_and_reason():
    entry = undecodable_entry("pdo.requests[2]@9", "UndecodableError: empty value", now=lambda: AT)
    assert (entry.action, entry.subject, entry.source, entry.reason) == (
        UNDECODABLE,
        "source:pdo.requests[2]@9",
        "pdo.requests[2]@9",
        "UndecodableError: empty value",
    )


def every_text_of(entry) -> str:
    """All an entry's body can hold (the store's canonical JSON is built from exactly these fields)."""
    return json.dumps(
        [entry.actor, entry.action, entry.subject, entry.reason, entry.source, dict(entry.details)],
        ensure_ascii=False,
    )


def sensitive_fields(schema: dict) -> list[str]:
    return [field["name"] for field in schema["fields"] if "pdo.sensitive" in field]


def test_a_dead_letters_entry_carries_neither_its_payload_nor_any_sensitive_value():
    schema = json.loads((SCHEMAS / "datasets" / "TrafficFlow.avsc").read_text())
    record = {
        "record_id": "rec-7781",
        "checkpoint_id": "cp-north-12",
        "district": "Futian",
        "plate_number": "粤B7Q2K9",
        "vehicle_type": "BUS",
        "speed_kmh": 48.5,
        "lane": 2,
        "direction": "NORTHBOUND",
        "observed_at": AT,
        "driver_phone": "13800138000",
    }
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(schema), record)
    original = b"\x00\x00\x00\x00\x07" + body.getvalue()
    letter = {
        **head("service.sharing"),
        "reason_code": "SCHEMA_MISMATCH",
        "reason": "Avro body does not decode as pdo.datasets.v1.TrafficFlow (schema id 7)",
        "service": "sharing",
        "source_topic": "pdo.feed.traffic-flow",
        "source_partition": 1,
        "source_offset": 42,
        "original_key": b"rec-7781",
        "original_value": original,
        "headers": [{"key": "trace", "value": b"t-99"}],
        "failed_at": AT,
        "replay_count": 0,
    }
    entry = entry_for(Event.DEAD_LETTER, letter, "pdo.dead-letters[0]@3")
    assert (entry.action, entry.subject, entry.reason) == (
        "dead_letter.written",
        "dead_letter:pdo.feed.traffic-flow[1]@42",
        letter["reason"],
    )
    assert entry.details == {
        "reason_code": "SCHEMA_MISMATCH",
        "service": "sharing",
        "source": "pdo.feed.traffic-flow[1]@42",
    }
    written = every_text_of(entry)
    secrets = [record[name] for name in sensitive_fields(schema)]
    assert secrets == ["粤B7Q2K9", "13800138000"]
    payload_values = [*secrets, "rec-7781", "cp-north-12", "Futian", "t-99"]
    assert not [value for value in payload_values if value in written]
    assert original.decode("latin-1") not in written and original.hex() not in written
