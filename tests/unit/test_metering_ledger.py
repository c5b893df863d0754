"""The usage ledger's write path on SQLite and PostgreSQL: each delivery id once, late facts billed in the
next open period, set-aside facts kept with their reason, windows that sum to the ledger across minute and
day boundaries, quota notices once per grant and day, and the window publishing marks."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from conftest import fresh_postgres_database

from pdo.core import db
from pdo.core.db import dialect_insert
from pdo.core.months import period_end, period_of
from pdo.metering import tables as t
from pdo.metering import usage
from pdo.metering.ledger import (
    BEFORE_GRANT,
    DAY,
    MINUTE,
    UNKNOWN_GRANT,
    Delivery,
    InvalidFact,
    Ledger,
    UsageFact,
)
from pdo.metering.testing import insert_grant, records_delivered_event, usage_fact

NOW = datetime(2026, 3, 15, 12, 0, 30, tzinfo=UTC)
GRANT_START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def engine(database_url):
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    insert_grant(engine, "g-1", GRANT_START)
    insert_grant(engine, "g-quota", GRANT_START, tenant_id="tenant:quota", daily_quota_records=5)
    yield engine
    engine.dispose()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def ledger_rows(engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {row.delivery_id: dict(row._mapping) for row in conn.execute(sa.select(t.ledger))}


def windows(engine, kind: str) -> dict[tuple[str, datetime], tuple[int, int, int]]:
    found = usage.list_windows(
        engine, kind, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    )
    return {(w.grant_id, w.window_start): (w.records, w.bytes, w.version) for w in found}


def close_period(engine, period: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            dialect_insert(conn, t.periods)
            .values(period=period)
            .on_conflict_do_nothing(index_elements=["period"])
        )
        conn.execute(
            t.periods.update()
            .where(t.periods.c.period == period)
            .values(closed_at=NOW, closed_by="operator:alice")
        )


# ---------------------------------------------------------------------------------------------- exactly once


def test_each_delivery_id_counts_once_across_and_within_batches(engine):
    ledger = Ledger(engine, Clock(NOW))
    first = ledger.record(
        [usage_fact("d-1", "g-1", NOW), usage_fact("d-2", "g-1", NOW), usage_fact("d-2", "g-1", NOW)]
    )
    assert first.new_delivery_ids == ["d-1", "d-2"]
    assert first.duplicates == 1
    again = ledger.record([usage_fact("d-2", "g-1", NOW), usage_fact("d-3", "g-1", NOW, records=4, size=9)])
    assert again.new_delivery_ids == ["d-3"]
    assert again.duplicates == 1
    assert ledger.record([usage_fact("d-1", "g-1", NOW)]).new == []
    rows = ledger_rows(engine)
    assert sorted(rows) == ["d-1", "d-2", "d-3"]
    assert sum(row["records"] for row in rows.values()) == 6
    # Windows took only the new rows: 1 + 1 + 4 records, 100 + 100 + 9 bytes.
    assert windows(engine, DAY)[("g-1", datetime(2026, 3, 15, tzinfo=UTC))][:2] == (6, 209)
    assert windows(engine, MINUTE)[("g-1", datetime(2026, 3, 15, 12, 0, tzinfo=UTC))][:2] == (6, 209)


def batch_fact(
    grant_id: str, at: datetime, deliveries: list[tuple[str, int]], partition: int = 0
) -> UsageFact:
    """A RecordsDeliveredBatch fact: (delivery id, source offset) pairs of 10 bytes each."""
    return UsageFact(
        tenant_id="tenant:acme",
        dataset_id="traffic",
        grant_id=grant_id,
        delivered_at=at,
        source_topic="pdo.feed.traffic",
        source_partition=partition,
        deliveries=tuple(Delivery(delivery_id, 1, 10, offset, offset) for delivery_id, offset in deliveries),
    )


def test_a_fact_of_many_deliveries_is_one_row_each_and_a_redelivery_cut_differently_adds_only_the_new(engine):
    ledger = Ledger(engine, Clock(NOW))
    first = ledger.record([batch_fact("g-1", NOW, [("a", 1), ("b", 2), ("c", 3)])])
    assert (first.new_delivery_ids, first.duplicates) == (["a", "b", "c"], 0)
    [usage] = first.new
    assert (usage.grant_id, usage.billing_period, usage.records, usage.bytes) == ("g-1", "2026-03", 3, 30)
    # The same deliveries again, cut into other facts (another transaction's batches), with one new one;
    # and a delivery named twice in one batch, under two facts.
    again = ledger.record(
        [
            batch_fact("g-1", NOW, [("b", 2), ("c", 3)], partition=0),
            batch_fact("g-1", NOW, [("d", 4), ("a", 1)], partition=0),
            batch_fact("g-1", NOW, [("d", 4)], partition=0),
        ]
    )
    assert (again.new_delivery_ids, again.duplicates) == (["d"], 4)
    rows = ledger_rows(engine)
    assert sorted(rows) == ["a", "b", "c", "d"]
    assert (rows["d"]["first_offset"], rows["d"]["last_offset"], rows["d"]["records"]) == (4, 4, 1)
    assert windows(engine, DAY)[("g-1", datetime(2026, 3, 15, tzinfo=UTC))][:2] == (4, 40)


def test_one_batch_groups_new_deliveries_by_grant_time_and_billing(engine):
    later = NOW + timedelta(minutes=3)
    result = Ledger(engine, Clock(NOW)).record(
        [
            batch_fact("g-1", NOW, [("p0-1", 1)], partition=0),
            batch_fact("g-1", NOW, [("p1-1", 1), ("p1-2", 2)], partition=1),  # same grant and time: one group
            batch_fact("g-1", later, [("later", 3)]),
            batch_fact("g-nobody", NOW, [("ghost", 9)]),
        ]
    )
    assert [
        (u.grant_id, u.delivered_at, u.billing_period, u.records, sorted(u.delivery_ids)) for u in result.new
    ] == [
        ("g-1", NOW, "2026-03", 3, ["p0-1", "p1-1", "p1-2"]),
        ("g-1", later, "2026-03", 1, ["later"]),
        ("g-nobody", NOW, None, 1, ["ghost"]),
    ]
    assert result.set_aside[0].set_aside_reason.startswith(f"{UNKNOWN_GRANT}: ")
    assert windows(engine, MINUTE)[("g-1", datetime(2026, 3, 15, 12, 0, tzinfo=UTC))][:2] == (3, 30)
    assert windows(engine, MINUTE)[("g-1", datetime(2026, 3, 15, 12, 3, tzinfo=UTC))][:2] == (1, 10)


@pytest.mark.parametrize(
    "delivery_id",
    [
        "a,b",
        'quote"d',
        "back\\slash",
        "{1,2}",
        "NULL",
        " spaced ",
        "ünïcødé-✓",
        '["json"]',
        "'; DROP TABLE x; --",
    ],
)
def test_a_delivery_id_is_stored_as_it_came_whatever_its_characters(engine, delivery_id):
    """The batch travels to PostgreSQL as text parameters: no separator, quote or escape in an id may split,
    merge or alter it (ids come from sharing, but the ledger never relies on their shape)."""
    ledger = Ledger(engine, Clock(NOW))
    result = ledger.record([batch_fact("g-1", NOW, [(delivery_id, 1), ("plain", 2)])])
    assert result.new_delivery_ids == sorted([delivery_id, "plain"])
    assert sorted(ledger_rows(engine)) == sorted([delivery_id, "plain"])
    assert ledger.record([batch_fact("g-1", NOW, [(delivery_id, 1)])]).duplicates == 1


def test_an_empty_batch_writes_nothing(engine):
    result = Ledger(engine, Clock(NOW)).record([])
    assert (result.new, result.duplicates) == ([], 0)
    assert ledger_rows(engine) == {}


def test_billed_rows_carry_the_delivery_month_and_the_source_position(engine):
    fact = usage_fact("d-1", "g-1", NOW, offset=41)
    [usage] = Ledger(engine, Clock(NOW)).record([fact]).new
    stored = ledger_rows(engine)["d-1"]
    assert (usage.billing_period, stored["billing_period"], stored["set_aside_reason"]) == (
        "2026-03",
        "2026-03",
        None,
    )
    assert (stored["source_topic"], stored["first_offset"], stored["last_offset"]) == (
        "pdo.feed.traffic",
        41,
        41,
    )


# ---------------------------------------------------------------------------------------------- late and out of window


def test_a_fact_delivered_in_a_closed_period_is_billed_in_the_next_open_one(engine):
    close_period(engine, "2026-02")
    late = usage_fact("late", "g-1", datetime(2026, 2, 27, 23, 0, tzinfo=UTC))
    on_time = usage_fact("on-time", "g-1", datetime(2026, 3, 1, 0, 0, tzinfo=UTC))
    result = Ledger(engine, Clock(NOW)).record([late, on_time])
    assert {delivery: usage.billing_period for usage in result.new for delivery in usage.delivery_ids} == {
        "late": "2026-03",
        "on-time": "2026-03",
    }
    # Its window stays where it was delivered: usage is dated by delivery, billing by the open period.
    assert ("g-1", datetime(2026, 2, 27, tzinfo=UTC)) in windows(engine, DAY)


def test_when_the_recording_month_is_closed_too_the_fact_goes_to_the_first_open_month_after(engine):
    close_period(engine, "2026-02")
    close_period(engine, "2026-03")
    late = usage_fact("late", "g-1", datetime(2026, 2, 10, tzinfo=UTC))
    [usage] = Ledger(engine, Clock(NOW)).record([late]).new
    assert usage.billing_period == "2026-04"
    with engine.connect() as conn:
        open_rows = conn.execute(
            sa.select(t.periods.c.period).where(t.periods.c.closed_at.is_(None))
        ).scalars()
        assert "2026-04" in set(open_rows)


def test_facts_before_the_grant_or_for_an_unknown_grant_are_set_aside_with_a_reason(engine):
    before = usage_fact("before", "g-1", GRANT_START - timedelta(milliseconds=1))
    unknown = usage_fact("unknown", "g-nobody", NOW)
    result = Ledger(engine, Clock(NOW)).record([before, unknown, usage_fact("ok", "g-1", GRANT_START)])
    assert [delivery for usage in result.set_aside for delivery in usage.delivery_ids] == [
        "before",
        "unknown",
    ]
    rows = ledger_rows(engine)
    assert rows["before"]["billing_period"] is None
    assert rows["before"]["set_aside_reason"].startswith(f"{BEFORE_GRANT}: ")
    assert rows["unknown"]["set_aside_reason"].startswith(f"{UNKNOWN_GRANT}: ")
    assert "g-nobody" in rows["unknown"]["set_aside_reason"]
    assert (rows["ok"]["billing_period"], rows["ok"]["set_aside_reason"]) == ("2026-01", None)
    # Never dropped: a redelivery is still a duplicate, and the windows count the deliveries.
    assert Ledger(engine, Clock(NOW)).record([before, unknown]).duplicates == 2
    assert windows(engine, DAY)[("g-nobody", datetime(2026, 3, 15, tzinfo=UTC))][:2] == (1, 100)


@pytest.fixture
def postgres_engine(postgres_url):
    """PostgreSQL only: SQLite serialises writers, so a close can never overlap a ledger write there."""
    for url in fresh_postgres_database(postgres_url):
        db.upgrade(url)
        engine = db.make_engine(url)
        insert_grant(engine, "g-1", GRANT_START)
        yield engine
        engine.dispose()


def test_a_close_in_progress_makes_the_writer_wait_then_bill_the_next_period(postgres_engine):
    engine = postgres_engine
    Ledger(engine, Clock(NOW)).record([usage_fact("early", "g-1", NOW)])  # the 2026-03 row exists
    written: dict = {}
    with engine.connect() as closer:
        closing = closer.begin()
        closer.execute(sa.select(t.periods).where(t.periods.c.period == "2026-03").with_for_update())
        writer = threading.Thread(
            target=lambda: written.update(
                result=Ledger(engine, Clock(NOW)).record([usage_fact("during-close", "g-1", NOW)])
            )
        )
        writer.start()
        time.sleep(
            0.5
        )  # the writer now waits on the period row (if it did not, it billed 2026-03: the test fails)
        closer.execute(t.periods.update().where(t.periods.c.period == "2026-03").values(closed_at=NOW))
        closing.commit()
    writer.join(timeout=30)
    [usage] = written["result"].new
    assert usage.billing_period == "2026-04"


# ---------------------------------------------------------------------------------------------- windows


def test_windows_split_at_minute_and_day_boundaries(engine):
    last_ms = datetime(2026, 3, 15, 23, 59, 59, 999000, tzinfo=UTC)
    midnight = datetime(2026, 3, 16, tzinfo=UTC)
    Ledger(engine, Clock(NOW)).record(
        [
            usage_fact("a", "g-1", datetime(2026, 3, 15, 23, 59, tzinfo=UTC), size=1),
            usage_fact("b", "g-1", last_ms, size=2),
            usage_fact("c", "g-1", midnight, size=4),
            usage_fact("d", "g-1", midnight + timedelta(seconds=59, microseconds=999000), size=8),
            usage_fact("e", "g-1", midnight + timedelta(minutes=1), size=16),
        ]
    )
    assert {start: value[:2] for (_, start), value in windows(engine, MINUTE).items()} == {
        datetime(2026, 3, 15, 23, 59, tzinfo=UTC): (2, 3),
        midnight: (2, 12),
        midnight + timedelta(minutes=1): (1, 16),
    }
    assert {start: value[:2] for (_, start), value in windows(engine, DAY).items()} == {
        datetime(2026, 3, 15, tzinfo=UTC): (2, 3),
        midnight: (3, 28),
    }
    [window] = usage.list_windows(engine, DAY, midnight, midnight + timedelta(seconds=1))
    assert (window.window_start, window.window_end) == (midnight, midnight + timedelta(days=1))


def test_windows_of_each_kind_sum_to_the_ledger_per_grant(engine):
    insert_grant(engine, "g-2", GRANT_START, tenant_id="tenant:other")
    generator = random.Random(7)
    ledger = Ledger(engine, Clock(NOW))
    for _batch in range(6):
        facts = [
            usage_fact(
                f"d-{generator.randrange(400)}",  # collisions on purpose: duplicates across batches
                generator.choice(["g-1", "g-2"]),
                NOW + timedelta(seconds=generator.randrange(-3 * 86400, 3 * 86400)),
                records=generator.randrange(1, 5),
                size=generator.randrange(1, 1000),
            )
            for _ in range(80)
        ]
        ledger.record(facts)
    with engine.connect() as conn:
        ledger_sums = {
            row.grant_id: (row.records, row.bytes)
            for row in conn.execute(
                sa.select(
                    t.ledger.c.grant_id,
                    sa.func.sum(t.ledger.c.records).label("records"),
                    sa.func.sum(t.ledger.c.bytes).label("bytes"),
                ).group_by(t.ledger.c.grant_id)
            )
        }
    for kind in (MINUTE, DAY):
        sums: dict[str, list[int]] = {}
        for (grant_id, _), (records, size, _) in windows(engine, kind).items():
            total = sums.setdefault(grant_id, [0, 0])
            total[0] += records
            total[1] += size
        assert {grant_id: tuple(total) for grant_id, total in sums.items()} == ledger_sums


def test_closed_windows_are_published_once_per_version_and_again_after_a_late_fact(engine):
    ledger = Ledger(engine, Clock(NOW))
    ledger.record([usage_fact("a", "g-1", NOW)])
    grace = timedelta(seconds=10)
    minute_end = datetime(2026, 3, 15, 12, 1, tzinfo=UTC)
    assert usage.closed_unpublished(engine, minute_end, grace, 100) == []  # closed, grace not over
    [due] = usage.closed_unpublished(engine, minute_end + grace, grace, 100)
    assert (due.window, due.records, due.version) == (MINUTE, 1, 1)
    event = usage.usage_recorded_event(due)
    assert (event["window"], event["window_start"], event["records"]) == (MINUTE, due.window_start, 1)
    usage.mark_window_published(engine, due)
    assert usage.closed_unpublished(engine, minute_end + grace, grace, 100) == []
    ledger.record([usage_fact("late", "g-1", NOW + timedelta(seconds=5), records=2)])
    [again] = usage.closed_unpublished(engine, minute_end + grace, grace, 100)
    assert (again.records, again.version) == (3, 2)
    assert usage.usage_recorded_event(again)["event_id"] != event["event_id"]
    assert usage.usage_recorded_event(again)["event_id"] == usage.usage_recorded_event(again)["event_id"]


# ---------------------------------------------------------------------------------------------- quotas


def test_a_quota_notice_is_raised_once_per_grant_and_day(engine):
    ledger = Ledger(engine, Clock(NOW))
    quota_fact = lambda name, at=NOW: usage_fact(name, "g-quota", at, tenant_id="tenant:quota")  # noqa: E731
    below = ledger.record([quota_fact(f"q-{n}") for n in range(4)])
    assert below.notices == []
    assert [(u.used_records, u.quota_records) for u in below.quota_usage] == [(4, 5)]
    reached = ledger.record([quota_fact("q-4"), quota_fact("q-5"), usage_fact("free", "g-1", NOW)])
    [notice] = reached.notices
    assert (notice.grant_id, notice.day, notice.quota_records, notice.used_records) == (
        "g-quota",
        date(2026, 3, 15),
        5,
        6,
    )
    assert ledger.record([quota_fact("q-6"), quota_fact("q-4")]).notices == []  # same day: no second one
    [pending] = usage.pending_notices(engine)
    assert pending == notice
    event = usage.quota_exceeded_event(pending)
    assert (event["event_id"], event["day"], event["used_records"]) == (notice.event_id, date(2026, 3, 15), 6)
    usage.mark_notice_published(engine, pending, NOW)
    assert usage.pending_notices(engine) == []
    tomorrow = ledger.record([quota_fact(f"t-{n}", NOW + timedelta(days=1)) for n in range(5)])
    assert [n.day for n in tomorrow.notices] == [date(2026, 3, 16)]


def test_redelivered_facts_never_raise_a_notice(engine):
    ledger = Ledger(engine, Clock(NOW))
    facts = [usage_fact(f"q-{n}", "g-quota", NOW, tenant_id="tenant:quota") for n in range(4)]
    ledger.record(facts)
    assert ledger.record(facts * 3).notices == []


# ---------------------------------------------------------------------------------------------- facts


def test_a_fact_from_a_records_delivered_value_round_trips():
    fact = usage_fact("d-1", "g-1", NOW, offset=7)
    assert UsageFact.from_event(records_delivered_event(fact)) == fact


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"delivery_id": ""}, "delivery_id must be 1 to 64"),
        ({"delivery_id": "x" * 65}, "delivery_id must be 1 to 64"),
        ({"grant_id": "g" * 161}, "grant_id must be 1 to 160"),
        ({"records": -1}, "cannot be negative"),
        ({"bytes": -5}, "cannot be negative"),
        ({"records": 2**63 - 1}, "exceed the 1 source offsets"),
        ({"bytes": 2**63 - 1}, "exceed 16777216 per record"),
    ],
)
def test_facts_the_ledger_cannot_hold_are_refused_with_the_reason(change, fragment):
    value = {**records_delivered_event(usage_fact("d-1", "g-1", NOW)), **change}
    with pytest.raises(InvalidFact, match=fragment):
        UsageFact.from_event(value)


def test_period_arithmetic():
    assert period_of(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == "2026-12"
    assert period_of(period_end("2026-12")) == "2027-01"
    assert period_of(period_end("2026-01")) == "2026-02"
    assert period_of(datetime(2026, 3, 1, 0, 0)) == "2026-03"  # naive, as SQLite returns it: UTC
