"""The authorization service on SQLite with a recording publisher and an in-memory catalog."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdo.authorization import records
from pdo.authorization import tables as t
from pdo.authorization.lifecycle import GRANT_TRANSITIONS, GrantAction, IllegalTransition
from pdo.authorization.public import AuthorizationService, Narrowing, RequestSpec, RequestStatus, load_policy
from pdo.authorization.testing import (
    Clock,
    InMemoryCatalog,
    RecordingPublisher,
    sample_catalog,
    traffic_dataset,
)
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.errors import Conflict, InvalidInput, NotFound
from pdo.core.topics import TopicId
from pdo.core.vocabulary import GrantStatus, MaskingRule, PriceKind, SuspensionCause, TenantKind

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TENANT = "tenant:acme-logistics"
OTHER_TENANT = "tenant:rival"
OPERATOR = "operator:alice"


@pytest.fixture
def engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'pdo.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def catalog() -> InMemoryCatalog:
    return sample_catalog()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def service(engine, publisher, catalog, clock) -> AuthorizationService:
    return AuthorizationService(engine, publisher, catalog, load_policy(), Settings.from_env(), clock=clock)


def spec(dataset_id="open-traffic", fields=("district", "speed_kmh"), **changes) -> RequestSpec:
    base = RequestSpec(
        dataset_id=dataset_id,
        purpose="congestion forecasting for delivery routes",
        fields=fields if isinstance(fields, str) else tuple(fields),
        valid_from=START,
        valid_until=START + timedelta(days=30),
        row_filter="district == 'Haidian'",
        expected_daily_records=5000,
    )
    return replace(base, **changes)


def pending(service, **changes) -> str:
    """A request the policy sends to review (conditional data)."""
    request = service.submit_request(TENANT, spec("conditional-traffic", **changes), TENANT)
    assert service.decide(request.request_id).status == RequestStatus.PENDING_REVIEW
    return request.request_id


def granted(service, **changes) -> str:
    request = service.submit_request(TENANT, spec(**changes), TENANT)
    decided = service.decide(request.request_id)
    assert decided.status == RequestStatus.APPROVED
    return decided.grant_id


def rows(engine, table) -> list[dict]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(sa.select(table)).mappings()]


# ---------------------------------------------------------------------------------------------- submit


def test_a_submitted_request_is_a_row_and_an_event(service, publisher, engine):
    request = service.submit_request(TENANT, spec(request_id="r-acme-1"), TENANT)
    assert request.status == RequestStatus.SUBMITTED
    assert service.get_request("r-acme-1") == request
    (event,) = publisher.events
    assert (event.topic, event.schema_name, event.key) == (TopicId.REQUESTS, records.SUBMITTED, "r-acme-1")
    assert event.value["fields"] == ["district", "speed_kmh"]
    assert event.value["occurred_at"] == request.created_at
    assert event.value["tenant_kind"] == "COMPANY"
    assert [row["request_id"] for row in rows(engine, t.requests)] == ["r-acme-1"]


def test_a_request_id_is_generated_when_absent(service):
    request = service.submit_request(TENANT, spec(), TENANT)
    assert request.request_id.startswith("r-")


def test_a_duplicate_request_id_is_a_conflict_and_nothing_more_is_written(service, publisher):
    service.submit_request(TENANT, spec(request_id="r-dup"), TENANT)
    with pytest.raises(Conflict, match="r-dup exists already"):
        service.submit_request(OTHER_TENANT, spec(request_id="r-dup"), OTHER_TENANT)
    assert len(publisher.events) == 1
    assert service.get_request("r-dup").tenant_id == TENANT


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fields": ("district", "spead_kmh")}, "has no field 'spead_kmh'"),
        ({"fields": ()}, "at least one field"),
        ({"fields": ("lane", "lane")}, "lane more than once"),
        ({"fields": "district"}, "must be a list"),
        ({"purpose": "  "}, "purpose must not be empty"),
        ({"row_filter": "district = 'x'"}, "row filter: unexpected character '='"),
        ({"row_filter": "colour == 'red'"}, "unknown field 'colour'"),
        ({"valid_until": START - timedelta(days=1)}, "ends (2026-02-28T09:00:00+00:00) before it starts"),
        ({"valid_until": START}, "before it starts"),
        (
            {"valid_from": START - timedelta(days=60), "valid_until": START - timedelta(days=1)},
            "the period ended already",
        ),
        ({"expected_daily_records": 0}, "at least 1"),
        ({"expected_daily_records": True}, "at least 1"),
        ({"request_id": "no spaces please"}, "is not a valid id"),
        ({"valid_from": "2026-03-01"}, "must both be date-times"),
    ],
)
def test_bad_requests_are_refused_precisely_and_write_nothing(service, publisher, engine, changes, message):
    with pytest.raises(InvalidInput) as refused:
        service.submit_request(TENANT, spec(**changes), TENANT)
    assert message in refused.value.message
    assert publisher.events == []
    assert rows(engine, t.requests) == []


def test_an_unknown_dataset_is_not_found(service):
    with pytest.raises(NotFound, match="no dataset 'nowhere'"):
        service.submit_request(TENANT, spec("nowhere"), TENANT)


def test_a_retired_dataset_is_a_conflict(service):
    with pytest.raises(Conflict, match="old-traffic is retired"):
        service.submit_request(TENANT, spec("old-traffic"), TENANT)


def test_naive_times_are_taken_as_utc_and_kept_to_the_millisecond(service):
    request = service.submit_request(
        TENANT,
        spec(valid_from=datetime(2026, 3, 1, 9, 0, 0, 123456), valid_until=datetime(2026, 4, 1)),
        TENANT,
    )
    assert request.valid_from == datetime(2026, 3, 1, 9, 0, 0, 123000, tzinfo=UTC)
    assert service.get_request(request.request_id).valid_from == request.valid_from


def test_a_broker_down_at_submission_keeps_the_request_and_publishes_it_later(service, publisher, engine):
    publisher.fail_next = True
    service.submit_request(TENANT, spec(request_id="r-late"), TENANT)  # answered: the row is committed
    assert [row["request_id"] for row in rows(engine, t.requests)] == ["r-late"]
    assert publisher.of(records.SUBMITTED) == []
    assert service.relay.publish_all() == 1  # the worker's relay, once the broker is back
    assert [event["request_id"] for event in publisher.of(records.SUBMITTED)] == ["r-late"]


# ---------------------------------------------------------------------------------------------- policy


def test_open_data_without_sensitive_fields_is_granted_automatically(service, publisher):
    request = service.submit_request(TENANT, spec(), TENANT)
    decided = service.decide(request.request_id)
    assert decided.status == RequestStatus.APPROVED
    assert decided.decided_by_rule == "auto-approve-open-non-sensitive"
    assert decided.decided_by == "system:policy"
    grant = service.get_grant(decided.grant_id)
    assert grant.status == GrantStatus.ACTIVE and grant.version == 1
    assert grant.fields == ("district", "speed_kmh")
    assert grant.masking == {}
    assert grant.row_filter == "district == 'Haidian'"
    assert grant.daily_quota_records == 5000
    assert grant.price_plan.kind == PriceKind.PER_THOUSAND_RECORDS
    assert grant.price_plan.unit_price == Decimal("2.50")
    event = publisher.of(records.GRANTED)[0]
    assert event["decided_by_rule"] == "auto-approve-open-non-sensitive"
    assert event["grant_id"] == grant.grant_id == f"g-{request.request_id}"
    assert [(h.from_status, h.to_status, h.actor) for h in grant.history] == [
        (None, GrantStatus.ACTIVE, "system:policy")
    ]


@pytest.mark.parametrize(
    ("dataset_id", "rule"), [("core-traffic", "deny-core-data"), ("closed-traffic", "deny-not-open")]
)
def test_core_and_closed_data_are_denied_automatically(service, publisher, dataset_id, rule):
    request = service.submit_request(TENANT, spec(dataset_id), TENANT)
    decided = service.decide(request.request_id)
    assert (decided.status, decided.decided_by_rule) == (RequestStatus.DENIED, rule)
    (event,) = publisher.of(records.DENIED)
    assert (event["rule"], event["request_id"]) == (rule, request.request_id)
    assert publisher.events[-1].key == request.request_id  # a denial has no grant id
    assert service.list_grants() == []


def test_sensitive_fields_go_to_review(service, publisher):
    request = service.submit_request(TENANT, spec(fields=("district", "plate_number")), TENANT)
    decided = service.decide(request.request_id)
    assert (decided.status, decided.decided_by_rule) == (
        RequestStatus.PENDING_REVIEW,
        "review-everything-else",
    )
    assert [event.schema_name for event in publisher.events] == [records.SUBMITTED, records.REFERRED]
    referral = publisher.events[-1]
    assert (referral.topic, referral.key) == (TopicId.REQUESTS, request.request_id)
    assert referral.value == {
        "event_id": referral.value["event_id"],
        "occurred_at": decided.updated_at,
        "actor": "system:policy",
        "request_id": request.request_id,
        "tenant_id": TENANT,
        "dataset_id": "open-traffic",
        "rule": "review-everything-else",
        "reason": decided.decision_reason,
    }
    assert decided.decision_reason
    assert [r.request_id for r in service.list_requests(status="PENDING_REVIEW")] == [request.request_id]


def test_a_referral_the_broker_missed_is_published_once_it_returns(service, publisher):
    request = service.submit_request(TENANT, spec("conditional-traffic"), TENANT)
    publisher.fail_next = True
    assert service.decide(request.request_id).status == RequestStatus.PENDING_REVIEW
    assert publisher.of(records.REFERRED) == []
    assert service.relay.publish_all() == 1
    assert len(publisher.of(records.REFERRED)) == 1
    assert service.decide(request.request_id).status == RequestStatus.PENDING_REVIEW
    assert len(publisher.of(records.REFERRED)) == 1  # deciding again publishes nothing more


def test_deciding_twice_changes_nothing(service, publisher):
    request = service.submit_request(TENANT, spec(), TENANT)
    first = service.decide(request.request_id)
    assert service.decide(request.request_id) == first
    assert len(publisher.of(records.GRANTED)) == 1


def test_a_request_whose_dataset_was_retired_meanwhile_is_denied(service, catalog):
    request = service.submit_request(TENANT, spec(), TENANT)
    catalog.add(replace(catalog.get("open-traffic"), retired=True))
    decided = service.decide(request.request_id)
    assert (decided.status, decided.decided_by_rule) == (RequestStatus.DENIED, "dataset-unavailable")


def test_stale_submissions_are_swept(service, clock):
    request = service.submit_request(TENANT, spec(), TENANT)
    assert service.decide_stale(timedelta(seconds=30)) == []
    clock.advance(seconds=31)
    (decided,) = service.decide_stale(timedelta(seconds=30))
    assert decided.request_id == request.request_id and decided.status == RequestStatus.APPROVED


def test_a_government_tenant_gets_the_data_free(service, publisher):
    request = service.submit_request(TENANT, spec(), TENANT, tenant_is_government=True)
    assert request.tenant_kind == TenantKind.GOVERNMENT
    assert publisher.of(records.SUBMITTED)[0]["tenant_kind"] == "GOVERNMENT"
    grant = service.get_grant(service.decide(request.request_id).grant_id)
    assert grant.price_plan.kind == PriceKind.FREE and grant.price_plan.unit_price == Decimal("0.00")


# ---------------------------------------------------------------------------------------------- operators


def test_an_operator_approves_with_narrowing(service, publisher):
    request_id = pending(service, fields=("district", "plate_number", "driver_phone", "speed_kmh"))
    grant = service.approve(
        request_id,
        OPERATOR,
        Narrowing(
            fields=("district", "plate_number", "speed_kmh"),
            row_filter="speed_kmh > 80",
            daily_quota_records=1000,
            valid_until=START + timedelta(days=7),
        ),
        reason="plates needed for the fleet study only",
    )
    assert grant.fields == ("district", "plate_number", "speed_kmh")
    assert grant.masking == {"plate_number": MaskingRule.KEEP_FIRST_LAST}
    assert grant.row_filter == "(district == 'Haidian') and (speed_kmh > 80)"
    assert grant.daily_quota_records == 1000
    assert grant.valid_until == START + timedelta(days=7)
    request = service.get_request(request_id)
    assert (request.status, request.decided_by, request.decided_by_rule) == (
        RequestStatus.APPROVED,
        OPERATOR,
        None,
    )
    event = publisher.of(records.GRANTED)[0]
    assert event["masking"] == {"plate_number": "KEEP_FIRST_LAST"}
    assert event["decided_by_rule"] is None and event["reason"] == "plates needed for the fleet study only"
    assert event["actor"] == OPERATOR


@pytest.mark.parametrize(
    ("narrowing", "message"),
    [
        (Narrowing(fields=("district", "lane")), "lane were not requested"),
        (Narrowing(fields=("district", "nope")), "has no field 'nope'"),
        (Narrowing(daily_quota_records=6000), "more than the 5000 requested"),
        (Narrowing(daily_quota_records=0), "at least 1"),
        (Narrowing(valid_from=START - timedelta(days=1)), "not within the requested"),
        (Narrowing(valid_until=START + timedelta(days=31)), "not within the requested"),
        (
            Narrowing(valid_from=START + timedelta(days=5), valid_until=START + timedelta(days=2)),
            "ends (2026-03-03T09:00:00+00:00) before it starts",
        ),
        (Narrowing(row_filter="speed_kmh >"), "row filter: expected a value"),
    ],
)
def test_narrowing_may_only_narrow(service, publisher, narrowing, message):
    request_id = pending(service)
    with pytest.raises(InvalidInput) as refused:
        service.approve(request_id, OPERATOR, narrowing, None)
    assert message in refused.value.message
    assert service.get_request(request_id).status == RequestStatus.PENDING_REVIEW
    assert publisher.of(records.GRANTED) == []


def test_an_operator_denies_with_a_reason(service, publisher):
    request_id = pending(service)
    denied = service.deny(request_id, OPERATOR, "purpose too broad")
    assert (denied.status, denied.decision_reason, denied.decided_by) == (
        RequestStatus.DENIED,
        "purpose too broad",
        OPERATOR,
    )
    (event,) = publisher.of(records.DENIED)
    assert (event["rule"], event["actor"]) == ("operator", OPERATOR)


def test_a_denial_needs_a_reason(service):
    request_id = pending(service)
    with pytest.raises(InvalidInput, match="a denial needs a reason"):
        service.deny(request_id, OPERATOR, "   ")


def test_a_tenant_withdraws_an_undecided_request(service, publisher):
    request_id = pending(service)
    withdrawn = service.withdraw_request(TENANT, request_id, "no longer needed", TENANT)
    assert withdrawn.status == RequestStatus.WITHDRAWN
    (event,) = publisher.of(records.WITHDRAWN)
    assert (event["request_id"], event["reason"]) == (request_id, "no longer needed")
    with pytest.raises(Conflict, match="a withdrawn request cannot be approved"):
        service.approve(request_id, OPERATOR, Narrowing(), None)


def test_a_decided_request_cannot_be_withdrawn(service):
    grant_id = granted(service)
    request_id = service.get_grant(grant_id).request_id
    with pytest.raises(Conflict, match="an approved request cannot be withdrawn"):
        service.withdraw_request(TENANT, request_id, None, TENANT)


def test_a_tenant_cannot_see_or_withdraw_another_tenants_request(service):
    request_id = pending(service)
    with pytest.raises(NotFound):
        service.get_request(request_id, tenant_id=OTHER_TENANT)
    with pytest.raises(NotFound):
        service.withdraw_request(OTHER_TENANT, request_id, None, OTHER_TENANT)
    assert service.list_requests(tenant_id=OTHER_TENANT) == []
    assert service.get_request(request_id, tenant_id=TENANT).request_id == request_id


def test_a_tenant_cannot_see_another_tenants_grant(service):
    grant_id = granted(service)
    with pytest.raises(NotFound):
        service.get_grant(grant_id, tenant_id=OTHER_TENANT)
    assert service.list_grants(tenant_id=OTHER_TENANT) == []
    assert [g.grant_id for g in service.list_grants(tenant_id=TENANT)] == [grant_id]


def test_listing_with_an_unknown_status_is_invalid(service):
    with pytest.raises(InvalidInput, match="status 'LOST' is not one of"):
        service.list_grants(status="LOST")


# ---------------------------------------------------------------------------------------------- grants


def test_suspend_resume_revoke(service, publisher, clock):
    grant_id = granted(service)
    clock.advance(minutes=1)
    suspended = service.suspend(grant_id, OPERATOR, "tenant under investigation")
    assert (suspended.status, suspended.suspension_cause, suspended.version) == (
        GrantStatus.SUSPENDED,
        SuspensionCause.OPERATOR,
        2,
    )
    clock.advance(minutes=1)
    resumed = service.resume(grant_id, OPERATOR)
    assert (resumed.status, resumed.suspension_cause, resumed.version) == (GrantStatus.ACTIVE, None, 3)
    clock.advance(minutes=1)
    revoked = service.revoke(grant_id, OPERATOR, "contract ended")
    assert (revoked.status, revoked.status_reason, revoked.version) == (
        GrantStatus.REVOKED,
        "contract ended",
        4,
    )
    names = [e.schema_name for e in publisher.events if e.topic == TopicId.AUTHORIZATIONS]
    assert names == [records.GRANTED, records.SUSPENDED, records.RESUMED, records.REVOKED]
    assert {event.key for event in publisher.events[-3:]} == {grant_id}
    assert [e.value["grant"]["status"] for e in publisher.events[-3:]] == ["SUSPENDED", "ACTIVE", "REVOKED"]
    assert [e.value["grant"]["version"] for e in publisher.events[-3:]] == [2, 3, 4]
    assert publisher.events[-3].value["cause"] == "OPERATOR"
    history = service.get_grant(grant_id).history
    assert [(h.from_status, h.to_status) for h in history] == [
        (None, GrantStatus.ACTIVE),
        (GrantStatus.ACTIVE, GrantStatus.SUSPENDED),
        (GrantStatus.SUSPENDED, GrantStatus.ACTIVE),
        (GrantStatus.ACTIVE, GrantStatus.REVOKED),
    ]
    with pytest.raises(Conflict, match=f"grant {grant_id} is REVOKED; a revoked grant cannot be resumed"):
        service.resume(grant_id, OPERATOR)


@pytest.mark.parametrize("step", ["suspend", "revoke"])
def test_suspension_and_revocation_need_a_reason(service, step):
    grant_id = granted(service)
    with pytest.raises(InvalidInput, match="needs a reason"):
        getattr(service, step)(grant_id, OPERATOR, "")


def test_an_unknown_grant_is_not_found(service):
    with pytest.raises(NotFound, match="no grant g-nothing"):
        service.revoke("g-nothing", OPERATOR, "why not")


def test_a_revocation_the_broker_missed_is_committed_and_published_later(service, publisher):
    grant_id = granted(service)
    publisher.fail_next = True
    service.revoke(grant_id, OPERATOR, "contract ended")
    grant = service.get_grant(grant_id)
    assert (grant.status, grant.version, len(grant.history)) == (GrantStatus.REVOKED, 2, 2)
    assert publisher.of(records.REVOKED) == []
    service.relay.publish_all()
    assert [event["grant"]["version"] for event in publisher.of(records.REVOKED)] == [2]


def test_grants_expire_at_valid_until(service, publisher, clock):
    active = granted(service, valid_until=START + timedelta(days=1))
    suspended = granted(service, valid_until=START + timedelta(days=1))
    service.suspend(suspended, OPERATOR, "checking")
    later = granted(service, valid_until=START + timedelta(days=2))
    assert service.expire_due(START + timedelta(hours=23)) == []
    clock.advance(days=1)
    expired = service.expire_due(clock.now)
    assert {g.grant_id for g in expired} == {active, suspended}
    assert service.get_grant(later).status == GrantStatus.ACTIVE
    event = publisher.of(records.EXPIRED)[0]
    assert event["expired_at"] == START + timedelta(days=1)
    assert event["grant"]["status"] == "EXPIRED"
    assert service.expire_due(clock.now) == []  # nothing twice


def test_quota_suspends_today_and_resumes_the_next_day(service, clock):
    grant_id = granted(service)
    assert service.suspend_for_quota(grant_id, date(2026, 2, 28), 5000, 5001) is None  # stale report
    suspended = service.suspend_for_quota(grant_id, START.date(), 5000, 5001)
    assert (suspended.status, suspended.suspension_cause) == (
        GrantStatus.SUSPENDED,
        SuspensionCause.QUOTA_EXCEEDED,
    )
    assert "daily quota of 5000 records reached" in suspended.status_reason
    assert service.suspend_for_quota(grant_id, START.date(), 5000, 5002) is None  # a repeated report
    assert service.resume_quota_suspended(clock.now) == []
    clock.advance(days=1)
    (resumed,) = service.resume_quota_suspended(clock.now)
    assert (resumed.status, resumed.suspension_cause) == (GrantStatus.ACTIVE, None)


def test_an_operator_suspension_is_not_lifted_by_the_new_day(service, clock):
    grant_id = granted(service)
    service.suspend(grant_id, OPERATOR, "investigation")
    clock.advance(days=2)
    assert service.resume_quota_suspended(clock.now) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=st.lists(st.sampled_from(list(GrantAction)), max_size=8))
def test_random_transitions_on_the_service_follow_the_lifecycle(tmp_path_factory, actions):
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'pdo.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    publisher = RecordingPublisher()
    clock = Clock(START)
    service = AuthorizationService(
        engine,
        publisher,
        InMemoryCatalog(traffic_dataset("open-traffic")),
        load_policy(),
        Settings.from_env(),
        clock,
    )
    try:
        grant_id = granted(service)
        status, version = GrantStatus.ACTIVE, 1
        for action in actions:
            clock.advance(seconds=1)
            allowed = GRANT_TRANSITIONS[status].get(action)
            try:
                if action == GrantAction.EXPIRE:
                    clock.now = max(clock.now, START + timedelta(days=30))
                    result = service.expire_due(clock.now)
                    if not result:
                        raise IllegalTransition("nothing expired")
                else:
                    {
                        GrantAction.SUSPEND: lambda: service.suspend(grant_id, OPERATOR, "r"),
                        GrantAction.RESUME: lambda: service.resume(grant_id, OPERATOR),
                        GrantAction.REVOKE: lambda: service.revoke(grant_id, OPERATOR, "r"),
                    }[action]()
            except IllegalTransition:
                assert allowed is None
                continue
            assert allowed is not None
            status, version = allowed, version + 1
            grant = service.get_grant(grant_id)
            assert (grant.status, grant.version) == (status, version)
        grant = service.get_grant(grant_id)
        assert (grant.status, grant.version, len(grant.history)) == (status, version, version)
        snapshots = [e.value["grant"] for e in publisher.events if "grant" in e.value]
        assert [s["version"] for s in snapshots] == list(range(2, version + 1))
    finally:
        engine.dispose()
