"""Fail closed: the audit log's liveness mark, the guard that reads it (fresh, stale, never marked,
unreadable), and what it holds back: approvals and resumptions wait, narrowing changes go through, and the
gateway answers 503 with a gauge and a counter."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from conftest import ServerThread, scrape_headers
from gateway_support import gateway_database

from pdo.audit import liveness, tables
from pdo.audit.app import SOURCES, Runtime
from pdo.audit.public import AuditLogNotAppendable, AuditStore, Entry, appendability, require_appendable
from pdo.authorization import records
from pdo.authorization import tables as authz
from pdo.authorization.agents import AuthorizationHandlers
from pdo.authorization.public import AuthorizationService, RequestSpec, RequestStatus, load_policy
from pdo.authorization.testing import Clock, RecordingPublisher, sample_catalog
from pdo.core import db, topics
from pdo.core.codec import Decoded
from pdo.core.config import Settings
from pdo.core.deadletters import SourceMessage
from pdo.core.retry import is_transient
from pdo.core.topics import TopicId
from pdo.core.vocabulary import GrantStatus
from pdo.gateway.app import create_app

LIMIT_S = 60
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TENANT = "tenant:acme"
OPERATOR = "operator:alice"


@pytest.fixture
def engine(database_url):
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


def mark_at(engine: sa.Engine, at: datetime) -> None:
    with engine.begin() as connection:
        liveness.mark(connection, at=at)


def marked(engine: sa.Engine) -> sa.Row:
    with engine.connect() as connection:
        return connection.execute(sa.select(tables.liveness)).one()


def entry(source: str) -> Entry:
    return Entry("tenant:acme", "request.submitted", "request:r-1", None, source, NOW)


# ---------------------------------------------------------------------------------------------- the topics


def test_no_topic_the_audit_worker_reads_drops_an_event_within_a_week():
    """Compaction (or retention) never outruns an audit worker down for less than a week."""
    week_ms = 7 * 24 * 3600 * 1000
    for source in SOURCES:
        spec = topics.spec(source)
        compacted = "compact" in spec.cleanup_policy
        kept_ms = spec.min_compaction_lag_ms if compacted else spec.retention_ms
        assert kept_ms is not None and (kept_ms == -1 or kept_ms >= week_ms), spec.name
        assert spec.retention_ms == -1 or spec.retention_ms >= week_ms, spec.name


# ---------------------------------------------------------------------------------------------- the guard


def test_a_mark_within_the_limit_is_appendable(engine):
    mark_at(engine, NOW - timedelta(seconds=5))

    found = appendability(engine, LIMIT_S, now=NOW)

    assert found.appendable and found.age_s == 5


def test_a_mark_older_than_the_limit_is_not_and_says_for_how_long(engine):
    mark_at(engine, NOW - timedelta(seconds=75))

    found = appendability(engine, LIMIT_S, now=NOW)

    assert not found.appendable and found.age_s == 75
    assert found.why == "has not been appendable for 75 s"


def test_a_log_never_marked_is_not_appendable(engine):
    found = appendability(engine, LIMIT_S, now=NOW)

    assert not found.appendable and found.age_s is None
    assert "never been marked appendable" in found.why


def test_a_database_that_does_not_read_is_not_appendable(tmp_path):
    unmigrated = db.make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no audit_liveness to read

    found = appendability(unmigrated, LIMIT_S, now=NOW)
    unmigrated.dispose()

    assert not found.appendable and found.age_s is None
    assert "liveness mark does not read" in found.why


def test_the_guard_refuses_with_how_long_and_what_to_check_and_is_transient_for_workers(engine):
    mark_at(engine, datetime.now(UTC) - timedelta(minutes=10))

    with pytest.raises(AuditLogNotAppendable) as refused:
        require_appendable(engine, LIMIT_S)

    assert re.search(r"^the audit log has not been appendable for 60\d s", refused.value.message)
    assert "`pdo audit-worker`" in refused.value.hint and "revocations still go through" in refused.value.hint
    assert is_transient(refused.value)  # a worker waits and retries; it never dead-letters for it


def test_a_limit_of_zero_never_refuses(engine):
    require_appendable(engine, 0)  # no mark at all, and still no refusal


# ---------------------------------------------------------------------------------------------- the mark


def test_every_append_marks_the_log_with_its_size_and_an_idle_mark_keeps_it(engine):
    store = AuditStore(engine)
    before = datetime.now(UTC) - timedelta(seconds=1)

    store.append([entry("pdo.requests/0/0"), entry("pdo.requests/0/1")])
    after_append = marked(engine)
    store.mark_appendable()
    after_idle = marked(engine)

    assert after_append.size == 2
    assert after_idle.size == 2
    assert appendability(engine, LIMIT_S).appendable
    appended_at = after_idle.appended_at.replace(tzinfo=after_idle.appended_at.tzinfo or UTC)
    assert appended_at >= before


def test_an_idle_mark_on_a_log_never_marked_counts_its_entries(engine):
    store = AuditStore(engine)
    store.append([entry(f"pdo.requests/0/{offset}") for offset in range(3)])
    with engine.begin() as connection:  # as if the entries were there before the mark was
        connection.execute(tables.liveness.delete())

    store.mark_appendable()

    assert marked(engine).size == 3


def test_the_workers_gauge_is_the_time_of_its_last_successful_write(engine):
    from prometheus_client import REGISTRY

    runtime = Runtime(engine, codec=None, store=AuditStore(engine), signer=None, publisher=None)  # type: ignore[arg-type]
    before = datetime.now(UTC).timestamp()

    runtime.mark_appendable()

    gauge = REGISTRY.get_sample_value("pdo_audit_log_appendable_timestamp_seconds")
    assert gauge is not None and gauge >= before - 1


# ---------------------------------------------------------------------------------------------- what it holds


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def guarded_settings() -> Settings:
    return dataclasses.replace(Settings.from_env(), audit_fail_closed_after_s=LIMIT_S)


@pytest.fixture
def service(engine, publisher, guarded_settings) -> AuthorizationService:
    return AuthorizationService(
        engine, publisher, sample_catalog(), load_policy(), guarded_settings, clock=Clock(START)
    )


def fresh(engine) -> None:
    mark_at(engine, datetime.now(UTC))


def stale(engine) -> None:
    mark_at(engine, datetime.now(UTC) - timedelta(seconds=LIMIT_S * 10))


def submit(service, dataset_id: str, valid_days: int = 30) -> str:
    spec = RequestSpec(
        dataset_id=dataset_id,
        purpose="congestion forecasting",
        fields=("district", "speed_kmh"),
        valid_from=START,
        valid_until=START + timedelta(days=valid_days),
    )
    return service.submit_request(TENANT, spec, TENANT).request_id


def state(engine) -> tuple[int, int]:
    """(grants, outbox rows): what an approval would add."""
    with engine.connect() as connection:
        grants = connection.execute(sa.select(sa.func.count()).select_from(authz.grants)).scalar_one()
        staged = connection.execute(sa.select(sa.func.count()).select_from(authz.outbox)).scalar_one()
    return grants, staged


def active_grant(service, engine, valid_days: int = 30) -> str:
    fresh(engine)
    request_id = submit(service, "open-traffic", valid_days)
    return service.decide(request_id).grant_id


def test_an_operators_approval_waits_and_changes_nothing_until_the_log_is_back(service, engine):
    request_id = submit(service, "conditional-traffic")
    assert service.decide(request_id).status == RequestStatus.PENDING_REVIEW  # a referral narrows nothing
    stale(engine)
    before = state(engine)

    with pytest.raises(AuditLogNotAppendable):
        service.approve(request_id, OPERATOR)

    assert state(engine) == before
    assert service.get_request(request_id).status == RequestStatus.PENDING_REVIEW
    fresh(engine)
    assert service.approve(request_id, OPERATOR).status == GrantStatus.ACTIVE


def test_an_automatic_approval_waits_and_a_denial_by_policy_does_not(service, engine):
    stale(engine)
    approvable = submit(service, "open-traffic")
    deniable = submit(service, "core-traffic")

    with pytest.raises(AuditLogNotAppendable):
        service.decide(approvable)
    denied = service.decide(deniable)

    assert service.get_request(approvable).status == RequestStatus.SUBMITTED  # decided once the log is back
    assert denied.status == RequestStatus.DENIED
    fresh(engine)
    assert service.decide(approvable).status == RequestStatus.APPROVED


class OneEventCodec:
    """Decodes the one submitted event the test hands it."""

    def __init__(self, value: dict) -> None:
        self.value = value

    def decode(self, _data: bytes | None) -> Decoded:
        return Decoded(1, records.SUBMITTED, self.value)


def test_the_worker_holds_an_automatic_approval_for_retrying_and_never_dead_letters_it(
    service, engine, publisher
):
    stale(engine)
    request_id = submit(service, "open-traffic")
    (submitted,) = publisher.of(records.SUBMITTED)
    handlers = AuthorizationHandlers(service, publisher, OneEventCodec(submitted))  # type: ignore[arg-type]
    event = SourceMessage("pdo.requests", 0, 7, request_id.encode(), b"submitted")

    with pytest.raises(AuditLogNotAppendable):  # the agent's `retrying` waits it out
        handlers.on_request(event)
    fresh(engine)
    handlers.on_request(event)  # the retry, once the log is back

    assert service.get_request(request_id).status == RequestStatus.APPROVED
    assert [e for e in publisher.events if e.topic == TopicId.DEAD_LETTERS] == []


def test_a_resumption_waits_but_suspending_and_revoking_go_through(service, engine):
    grant_id = active_grant(service, engine)
    other = active_grant(service, engine)
    stale(engine)

    suspended = service.suspend(grant_id, OPERATOR, "checking the tenant's use")
    with pytest.raises(AuditLogNotAppendable):
        service.resume(grant_id, OPERATOR)
    revoked = service.revoke(other, OPERATOR, "contract ended")

    assert suspended.status == GrantStatus.SUSPENDED
    assert service.get_grant(grant_id).status == GrantStatus.SUSPENDED
    assert revoked.status == GrantStatus.REVOKED


def test_the_clock_holds_a_quota_resumption_and_still_expires(service, engine, publisher):
    over_quota = active_grant(service, engine)
    ending = active_grant(service, engine, valid_days=1)
    service.suspend_for_quota(over_quota, START.date(), 100, 100)
    stale(engine)
    handlers = AuthorizationHandlers(service, publisher, OneEventCodec({}))  # type: ignore[arg-type]
    next_day = START + timedelta(days=1, hours=1)

    held = handlers.tick(next_day)
    fresh(engine)
    after = handlers.tick(next_day)

    assert (held.resumed, held.expired) == ([], [ending])
    assert after.resumed == [over_quota]


def test_denying_and_withdrawing_go_through_while_the_log_is_stale(service, engine):
    to_deny, to_withdraw = submit(service, "conditional-traffic"), submit(service, "conditional-traffic")
    for request_id in (to_deny, to_withdraw):
        service.decide(request_id)
    stale(engine)

    denied = service.deny(to_deny, OPERATOR, "no stated legal basis")
    withdrawn = service.withdraw_request(TENANT, to_withdraw, None, actor=TENANT)

    assert (denied.status, withdrawn.status) == (RequestStatus.DENIED, RequestStatus.WITHDRAWN)


# ---------------------------------------------------------------------------------------------- the gateway


def test_the_gateway_answers_503_counts_the_refusal_and_raises_its_gauge(
    tmp_path, publisher, guarded_settings
):
    engine, keys = gateway_database(tmp_path)
    service = AuthorizationService(
        engine, publisher, sample_catalog(), load_policy(), guarded_settings, clock=Clock(START)
    )
    grant_id = active_grant(service, engine)
    pending = submit(service, "conditional-traffic")
    service.decide(pending)
    stale(engine)
    operator = {"Authorization": f"Bearer {keys['alice']}"}
    app = create_app(guarded_settings, sample_catalog(), service, engine, dead_letters=lambda limit: [])
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        approval = http.post(f"/v1/requests/{pending}/approve", json={}, headers=operator)
        revocation = http.post(f"/v1/grants/{grant_id}/revoke", json={"reason": "cut off"}, headers=operator)
        metrics = http.get("/metrics", headers=scrape_headers(guarded_settings)).text
    engine.dispose()

    assert approval.status_code == 503, approval.text
    assert "the audit log has not been appendable for" in approval.json()["message"]
    assert "pdo audit-worker" in approval.json()["hint"]
    assert revocation.status_code == 200, revocation.text
    assert "pdo_audit_fail_closed 1.0" in metrics
    assert 'pdo_audit_fail_closed_refusals_total{route="/v1/requests/{request_id}/approve"} 1.0' in metrics
