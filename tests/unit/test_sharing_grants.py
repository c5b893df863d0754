"""The grant book: authorization events in, the grants delivering a dataset at a moment out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pdo.authorization import records
from pdo.core.vocabulary import MaskingRule
from pdo.sharing.grants import GrantBook
from pdo.sharing.scope import GrantState

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
DATASET = "traffic-flow"


def granted(grant_id: str = "grant-1", at: datetime = T0, **changes: Any) -> dict[str, Any]:
    return {
        "event_id": "e-granted",
        "occurred_at": at,
        "actor": "operator:alice",
        "grant_id": grant_id,
        "request_id": "request-1",
        "tenant_id": "tenant:acme",
        "dataset_id": DATASET,
        "fields": ["record_id", "plate_number"],
        "masking": {"plate_number": "KEEP_FIRST_LAST"},
        "row_filter": "district == 'Haidian'",
        "daily_quota_records": None,
        "valid_from": T0 - timedelta(days=1),
        "valid_until": T0 + timedelta(days=30),
        "price_plan": {"kind": "FREE", "unit_price": 0, "tiers": [], "currency": "CNY"},
        "decided_by_rule": None,
        "reason": None,
        **changes,
    }


def transition(status: str, version: int, at: datetime, grant_id: str = "grant-1") -> dict[str, Any]:
    snapshot = {
        key: value
        for key, value in granted(grant_id).items()
        if key not in ("event_id", "occurred_at", "actor", "decided_by_rule", "reason")
    }
    return {
        "event_id": f"e-{version}",
        "occurred_at": at,
        "actor": "operator:alice",
        "grant_id": grant_id,
        "tenant_id": "tenant:acme",
        "dataset_id": DATASET,
        "reason": "because",
        "grant": {**snapshot, "status": status, "status_reason": "because", "version": version},
    }


def active_ids(book: GrantBook, moment: datetime) -> list[str]:
    return [scope.grant_id for scope in book.active_for(DATASET, moment)]


def test_a_granted_event_makes_an_active_version_one_with_its_scope():
    book = GrantBook()
    scope = book.apply(records.GRANTED, granted())
    assert scope is not None
    assert (scope.state, scope.version, scope.tenant_id) == (GrantState.ACTIVE, 1, "tenant:acme")
    assert scope.fields == ("record_id", "plate_number")
    assert scope.masking == {"plate_number": MaskingRule.KEEP_FIRST_LAST}
    assert scope.row_filter == "district == 'Haidian'"
    assert active_ids(book, T0 + timedelta(hours=1)) == ["grant-1"]
    assert book.active_for("another-dataset", T0) == []


def test_suspension_resumption_and_revocation_follow_the_versions():
    book = GrantBook()
    book.apply(records.GRANTED, granted())
    suspended_at, resumed_at, revoked_at = (T0 + timedelta(minutes=m) for m in (10, 20, 30))
    assert (
        book.apply(records.SUSPENDED, transition("SUSPENDED", 2, suspended_at)).state is GrantState.SUSPENDED
    )
    assert active_ids(book, suspended_at + timedelta(minutes=1)) == []
    # Once a suspension is in the book nothing is delivered, not even records published before it.
    assert active_ids(book, T0 + timedelta(minutes=5)) == []

    book.apply(records.RESUMED, transition("ACTIVE", 3, resumed_at))
    assert active_ids(book, resumed_at + timedelta(minutes=1)) == ["grant-1"]
    assert active_ids(book, T0 + timedelta(minutes=5)) == ["grant-1"]
    # A record published while the grant was suspended stays undelivered after the resumption.
    assert active_ids(book, suspended_at + timedelta(minutes=1)) == []

    book.apply(records.REVOKED, transition("REVOKED", 4, revoked_at))
    assert book.get("grant-1").state is GrantState.REVOKED
    assert active_ids(book, T0 + timedelta(minutes=5)) == []
    assert active_ids(book, revoked_at + timedelta(minutes=1)) == []


def test_stale_and_duplicate_snapshots_change_nothing():
    book = GrantBook()
    book.apply(records.GRANTED, granted())
    book.apply(records.REVOKED, transition("REVOKED", 3, T0 + timedelta(minutes=2)))
    assert book.apply(records.RESUMED, transition("ACTIVE", 2, T0 + timedelta(minutes=1))) is None
    assert book.apply(records.REVOKED, transition("REVOKED", 3, T0 + timedelta(minutes=2))) is None
    assert book.apply(records.GRANTED, granted()) is None  # a redelivered grant cannot reopen it
    assert book.get("grant-1").state is GrantState.REVOKED
    assert active_ids(book, T0 + timedelta(minutes=3)) == []


def test_a_snapshot_seen_before_its_grant_event_is_kept_and_the_grant_event_ignored():
    # After compaction, or across partitions, the book may meet version 2 first.
    book = GrantBook()
    book.apply(records.EXPIRED, transition("EXPIRED", 2, T0))
    assert book.apply(records.GRANTED, granted()) is None
    assert book.get("grant-1").state is GrantState.EXPIRED


def test_the_validity_window_bounds_delivery():
    book = GrantBook()
    start, end = T0, T0 + timedelta(hours=1)
    book.apply(records.GRANTED, granted(valid_from=start, valid_until=end))
    assert active_ids(book, start - timedelta(milliseconds=1)) == []
    assert active_ids(book, start) == ["grant-1"]
    assert active_ids(book, end - timedelta(milliseconds=1)) == ["grant-1"]
    assert active_ids(book, end) == []  # valid_until is exclusive


def test_denials_and_unknown_events_create_no_grant():
    book = GrantBook()
    denial = {"event_id": "e", "occurred_at": T0, "actor": "system:policy", "request_id": "r"}
    assert book.apply(records.DENIED, denial) is None
    assert book.apply("pdo.authorizations.v1.SomethingNew", granted()) is None
    assert len(book) == 0


def test_transitions_without_a_snapshot_stop_but_never_reopen():
    book = GrantBook()
    book.apply(records.GRANTED, granted())
    bare = transition("SUSPENDED", 2, T0 + timedelta(minutes=1))
    bare["grant"] = None
    assert book.apply(records.SUSPENDED, bare).state is GrantState.SUSPENDED
    assert book.apply(records.RESUMED, {**bare, "occurred_at": T0 + timedelta(minutes=2)}) is None
    assert active_ids(book, T0 + timedelta(minutes=3)) == []


def test_an_unknown_status_or_masking_rule_reads_as_the_safe_side():
    book = GrantBook()
    event = transition("ARCHIVED", 2, T0)
    event["grant"]["masking"] = {"plate_number": "SOMETHING_NEW"}
    scope = book.apply(records.SUSPENDED, event)
    assert scope.state is GrantState.REVOKED
    assert scope.masking == {"plate_number": MaskingRule.REDACT}


def test_several_grants_on_one_dataset_come_in_grant_id_order():
    book = GrantBook()
    book.apply(records.GRANTED, granted("grant-b"))
    book.apply(records.GRANTED, granted("grant-a", tenant_id="tenant:citylab"))
    book.apply(records.SUSPENDED, transition("SUSPENDED", 2, T0, grant_id="grant-c"))
    assert active_ids(book, T0 + timedelta(minutes=1)) == ["grant-a", "grant-b"]
