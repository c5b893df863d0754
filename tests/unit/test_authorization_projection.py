"""State rebuilt from the events equals the state the service wrote, path by path (no broker needed)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from test_authorization_service import OPERATOR, START, TENANT, spec

from pdo.authorization import projection, records
from pdo.authorization import tables as t
from pdo.authorization.projection import SourcedEvent
from pdo.authorization.public import Narrowing, RequestStatus
from pdo.authorization.testing import Harness, sqlite_harness
from pdo.core import db
from pdo.core.errors import Conflict
from pdo.core.vocabulary import GrantStatus, TenantKind


@pytest.fixture
def h(tmp_path) -> Harness:
    with sqlite_harness(tmp_path, START) as harness:
        yield harness


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

    # No row filter: its field (district) would go with the narrowing, and a filter may only read granted fields.
    narrowed = submit("conditional-traffic", fields=("district", "plate_number"), row_filter=None)
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
    government = service.submit_request(TENANT, spec(), TENANT, tenant_is_government=True)
    assert service.get_grant(service.decide(government.request_id).grant_id).price_plan.kind == "FREE"
    clock.advance(seconds=1)
    service.decide(submit("conditional-traffic"))  # left pending review
    clock.advance(seconds=1)
    government_review = service.submit_request(
        TENANT, spec("conditional-traffic"), TENANT, tenant_is_government=True
    )
    service.decide(government_review.request_id)  # a government request pending review
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
        for table in (t.requests, t.grants, t.grant_transitions):
            assert table_rows(rebuilt, table) == table_rows(engine, table)
        requests = table_rows(rebuilt, t.requests)
        assert {row["status"] for row in requests} == {s.value for s in RequestStatus}
        assert {(row["status"], row["tenant_kind"]) for row in requests} >= {
            ("APPROVED", "government"),
            ("PENDING_REVIEW", "government"),
            ("PENDING_REVIEW", "company"),
        }
    finally:
        rebuilt.dispose()


def test_a_referral_restores_the_request_pending_review_with_its_rule_and_reason(h):
    service, publisher = h.service, h.publisher
    request = service.submit_request(TENANT, spec("conditional-traffic"), TENANT)
    h.clock.advance(seconds=3)
    live = service.decide(request.request_id)
    assert live.status == RequestStatus.PENDING_REVIEW
    assert [name for name, _ in publisher.decoded()] == [records.SUBMITTED, records.REFERRED]
    result = projection.project(SourcedEvent(n, v) for n, v in publisher.decoded())
    assert result.skipped == []
    assert result.requests[request.request_id] == live
    assert (live.decided_by_rule, live.decided_by) == ("review-everything-else", "system:policy")
    assert live.decision_reason and live.updated_at == START + timedelta(seconds=3)


def test_a_request_referred_then_decided_or_withdrawn_ends_decided(h):
    service, publisher, clock = h.service, h.publisher, h.clock
    approved, denied, withdrawn = (
        service.submit_request(TENANT, spec("conditional-traffic"), TENANT).request_id for _ in range(3)
    )
    for request_id in (approved, denied, withdrawn):
        service.decide(request_id)
    clock.advance(seconds=1)
    service.approve(approved, OPERATOR, reason="fine")
    service.deny(denied, OPERATOR, "too broad")
    service.withdraw_request(TENANT, withdrawn, "changed plans", TENANT)
    events = [SourcedEvent(n, v) for n, v in publisher.decoded()]
    requests_first = sorted(events, key=lambda e: not e.schema_name.startswith("pdo.requests"))
    result = projection.project(requests_first)
    for request_id in (approved, denied, withdrawn):
        assert result.requests[request_id] == service.get_request(request_id)
    # A referral read again after the decision (a duplicate) does not reopen the request.
    (late,) = [e for e in events if e.schema_name == records.REFERRED and e.value["request_id"] == denied]
    result.apply(late)
    assert result.requests[denied].status == RequestStatus.DENIED


def test_a_referral_for_a_request_never_submitted_is_skipped():
    value = {
        "event_id": "e-1",
        "occurred_at": START,
        "actor": "system:policy",
        "request_id": "r-ghost",
        "tenant_id": TENANT,
        "dataset_id": "conditional-traffic",
        "rule": "review-everything-else",
        "reason": "r",
    }
    result = projection.project([SourcedEvent(records.REFERRED, value, "pdo.requests[0]@3")])
    assert result.requests == {}
    assert len(result.skipped) == 1 and "r-ghost" in result.skipped[0]


def test_the_tenant_kind_comes_from_the_submission(h):
    service, publisher = h.service, h.publisher
    government = service.submit_request(TENANT, spec(), TENANT, tenant_is_government=True)
    company = service.submit_request(TENANT, spec(), TENANT)
    result = projection.project(SourcedEvent(n, v) for n, v in publisher.decoded())
    assert result.requests[government.request_id].tenant_kind == TenantKind.GOVERNMENT
    assert result.requests[company.request_id].tenant_kind == TenantKind.COMPANY
    assert result.requests[government.request_id] == government
    assert [records.tenant_kind_from_avro(s) for s in (None, "COMPANY", "GOVERNMENT", "NGO")] == [
        TenantKind.COMPANY,
        TenantKind.COMPANY,
        TenantKind.GOVERNMENT,
        TenantKind.COMPANY,  # a symbol added later: the enum's default
    ]
    assert records.tenant_kind_to_avro(TenantKind.GOVERNMENT) == "GOVERNMENT"


def test_events_written_before_the_new_fields_and_event_still_project(h):
    """A submission without tenant_kind (an older writer) is a company's; a request referred before
    DataRequestReferred existed comes back SUBMITTED, and the worker's sweep refers it again."""
    service, publisher, engine, clock = h.service, h.publisher, h.engine, h.clock
    request = service.submit_request(TENANT, spec("conditional-traffic"), TENANT)
    service.decide(request.request_id)
    legacy = []
    for name, value in publisher.decoded():
        if name == records.REFERRED:
            continue
        if name == records.SUBMITTED:
            value = {k: v for k, v in value.items() if k != "tenant_kind"}
        legacy.append(SourcedEvent(name, value))
    result = projection.project(legacy)
    assert result.skipped == []
    rebuilt = result.requests[request.request_id]
    assert (rebuilt.status, rebuilt.tenant_kind) == (RequestStatus.SUBMITTED, TenantKind.COMPANY)
    projection.write(engine, result)
    clock.advance(minutes=1)
    (decided,) = service.decide_stale(timedelta(seconds=30))
    assert decided.status == RequestStatus.PENDING_REVIEW
    assert len(publisher.of(records.REFERRED)) == 2


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


def test_a_rebuild_is_refused_while_the_outbox_holds_unpublished_changes(h):
    walk_every_path(h)
    rebuilt = projection.project(SourcedEvent(name, value) for name, value in h.publisher.decoded())
    h.publisher.down = True
    grant_id = h.service.list_grants(status="ACTIVE")[0].grant_id
    h.service.revoke(grant_id, OPERATOR, "contract ended")  # committed, not on the topics yet
    with pytest.raises(Conflict, match="not yet on the topics"):
        projection.write(h.engine, rebuilt)
    assert h.service.get_grant(grant_id).status == GrantStatus.REVOKED  # nothing undone
