"""Every path of a request and a grant on the real broker and database: the event on the topic and the row in
SQL agree. Each test gets its own copy of the topics (see pdo.authorization.testing.isolated_home)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from pdo.authorization import projection, records
from pdo.authorization import tables as t
from pdo.authorization.public import AuthorizationService, Narrowing, RequestSpec, RequestStatus, load_policy
from pdo.authorization.testing import create_topics, delete_topics, isolated_home, sample_catalog
from pdo.core import db
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.events import EventPublisher, utc, utc_now
from pdo.core.registry_client import RegistryClient
from pdo.core.topics import TopicId
from pdo.core.vocabulary import GrantStatus

pytestmark = pytest.mark.integration

TENANT = "tenant:acme-logistics"
OPERATOR = "operator:alice"


@pytest.fixture
def settings(kafka_bootstrap, registry_url, database_url, tmp_path) -> Settings:
    home = isolated_home(tmp_path, f"t-{uuid.uuid4().hex[:10]}")
    configured = dataclasses.replace(
        Settings.from_env(),
        registry_url=registry_url,
        database_url=database_url,
        home=home,
        run_dir=tmp_path / "run",
    )
    names = create_topics(configured)
    yield configured
    delete_topics(configured, names)


@pytest.fixture
def engine(settings):
    db.upgrade(settings.database_url)
    engine = db.make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def service(settings, engine):
    publisher = EventPublisher(settings)
    yield AuthorizationService(engine, publisher, sample_catalog(), load_policy(), settings)
    publisher.close()


def spec(dataset_id="open-traffic", **changes) -> RequestSpec:
    start = utc_now()
    return dataclasses.replace(
        RequestSpec(
            dataset_id=dataset_id,
            purpose="congestion forecasting",
            fields=("district", "speed_kmh", "plate_number"),
            valid_from=start,
            valid_until=start + timedelta(days=30),
            row_filter="district != 'Chaoyang'",  # a filter reads only granted clear fields: district
            expected_daily_records=10_000,
            request_id=f"r-{uuid.uuid4().hex[:12]}",
        ),
        **changes,
    )


def on_topic(settings: Settings, topic: TopicId, **match) -> list[tuple[str, dict]]:
    """(schema name, value) of every event on the topic whose fields equal `match`."""
    with RegistryClient.for_settings(settings) as registry:
        events = projection.read_events(settings, topic, AvroCodec(registry), timeout_s=30)
    return [
        (event.schema_name, dict(event.value))
        for event in events
        if all(event.value.get(key) == value for key, value in match.items())
    ]


def request_row(engine, request_id) -> dict:
    with engine.connect() as conn:
        return dict(
            conn.execute(sa.select(t.requests).where(t.requests.c.request_id == request_id)).mappings().one()
        )


def assert_grant_agrees(settings, service, grant_id, schemas: list[str]) -> None:
    """The grant's events are `schemas`, in order, and the last one's state is the row's."""
    events = on_topic(settings, TopicId.AUTHORIZATIONS, grant_id=grant_id)
    assert [name for name, _ in events] == schemas
    grant = service.get_grant(grant_id)
    name, last = events[-1]
    if name == records.GRANTED:
        rebuilt = records.grant_from_granted(last)
    else:
        assert last["grant"] == records.grant_snapshot(grant)
        rebuilt = records.grant_from_snapshot(
            last["grant"], grant.created_at, last["occurred_at"], last.get("cause")
        )
    assert rebuilt == dataclasses.replace(grant, history=())
    assert [h.event_id for h in grant.history] == [value["event_id"] for _, value in events]


def test_auto_approve(settings, service, engine):
    submitted = service.submit_request(TENANT, spec(fields=("district", "speed_kmh")), TENANT)
    ((name, event),) = on_topic(settings, TopicId.REQUESTS, request_id=submitted.request_id)
    assert name == records.SUBMITTED
    assert event["tenant_kind"] == "COMPANY"
    assert records.request_from_submitted(event) == submitted
    decided = service.decide(submitted.request_id)  # what the worker does on reading that event
    assert decided.status == RequestStatus.APPROVED
    assert request_row(engine, submitted.request_id)["decided_by_rule"] == "auto-approve-open-non-sensitive"
    assert_grant_agrees(settings, service, decided.grant_id, [records.GRANTED])
    ((_, granted),) = on_topic(settings, TopicId.AUTHORIZATIONS, grant_id=decided.grant_id)
    assert granted["decided_by_rule"] == "auto-approve-open-non-sensitive"


def test_auto_deny(settings, service, engine):
    submitted = service.submit_request(TENANT, spec("core-traffic"), TENANT)
    decided = service.decide(submitted.request_id)
    ((name, event),) = on_topic(settings, TopicId.AUTHORIZATIONS, request_id=submitted.request_id)
    assert name == records.DENIED
    row = request_row(engine, submitted.request_id)
    assert (row["status"], row["decided_by_rule"], row["decision_reason"]) == (
        "DENIED",
        event["rule"],
        event["reason"],
    )
    assert event["rule"] == "deny-core-data" and decided.status == RequestStatus.DENIED
    assert service.list_grants(tenant_id=TENANT) == []


def test_review_is_a_referral_event_on_the_requests_topic(settings, service, engine):
    submitted = service.submit_request(TENANT, spec("conditional-traffic"), TENANT)
    decided = service.decide(submitted.request_id)
    assert decided.status == RequestStatus.PENDING_REVIEW
    events = on_topic(settings, TopicId.REQUESTS, request_id=submitted.request_id)
    assert [name for name, _ in events] == [records.SUBMITTED, records.REFERRED]
    referred = events[1][1]
    assert (referred["actor"], referred["rule"], referred["reason"]) == (
        "system:policy",
        "review-everything-else",
        decided.decision_reason,
    )
    assert (referred["tenant_id"], referred["dataset_id"]) == (TENANT, "conditional-traffic")
    row = request_row(engine, submitted.request_id)
    assert (row["status"], row["decided_by_rule"], row["decision_reason"], row["decided_by"]) == (
        "PENDING_REVIEW",
        referred["rule"],
        referred["reason"],
        referred["actor"],
    )
    assert utc(row["updated_at"]) == referred["occurred_at"]
    assert on_topic(settings, TopicId.AUTHORIZATIONS, request_id=submitted.request_id) == []


def test_a_government_tenant_kind_is_on_the_submission(settings, service):
    submitted = service.submit_request(TENANT, spec(fields=("district",)), TENANT, tenant_is_government=True)
    ((_, event),) = on_topic(settings, TopicId.REQUESTS, request_id=submitted.request_id)
    assert event["tenant_kind"] == "GOVERNMENT"
    assert records.request_from_submitted(event) == submitted
    grant_id = service.decide(submitted.request_id).grant_id
    ((_, granted),) = on_topic(settings, TopicId.AUTHORIZATIONS, grant_id=grant_id)
    assert granted["price_plan"]["kind"] == "FREE"


def test_operator_approves_with_narrowing(settings, service, engine):
    submitted = service.submit_request(TENANT, spec("conditional-traffic"), TENANT)
    assert service.decide(submitted.request_id).status == RequestStatus.PENDING_REVIEW
    until = submitted.valid_from + timedelta(days=7)
    grant = service.approve(
        submitted.request_id,
        OPERATOR,
        Narrowing(fields=("district", "plate_number"), daily_quota_records=500, valid_until=until),
        "plates for the fleet study only",
    )
    assert_grant_agrees(settings, service, grant.grant_id, [records.GRANTED])
    ((_, event),) = on_topic(settings, TopicId.AUTHORIZATIONS, grant_id=grant.grant_id)
    assert event["fields"] == ["district", "plate_number"]
    assert event["masking"] == {"plate_number": "KEEP_FIRST_LAST"}
    assert (event["daily_quota_records"], event["valid_until"]) == (500, until)
    assert (event["actor"], event["reason"], event["decided_by_rule"]) == (
        OPERATOR,
        "plates for the fleet study only",
        None,
    )
    assert request_row(engine, submitted.request_id)["decided_by"] == OPERATOR


def test_operator_denies(settings, service, engine):
    submitted = service.submit_request(TENANT, spec("conditional-traffic"), TENANT)
    service.decide(submitted.request_id)
    service.deny(submitted.request_id, OPERATOR, "purpose too broad")
    ((name, event),) = on_topic(settings, TopicId.AUTHORIZATIONS, request_id=submitted.request_id)
    assert (name, event["rule"], event["reason"], event["actor"]) == (
        records.DENIED,
        "operator",
        "purpose too broad",
        OPERATOR,
    )
    row = request_row(engine, submitted.request_id)
    assert (row["status"], row["decision_reason"], row["decided_by"]) == (
        "DENIED",
        "purpose too broad",
        OPERATOR,
    )


def test_withdraw(settings, service, engine):
    submitted = service.submit_request(TENANT, spec("conditional-traffic"), TENANT)
    service.withdraw_request(TENANT, submitted.request_id, "changed plans", TENANT)
    events = on_topic(settings, TopicId.REQUESTS, request_id=submitted.request_id)
    assert [name for name, _ in events] == [records.SUBMITTED, records.WITHDRAWN]
    row = request_row(engine, submitted.request_id)
    assert (row["status"], row["decision_reason"]) == ("WITHDRAWN", events[1][1]["reason"])
    assert utc(row["updated_at"]) == events[1][1]["occurred_at"]


def test_suspend_and_resume(settings, service):
    grant_id = service.decide(
        service.submit_request(TENANT, spec(fields=("district",)), TENANT).request_id
    ).grant_id
    service.suspend(grant_id, OPERATOR, "tenant under investigation")
    assert_grant_agrees(settings, service, grant_id, [records.GRANTED, records.SUSPENDED])
    (_, suspended) = on_topic(settings, TopicId.AUTHORIZATIONS, grant_id=grant_id)[-1]
    assert (suspended["cause"], suspended["reason"]) == ("OPERATOR", "tenant under investigation")
    service.resume(grant_id, OPERATOR, "cleared")
    assert_grant_agrees(settings, service, grant_id, [records.GRANTED, records.SUSPENDED, records.RESUMED])
    assert service.get_grant(grant_id).status == GrantStatus.ACTIVE


def test_revoke(settings, service):
    grant_id = service.decide(
        service.submit_request(TENANT, spec(fields=("district",)), TENANT).request_id
    ).grant_id
    service.revoke(grant_id, OPERATOR, "contract ended")
    assert_grant_agrees(settings, service, grant_id, [records.GRANTED, records.REVOKED])
    with pytest.raises(Exception, match="a revoked grant cannot be resumed"):
        service.resume(grant_id, OPERATOR)
    assert_grant_agrees(settings, service, grant_id, [records.GRANTED, records.REVOKED])  # nothing more


def test_expire(settings, service):
    request = spec(fields=("district",))
    request = dataclasses.replace(request, valid_until=request.valid_from + timedelta(seconds=2))
    grant_id = service.decide(service.submit_request(TENANT, request, TENANT).request_id).grant_id
    expired = service.expire_due(request.valid_until)
    assert [grant.grant_id for grant in expired] == [grant_id]
    assert_grant_agrees(settings, service, grant_id, [records.GRANTED, records.EXPIRED])
    (_, event) = on_topic(settings, TopicId.AUTHORIZATIONS, grant_id=grant_id)[-1]
    assert event["expired_at"] == utc(request.valid_until)


def test_a_wiped_database_is_rebuilt_from_the_topics(settings, service, engine):
    def submit(dataset_id="open-traffic", **changes):
        return service.submit_request(TENANT, spec(dataset_id, **changes), TENANT).request_id

    approved = service.decide(submit(fields=("district",))).grant_id
    service.suspend(approved, OPERATOR, "checking")
    service.resume(approved, OPERATOR)
    narrowed = submit("conditional-traffic", row_filter=None)  # its field goes with the narrowing
    service.decide(narrowed)
    revoked = service.approve(narrowed, OPERATOR, Narrowing(fields=("plate_number",)), "ok").grant_id
    service.revoke(revoked, OPERATOR, "contract ended")
    service.decide(submit("closed-traffic"))
    denied = submit("conditional-traffic")
    service.decide(denied)
    service.deny(denied, OPERATOR, "too broad")
    service.withdraw_request(TENANT, submit("conditional-traffic"), None, TENANT)
    short = spec(fields=("district",))
    short = dataclasses.replace(short, valid_until=short.valid_from + timedelta(seconds=1))
    service.decide(service.submit_request(TENANT, short, TENANT).request_id)
    service.expire_due(short.valid_until)
    service.decide(submit("conditional-traffic"))  # left pending review
    government = service.submit_request(TENANT, spec(fields=("district",)), TENANT, tenant_is_government=True)
    free = service.decide(government.request_id).grant_id
    assert service.get_grant(free).price_plan.kind == "FREE"
    government_review = service.submit_request(
        TENANT, spec("conditional-traffic"), TENANT, tenant_is_government=True
    )
    service.decide(government_review.request_id)  # a government request pending review
    submit()  # undecided

    def snapshot():
        with engine.connect() as conn:
            return {
                table.name: sorted(
                    (
                        {k: v for k, v in row.items() if k != "id"}
                        for row in conn.execute(sa.select(table)).mappings()
                    ),
                    key=repr,
                )
                for table in (t.requests, t.grants, t.grant_transitions)
            }

    before = snapshot()
    kinds_and_statuses = {(row["tenant_kind"], row["status"]) for row in before["authz_requests"]}
    assert kinds_and_statuses >= {
        ("company", "PENDING_REVIEW"),
        ("government", "PENDING_REVIEW"),
        ("government", "APPROVED"),
        ("company", "SUBMITTED"),
    }
    with engine.begin() as conn:  # the wipe
        for table in (t.grant_transitions, t.grants, t.requests):
            conn.execute(table.delete())
    assert projection.is_empty(engine)

    report = projection.rebuild_from_topics(settings, engine, timeout_s=30)

    assert report.skipped == ()
    assert (report.requests, report.grants, report.transitions) == (10, 4, 8)
    assert snapshot() == before  # every column of every row, with no exceptions
