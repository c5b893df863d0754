"""Closing billing periods on SQLite and PostgreSQL: totals worked out by hand, reproducibility, late and
set-aside rows, the period lock, refusals, and the StatementIssued events."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from billing_support import FREE, add_grant, add_usage, per_megabyte, per_thousand, tiered

from pdo.authorization.testing import RecordingPublisher
from pdo.billing import tables as billing
from pdo.billing.statements import (
    STATEMENT_ISSUED,
    close_period,
    compute_statements,
    get_statement,
    list_statements,
    statement_id_for,
    verify_period,
)
from pdo.core import db
from pdo.core.errors import Conflict, InvalidInput, NotFound, PdoError, Unavailable
from pdo.core.vocabulary import price_plan_to_json
from pdo.metering import tables as t

ACME = "tenant:acme"
CITYLAB = "tenant:citylab"
WATER = "tenant:water-bureau"  # a government department: its grant is FREE
MARCH = datetime(2026, 3, 10, 12, tzinfo=UTC)
AFTER_APRIL = datetime(2026, 5, 2, tzinfo=UTC)


@pytest.fixture
def engine(database_url) -> Iterator[sa.Engine]:
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def march(engine) -> sa.Engine:
    """March 2026 usage of three tenants; every expected amount is worked out in the comments."""
    with engine.begin() as conn:
        add_grant(conn, "g-acme-traffic", ACME, "traffic", per_thousand("0.50"))
        add_grant(conn, "g-acme-air", ACME, "air", tiered((1_000, "2.00"), (5_000, "1.50"), (None, "1.00")))
        add_grant(conn, "g-acme-registry", ACME, "registry", per_megabyte("0.30"))
        add_grant(conn, "g-citylab-a", CITYLAB, "traffic", per_thousand("0.01"))
        add_grant(conn, "g-citylab-b", CITYLAB, "air", per_thousand("0.01"))
        add_grant(conn, "g-water", WATER, "traffic", FREE)
        # acme traffic: 2,000 + 345 = 2,345 records x 0.50 / 1,000 = 1.1725 -> 1.17
        add_usage(conn, "g-acme-traffic", ACME, "traffic", 2_000, 60_000, MARCH)
        add_usage(conn, "g-acme-traffic", ACME, "traffic", 345, 40_000, MARCH.replace(day=31, hour=23))
        # acme air, tiered over 7,250 records: 1,000 x 2.00 + 4,000 x 1.50 + 2,250 x 1.00 = 10.25
        for records in (3_000, 3_000, 1_250):
            add_usage(conn, "g-acme-air", ACME, "air", records, 1_000, MARCH)
        # acme registry per MB: 12,345,678 bytes = 12.345678 MB x 0.30 = 3.7037034 -> 3.70
        add_usage(conn, "g-acme-registry", ACME, "registry", 800, 12_345_678, MARCH)
        # citylab: 500 x 0.01 / 1,000 = 0.005 -> 0.01 on each line; total 0.02 (not round(0.010) = 0.01)
        add_usage(conn, "g-citylab-a", CITYLAB, "traffic", 500, 5_000, MARCH)
        add_usage(conn, "g-citylab-b", CITYLAB, "air", 500, 5_000, MARCH)
        # the government department: 10,000 records, free
        add_usage(conn, "g-water", WATER, "traffic", 10_000, 900_000, MARCH)
        # set aside, never billed: delivered before its grant began
        add_usage(
            conn, "g-acme-traffic", ACME, "traffic", 1, 30, MARCH, set_aside_reason="BEFORE_GRANT: test"
        )
        # April usage is not March's
        add_usage(conn, "g-acme-traffic", ACME, "traffic", 1_000, 10, datetime(2026, 4, 1, tzinfo=UTC))
    return engine


def amounts(statement) -> dict[str, str]:
    return {line.grant_id: str(line.amount) for line in statement.lines}


def test_march_statements_match_the_hand_computed_amounts(march, publisher) -> None:
    closing = close_period(march, publisher, "2026-03", "operator:alice", now=AFTER_APRIL)

    by_tenant = {s.tenant_id: s for s in closing.statements}
    assert sorted(by_tenant) == [ACME, CITYLAB, WATER]
    acme = by_tenant[ACME]
    assert amounts(acme) == {"g-acme-air": "10.25", "g-acme-registry": "3.70", "g-acme-traffic": "1.17"}
    assert acme.total == Decimal("15.12")  # 10.25 + 3.70 + 1.17
    assert [(line.dataset_id, line.records, line.bytes) for line in acme.lines] == [
        ("air", 7_250, 3_000),
        ("registry", 800, 12_345_678),
        ("traffic", 2_345, 100_000),  # the set-aside row and April's are not in it
    ]
    assert by_tenant[CITYLAB].total == Decimal("0.02")
    assert amounts(by_tenant[CITYLAB]) == {"g-citylab-a": "0.01", "g-citylab-b": "0.01"}
    water = by_tenant[WATER]
    assert water.total == Decimal("0.00") and water.lines[0].records == 10_000
    assert water.lines[0].plan == "free of charge"
    assert acme.lines[2].plan == "0.50 CNY per 1,000 records"
    assert [row.reason for row in closing.set_aside] == ["BEFORE_GRANT: test"]


def test_statements_are_rows_and_events_with_stable_ids(march, publisher) -> None:
    closing = close_period(march, publisher, "2026-03", "operator:alice", now=AFTER_APRIL)

    stored = list_statements(march, "2026-03")
    assert stored == closing.statements
    acme = get_statement(march, statement_id_for(ACME, "2026-03", "CNY"))
    assert acme.total == Decimal("15.12") and acme.issued_by == "operator:alice"
    events = {e["statement_id"]: e for e in publisher.of(STATEMENT_ISSUED)}
    assert set(events) == {s.statement_id for s in stored}
    event = events[acme.statement_id]
    assert event["total"] == Decimal("15.12") and event["currency"] == "CNY"
    assert event["period_start"] == datetime(2026, 3, 1, tzinfo=UTC)
    assert event["period_end"] == datetime(2026, 4, 1, tzinfo=UTC)
    assert [(line["grant_id"], line["amount"]) for line in event["lines"]] == [
        ("g-acme-air", Decimal("10.25")),
        ("g-acme-registry", Decimal("3.70")),
        ("g-acme-traffic", Decimal("1.17")),
    ]
    assert publisher.decoded()[0][1]["total"] in {Decimal("15.12"), Decimal("0.02"), Decimal("0.00")}
    assert statement_id_for(ACME, "2026-03", "CNY") == statement_id_for(ACME, "2026-03", "CNY")
    assert statement_id_for(ACME, "2026-03", "CNY") != statement_id_for(ACME, "2026-04", "CNY")


def test_a_closed_period_recomputes_to_the_cent(march, publisher) -> None:
    closing = close_period(march, publisher, "2026-03", "operator:alice", now=AFTER_APRIL)

    assert verify_period(march, "2026-03") == []
    with march.connect() as conn:
        again = compute_statements(conn, "2026-03")
    assert [(s.statement_id, s.lines, s.total) for s in again] == [
        (s.statement_id, s.lines, s.total) for s in closing.statements
    ]


def test_verify_names_each_difference_after_the_ledger_or_a_plan_changed(march, publisher) -> None:
    close_period(march, publisher, "2026-03", "operator:alice", now=AFTER_APRIL)
    acme = statement_id_for(ACME, "2026-03", "CNY")
    with march.begin() as conn:
        conn.execute(
            t.ledger.update().where(t.ledger.c.grant_id == "g-citylab-a").values(billing_period="2026-02")
        )
        conn.execute(
            t.grants.update()
            .where(t.grants.c.grant_id == "g-acme-traffic")
            .values(price_plan=price_plan_to_json(per_thousand("0.60")))
        )

    differences = verify_period(march, "2026-03")

    citylab = statement_id_for(CITYLAB, "2026-03", "CNY")
    assert (
        f"{citylab} grant g-citylab-a: on the statement (500 records 0.01), no usage recomputed"
        in differences
    )
    assert f"{citylab}: total issued 0.02, recomputed 0.01" in differences
    # 2,345 x 0.60 / 1,000 = 1.407 -> 1.41
    assert f"{acme} grant g-acme-traffic: amount issued 1.17, recomputed 1.41" in differences
    assert f"{acme}: total issued 15.12, recomputed 15.36" in differences


def test_closing_twice_is_refused_and_changes_nothing(march, publisher) -> None:
    close_period(march, publisher, "2026-03", "operator:alice", now=AFTER_APRIL)

    with pytest.raises(Conflict, match="period 2026-03 was closed at .* by operator:alice") as refused:
        close_period(march, publisher, "2026-03", "operator:bob", now=AFTER_APRIL)

    assert "cannot be issued twice" in refused.value.message and "show --period 2026-03" in refused.value.hint
    assert len(publisher.of(STATEMENT_ISSUED)) == 3
    assert {s.issued_by for s in list_statements(march, "2026-03")} == {"operator:alice"}


def test_a_month_that_has_not_ended_cannot_be_closed(march, publisher) -> None:
    with pytest.raises(Conflict, match="period 2026-04 has not ended"):
        close_period(march, publisher, "2026-04", "operator:alice", now=datetime(2026, 4, 30, 23, tzinfo=UTC))


def test_late_usage_billed_in_the_next_period_lands_on_its_statement(march, publisher) -> None:
    close_period(march, publisher, "2026-03", "operator:alice", now=AFTER_APRIL)
    with march.begin() as conn:
        # Delivered on 31 March but recorded after March closed: the ledger writer bills it into April.
        add_usage(
            conn, "g-acme-traffic", ACME, "traffic", 2_000, 7, MARCH.replace(day=31),
            billing_period="2026-04", recorded_at=datetime(2026, 4, 2, tzinfo=UTC),
        )  # fmt: skip

    april = close_period(march, publisher, "2026-04", "operator:alice", now=AFTER_APRIL)

    # April: 1,000 (delivered in April) + 2,000 (late March) = 3,000 x 0.50 / 1,000 = 1.50
    (acme,) = april.statements
    assert acme.lines[0].records == 3_000 and acme.total == Decimal("1.50")
    assert verify_period(march, "2026-03") == []  # March stands as issued


def test_a_period_without_usage_closes_with_no_statements(engine, publisher) -> None:
    closing = close_period(engine, publisher, "2025-12", "operator:alice", now=AFTER_APRIL)
    assert closing.statements == [] and closing.set_aside == []
    assert verify_period(engine, "2025-12") == []


def test_a_broker_failure_leaves_the_period_open(march, publisher) -> None:
    publisher.fail_next = True
    with pytest.raises(Unavailable):
        close_period(march, publisher, "2026-03", "operator:alice", now=AFTER_APRIL)
    assert list_statements(march, "2026-03") == []
    closing = close_period(march, publisher, "2026-03", "operator:alice", now=AFTER_APRIL)
    assert len(closing.statements) == 3


def test_usage_under_a_grant_nobody_knows_stops_the_close(engine, publisher) -> None:
    with engine.begin() as conn:
        add_usage(conn, "g-ghost", ACME, "traffic", 10, 10, MARCH)
    with pytest.raises(PdoError, match="grant.* projection of pdo.authorizations does not hold: g-ghost"):
        close_period(engine, publisher, "2026-03", "operator:alice", now=AFTER_APRIL)
    assert list_statements(engine, "2026-03") == []


@pytest.mark.parametrize(
    "period", ["2026-13", "abc", "2026-00", "2026-3", "1969-12", "2026-03 ", "", "２０２６-03"]
)
def test_malformed_periods_are_refused(engine, publisher, period) -> None:
    with pytest.raises(InvalidInput, match="period"):
        close_period(engine, publisher, period, "operator:alice", now=AFTER_APRIL)
    with pytest.raises(InvalidInput):
        list_statements(engine, period)


def test_verify_refuses_an_open_period_and_unknown_statements_are_not_found(engine) -> None:
    with pytest.raises(InvalidInput, match="period 2026-03 is not closed"):
        verify_period(engine, "2026-03")
    with pytest.raises(NotFound, match="no statement 'st-nope'"):
        get_statement(engine, "st-nope")


def test_migrations_build_the_tables_the_code_declares(engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    declared = (
        sa.MetaData()
    )  # metering's and billing's tables together: each set is the other's "extra" alone
    for table in (*t.metadata.tables.values(), *billing.metadata.tables.values()):
        table.to_metadata(declared)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), declared)
    ours = set(declared.tables)
    # Other areas' tables are not in this metadata; anything about ours is a drift between the two.
    assert [d for d in differences if ours & set(re.findall(r"\w+", str(d)))] == []


def test_verify_notices_a_stored_total_that_no_longer_matches_its_lines(march, publisher) -> None:
    close_period(march, publisher, "2026-03", "operator:alice", now=AFTER_APRIL)
    acme = statement_id_for(ACME, "2026-03", "CNY")
    with march.begin() as conn:
        conn.execute(
            billing.statements.update().where(billing.statements.c.statement_id == acme).values(total_cents=1)
        )
    assert verify_period(march, "2026-03") == [
        f"{acme}: total issued 0.01, recomputed 15.12",
        f"{acme}: total issued 0.01, but its lines add up to 15.12",
    ]


def test_a_tenant_billed_in_two_currencies_gets_one_statement_per_currency(engine, publisher) -> None:
    with engine.begin() as conn:
        add_grant(conn, "g-cny", ACME, "traffic", per_thousand("1.00"))
        add_grant(conn, "g-usd", ACME, "air", per_thousand("0.20", currency="USD"))
        add_usage(conn, "g-cny", ACME, "traffic", 1_000, 1, MARCH)  # 1.00 CNY
        add_usage(conn, "g-usd", ACME, "air", 5_000, 1, MARCH)  # 5,000 x 0.20 / 1,000 = 1.00 USD
    closing = close_period(engine, publisher, "2026-03", "operator:alice", now=AFTER_APRIL)
    assert sorted((s.statement_id, s.currency, s.total) for s in closing.statements) == sorted(
        [
            (statement_id_for(ACME, "2026-03", "CNY"), "CNY", Decimal("1.00")),
            (statement_id_for(ACME, "2026-03", "USD"), "USD", Decimal("1.00")),
        ]
    )
    assert {e["currency"] for e in publisher.of(STATEMENT_ISSUED)} == {"CNY", "USD"}


def test_a_close_waits_for_a_ledger_transaction_billing_into_the_period(engine, publisher) -> None:
    """The lock protocol: the ledger writer holds the period row FOR SHARE (PostgreSQL; SQLite's single writer
    lock has the same effect) while it inserts; a close started meanwhile takes the row FOR UPDATE, so it can
    neither finish before the insert commits nor miss the row."""
    import threading

    from sqlalchemy.dialects import postgresql, sqlite

    with engine.begin() as conn:
        add_grant(conn, "g-1", ACME, "traffic", per_thousand("1.00"))
    writer = engine.connect()
    transaction = writer.begin()
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[engine.dialect.name]
    writer.execute(
        insert(t.periods).values(period="2026-03").on_conflict_do_nothing(index_elements=["period"])
    )
    writer.execute(sa.select(t.periods).where(t.periods.c.period == "2026-03").with_for_update(read=True))
    add_usage(writer, "g-1", ACME, "traffic", 3_000, 1, MARCH)  # 3,000 x 1.00 / 1,000 = 3.00
    closings = []
    closer = threading.Thread(
        target=lambda: closings.append(
            close_period(engine, publisher, "2026-03", "operator:alice", now=AFTER_APRIL)
        )
    )
    closer.start()
    closer.join(timeout=1.0)
    finished_early = not closer.is_alive()
    transaction.commit()
    writer.close()
    closer.join(timeout=30)

    assert not finished_early, "the close did not wait for the ledger transaction"
    (closing,) = closings
    assert [(s.lines[0].records, s.total) for s in closing.statements] == [(3_000, Decimal("3.00"))]
