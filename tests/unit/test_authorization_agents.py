"""The worker's handlers: decide on submission, suspend on quota, dead-letter what cannot be processed."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy.exc import OperationalError
from test_authorization_service import START, TENANT, spec

from pdo.authorization import records
from pdo.authorization.agents import AuthorizationHandlers
from pdo.authorization.public import AuthorizationService, RequestStatus
from pdo.authorization.testing import TRAFFIC_FLOW_SCHEMA, Clock, Harness, RecordingPublisher, sqlite_harness
from pdo.catalog import mapping as catalog_mapping
from pdo.core.codec import Decoded, UndecodableError
from pdo.core.deadletters import SourceMessage
from pdo.core.errors import Unavailable
from pdo.core.names import Event
from pdo.core.retry import RETRIES, retrying
from pdo.core.topics import TopicId
from pdo.core.vocabulary import Classification, GrantStatus, PriceKind, SuspensionCause, TenantKind


class TableCodec:
    """Decodes by looking the bytes up in a table the test fills: no registry needed."""

    def __init__(self) -> None:
        self.table: dict[bytes, Decoded] = {}

    def add(self, data: bytes, schema_name: str, value: dict) -> bytes:
        self.table[data] = Decoded(1, schema_name, value)
        return data

    def decode(self, data: bytes | None) -> Decoded:
        if data not in self.table:
            raise UndecodableError("empty value: no Confluent header" if not data else "unknown magic byte")
        return self.table[data]


@pytest.fixture
def codec() -> TableCodec:
    return TableCodec()


@pytest.fixture
def h(tmp_path) -> Harness:
    with sqlite_harness(tmp_path, START) as harness:
        yield harness


@pytest.fixture
def service(h) -> AuthorizationService:
    return h.service


@pytest.fixture
def publisher(h) -> RecordingPublisher:
    return h.publisher


@pytest.fixture
def clock(h) -> Clock:
    return h.clock


@pytest.fixture
def handlers(h, codec) -> AuthorizationHandlers:
    return AuthorizationHandlers(h.service, h.publisher, codec)


def message(value: bytes | None, topic="pdo.requests", offset=7) -> SourceMessage:
    return SourceMessage(topic, 1, offset, b"key-1", value, (("trace", b"abc"),))


def dead_letters(recorded: RecordingPublisher) -> list[dict]:
    return [e.value for e in recorded.events if e.topic == TopicId.DEAD_LETTERS]


def test_a_submitted_request_is_decided(handlers, service, publisher, codec):
    request = service.submit_request(TENANT, spec(), TENANT)
    (submitted,) = publisher.of(records.SUBMITTED)
    handlers.on_request(message(codec.add(b"r1", records.SUBMITTED, submitted)))
    assert service.get_request(request.request_id).status == RequestStatus.APPROVED
    handlers.on_request(message(codec.add(b"r1", records.SUBMITTED, submitted)))  # redelivered
    assert len(publisher.of(records.GRANTED)) == 1


def test_a_submission_whose_row_never_committed_is_recorded_from_the_event(
    handlers, service, publisher, codec
):
    service.submit_request(TENANT, spec(request_id="r-lost-commit"), TENANT)
    (submitted,) = publisher.of(records.SUBMITTED)
    with service.engine.begin() as conn:  # a database restored from before the request (or an older version)
        conn.exec_driver_sql("DELETE FROM authz_requests")
    handlers.on_request(message(codec.add(b"r1", records.SUBMITTED, submitted)))
    assert service.get_request("r-lost-commit").status == RequestStatus.APPROVED


def test_a_government_submission_recorded_from_the_event_keeps_its_kind(handlers, service, publisher, codec):
    service.submit_request(TENANT, spec(request_id="r-gov"), TENANT, tenant_is_government=True)
    (submitted,) = publisher.of(records.SUBMITTED)
    with service.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM authz_requests")
    handlers.on_request(message(codec.add(b"r1", records.SUBMITTED, submitted)))
    assert service.get_request("r-gov").tenant_kind == TenantKind.GOVERNMENT
    assert service.get_grant("g-r-gov").price_plan.kind == PriceKind.FREE


def test_referrals_and_withdrawals_are_skipped_not_dead_lettered(handlers, service, publisher, codec):
    request = service.submit_request(TENANT, spec("conditional-traffic"), TENANT)
    (submitted,) = publisher.of(records.SUBMITTED)
    handlers.on_request(message(codec.add(b"r1", records.SUBMITTED, submitted)))
    decided = service.get_request(request.request_id)
    assert decided.status == RequestStatus.PENDING_REVIEW
    (referred,) = publisher.of(records.REFERRED)
    published = len(publisher.events)
    for _ in range(2):  # delivered, then redelivered
        handlers.on_request(message(codec.add(b"r2", records.REFERRED, referred), offset=8))
    assert service.get_request(request.request_id) == decided
    service.withdraw_request(TENANT, request.request_id, None, TENANT)
    (withdrawn,) = publisher.of(records.WITHDRAWN)
    handlers.on_request(message(codec.add(b"r3", records.WITHDRAWN, withdrawn), offset=9))
    assert service.get_request(request.request_id).status == RequestStatus.WITHDRAWN
    assert dead_letters(publisher) == []
    assert len(publisher.events) == published + 1  # only the withdrawal itself


def test_undecodable_bytes_go_to_the_dead_letter_topic_with_their_position(handlers, publisher):
    handlers.on_request(message(b"\x07garbage", offset=42))
    (letter,) = dead_letters(publisher)
    assert letter["reason_code"] == "UNDECODABLE"
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        "pdo.requests",
        1,
        42,
    )
    assert letter["original_value"] == b"\x07garbage" and letter["original_key"] == b"key-1"
    assert letter["headers"] == [{"key": "trace", "value": b"abc"}]
    assert letter["service"] == "authorization"


def test_a_tombstone_is_dead_lettered_not_fatal(handlers, publisher):
    handlers.on_request(message(None))
    assert dead_letters(publisher)[0]["original_value"] == b""


def test_an_event_of_the_wrong_kind_is_dead_lettered(handlers, publisher, codec):
    handlers.on_request(message(codec.add(b"x", records.QUOTA_EXCEEDED, {})))
    assert dead_letters(publisher)[0]["reason_code"] == "INVALID_EVENT"


def test_an_unavailable_backend_is_raised_for_the_agent_to_retry_not_dead_lettered(
    handlers, service, publisher, codec, monkeypatch
):
    service.submit_request(TENANT, spec(), TENANT)
    (submitted,) = publisher.of(records.SUBMITTED)

    def down(_request_id):
        raise Unavailable("broker down")

    monkeypatch.setattr(service, "decide", down)
    with pytest.raises(Unavailable):
        handlers.on_request(message(codec.add(b"r1", records.SUBMITTED, submitted)))
    assert dead_letters(publisher) == []


def test_quota_exceeded_suspends_the_grant(handlers, service, publisher, codec, clock):
    grant_id = service.decide(service.submit_request(TENANT, spec(), TENANT).request_id).grant_id
    report = {
        "event_id": "e-1",
        "occurred_at": clock.now,
        "actor": "system:metering",
        "grant_id": grant_id,
        "tenant_id": TENANT,
        "dataset_id": "open-traffic",
        "day": clock.now.date(),
        "quota_records": 5000,
        "used_records": 5001,
    }
    handlers.on_quota_exceeded(
        message(codec.add(b"q1", records.QUOTA_EXCEEDED, report), "pdo.quota-exceeded")
    )
    assert service.get_grant(grant_id).status == GrantStatus.SUSPENDED
    unknown = {**report, "grant_id": "g-none"}
    handlers.on_quota_exceeded(
        message(codec.add(b"q2", records.QUOTA_EXCEEDED, unknown), "pdo.quota-exceeded")
    )
    assert "unknown grant g-none" in dead_letters(publisher)[0]["reason"]


def test_an_exhausted_privacy_budget_suspends_the_grant_once(handlers, service, publisher, codec, clock):
    grant_id = service.decide(service.submit_request(TENANT, spec(), TENANT).request_id).grant_id
    notice = {
        "event_id": "e-1",
        "occurred_at": clock.now,
        "actor": "system:aggregation",
        "grant_id": grant_id,
        "tenant_id": TENANT,
        "dataset_id": "open-traffic",
        "period": "2026-03",
        "epsilon_budget": 10.0,
        "epsilon_spent": 9.5,
        "window_start": clock.now,
    }
    for offset in (
        1,
        2,
    ):  # a second notice (the next window, before the suspension was applied) changes nothing
        value = codec.add(f"p{offset}".encode(), Event.PRIVACY_BUDGET_EXHAUSTED, notice)
        handlers.on_quota_exceeded(message(value, "pdo.quota-exceeded", offset))
    grant = service.get_grant(grant_id)
    assert (grant.status, grant.history[-1].actor) == (GrantStatus.SUSPENDED, "system:aggregation")
    assert "privacy budget of epsilon 10 for open-traffic in 2026-03 is spent (9.5)" in grant.status_reason
    assert len(grant.history) == 2 and dead_letters(publisher) == []


def quota_report(grant_id: str, clock: Clock) -> dict:
    return {
        "event_id": "e-1",
        "occurred_at": clock.now,
        "actor": "system:metering",
        "grant_id": grant_id,
        "tenant_id": TENANT,
        "dataset_id": "open-traffic",
        "day": clock.now.date(),
        "quota_records": 5000,
        "used_records": 5001,
    }


def test_a_database_outage_longer_than_the_old_four_retries_still_suspends_on_quota(
    handlers, service, publisher, codec, clock, monkeypatch
):
    """The old policy gave up after four retries (7.5 s) and dead-lettered the valid notice; now the agent
    retries until the database is back, and the grant is suspended."""
    grant_id = service.decide(service.submit_request(TENANT, spec(), TENANT).request_id).grant_id
    suspend, failures = service.suspend_for_quota, []

    def database_down_for_a_while(*args):
        if len(failures) < 9:
            failures.append(1)
            raise OperationalError("UPDATE authz_grants", {}, Exception("connection refused"))
        return suspend(*args)

    monkeypatch.setattr(service, "suspend_for_quota", database_down_for_a_while)
    notice = message(
        codec.add(b"q1", records.QUOTA_EXCEEDED, quota_report(grant_id, clock)), "pdo.quota-exceeded"
    )
    retries = RETRIES.labels("authorization", "suspending on quota")
    before = retries._value.get()
    asyncio.run(retrying("suspending on quota", handlers.on_quota_exceeded, notice, first_backoff_s=0.0))
    assert len(failures) == 9
    assert retries._value.get() - before == 9  # each retry counted, under the service and the step
    assert service.get_grant(grant_id).status == GrantStatus.SUSPENDED
    assert dead_letters(publisher) == []


def test_a_malformed_event_is_dead_lettered_at_once_without_retrying(handlers, publisher):
    calls = []

    def on_request(message_):
        calls.append(message_)
        handlers.on_request(message_)

    asyncio.run(retrying("deciding a request", on_request, message(b"\x07 not avro"), first_backoff_s=0.0))
    assert len(calls) == 1
    assert [letter["reason_code"] for letter in dead_letters(publisher)] == ["UNDECODABLE"]


def test_a_dead_letter_topic_that_does_not_answer_is_retried_not_lost(handlers, publisher):
    publisher.fail_next = True
    asyncio.run(retrying("deciding a request", handlers.on_request, message(b"\x07"), first_backoff_s=0.0))
    assert len(dead_letters(publisher)) == 1


def test_the_clock_expires_resumes_and_sweeps(handlers, service, clock):
    expiring = service.decide(
        service.submit_request(TENANT, spec(valid_until=START + timedelta(hours=1)), TENANT).request_id
    ).grant_id
    stale = service.submit_request(TENANT, spec(), TENANT).request_id
    clock.advance(hours=2)
    report = handlers.tick(clock.now)
    assert report.expired == [expiring]
    assert report.decided == [stale]
    assert service.get_grant(expiring).status == GrantStatus.EXPIRED


def test_a_failing_clock_step_does_not_stop_the_others(handlers, service, clock, monkeypatch):
    def broken(_now):
        raise RuntimeError("database gone")

    monkeypatch.setattr(service, "expire_due", broken)
    service.submit_request(TENANT, spec(), TENANT)
    clock.advance(minutes=5)
    assert len(handlers.tick(clock.now).decided) == 1


class SchemaById:
    """The registry's schema-by-id lookup the catalog handler needs: every id is TrafficFlow."""

    def schema_by_id(self, _schema_id: int) -> str:
        return TRAFFIC_FLOW_SCHEMA


def catalog_update(dataset, version: int = 2, **changes) -> dict:
    after = replace(dataset, version=version, **changes)
    head = records.head("e-catalog", START, "provider:transport-bureau")
    return catalog_mapping.updated_event(head, dataset, after)


def test_a_catalog_update_reclassifying_a_dataset_suspends_its_grants(handlers, service, publisher, codec, h):
    request = service.submit_request(TENANT, spec(), TENANT)
    grant_id = service.decide(request.request_id).grant_id
    codec.registry = SchemaById()
    update = catalog_update(h.catalog.get("open-traffic"), classification=Classification.CORE)
    for _ in range(2):  # delivered, then redelivered: one suspension
        handlers.on_catalog(message(codec.add(b"c1", Event.DATASET_UPDATED, update), topic="pdo.catalog"))
    grant = service.get_grant(grant_id)
    assert (grant.status, grant.suspension_cause) == (GrantStatus.SUSPENDED, SuspensionCause.DATASET_CHANGED)
    assert len(publisher.of(records.SUSPENDED)) == 1
    assert dead_letters(publisher) == []


def test_catalog_registrations_and_retirements_change_no_grant(handlers, service, publisher, codec, h):
    dataset = h.catalog.get("open-traffic")
    head = records.head("e-catalog", START, "provider:transport-bureau")
    registered = catalog_mapping.registered_event(head, dataset)
    retired = catalog_mapping.retired_event(head, dataset, "no longer collected")
    handlers.on_catalog(message(codec.add(b"c1", Event.DATASET_REGISTERED, registered), topic="pdo.catalog"))
    handlers.on_catalog(message(codec.add(b"c2", Event.DATASET_RETIRED, retired), topic="pdo.catalog"))
    assert publisher.events == []


def test_a_catalog_update_for_an_unknown_dataset_without_snapshot_is_dead_lettered(
    handlers, publisher, codec
):
    update = {**records.head("e-catalog", START, "provider:x"), "dataset_id": "gone", "dataset": None}
    handlers.on_catalog(message(codec.add(b"c1", Event.DATASET_UPDATED, update), topic="pdo.catalog"))
    (letter,) = dead_letters(publisher)
    assert letter["reason_code"] == "INVALID_EVENT" and "gone" in letter["reason"]


def test_the_worker_relay_publishes_what_the_broker_missed(handlers, service, publisher):
    publisher.fail_next = True
    service.submit_request(TENANT, spec(request_id="r-missed"), TENANT)
    assert publisher.of(records.SUBMITTED) == []
    assert handlers.publish_outbox() == 1
    assert [event["request_id"] for event in publisher.of(records.SUBMITTED)] == ["r-missed"]


# ---------------------------------------------------------------------------------------------- fail closed


def test_an_unreadable_quota_notice_suspends_the_grant_it_is_keyed_by(handlers, service, publisher):
    grant_id = service.decide(service.submit_request(TENANT, spec(), TENANT).request_id).grant_id
    unreadable = SourceMessage("pdo.quota-exceeded", 0, 3, grant_id.encode(), b"\x07 not avro", ())
    handlers.on_quota_exceeded(unreadable)
    grant = service.get_grant(grant_id)
    assert (grant.status, grant.suspension_cause) == (GrantStatus.SUSPENDED, SuspensionCause.QUOTA_EXCEEDED)
    assert "could not be read" in grant.status_reason
    assert [letter["source_offset"] for letter in dead_letters(publisher)] == [3]  # and kept for a person
    handlers.on_quota_exceeded(unreadable)  # redelivered: the grant stays suspended, nothing breaks
    assert service.get_grant(grant_id).version == grant.version


def test_an_unreadable_catalog_change_suspends_the_live_grants_of_its_dataset(handlers, service, publisher):
    grant_id = service.decide(service.submit_request(TENANT, spec(), TENANT).request_id).grant_id
    handlers.on_catalog(SourceMessage("pdo.catalog", 0, 9, b"open-traffic", b"\x00\x7f\xff\xff\xf0 x", ()))
    grant = service.get_grant(grant_id)
    assert (grant.status, grant.suspension_cause) == (GrantStatus.SUSPENDED, SuspensionCause.DATASET_CHANGED)
    assert "catalog change to this dataset could not be read" in grant.status_reason
    assert dead_letters(publisher)[0]["source_topic"] == "pdo.catalog"
    handlers.on_catalog(SourceMessage("pdo.catalog", 0, 10, b"some-other-dataset", b"\x07", ()))
    assert service.get_grant(grant_id).version == grant.version  # another dataset's grants only
