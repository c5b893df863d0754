"""Metering's projection of the grant and catalog events on SQLite and PostgreSQL: newest version wins, a
redelivered or stale event changes nothing, positions only move forward, and the ordering rule — a fact
whose grant the projection has not applied yet is billed after a catch-up, never set aside for the lag."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from pdo.authorization.testing import RecordingPublisher
from pdo.core import db
from pdo.metering import public
from pdo.metering import tables as t
from pdo.metering.handler import MeteringHandler
from pdo.metering.ledger import UNKNOWN_GRANT, Ledger
from pdo.metering.projection import Projection, TopicEvent, apply_events, known_grants, stored_positions
from pdo.metering.testing import ListTopicLog, granted_event, usage_fact

NOW = datetime(2026, 3, 15, 12, tzinfo=UTC)
GRANTED = "pdo.authorizations.v1.AuthorizationGranted"
SUSPENDED = "pdo.authorizations.v1.AuthorizationSuspended"
DENIED = "pdo.authorizations.v1.AuthorizationDenied"
TOPIC = "pdo.authorizations"
PER_THOUSAND = {"kind": "PER_THOUSAND_RECORDS", "unit_price": Decimal("0.50"), "tiers": [], "currency": "CNY"}


@pytest.fixture
def engine(database_url) -> Iterator[sa.Engine]:
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


def snapshot_event(grant_id: str, version: int, quota: int | None, status: str = "SUSPENDED") -> dict:
    granted = granted_event(
        grant_id, NOW - timedelta(days=1), daily_quota_records=quota, price_plan=PER_THOUSAND
    )
    snapshot = {**granted, "status": status, "status_reason": "test", "version": version}
    return {"event_id": f"e-{version}", "occurred_at": NOW, "grant_id": grant_id, "grant": snapshot}


def apply(engine: sa.Engine, *events: TopicEvent, reached: dict[int, int] | None = None) -> int:
    with engine.begin() as conn:
        return apply_events(conn, TOPIC, list(events), reached or {})


def grant_row(engine: sa.Engine, grant_id: str):
    with engine.connect() as conn:
        return conn.execute(sa.select(t.grants).where(t.grants.c.grant_id == grant_id)).one()


def test_a_grant_is_kept_at_its_newest_version_and_redeliveries_change_nothing(engine) -> None:
    granted = TopicEvent(0, 0, GRANTED, granted_event("g-1", NOW - timedelta(days=1)))
    assert apply(engine, granted) == 1
    assert apply(engine, granted) == 0  # redelivered
    assert apply(engine, TopicEvent(0, 1, SUSPENDED, snapshot_event("g-1", 3, quota=500))) == 1
    assert apply(engine, TopicEvent(0, 2, SUSPENDED, snapshot_event("g-1", 2, quota=7))) == 0  # stale
    assert apply(engine, granted) == 0  # a replay from the start does not roll the grant back
    row = grant_row(engine, "g-1")
    assert (row.version, row.daily_quota_records) == (3, 500)
    assert '"kind": "PER_THOUSAND_RECORDS"' in row.price_plan and '"unit_price": "0.50"' in row.price_plan


def test_denials_and_transitions_without_a_snapshot_state_no_terms(engine) -> None:
    apply(
        engine,
        TopicEvent(0, 0, DENIED, {"grant_id": "g-denied"}),
        TopicEvent(0, 1, SUSPENDED, {"grant_id": "g-old", "grant": None}),
        TopicEvent(0, 2, None, {}),  # undecodable: skipped, counted
    )
    assert known_grants(engine, {"g-denied", "g-old"}) == set()


def test_two_versions_in_one_batch_keep_the_newest_whatever_their_order(engine) -> None:
    apply(
        engine,
        TopicEvent(1, 0, SUSPENDED, snapshot_event("g-2", 4, quota=40)),
        TopicEvent(1, 1, SUSPENDED, snapshot_event("g-2", 2, quota=20)),
    )
    assert grant_row(engine, "g-2").version == 4


def test_dataset_facts_follow_the_catalog_and_a_retirement_of_the_same_version_wins(engine) -> None:
    registered = {"dataset_id": "traffic", "title": "Traffic", "provider_id": "provider:bureau", "version": 1}
    updated = {"dataset": {**registered, "title": "Traffic flow", "version": 2, "retired": False}}
    retired = {"dataset": {**registered, "title": "Traffic flow", "version": 2, "retired": True}}
    catalog = "pdo.catalog.v1."
    assert apply(engine, TopicEvent(0, 0, catalog + "DatasetRegistered", registered)) == 1
    assert apply(engine, TopicEvent(0, 1, catalog + "DatasetUpdated", updated)) == 1
    assert apply(engine, TopicEvent(0, 2, catalog + "DatasetRetired", retired)) == 1
    assert apply(engine, TopicEvent(0, 1, catalog + "DatasetUpdated", updated)) == 0  # older than retired
    assert apply(engine, TopicEvent(0, 0, catalog + "DatasetRegistered", registered)) == 0
    with engine.connect() as conn:
        assert public.dataset_names(conn) == {"traffic": ("Traffic flow", "provider:bureau")}


def test_positions_only_move_forward(engine) -> None:
    apply(engine, reached={0: 5, 1: 2})
    apply(engine, reached={0: 3, 2: 1})  # an agent that is behind a catch-up
    with engine.connect() as conn:
        assert stored_positions(conn, TOPIC) == {0: 5, 1: 2, 2: 1}


def test_catch_up_reads_from_the_stored_positions_to_the_end_once(engine) -> None:
    log = ListTopicLog(TOPIC)
    log.append(0, GRANTED, granted_event("g-a", NOW))
    projection = Projection(engine, codec=None, authorizations=log)
    assert projection.catch_up() == 1
    log.append(2, GRANTED, granted_event("g-b", NOW))
    assert projection.catch_up() == 1
    assert projection.catch_up() == 0  # at the end: nothing read
    assert log.reads == [{0: 0, 1: 0, 2: 0}, {0: 1, 1: 0, 2: 0}]
    assert known_grants(engine, {"g-a", "g-b"}) == {"g-a", "g-b"}


@pytest.fixture
def behind(engine) -> tuple[MeteringHandler, ListTopicLog]:
    """A handler whose grants projection is behind pdo.authorizations: the topic has g-late, the table not."""
    log = ListTopicLog(TOPIC)
    log.append(1, GRANTED, granted_event("g-late", NOW - timedelta(hours=1), daily_quota_records=10))
    projection = Projection(engine, codec=None, authorizations=log)
    handler = MeteringHandler(Ledger(engine, lambda: NOW), RecordingPublisher(), None, projection.catch_up)
    return handler, log


def test_a_fact_whose_grant_the_projection_lags_is_billed_not_set_aside(behind, engine) -> None:
    handler, log = behind
    fact = usage_fact("d-late", "g-late", NOW)
    assert known_grants(engine, {"g-late"}) == set()
    assert handler.know_grants([fact]) is True
    result = handler.record([fact])
    assert [usage.billing_period for usage in result.new] == ["2026-03"]
    assert result.set_aside == []
    assert result.quota_usage[0].quota_records == 10  # the caught-up terms are the ones the ledger used


def test_a_grant_still_unknown_after_catching_up_is_set_aside(behind) -> None:
    handler, log = behind
    fact = usage_fact("d-ghost", "g-ghost", NOW)
    assert handler.know_grants([fact]) is True
    [usage] = handler.record([fact]).set_aside
    assert usage.set_aside_reason.startswith(f"{UNKNOWN_GRANT}: ")
    assert len(log.reads) == 1


def test_no_catch_up_when_every_grant_is_known(behind) -> None:
    handler, log = behind
    handler.know_grants([usage_fact("d-1", "g-late", NOW)])
    assert handler.know_grants([usage_fact("d-2", "g-late", NOW)]) is False
    assert len(log.reads) == 1


def imported_modules(folder: str) -> dict[str, set[str]]:
    """Per module of services/<folder>, the pdo modules it imports (at the top or inside functions)."""
    import ast
    from pathlib import Path

    found = {}
    for path in sorted((Path(__file__).parents[2] / "services" / folder).glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
        found[path.name] = {name for name in names if name.startswith("pdo.")}
    return found


def test_metering_reads_no_other_service_and_billing_reads_metering_only_through_its_public_module() -> None:
    for module, names in imported_modules("metering").items():
        foreign = {n for n in names if not n.startswith(("pdo.core", "pdo.metering"))}
        assert foreign == set(), f"metering/{module} imports {sorted(foreign)}"
    for module, names in imported_modules("billing").items():
        internal = {
            n for n in names if n.startswith("pdo.metering") and not n.startswith("pdo.metering.public")
        }
        assert internal <= {"pdo.metering", "pdo.metering.public"}, (
            f"billing/{module} imports {sorted(internal)}"
        )
