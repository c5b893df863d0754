"""State rebuilt from the events equals the state the service wrote, path by path (no broker needed)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from test_authorization_service import OPERATOR, START, TENANT, spec

from pdo.authorization import projection
from pdo.authorization import tables as t
from pdo.authorization.models import Narrowing, RequestStatus
from pdo.authorization.projection import SourcedEvent
from pdo.authorization.testing import Harness, sqlite_harness
from pdo.core import db


@pytest.fixture
def h(tmp_path) -> Harness:
    with sqlite_harness(tmp_path, START) as harness:
        yield harness


# Columns the events do not carry (see pdo.authorization.projection): compared after normalising.
LOCAL_REQUEST_COLUMNS = ("tenant_kind",)


def walk_every_path(h: Harness) -> None:
    service, clock = h.service, h.clock

    def submit(dataset_id="open-traffic", **changes):
        clock.advance(seconds=1)
        return service.submit_request(TENANT, spec(dataset_id, **changes), TENANT).request_id

    auto = service.decide(submit()).grant_id
    clock.advance(seconds=1)
    service.suspend(auto, OPERATOR, "checking the purpose")
    clock.advance(seconds=1)
    service.resume(auto, OPERATOR, "checked")

    narrowed = submit("conditional-traffic", fields=("district", "plate_number"))
    service.decide(narrowed)
    clock.advance(seconds=1)
    grant = service.approve(
        narrowed, OPERATOR, Narrowing(fields=("plate_number",), daily_quota_records=10), "ok"
    )
    clock.advance(seconds=1)
    service.revoke(grant.grant_id, OPERATOR, "contract ended")

    service.decide(submit("closed-traffic"))
    operator_denied = submit("conditional-traffic")
    service.decide(operator_denied)
    clock.advance(seconds=1)
    service.deny(operator_denied, OPERATOR, "purpose too broad")
    withdrawn = submit("conditional-traffic")
    clock.advance(seconds=1)
    service.withdraw_request(TENANT, withdrawn, "changed plans", TENANT)

    expiring = service.decide(submit(valid_until=START + timedelta(days=1))).grant_id
    quota = service.decide(submit()).grant_id
    clock.advance(seconds=1)
    service.suspend_for_quota(quota, clock.now.date(), 5000, 5001)
    clock.advance(days=1)
    service.expire_due(clock.now)
    assert service.get_grant(expiring).status == "EXPIRED"
    service.decide(
        service.submit_request(TENANT, spec(), TENANT, tenant_is_government=True).request_id
    )  # its kind is not on the topic
    submit()  # still undecided


def table_rows(source, table, drop=()) -> list[dict]:
    key = {t.requests: "request_id", t.grants: "grant_id", t.grant_transitions: "event_id"}[table]
    with source.connect() as conn:
        found = [dict(row) for row in conn.execute(sa.select(table).order_by(table.c[key])).mappings()]
    return [{k: v for k, v in row.items() if k not in (*drop, "id")} for row in found]


def test_rebuilding_from_the_events_restores_the_tables(h, tmp_path):
    walk_every_path(h)
    publisher, engine = h.publisher, h.engine
    events = [SourcedEvent(name, value, f"#{n}") for n, (name, value) in enumerate(publisher.decoded())]
    # As rebuild_from_topics does: the requests topic first, then the authorizations topic.
    ordered = [e for e in events if e.schema_name.startswith("pdo.requests")] + [
        e for e in events if e.schema_name.startswith("pdo.authorizations")
    ]

    fresh_url = f"sqlite:///{tmp_path / 'rebuilt.db'}"
    db.upgrade(fresh_url)
    rebuilt = db.make_engine(fresh_url)
    try:
        result = projection.project(ordered)
        assert result.skipped == []
        projection.write(rebuilt, result)
        for table in (t.grants, t.grant_transitions):
            assert table_rows(rebuilt, table) == table_rows(engine, table)
        assert table_rows(rebuilt, t.requests, LOCAL_REQUEST_COLUMNS) == table_rows(
            engine, t.requests, LOCAL_REQUEST_COLUMNS
        )
        statuses = {row["status"] for row in table_rows(rebuilt, t.requests)}
        assert statuses == {s.value for s in RequestStatus} - {"PENDING_REVIEW"}
    finally:
        rebuilt.dispose()


def test_a_request_pending_review_comes_back_submitted_and_is_decided_again(h):
    service, publisher, engine, clock = h.service, h.publisher, h.engine, h.clock
    request = service.submit_request(TENANT, spec("conditional-traffic"), TENANT)
    service.decide(request.request_id)
    result = projection.project(SourcedEvent(n, v) for n, v in publisher.decoded())
    assert result.requests[request.request_id].status == RequestStatus.SUBMITTED
    projection.write(engine, result)
    clock.advance(minutes=1)
    (decided,) = service.decide_stale(timedelta(seconds=30))
    assert decided.status == RequestStatus.PENDING_REVIEW


def test_older_snapshots_are_ignored_and_repeats_are_harmless(h):
    service, publisher, clock = h.service, h.publisher, h.clock
    grant_id = service.decide(service.submit_request(TENANT, spec(), TENANT).request_id).grant_id
    clock.advance(seconds=1)
    service.suspend(grant_id, OPERATOR, "a")
    clock.advance(seconds=1)
    service.revoke(grant_id, OPERATOR, "b")
    events = [SourcedEvent(n, v) for n, v in publisher.decoded()]
    shuffled = events + [events[2], events[1]]  # the suspension and the grant again, after the revocation
    result = projection.project(shuffled)
    assert result.grants[grant_id].status == "REVOKED" and result.grants[grant_id].version == 3
    assert len(result.transitions) == 3


def test_unknown_and_malformed_events_are_skipped_with_their_position():
    result = projection.project(
        [
            SourcedEvent("pdo.catalog.v1.DatasetRetired", {}, "pdo.catalog[0]@4"),
            SourcedEvent(
                "pdo.authorizations.v1.AuthorizationRevoked", {"grant_id": "g-1"}, "pdo.authorizations[1]@9"
            ),
        ]
    )
    assert len(result.skipped) == 2
    assert result.skipped[0].startswith("pdo.catalog[0]@4")
    assert result.skipped[1].startswith("pdo.authorizations[1]@9")
