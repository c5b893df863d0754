"""The authorization outbox on SQLite and PostgreSQL: an event is published if and only if its change
committed, in order, once the broker takes it; versions are never reused; a double send is harmless."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from pdo.authorization import outbox, records
from pdo.authorization import tables as t
from pdo.authorization.projection import SourcedEvent, project
from pdo.authorization.public import AuthorizationService, RequestSpec, load_policy
from pdo.authorization.testing import Clock, RecordingPublisher, sample_catalog
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.topics import TopicId
from pdo.core.vocabulary import GrantStatus
from pdo.sharing.grants import GrantBook
from pdo.sharing.scope import GrantState

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TENANT = "tenant:acme-logistics"
OPERATOR = "operator:alice"


class CommitFailure(Exception):
    """The database refuses the commit (disk full, connection lost, serialization failure)."""


@pytest.fixture
def engine(database_url):
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def service(engine, publisher) -> AuthorizationService:
    return AuthorizationService(
        engine, publisher, sample_catalog(), load_policy(), Settings.from_env(), clock=Clock(START)
    )


def granted(service: AuthorizationService) -> str:
    spec = RequestSpec(
        dataset_id="open-traffic",
        purpose="congestion forecasting",
        fields=("district", "speed_kmh"),
        valid_from=START,
        valid_until=START + timedelta(days=30),
    )
    request = service.submit_request(TENANT, spec, TENANT)
    return service.decide(request.request_id).grant_id


def grant_events(publisher: RecordingPublisher, grant_id: str) -> list[tuple[str, int]]:
    """(event name, grant version) of every event published for the grant, in publishing order."""
    out = []
    for item in publisher.events:
        if item.topic is TopicId.AUTHORIZATIONS and item.key == grant_id:
            version = item.value["grant"]["version"] if "grant" in item.value else 1
            out.append((item.schema_name.rsplit(".", 1)[1], version))
    return out


def failing_commits(engine):
    """While active, every commit on the engine fails (and its transaction rolls back)."""

    def refuse(_conn):
        raise CommitFailure("the database refused the commit")

    event.listen(engine, "commit", refuse)
    return lambda: event.remove(engine, "commit", refuse)


def test_a_change_whose_commit_fails_is_never_published(service, publisher, engine):
    grant_id = granted(service)
    restore = failing_commits(engine)
    with pytest.raises(CommitFailure):
        service.revoke(grant_id, OPERATOR, "contract ended")
    restore()
    assert service.relay.publish_all() == 0  # nothing was left behind for the relay either
    assert grant_events(publisher, grant_id) == [("AuthorizationGranted", 1)]
    assert service.get_grant(grant_id).status == GrantStatus.ACTIVE
    assert outbox.pending_count(engine) == 0


def test_a_suspend_after_a_failed_revoke_takes_the_next_version_and_revives_nothing(
    service, publisher, engine
):
    grant_id = granted(service)
    restore = failing_commits(engine)
    with pytest.raises(CommitFailure):
        service.revoke(grant_id, OPERATOR, "contract ended")
    restore()
    suspended = service.suspend(grant_id, OPERATOR, "checking the contract")
    service.relay.publish_all()
    assert suspended.version == 2
    assert grant_events(publisher, grant_id) == [("AuthorizationGranted", 1), ("AuthorizationSuspended", 2)]
    book = GrantBook()
    for name, value in publisher.decoded():
        book.apply(name, value)
    assert book.get(grant_id).state is GrantState.SUSPENDED  # never a REVOKED version 2 to be confused with


def test_with_the_broker_down_changes_commit_and_go_out_in_order_once_it_returns(service, publisher, engine):
    grant_id = granted(service)
    publisher.down = True
    service.suspend(grant_id, OPERATOR, "checking")  # the operator's answer comes; the event waits
    service.resume(grant_id, OPERATOR)
    service.revoke(grant_id, OPERATOR, "contract ended")
    assert service.get_grant(grant_id).version == 4
    assert outbox.pending_count(engine) == 3
    assert service.get_grant(grant_id).published is False  # SQL has version 4; sharing does not yet
    assert [grant.published for grant in service.list_grants()] == [False]
    with pytest.raises(Exception, match="broker down"):
        service.relay.publish_pending()  # the worker's relay keeps trying while the broker is away
    publisher.down = False
    assert service.relay.publish_all() == 3
    assert grant_events(publisher, grant_id) == [
        ("AuthorizationGranted", 1),
        ("AuthorizationSuspended", 2),
        ("AuthorizationResumed", 3),
        ("AuthorizationRevoked", 4),
    ]
    assert outbox.pending_count(engine) == 0
    assert service.get_grant(grant_id).published is True


def test_a_send_that_fails_midway_resends_from_that_row_and_nothing_overtakes_it(service, publisher, engine):
    grant_id = granted(service)
    publisher.down = True
    service.suspend(grant_id, OPERATOR, "checking")
    service.resume(grant_id, OPERATOR)
    publisher.down = False
    publisher.fail_next = True
    with pytest.raises(Exception, match="broker down"):
        service.relay.publish_pending()
    assert outbox.pending_count(engine) == 2
    service.relay.publish_all()
    assert [version for _, version in grant_events(publisher, grant_id)] == [1, 2, 3]


def test_a_double_send_is_applied_once_by_sharing_and_by_the_projection(service, publisher, engine):
    grant_id = granted(service)
    service.suspend(grant_id, OPERATOR, "checking")
    service.resume(grant_id, OPERATOR)
    with engine.begin() as conn:  # a relay that stalled past its lease sends the same rows again
        conn.execute(t.outbox.update().values(sent_at=None))
    service.relay.publish_all()
    versions = [version for _, version in grant_events(publisher, grant_id)]
    assert versions == [1, 2, 3, 1, 2, 3]
    book = GrantBook()
    applied = [book.apply(name, value) for name, value in publisher.decoded()]
    assert [scope.version for scope in applied if scope is not None and scope.grant_id == grant_id] == [
        1,
        2,
        3,
    ]
    assert book.get(grant_id).state is GrantState.ACTIVE
    projection = project(SourcedEvent(name, value) for name, value in publisher.decoded())
    assert projection.grants[grant_id].version == 3
    assert len([item for item in projection.transitions.values() if item.grant_id == grant_id]) == 3


def test_a_grant_version_cannot_be_staged_twice(service, engine):
    grant_id = granted(service)
    value = records.transition_event(service.get_grant(grant_id), "e-1", OPERATOR, reason="again")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        outbox.stage(conn, TopicId.AUTHORIZATIONS, records.REVOKED, value, grant_id, grant_version=1)


def test_one_relay_publishes_at_a_time_and_another_takes_over_an_expired_lease(engine, publisher):
    clock = Clock(START)
    first = outbox.OutboxRelay(engine, publisher, timedelta(seconds=30), clock)
    second = outbox.OutboxRelay(engine, publisher, timedelta(seconds=30), clock)
    with engine.begin() as conn:
        outbox.stage(conn, TopicId.REQUESTS, records.SUBMITTED, submitted("r-1"), "r-1")
    assert first._take_lease()  # the first relay is mid-round (e.g. stuck on the broker)
    assert second.publish_pending() == 0
    clock.advance(seconds=31)
    assert second.publish_pending() == 1
    assert [item.key for item in publisher.events] == ["r-1"]
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.outbox_lease.c.holder)).scalar_one() is None  # released


def submitted(request_id: str) -> dict:
    return {
        **records.head("e-" + request_id, START, TENANT),
        "request_id": request_id,
        "tenant_id": TENANT,
        "dataset_id": "open-traffic",
        "purpose": "testing",
        "fields": ["district"],
        "row_filter": None,
        "valid_from": START,
        "valid_until": START + timedelta(days=1),
        "expected_daily_records": None,
        "tenant_kind": "COMPANY",
    }


def test_relays_racing_writers_publish_each_grant_version_once_and_in_order(service, publisher, engine):
    grant_ids = [granted(service) for _ in range(3)]
    rival = outbox.OutboxRelay(engine, publisher, timedelta(minutes=5))
    done = threading.Event()

    def change(grant_id: str) -> None:
        for _ in range(4):
            service.suspend(grant_id, OPERATOR, "checking")
            service.resume(grant_id, OPERATOR)

    def relay_until_done() -> None:
        while not done.is_set():
            rival.publish_all()

    relay = threading.Thread(target=relay_until_done)
    relay.start()
    writers = [threading.Thread(target=change, args=(grant_id,)) for grant_id in grant_ids]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    done.set()
    relay.join()
    service.relay.publish_all()
    for grant_id in grant_ids:
        assert [version for _, version in grant_events(publisher, grant_id)] == list(range(1, 10))


def test_sent_rows_are_pruned_after_their_retention_and_unsent_ones_never(service, publisher, engine):
    grant_id = granted(service)  # two rows sent: the submission and the grant
    publisher.down = True
    service.suspend(grant_id, OPERATOR, "checking")  # one row waiting for the broker
    later = datetime.now(UTC) + outbox.SENT_RETENTION + timedelta(minutes=1)
    assert outbox.prune_sent(engine, datetime.now(UTC)) == 0
    assert outbox.prune_sent(engine, later) == 2
    assert outbox.pending_count(engine) == 1
    publisher.down = False
    assert service.relay.publish_all() == 1


def test_a_relay_holding_the_lease_keeps_its_own_other_threads_out(service, publisher, engine):
    granted(service)
    publisher.down = True
    service.suspend(service.list_grants()[0].grant_id, OPERATOR, "checking")
    publisher.down = False
    assert service.relay._take_lease()  # the prompt publish's thread, mid-round
    assert service.relay.publish_pending() == 0  # the worker's timer, same relay: waits its turn
    service.relay._release_lease()
    assert service.relay.publish_pending() == 1


class HangingBroker(RecordingPublisher):
    """A broker that does not answer until the test lets it (kafka-python waits up to its timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = threading.Event()

    def publish(self, *args, **kwargs):
        self.answer.wait(timeout=60)
        return super().publish(*args, **kwargs)


def test_an_operator_gets_the_answer_while_the_broker_hangs_and_the_event_follows(engine):
    broker = HangingBroker()
    service = AuthorizationService(
        engine, broker, sample_catalog(), load_policy(), Settings.from_env(), clock=Clock(START)
    )
    broker.answer.set()
    grant_id = granted(service)
    broker.answer.clear()
    service._prompt.wait_s = 0.1  # the bound on how long a caller waits for the broker
    revoked = service.revoke(grant_id, OPERATOR, "contract ended")  # returns although the send hangs
    assert revoked.status == GrantStatus.REVOKED and service.get_grant(grant_id).published is False
    assert grant_events(broker, grant_id) == [("AuthorizationGranted", 1)]
    broker.answer.set()
    service._prompt._queued.result(timeout=60)  # the round that was waiting on the broker finishes
    assert grant_events(broker, grant_id) == [("AuthorizationGranted", 1), ("AuthorizationRevoked", 2)]
