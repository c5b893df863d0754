"""The audit worker end to end: `pdo audit-worker` (faust) as a process on the real topics records the
platform's events as the services publish them, in each source partition's order, an undecodable message
with its reason, and a re-read of every topic from its beginning appends nothing twice; the log it mirrors to
the pdo.audit topic verifies with the broker alone (`pdo audit verify --from-topic`). Access acts too:
principals and keys changed through the gateway's HTTP API, and a Kafka credential that is refused (503)
when its issue cannot be recorded."""

from __future__ import annotations

import dataclasses
import json
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from audit_support import Worker, logged, signing_key, wait_for

from pdo.audit.checkpoints import Signer
from pdo.audit.store import AuditStore
from pdo.audit.tables import entries as audit_entries
from pdo.authorization.public import AuthorizationService, RequestSpec, load_policy
from pdo.authorization.testing import create_topics, delete_topics, isolated_home, register_traffic_dataset
from pdo.catalog.public import CatalogService
from pdo.core import access, db, topics
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.events import EventPublisher, utc_now
from pdo.core.kafka import admin_client, producer
from pdo.core.registry_client import RegistryClient
from pdo.core.serving import ServerThread
from pdo.core.topics import TopicId
from pdo.gateway.app import create_app
from pdo.gateway.kafka_credentials import BrokerUsers, KafkaCredentialIssuer
from pdo.gateway.principals import PrincipalStore

pytestmark = pytest.mark.integration

TENANT = "tenant:acme-logistics"
OPERATOR = "operator:alice"


@pytest.fixture
def settings(kafka_bootstrap, registry_url, database_url, tmp_path) -> Iterator[Settings]:
    tag = f"t-{uuid.uuid4().hex[:10]}"
    configured = dataclasses.replace(
        Settings.from_env(),
        registry_url=registry_url,
        database_url=database_url,
        home=isolated_home(tmp_path, tag),
        run_dir=tmp_path / "run",
        audit_signing_key_file=str(signing_key(tmp_path)),
        audit_checkpoint_interval_s=1,
    )
    names = create_topics(configured)
    db.upgrade(configured.database_url)
    yield configured
    delete_topics(configured, names)


@pytest.fixture
def engine(settings):
    engine = db.make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def publisher(settings):
    publisher = EventPublisher(settings)
    yield publisher
    publisher.close()


@pytest.fixture
def worker(settings, tmp_path):
    worker = Worker(settings, tmp_path)
    try:
        yield worker
    finally:
        worker.stop()
        for log in worker.logs:
            print(log.read_text(errors="replace")[-5000:])  # shown when the test fails


def position(source: str) -> tuple[str, int, int]:
    topic, _, rest = source.partition("[")
    partition, _, offset = rest.partition("]@")
    return topic, int(partition), int(offset)


def test_the_worker_records_events_once_in_order(settings, engine, publisher, worker):
    worker.start(f"audit-{uuid.uuid4().hex[:8]}")
    catalog = CatalogService(engine, publisher, publisher.codec.registry, settings)
    service = AuthorizationService(engine, publisher, catalog, load_policy(), settings)
    dataset_id = register_traffic_dataset(catalog)
    start = utc_now()
    spec = RequestSpec(
        dataset_id=dataset_id,
        purpose="congestion forecasting",
        fields=("district", "speed_kmh"),
        valid_from=start,
        valid_until=start + timedelta(days=30),
    )
    request = service.submit_request(TENANT, spec, TENANT)
    service.deny(request.request_id, OPERATOR, "no forecasting this quarter")
    sender = producer(settings)
    junk = sender.send(topics.name(TopicId.REQUESTS, settings), key=b"junk", value=b"not avro").get(
        timeout=10
    )
    junk_source = f"{junk.topic}[{junk.partition}]@{junk.offset}"

    expected = {
        ("dataset.registered", f"dataset:{dataset_id}"),
        ("request.submitted", f"request:{request.request_id}"),
        ("request.denied", f"request:{request.request_id}"),
        ("event.undecodable", f"source:{junk_source}"),
    }
    entries = wait_for(
        "the four entries", lambda: (rows := logged(engine)) and len(rows) >= 4 and rows, worker
    )
    assert {(row.action, row.subject) for row in entries} == expected
    assert [row.seq for row in entries] == list(range(len(entries)))
    # Within a source partition the log keeps the topic's order.
    by_partition: dict[tuple[str, int], list[int]] = {}
    for row in entries:
        topic, partition, offset = position(row.source)
        by_partition.setdefault((topic, partition), []).append(offset)
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())

    # A fresh group reads every topic from its beginning again: nothing is appended twice. A marker sent
    # after the restart to each partition the log holds says when the re-read has passed the old events.
    worker.stop()
    worker.start(f"audit-{uuid.uuid4().hex[:8]}")
    markers = set()
    for topic, partition in by_partition:
        sent = sender.send(topic, key=b"audit-marker", value=b"marker", partition=partition).get(timeout=10)
        markers.add(f"{sent.topic}[{sent.partition}]@{sent.offset}")
    sender.close()

    def with_markers() -> list[sa.Row]:
        rows = logged(engine)
        return rows if markers <= {row.source for row in rows} else []

    after = wait_for("the markers", with_markers, worker)
    assert [tuple(row) for row in after[: len(entries)]] == [tuple(row) for row in entries]
    assert {row.source for row in after[len(entries) :]} == markers
    assert {row.action for row in after[len(entries) :]} == {"event.undecodable"}

    # The mirror catches up with the log, and what it holds verifies from the topic alone.
    store = AuditStore(engine)
    wait_for("the mirror", lambda: store.mirror_progress()[1] == store.size() == len(after), worker)
    public_key = settings.run_dir / "audit-public-key.pem"
    public_key.write_text(Signer.from_settings(settings).public_key_pem())
    verified = subprocess.run(
        [
            sys.executable,
            "-m",
            "pdo.cli.main",
            "audit",
            "verify",
            "--from-topic",
            "--public-key",
            str(public_key),
        ],
        env=settings.environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stderr
    assert f"audit log verified: {len(after)} entries" in verified.stdout


def entries_of(engine, actions: set[str]) -> list[sa.Row]:
    query = sa.select(audit_entries).where(audit_entries.c.action.in_(actions)).order_by(audit_entries.c.seq)
    with engine.connect() as connection:
        return list(connection.execute(query))


def operator_key(engine) -> str:
    store = PrincipalStore(engine)
    store.create_principal("operator", "alice")
    return store.issue_key(OPERATOR).key


def test_principals_and_keys_changed_through_the_gateway_are_recorded(settings, engine, publisher, worker):
    """Through the gateway's HTTP API: the changes commit with their events, the gateway publishes them to
    pdo.access, and the audit worker records who did what to whom and why."""
    worker.start(f"audit-{uuid.uuid4().hex[:8]}")
    headers = {"Authorization": f"Bearer {operator_key(engine)}"}
    app = create_app(settings, None, None, engine, dead_letters=lambda limit: [], access_events=publisher)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        created = http.post(
            "/v1/principals",
            json={"kind": "tenant", "name": "acme", "reason": "onboarding"},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        key_id = created.json()["key_id"]
        revoked = http.delete(f"/v1/api-keys/{key_id}", params={"reason": "leaked"}, headers=headers)
        assert revoked.status_code == 200, revoked.text

        wanted = {"principal.created", "api_key.revoked"}

        def recorded() -> list[sa.Row]:
            rows = [row for row in entries_of(engine, wanted) if row.subject == "principal:tenant:acme"]
            return rows if {row.action for row in rows} == wanted else []

        found = wait_for("the principal and key entries", recorded, worker)
    mine = {row.action: row for row in found if row.subject == "principal:tenant:acme"}
    assert (mine["principal.created"].actor, mine["principal.created"].reason) == (OPERATOR, "onboarding")
    assert (mine["api_key.revoked"].actor, mine["api_key.revoked"].reason) == (OPERATOR, "leaked")
    assert mine["api_key.revoked"].source.startswith(topics.name(TopicId.ACCESS, settings))
    body = json.loads(mine["api_key.revoked"].body)
    assert body["details"]["key_id"] == key_id and body["details"]["tenant"] == "tenant:acme"
    assert created.json()["api_key"] not in mine["api_key.revoked"].body


@pytest.fixture
def unprivileged(settings) -> Iterator[Settings]:
    """The settings of a Kafka user that exists but holds no ACL: it may not write pdo.access."""
    user = f"service.t{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(24)
    with admin_client(settings) as admin:
        access.set_password(admin, user, password)
    yield dataclasses.replace(settings, kafka_username=user, kafka_password=password)
    with admin_client(settings) as admin:
        access.delete_user(admin, user)


def test_kafka_credentials_are_refused_with_503_when_their_issue_cannot_be_recorded(
    settings, engine, publisher, unprivileged
):
    """The gateway's Kafka principal lacks the produce ACL on pdo.access: issuing is refused, the broker
    keeps no user and no ACL for the tenant; with the ACL (here: the admin) the same issue goes through."""
    tenant = f"tenant:t{uuid.uuid4().hex[:8]}"
    store = PrincipalStore(engine)
    store.create_principal("tenant", tenant.partition(":")[2])
    headers = {"Authorization": f"Bearer {store.issue_key(tenant).key}"}
    # Schemas are resolved as the admin (the test's registry knows only it); the events are sent as the
    # user without the ACL.
    refused_events = EventPublisher(unprivileged, codec=AvroCodec(RegistryClient.for_settings(settings)))
    issuer = KafkaCredentialIssuer(settings, lambda provider: [], BrokerUsers(settings), refused_events)
    app = create_app(
        settings,
        None,
        None,
        engine,
        dead_letters=lambda limit: [],
        kafka_credentials=issuer,
        access_events=publisher,
    )
    try:
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
            answer = http.post("/v1/kafka-credentials", headers=headers)
    finally:
        refused_events.close()
    assert answer.status_code == 503, answer.text
    assert "could not record" in answer.json()["message"] and answer.json()["hint"]
    user = access.party_user(tenant)
    with admin_client(settings) as admin:
        assert access.current_acls(admin, access.kafka_principal(user)) == set()
        assert not access.delete_user(admin, user)  # there was no such user to delete

    allowed = KafkaCredentialIssuer(settings, lambda provider: [], BrokerUsers(settings), publisher)
    assert allowed.issue(tenant).username == user
    assert allowed.revoke(tenant, actor=OPERATOR) > 0
