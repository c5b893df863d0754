"""Delivery digests on SQLite and PostgreSQL: claiming puts each delivery in exactly one digest (late rows in
the next, one digest per grant and billing period), the root is the RFC 6962 root of the sorted ids whatever
their order, DeliveriesDigested is published once acknowledged and again after a failed publish, the audit
recorder turns it into a "deliveries.digested" entry, and a closed period's statement lines name digests
whose counts sum to their records."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from billing_support import add_grant, add_usage, per_thousand

from pdo.audit.recorder import entry_for
from pdo.authorization.testing import RecordingPublisher
from pdo.billing.statements import (
    close_period,
    load_statements,
    statement_event,
    statement_json,
    verify_period,
)
from pdo.core import db, merkle
from pdo.core.errors import Unavailable
from pdo.core.names import Event
from pdo.core.provenance import delivery_root
from pdo.metering import digests
from pdo.metering import tables as t
from pdo.metering.handler import MeteringHandler
from pdo.metering.ledger import Ledger

ACME = "tenant:acme"
MARCH = datetime(2026, 3, 10, 12, tzinfo=UTC)
APRIL = datetime(2026, 4, 2, 8, tzinfo=UTC)
NOW = datetime(2026, 4, 2, 9, tzinfo=UTC)


@pytest.fixture
def engine(database_url) -> Iterator[sa.Engine]:
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    with engine.begin() as conn:
        add_grant(conn, "g-1", ACME, "traffic", per_thousand("0.50"))
        add_grant(conn, "g-2", "tenant:citylab", "air", per_thousand("1.00"))
    yield engine
    engine.dispose()


def usage(
    engine, grant_id: str, count: int, at: datetime, tenant: str = ACME, dataset: str = "traffic"
) -> list[str]:
    with engine.begin() as conn:
        return [
            add_usage(conn, grant_id, tenant, dataset, 1, 10, at + timedelta(seconds=n)) for n in range(count)
        ]


def digest_of_rows(engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(t.ledger.c.delivery_id, t.ledger.c.digest_id)).all())


def all_digests(engine) -> list[digests.Digest]:
    with engine.connect() as conn:
        return digests.list_digests(conn)


# ---------------------------------------------------------------------------------------------- the root


def test_the_root_is_the_rfc6962_root_of_the_sorted_ids_in_any_order():
    ids = ["c" * 32, "a" * 32, "b" * 32]
    expected = merkle.root([merkle.leaf_hash(i.encode()) for i in sorted(ids)])
    assert delivery_root(ids) == delivery_root(reversed(ids)) == expected
    assert delivery_root(ids[:2]) != expected
    assert delivery_root([]) == merkle.EMPTY_ROOT


# ---------------------------------------------------------------------------------------------- claiming


def test_each_delivery_is_claimed_into_exactly_one_digest_and_late_rows_into_the_next(engine):
    first = usage(engine, "g-1", 3, MARCH)
    [made] = digests.claim_due(engine, NOW)
    assert (made.digest_id, made.count, made.seq, made.period) == ("g-1.2026-03.1", 3, 1, "2026-03")
    assert made.root == delivery_root(first)
    assert (made.first_delivered_at, made.last_delivered_at) == (MARCH, MARCH + timedelta(seconds=2))
    assert digests.claim_due(engine, NOW) == []  # nothing new: no empty digest
    late = usage(engine, "g-1", 2, MARCH + timedelta(hours=1))
    [second] = digests.claim_due(engine, NOW)
    assert (second.digest_id, second.count, second.root) == ("g-1.2026-03.2", 2, delivery_root(late))
    rows = digest_of_rows(engine)
    assert {rows[d] for d in first} == {"g-1.2026-03.1"} and {rows[d] for d in late} == {"g-1.2026-03.2"}
    with engine.connect() as conn:
        assert digests.delivery_ids(conn, "g-1.2026-03.2") == sorted(late)
        assert digests.digest_counts(conn, "2026-03") == {"g-1": 2}


def test_a_claim_racing_another_takes_none_of_the_rows_the_other_holds(engine):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: claims cannot race there")
    ids = usage(engine, "g-1", 3, MARCH)
    racing: dict[str, list[digests.Digest]] = {}
    with engine.begin() as conn:
        held = digests.claim(conn, "g-1", "2026-03", NOW)
        other = threading.Thread(target=lambda: racing.update(made=digests.claim_due(engine, NOW)))
        other.start()
        wait_until_blocked(engine)  # the racing UPDATE waits for this transaction's row locks
    other.join(timeout=60)
    assert racing["made"] == []  # it re-read the rows claimed and skipped them
    assert held is not None and held.count == 3
    assert set(digest_of_rows(engine).values()) == {held.digest_id} and len(ids) == 3


def wait_until_blocked(engine, timeout_s: float = 30) -> None:
    """Until another session of this database waits for a lock (bounded: fails after `timeout_s`)."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    deadline = time.monotonic() + timeout_s
    with engine.connect() as watcher:
        while watcher.execute(query).scalar_one() == 0:
            assert time.monotonic() < deadline, "the racing claim never waited for the held rows"
            time.sleep(0.05)


def test_one_digest_per_grant_and_billing_period(engine):
    usage(engine, "g-1", 2, MARCH)
    usage(engine, "g-1", 1, APRIL)
    usage(engine, "g-2", 4, MARCH, tenant="tenant:citylab", dataset="air")
    made = {
        (d.grant_id, d.period): (d.digest_id, d.count, d.tenant_id) for d in digests.claim_due(engine, NOW)
    }
    assert made == {
        ("g-1", "2026-03"): ("g-1.2026-03.1", 2, ACME),
        ("g-1", "2026-04"): ("g-1.2026-04.1", 1, ACME),
        ("g-2", "2026-03"): ("g-2.2026-03.1", 4, "tenant:citylab"),
    }
    assert None not in digest_of_rows(engine).values()


def test_a_backlog_is_claimed_in_digests_of_at_most_the_limit(engine):
    usage(engine, "g-1", 5, MARCH)
    with engine.begin() as conn:
        made = [digests.claim(conn, "g-1", "2026-03", NOW, limit=2) for _ in range(4)]
    assert [d.count if d else None for d in made] == [2, 2, 1, None]
    assert [d.seq for d in made if d] == [1, 2, 3]


def test_set_aside_rows_are_not_digested(engine):
    with engine.begin() as conn:
        add_usage(conn, "g-1", ACME, "traffic", 1, 10, MARCH, set_aside_reason="BEFORE_GRANT: early")
    assert digests.claim_due(engine, NOW) == []


# ---------------------------------------------------------------------------------------------- publishing


def handler(engine, publisher) -> MeteringHandler:
    return MeteringHandler(Ledger(engine), publisher, codec=None, catch_up=lambda: None, clock=lambda: NOW)  # type: ignore[arg-type]


def test_each_digest_is_published_until_acknowledged_with_a_stable_event_id(engine):
    publisher = RecordingPublisher()
    usage(engine, "g-1", 2, MARCH)
    publisher.fail_next = True
    with pytest.raises(Unavailable):
        handler(engine, publisher).digest_deliveries()
    assert publisher.events == []
    assert handler(engine, publisher).digest_deliveries() == (0, 1)  # claimed before; published now
    assert handler(engine, publisher).digest_deliveries() == (0, 0)
    [(name, value)] = publisher.decoded()
    assert name == Event.DELIVERIES_DIGESTED
    [digest] = all_digests(engine)
    assert value["event_id"] == digests.deliveries_digested_event(digest)["event_id"]
    assert (value["digest_id"], value["grant_id"], value["count"], value["root"]) == (
        "g-1.2026-03.1",
        "g-1",
        2,
        digest.root.hex(),
    )
    assert publisher.events[0].key == "g-1"


def test_the_audit_recorder_makes_a_deliveries_digested_entry_naming_the_tenant():
    digest = digests.Digest(
        "g-1.2026-03.1", "g-1", ACME, "traffic", "2026-03", 1, 7, b"\x01" * 32, MARCH, MARCH, NOW
    )
    entry = entry_for(
        Event.DELIVERIES_DIGESTED, digests.deliveries_digested_event(digest), "pdo.delivery-digests[0]@4"
    )
    assert (entry.actor, entry.action, entry.subject, entry.reason) == (
        "system:metering",
        "deliveries.digested",
        "grant:g-1",
        None,
    )
    assert entry.details == {
        "tenant": ACME,
        "dataset": "traffic",
        "digest": "g-1.2026-03.1",
        "period": "2026-03",
        "count": "7",
        "root": "01" * 32,
        "first_delivered_at": "2026-03-10T12:00:00.000Z",
        "last_delivered_at": "2026-03-10T12:00:00.000Z",
    }
    assert entry.occurred_at == NOW


# ---------------------------------------------------------------------------------------------- statements


def test_closing_a_period_claims_what_remains_and_each_line_names_digests_summing_to_its_records(engine):
    usage(engine, "g-1", 3, MARCH)
    digests.claim_due(engine, NOW)
    usage(engine, "g-1", 2, MARCH + timedelta(days=1))  # not claimed by the timer yet
    usage(engine, "g-2", 4, MARCH, tenant="tenant:citylab", dataset="air")
    publisher = RecordingPublisher()
    close_period(engine, publisher, "2026-03", "operator:alice", now=NOW)
    with engine.connect() as conn:
        statements = {s.tenant_id: s for s in load_statements(conn, period="2026-03")}
        counts = {d.digest_id: d.count for d in digests.list_digests(conn, period="2026-03")}
    [line] = statements[ACME].lines
    assert (line.records, line.digest_count) == (5, 2)
    shown = statement_json(statements[ACME])["lines"][0]
    assert shown["digests"] == ["g-1.2026-03.1", "g-1.2026-03.2"]
    assert sum(counts[d] for d in shown["digests"]) == shown["records"]
    assert statement_json(statements["tenant:citylab"])["lines"][0]["digests"] == ["g-2.2026-03.1"]
    issued = {
        value["tenant_id"]: value for name, value in publisher.decoded() if name == Event.STATEMENT_ISSUED
    }
    assert issued[ACME]["lines"][0]["digest_count"] == 2
    assert statement_event(statements[ACME])["lines"][0]["digest_count"] == 2
    assert verify_period(engine, "2026-03") == []


def test_verify_reports_a_billed_delivery_outside_every_digest(engine):
    ids = usage(engine, "g-1", 2, MARCH)
    close_period(engine, RecordingPublisher(), "2026-03", "operator:alice", now=NOW)
    with engine.begin() as conn:
        conn.execute(t.ledger.update().where(t.ledger.c.delivery_id == ids[0]).values(digest_id=None))
    assert verify_period(engine, "2026-03") == [
        "period 2026-03 grant g-1: 1 billed deliveries are in no delivery digest"
    ]
