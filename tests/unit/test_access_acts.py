"""Access acts become events (issue #13): each place that changes who may do what emits its event with
actor, time, subject and reason, never a secret. SQL changes commit with their event through an outbox (a
change that rolls back leaves none); broker changes are recorded first and refused when they cannot be."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from pdo.audit.recorder import entry_for
from pdo.authorization import outbox as authorization_outbox
from pdo.authorization.public import record_in_force
from pdo.authorization.testing import RecordingPublisher
from pdo.billing.statements import close_period
from pdo.cli.deadletters import ReplayAudit, replay_all
from pdo.core import db
from pdo.core.access import Grant
from pdo.core.access_log import AccessLog, operator_actor
from pdo.core.config import Settings
from pdo.core.deadletters import StoredDeadLetter
from pdo.core.errors import Conflict, PdoError, Unavailable
from pdo.core.names import Event
from pdo.core.serving import ServerThread
from pdo.core.topics import TopicId
from pdo.gateway import outbox as gateway_outbox
from pdo.gateway import tables as gateway_tables
from pdo.gateway.app import create_app
from pdo.gateway.kafka_credentials import InMemoryUsers, KafkaCredentialIssuer
from pdo.gateway.principals import PrincipalStore
from pdo.metering import outbox as metering_outbox
from pdo.stack.declarations import Audit, acls_applied_event, topics_created_event

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "access"
OPERATOR = "operator:alice"
AFTER_DECEMBER = datetime(2026, 1, 2, tzinfo=UTC)
# Words a field carrying a secret would be named by; `key_id` (a key's public id) is not one.
SECRET_WORDS = ("password", "secret", "hash", "salt", "api_key", "kdf")


class CommitFailure(Exception):
    """The database refuses the commit."""


@pytest.fixture
def engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'pdo.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


def staged(engine, outbox) -> list[tuple[str, dict]]:
    with engine.connect() as conn:
        return outbox.unsent(conn)


def refusing_commits(engine):
    def refuse(_conn):
        raise CommitFailure("the database refused the commit")

    event.listen(engine, "commit", refuse)
    return lambda: event.remove(engine, "commit", refuse)


def text_of(values) -> str:
    return json.dumps(values, default=str)


# ---------------------------------------------------------------------------------------------- schemas


def test_no_access_schema_has_a_field_that_could_carry_a_secret():
    files = sorted(SCHEMAS.glob("*.avsc"))
    assert len(files) == 13
    for path in files:
        names = [field["name"] for field in json.loads(path.read_text())["fields"]]
        assert names[:3] == ["event_id", "occurred_at", "actor"], path.name
        assert not [name for name in names if any(word in name for word in SECRET_WORDS)], path.name
        assert "key" not in names, path.name


# ---------------------------------------------------------------------------------------------- principals


def test_each_principal_and_key_change_commits_with_its_event_and_nothing_secret(engine):
    commits: list[int] = []
    store = PrincipalStore(engine, after_commit=lambda: commits.append(1))
    store.create_principal("tenant", "acme", "Acme", actor=OPERATOR, reason="onboarding")
    issued = store.issue_key("tenant:acme", actor=OPERATOR)
    store.revoke_key(issued.key_id, actor=OPERATOR, reason="leaked in a ticket")
    store.revoke_key(issued.key_id, actor=OPERATOR)  # revoked already: no second event
    store.set_disabled("tenant:acme", True, actor=OPERATOR, reason="contract ended")
    store.set_disabled("tenant:acme", True, actor=OPERATOR)  # disabled already: no second event
    store.set_disabled("tenant:acme", False, actor=OPERATOR)

    events = staged(engine, gateway_outbox.OUTBOX)
    assert [name for name, _ in events] == [
        Event.PRINCIPAL_CREATED,
        Event.API_KEY_ISSUED,
        Event.API_KEY_REVOKED,
        Event.PRINCIPAL_DISABLED,
        Event.PRINCIPAL_ENABLED,
    ]
    assert len(commits) == 5
    values = [value for _, value in events]
    assert {value["actor"] for value in values} == {OPERATOR}
    assert all(value["principal_id"] == "tenant:acme" for value in values)
    assert values[0]["reason"] == "onboarding" and values[0]["kind"] == "tenant"
    assert values[1]["key_id"] == values[2]["key_id"] == issued.key_id
    assert values[2]["reason"] == "leaked in a ticket"
    with engine.connect() as conn:
        stored = conn.execute(sa.select(gateway_tables.api_keys)).one()
    written = text_of(values)
    assert issued.key not in written and stored.hash not in written and stored.salt not in written
    assert issued.key.rsplit("_", 1)[1] not in written  # not even the key's secret part


def test_a_principal_change_that_rolls_back_leaves_no_event(engine):
    store = PrincipalStore(engine)
    restore = refusing_commits(engine)
    with pytest.raises(CommitFailure):
        store.create_principal("tenant", "acme", actor=OPERATOR)
    restore()
    assert store.list() == [] and staged(engine, gateway_outbox.OUTBOX) == []
    store.create_principal("tenant", "acme", actor=OPERATOR)
    with pytest.raises(Conflict):  # the insert fails: its event goes with it
        store.create_principal("tenant", "acme", actor=OPERATOR)
    assert len(staged(engine, gateway_outbox.OUTBOX)) == 1


def test_the_gateways_relay_publishes_its_outbox_to_pdo_access_once_the_broker_takes_it(engine, publisher):
    store = PrincipalStore(engine)
    store.create_principal("provider", "transport-bureau", actor=OPERATOR)
    store.issue_key("provider:transport-bureau", actor=OPERATOR)
    relay = gateway_outbox.relay(engine, publisher, kafka_timeout_s=1)
    publisher.down = True
    with pytest.raises(Unavailable):
        relay.publish_pending()
    assert len(staged(engine, gateway_outbox.OUTBOX)) == 2  # kept, in order, for the next round
    publisher.down = False
    assert relay.publish_all() == 2
    assert [(e.topic, e.schema_name) for e in publisher.events] == [
        (TopicId.ACCESS, Event.PRINCIPAL_CREATED),
        (TopicId.ACCESS, Event.API_KEY_ISSUED),
    ]
    assert staged(engine, gateway_outbox.OUTBOX) == []


def test_the_authorization_outbox_is_the_shared_one_over_its_own_tables():
    assert authorization_outbox.OUTBOX.rows.name == "authz_outbox"
    assert gateway_outbox.OUTBOX.rows.name == "gateway_outbox"
    assert metering_outbox.OUTBOX.rows.name == "metering_outbox"


# ---------------------------------------------------------------------------------------------- Kafka credentials


def issuer(publisher: RecordingPublisher, users: InMemoryUsers | None = None) -> KafkaCredentialIssuer:
    return KafkaCredentialIssuer(
        Settings.from_env(), lambda provider: ["traffic-flow"], users or InMemoryUsers(), publisher
    )


def test_issued_kafka_credentials_are_recorded_with_their_acls_and_without_the_password(publisher):
    users = InMemoryUsers()
    issued = issuer(publisher, users).issue("tenant:acme", reason="new analytics team")
    (recorded,) = publisher.of(Event.KAFKA_CREDENTIALS_ISSUED)
    assert (recorded["actor"], recorded["principal_id"], recorded["username"]) == (
        "tenant:acme",
        "tenant:acme",
        "tenant.acme",
    )
    assert recorded["reason"] == "new analytics team"
    assert recorded["acls"] == sorted(grant.line() for grant in users.users["tenant.acme"][1])
    assert any("READ topic pdo.tenant.acme.*" in line for line in recorded["acls"])
    assert issued.password not in text_of(publisher.events)

    issuer(publisher, users).issue("provider:transport-bureau", actor=OPERATOR)
    (provider,) = [e for e in publisher.of(Event.KAFKA_CREDENTIALS_ISSUED) if e["actor"] == OPERATOR]
    assert any("WRITE topic pdo.feed.traffic-flow" in line for line in provider["acls"])


def test_kafka_credentials_are_not_issued_when_the_act_cannot_be_recorded(publisher):
    users = InMemoryUsers()
    publisher.down = True
    with pytest.raises(Unavailable, match="nothing was changed"):
        issuer(publisher, users).issue("tenant:acme")
    with pytest.raises(Unavailable):
        issuer(publisher, users).revoke("tenant:acme", actor=OPERATOR)
    assert users.users == {} and publisher.events == []


class RefusingUsers(InMemoryUsers):
    def set_user(self, user, password, grants) -> None:
        raise PdoError("the broker would not set the password of tenant.acme (test)")


def test_a_broker_change_that_fails_after_its_record_is_recorded_as_failed(publisher):
    with pytest.raises(PdoError, match="would not set"):
        issuer(publisher, RefusingUsers()).issue("tenant:acme")
    ordered, failed = publisher.events
    assert ordered.schema_name == Event.KAFKA_CREDENTIALS_ISSUED
    assert failed.schema_name == Event.ACCESS_CHANGE_FAILED
    assert failed.value["ordered_event_id"] == ordered.value["event_id"]
    assert (failed.value["action"], failed.value["subject"], failed.value["tenant_id"]) == (
        "kafka_credentials.issued",
        "principal:tenant:acme",
        "tenant:acme",
    )


def test_revoked_kafka_credentials_are_recorded_with_who_revoked_them(publisher):
    users = InMemoryUsers()
    issuer(publisher, users).issue("tenant:acme")
    issuer(publisher, users).revoke("tenant:acme", actor=OPERATOR, reason="contract ended")
    (revoked,) = publisher.of(Event.KAFKA_CREDENTIALS_REVOKED)
    assert (revoked["actor"], revoked["username"], revoked["reason"]) == (
        OPERATOR,
        "tenant.acme",
        "contract ended",
    )
    assert users.users == {}


# ---------------------------------------------------------------------------------------------- ACLs and topics


def test_acls_and_topics_applied_are_named_in_their_events(publisher):
    audit = Audit(AccessLog(publisher), OPERATOR, "pdo acls apply", "new service")
    added = Grant("User:service.audit", "TOPIC", "pdo.access", "LITERAL", "READ")
    removed = Grant("User:service.audit", "TOPIC", "pdo.old", "PREFIXED", "READ")
    applied = acls_applied_event(audit, [added], [removed], ["service.audit"])
    assert (applied["actor"], applied["command"], applied["reason"]) == (
        OPERATOR,
        "pdo acls apply",
        "new service",
    )
    assert applied["added"] == ["User:service.audit READ topic pdo.access"]
    assert applied["removed"] == ["User:service.audit READ topic pdo.old*"]
    assert applied["service_users"] == ["service.audit"]
    created = topics_created_event(audit, ["pdo.statements", "pdo.access"])
    assert created["topics"] == ["pdo.access", "pdo.statements"]
    audit.log.record(Event.ACLS_APPLIED, applied)  # both fit their schemas
    audit.log.record(Event.TOPICS_CREATED, created)
    assert [e.topic for e in publisher.events] == [TopicId.ACCESS, TopicId.ACCESS]


def test_an_operators_command_acts_as_the_operator_unless_told():
    assert operator_actor("operator:bob") == "operator:bob"
    assert operator_actor().startswith("operator:")


# ---------------------------------------------------------------------------------------------- policy


def test_a_worker_starting_with_another_policy_records_it_once(engine, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: []\n")
    first = record_in_force(engine, policy)
    assert record_in_force(engine, policy) is None  # the same file: nothing new
    policy.write_text("rules: []\n# reviewed\n")
    second = record_in_force(engine, policy)
    values = [value for _, value in staged(engine, authorization_outbox.OUTBOX)]
    assert [(v["policy"], v["sha256"], v["previous_sha256"]) for v in values] == [
        ("authorization", first, None),
        ("authorization", second, first),
    ]
    assert first != second and len(second or "") == 64


def test_a_policy_record_that_rolls_back_leaves_no_event(engine, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: []\n")
    restore = refusing_commits(engine)
    with pytest.raises(CommitFailure):
        record_in_force(engine, policy)
    restore()
    assert staged(engine, authorization_outbox.OUTBOX) == []
    assert record_in_force(engine, policy) is not None  # not recorded before: it is now


# ---------------------------------------------------------------------------------------------- periods


def test_a_closed_period_commits_with_its_event(engine, publisher):
    close_period(engine, publisher, "2025-12", OPERATOR, now=AFTER_DECEMBER)
    ((name, value),) = staged(engine, metering_outbox.OUTBOX)
    assert name == Event.PERIOD_CLOSED
    assert (value["actor"], value["period"], value["statements"]) == (OPERATOR, "2025-12", 0)


def test_a_period_close_that_fails_leaves_no_event(engine, publisher):
    restore = refusing_commits(engine)
    with pytest.raises(CommitFailure):
        close_period(engine, publisher, "2025-12", OPERATOR, now=AFTER_DECEMBER)
    restore()
    assert staged(engine, metering_outbox.OUTBOX) == []


# ---------------------------------------------------------------------------------------------- replays


def dead_letter() -> StoredDeadLetter:
    value = {
        "service": "sharing",
        "reason_code": "UNDECODABLE",
        "reason": "not Avro",
        "source_topic": "pdo.feed.traffic-flow",
        "source_partition": 1,
        "source_offset": 42,
        "original_key": b"k",
        "original_value": b"secret payload",
        "headers": [],
    }
    return StoredDeadLetter("pdo.dead-letters", 0, 7, value)


class Ledger:
    def __init__(self) -> None:
        self.recorded: list[str] = []

    def record(self, letter, target) -> None:
        self.recorded.append(target)


@pytest.fixture
def sends(monkeypatch) -> list[str]:
    """Replays go to a list instead of the broker."""
    sent: list[str] = []

    class Producer:
        def close(self) -> None:
            pass

    def replay(letter, producer, timeout_s) -> str:
        sent.append(letter.position)
        return "pdo.feed.traffic-flow[1]@99"

    monkeypatch.setattr("pdo.core.kafka.producer", lambda settings: Producer())
    monkeypatch.setattr("pdo.core.deadletters.replay", replay)
    return sent


def test_a_replay_is_recorded_before_it_is_sent(publisher, sends):
    ledger = Ledger()
    audit = ReplayAudit(AccessLog(publisher), OPERATOR, "fixed the decoder")
    assert replay_all(Settings.from_env(), [dead_letter()], ledger, audit) == 1
    (recorded,) = publisher.of(Event.DEAD_LETTER_REPLAYED)
    assert recorded["dead_letter"] == "pdo.dead-letters[0]@7"
    assert (recorded["source_topic"], recorded["source_partition"], recorded["source_offset"]) == (
        "pdo.feed.traffic-flow",
        1,
        42,
    )
    assert (recorded["actor"], recorded["reason"]) == (OPERATOR, "fixed the decoder")
    assert "secret payload" not in text_of(publisher.events)
    assert sends == ["pdo.dead-letters[0]@7"] and ledger.recorded == ["pdo.feed.traffic-flow[1]@99"]


def test_a_replay_that_cannot_be_recorded_is_not_sent(publisher, sends):
    publisher.down = True
    ledger = Ledger()
    with pytest.raises(PdoError, match="did not replay pdo.dead-letters\\[0\\]@7"):
        replay_all(
            Settings.from_env(), [dead_letter()], ledger, ReplayAudit(AccessLog(publisher), OPERATOR, None)
        )
    assert sends == [] and ledger.recorded == []


# ---------------------------------------------------------------------------------------------- the recorder

AT = datetime(2026, 11, 30, 9, 15, 42, tzinfo=UTC)


def head(actor: str = OPERATOR) -> dict:
    return {"event_id": "e-1", "occurred_at": AT, "actor": actor}


# (event, value, action, subject, reason, some details)
KINDS = [
    (
        Event.PRINCIPAL_CREATED,
        {
            **head(),
            "principal_id": "tenant:acme",
            "kind": "tenant",
            "display_name": "Acme",
            "is_government": False,
            "reason": "onboarding",
        },
        "principal.created",
        "principal:tenant:acme",
        "onboarding",
        {"tenant": "tenant:acme", "kind": "tenant"},
    ),
    (
        Event.PRINCIPAL_DISABLED,
        {**head(), "principal_id": "provider:bureau", "reason": "left"},
        "principal.disabled",
        "principal:provider:bureau",
        "left",
        {},
    ),
    (
        Event.PRINCIPAL_ENABLED,
        {**head(), "principal_id": "tenant:acme", "reason": None},
        "principal.enabled",
        "principal:tenant:acme",
        None,
        {"tenant": "tenant:acme"},
    ),
    (
        Event.API_KEY_ISSUED,
        {**head(), "principal_id": "tenant:acme", "key_id": "0123456789abcdef", "reason": None},
        "api_key.issued",
        "principal:tenant:acme",
        None,
        {"tenant": "tenant:acme", "key_id": "0123456789abcdef"},
    ),
    (
        Event.API_KEY_REVOKED,
        {**head(), "principal_id": "tenant:acme", "key_id": "0123456789abcdef", "reason": "leaked"},
        "api_key.revoked",
        "principal:tenant:acme",
        "leaked",
        {"tenant": "tenant:acme", "key_id": "0123456789abcdef"},
    ),
    (
        Event.KAFKA_CREDENTIALS_ISSUED,
        {
            **head("tenant:acme"),
            "principal_id": "tenant:acme",
            "username": "tenant.acme",
            "acls": ["User:tenant.acme READ topic pdo.tenant.acme.*"],
            "reason": None,
        },
        "kafka_credentials.issued",
        "principal:tenant:acme",
        None,
        {
            "tenant": "tenant:acme",
            "username": "tenant.acme",
            "acls": "User:tenant.acme READ topic pdo.tenant.acme.*",
        },
    ),
    (
        Event.KAFKA_CREDENTIALS_REVOKED,
        {**head(), "principal_id": "tenant:acme", "username": "tenant.acme", "reason": "contract ended"},
        "kafka_credentials.revoked",
        "principal:tenant:acme",
        "contract ended",
        {"tenant": "tenant:acme", "username": "tenant.acme"},
    ),
    (
        Event.ACLS_APPLIED,
        {
            **head(),
            "command": "pdo acls apply",
            "added": ["a", "b"],
            "removed": [],
            "service_users": [],
            "reason": None,
        },
        "acls.applied",
        "acls:services",
        None,
        {"command": "pdo acls apply", "added": "a; b"},
    ),
    (
        Event.TOPICS_CREATED,
        {**head(), "command": "pdo topics apply", "topics": ["pdo.access"], "reason": None},
        "topics.created",
        "topics:declared",
        None,
        {"topics": "pdo.access"},
    ),
    (
        Event.ACCESS_CHANGE_FAILED,
        {
            **head(),
            "ordered_event_id": "e-0",
            "action": "kafka_credentials.issued",
            "subject": "principal:tenant:acme",
            "tenant_id": "tenant:acme",
            "error": "refused",
        },
        "access_change.failed",
        "principal:tenant:acme",
        None,
        {"ordered_event": "e-0", "ordered_action": "kafka_credentials.issued", "tenant": "tenant:acme"},
    ),
    (
        Event.POLICY_IN_FORCE,
        {
            **head("system:authorization"),
            "policy": "authorization",
            "sha256": "ab" * 32,
            "previous_sha256": None,
        },
        "policy.in_force",
        "policy:authorization",
        None,
        {"sha256": "ab" * 32},
    ),
    (
        Event.DEAD_LETTER_REPLAYED,
        {
            **head(),
            "dead_letter": "pdo.dead-letters[0]@7",
            "source_topic": "pdo.feed.x",
            "source_partition": 1,
            "source_offset": 42,
            "reason_code": "UNDECODABLE",
            "service": "sharing",
            "reason": "fixed",
        },
        "dead_letter.replayed",
        "dead_letter:pdo.feed.x[1]@42",
        "fixed",
        {"dead_letter": "pdo.dead-letters[0]@7", "to": "pdo.feed.x[1]", "reason_code": "UNDECODABLE"},
    ),
    (
        Event.PERIOD_CLOSED,
        {**head(), "period": "2026-03", "statements": 3, "reason": None},
        "period.closed",
        "period:2026-03",
        None,
        {"statements": "3"},
    ),
]


@pytest.mark.parametrize(
    ("event", "value", "action", "subject", "reason", "details"), KINDS, ids=[k[2] for k in KINDS]
)
def test_each_access_act_becomes_its_audit_entry(event, value, action, subject, reason, details):
    entry = entry_for(event, value, "pdo.access[0]@5")
    assert (entry.actor, entry.action, entry.subject, entry.reason) == (
        value["actor"],
        action,
        subject,
        reason,
    )
    assert entry.details.items() >= details.items()
    assert all(isinstance(text, str) for text in entry.details.values())


def test_every_access_event_has_its_kind_in_the_recorder():
    assert {k[0] for k in KINDS} == {e for e in Event if e.startswith("pdo.access.")}


def test_entries_about_other_principals_name_no_tenant():
    entry = entry_for(Event.PRINCIPAL_DISABLED, KINDS[1][1], "pdo.access[0]@5")
    assert "tenant" not in entry.details


# ---------------------------------------------------------------------------------------------- the HTTP API


@pytest.fixture
def gateway(engine, publisher):
    """The gateway over real principals and no other service, its access acts recorded in `publisher`; (http, keys)."""
    store = PrincipalStore(engine)
    keys = {}
    for kind, name in (("operator", "alice"), ("tenant", "acme")):
        store.create_principal(kind, name)
        keys[name] = {"Authorization": f"Bearer {store.issue_key(f'{kind}:{name}').key}"}
    issuer = KafkaCredentialIssuer(Settings.from_env(), lambda provider: [], InMemoryUsers(), publisher)
    app = create_app(
        Settings.from_env(),
        None,
        None,
        engine,
        dead_letters=lambda limit: [],
        kafka_credentials=issuer,
        access_events=publisher,
    )
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield http, keys


def test_operators_create_principals_and_revoke_keys_over_http_and_each_act_is_published(gateway, publisher):
    http, keys = gateway
    created = http.post("/v1/principals", json={"kind": "provider", "name": "bureau"}, headers=keys["alice"])
    assert created.status_code == 201, created.text
    assert created.headers["Cache-Control"] == "no-store"
    key_id = created.json()["key_id"]
    revoked = http.delete(f"/v1/api-keys/{key_id}", params={"reason": "rotated"}, headers=keys["alice"])
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    refused = http.post("/v1/principals", json={"kind": "tenant", "name": "x"}, headers=keys["acme"])
    assert refused.status_code == 403
    mine = [e.value for e in publisher.events if e.value.get("principal_id") == "provider:bureau"]
    assert [(v["actor"], v.get("key_id"), v["reason"]) for v in mine] == [
        (OPERATOR, None, None),
        (OPERATOR, key_id, None),
        (OPERATOR, key_id, "rotated"),
    ]
    assert created.json()["api_key"] not in text_of(publisher.events)


def test_a_kafka_credential_that_cannot_be_recorded_is_refused_with_503(gateway, publisher):
    http, keys = gateway
    publisher.down = True
    answer = http.post("/v1/kafka-credentials", headers=keys["acme"])
    assert answer.status_code == 503
    assert answer.json()["error"] == "unavailable" and "pdo.access" in answer.json()["hint"]
