"""Reconciliation's comparison without a broker: a topic scan built by hand against ledger rows and statements
on SQLite and PostgreSQL, and the printed table (the broker test is tests/integration/test_billing_reconcile)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from billing_support import add_grant, add_usage, per_thousand

from pdo.aggregation.public import is_window_delivery, window_delivery_id
from pdo.authorization.testing import RecordingPublisher
from pdo.billing.reconcile import reconcile_scan
from pdo.billing.report import report_lines
from pdo.billing.statements import close_period
from pdo.billing.topic_scan import TopicRecord, TopicScan
from pdo.core import db
from pdo.core.errors import InvalidInput

MARCH = datetime(2026, 3, 5, tzinfo=UTC)
SCANNED = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture
def engine(database_url) -> Iterator[sa.Engine]:
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    with engine.begin() as conn:
        add_grant(conn, "g-1", "tenant:acme", "traffic", per_thousand("1.00"))
    yield engine
    engine.dispose()


def scan_of(*ids: str, at: datetime = MARCH, grant: str = "g-1") -> TopicScan:
    scan = TopicScan(started_at=SCANNED)
    for delivery in ids:
        scan.records[delivery] = TopicRecord(delivery, grant, at)
    return scan


def usage(engine, *ids: str, **options) -> None:
    with engine.begin() as conn:
        for delivery in ids:
            add_usage(conn, "g-1", "tenant:acme", "traffic", 1, 10, MARCH, delivery_id=delivery, **options)


def figures(engine, period: str, scan: TopicScan):
    with engine.connect() as conn:
        result = reconcile_scan(conn, period, scan)
    return result, {f.grant_id: f for f in result.grants}


def test_equal_sets_reconcile_to_zero_and_a_set_aside_row_is_shown_apart(engine) -> None:
    usage(engine, "a", "b")
    usage(engine, "c", set_aside_reason="BEFORE_GRANT: delivered before valid_from")
    result, by_grant = figures(engine, "2026-03", scan_of("a", "b", "c"))
    grant = by_grant["g-1"]
    assert (grant.on_topic, grant.in_ledger, grant.set_aside, grant.billed) == (3, 3, 1, None)
    assert result.clean and result.drift("topic_vs_ledger") == 0


def test_missing_and_extra_rows_do_not_cancel_out(engine) -> None:
    usage(engine, "a", "x")  # "x" was never delivered; "b" was delivered but never metered
    result, by_grant = figures(engine, "2026-03", scan_of("a", "b"))
    grant = by_grant["g-1"]
    assert (grant.on_topic, grant.in_ledger) == (2, 2)  # the counts agree...
    assert (grant.missing_from_ledger, grant.not_on_topic) == (1, 1)  # ...the sets do not
    assert result.drift("topic_vs_ledger") == 2 and not result.clean


def test_ledger_rows_recorded_after_the_scan_began_are_in_flight_not_drift(engine) -> None:
    usage(engine, "a", recorded_at=SCANNED + timedelta(seconds=1))
    result, by_grant = figures(engine, "2026-03", scan_of())
    assert by_grant["g-1"].not_on_topic == 0 and result.clean


def test_rows_older_than_what_the_topic_still_holds_are_past_retention_not_drift(engine) -> None:
    usage(engine, "old")  # delivered on 5 March; retention has deleted its tenant record
    scan = scan_of()
    scan.complete_since[("tenant:acme", "traffic")] = MARCH + timedelta(hours=1)
    result, by_grant = figures(engine, "2026-03", scan)
    assert (by_grant["g-1"].past_retention, by_grant["g-1"].not_on_topic) == (1, 0) and result.clean
    assert "note: 1 ledger record(s) were delivered before retention deleted them" in report_lines(result)[1]
    scan.complete_since[("tenant:acme", "traffic")] = MARCH  # complete from that moment on: it must be there
    result, by_grant = figures(engine, "2026-03", scan)
    assert (by_grant["g-1"].past_retention, by_grant["g-1"].not_on_topic) == (0, 1) and not result.clean


def test_a_late_record_counts_in_the_period_it_was_billed_in(engine) -> None:
    usage(engine, "late", billing_period="2026-04")
    march, _ = figures(engine, "2026-03", scan_of("late"))
    april, by_grant = figures(engine, "2026-04", scan_of("late"))
    assert march.grants == [] and march.clean
    assert by_grant["g-1"].on_topic == 1 and april.clean


def test_unmetered_records_belong_to_the_month_of_their_kafka_timestamp(engine) -> None:
    _, march = figures(engine, "2026-03", scan_of("a"))
    april, _ = figures(engine, "2026-04", scan_of("a"))
    assert march["g-1"].missing_from_ledger == 1 and march["g-1"].tenant_id == "tenant:acme"
    assert april.grants == []


def test_a_closed_period_compares_the_ledger_with_the_statements(engine) -> None:
    usage(engine, "a", "b")
    close_period(engine, RecordingPublisher(), "2026-03", "operator:alice", now=SCANNED)
    result, by_grant = figures(engine, "2026-03", scan_of("a", "b"))
    assert by_grant["g-1"].billed == 2 and result.clean
    usage(engine, "c")  # a row slipped in after the close (the lock protocol forbids it)
    result, by_grant = figures(engine, "2026-03", scan_of("a", "b", "c"))
    assert by_grant["g-1"].ledger_vs_billed == 1 and result.drift("ledger_vs_billed") == 1


def test_the_report_lists_only_grants_with_drift_and_notes_duplicates(engine) -> None:
    usage(engine, "a", "x")
    scan = scan_of("a", "b")
    scan.duplicates["a"] = 2
    scan.unreadable.append("pdo.tenant.acme.traffic[0]@7: UndecodableError empty value")
    result, _ = figures(engine, "2026-03", scan)
    lines = report_lines(result)
    assert lines[0].split() == [
        "grant", "tenant", "dataset", "topic", "ledger", "set_aside", "billed",
        "missing_from_ledger", "not_on_topic", "ledger-billed",
    ]  # fmt: skip
    assert lines[1].split() == ["g-1", "tenant:acme", "traffic", "2", "2", "0", "-", "1", "1", "-"]
    assert "drift topic_vs_ledger 2 record(s)" in lines[2]
    assert lines[3] == "note: 2 redelivered copy(ies) on the tenant topics, each counted once"
    assert lines[4].startswith("unreadable tenant record pdo.tenant.acme.traffic[0]@7")
    scan.unreadable.extend(
        f"pdo.tenant.acme.traffic[0]@{offset}: UndecodableError empty value" for offset in range(8, 30)
    )
    result, _ = figures(engine, "2026-03", scan)
    lines = report_lines(result)
    assert sum(line.startswith("unreadable tenant record") for line in lines) == 10
    assert lines[-1] == "... and 13 more unreadable tenant record(s) (23 in all)"
    clean, _ = figures(engine, "2026-04", scan_of())
    assert report_lines(clean) == [
        "period 2026-04 (open, nothing billed yet): 0 grant(s); drift topic_vs_ledger 0 record(s), "
        "ledger_vs_billed 0 record(s)"
    ]


def test_a_malformed_period_is_refused(engine) -> None:
    with engine.connect() as conn, pytest.raises(InvalidInput, match="YYYY-MM"):
        reconcile_scan(conn, "March", scan_of())


def test_an_aggregate_window_in_the_ledger_is_not_drift_and_the_report_notes_it(engine) -> None:
    window = window_delivery_id("g-1", MARCH)
    with engine.begin() as conn:  # one window delivered: its 6 aggregates are on the aggregates topic
        add_usage(conn, "g-1", "tenant:acme", "traffic", 6, 600, MARCH, delivery_id=window)
    usage(engine, "a")
    result, by_grant = figures(engine, "2026-03", scan_of("a"))
    grant = by_grant["g-1"]
    assert (grant.in_ledger, grant.aggregate_records, grant.not_on_topic) == (7, 6, 0)
    assert result.clean
    assert any("6 ledger record(s) are aggregates" in line for line in report_lines(result))
    assert not is_window_delivery("a") and is_window_delivery(window)
