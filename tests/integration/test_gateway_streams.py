"""GET /v1/streams/{dataset_id} end to end: real Kafka, PostgreSQL, schema registry and services.

A dataset is registered and granted over HTTP (the policy step called directly, as the worker would); its
tenant topic, in an isolated topic namespace and named as the sharing service names it, gets records
encoded with our codec (timestamps, decimals, bytes) plus one undecodable value. The tenant reads them over
SSE with httpx; other keys get 401/403/404 and nothing of the stream.
"""

from __future__ import annotations

import base64
import dataclasses
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import avro.schema
import httpx
import pytest
from conftest import ServerThread, fresh_postgres_database, scrape_headers, static_guard

from pdo.authorization.public import AuthorizationService, load_policy
from pdo.authorization.testing import create_topics, isolated_home
from pdo.catalog.public import CatalogService
from pdo.core import db, topics
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.events import EventPublisher
from pdo.core.kafka import admin_client, producer
from pdo.core.registry_client import RegistryClient
from pdo.core.topics import TopicId, tenant_topic, tenant_topic_part
from pdo.gateway.app import create_app
from pdo.gateway.principals import PrincipalStore

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
PROVIDER, TENANT, OTHER_TENANT = f"transport-{RUN}", f"acme-{RUN}", f"globex-{RUN}"
DATASET_SCHEMA = {
    "type": "record",
    "name": "Trip",
    "namespace": "streams.test.v1",
    "fields": [
        {"name": "record_id", "type": "string"},
        {"name": "district", "type": "string"},
        {"name": "speed_kmh", "type": "double"},
    ],
}
# Shaped like a tenant record (pdo.sharing.transform.tenant_record_schema), with the logical types whose
# JSON form the endpoint promises.
TENANT_SCHEMA = avro.schema.parse(
    """{"type": "record", "name": "Trip_test", "namespace": "pdo.tenant.v1", "fields": [
        {"name": "record_id", "type": "string"},
        {"name": "district", "type": "string"},
        {"name": "fare", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
        {"name": "seen_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "token", "type": "bytes"},
        {"name": "pdo_provenance", "type": {"type": "record", "name": "Provenance", "fields": [
            {"name": "source_offset", "type": "long"}, {"name": "grant_id", "type": "string"}]}}
    ]}"""
)
RECORDS = 8  # offsets 0-3 and 5-8 are records; offset 4 is garbage
SEEN_AT = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)


@dataclasses.dataclass
class Stack:
    http: httpx.Client
    authorization: AuthorizationService
    hub: Any  # the app's StreamHub
    settings: Settings
    keys: dict[str, str]
    dataset_id: str
    grant_id: str
    topic: str

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, postgres_url, tmp_path_factory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("streams")
    tag = f"t-{uuid.uuid4().hex[:10]}"
    database = fresh_postgres_database(postgres_url)
    url = next(database)
    db.upgrade(url)
    from pdo.registry.app import create_app as create_registry_app

    with ServerThread(create_registry_app(url, guard=static_guard)) as registry_server:
        settings = dataclasses.replace(
            Settings.from_env(),
            database_url=url,
            registry_url=registry_server.url,
            home=isolated_home(folder, tag),
            run_dir=folder / "run",
        )
        create_topics(settings)
        engine = db.make_engine(url)
        publisher = EventPublisher(settings)
        registry = RegistryClient.for_settings(settings)
        catalog = CatalogService(engine, publisher, registry, settings)
        authorization = AuthorizationService(engine, publisher, catalog, load_policy(), settings)
        store = PrincipalStore(engine)
        keys = {}
        for kind, name in [("provider", PROVIDER), ("tenant", TENANT), ("tenant", OTHER_TENANT)]:
            principal = store.create_principal(kind, name)
            keys[name] = store.issue_key(principal.principal_id).key
        app = create_app(settings, catalog, authorization, engine)
        try:
            with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
                stack = Stack(http, authorization, app.state.streams, settings, keys, "", "", "")
                stack.dataset_id, stack.grant_id = granted_dataset(stack, f"streams-{RUN}-trips")
                stack.topic = tenant_topic(f"tenant:{TENANT}", stack.dataset_id, settings)
                fill_topic(stack)
                yield stack
        finally:
            publisher.close()
            registry.close()
            engine.dispose()
            with admin_client(settings) as admin:
                admin.delete_topics([n for n in admin.list_topics() if n.startswith(f"pdo.{tag}.")])
    next(database, None)


def granted_dataset(stack: Stack, dataset_id: str) -> tuple[str, str]:
    body = {
        "dataset_id": dataset_id,
        "owner_department": "Transport Bureau",
        "title": "Trips",
        "domain": "TRANSPORT",
        "classification": "GENERAL",
        "openness": "OPEN",
        "record_schema": DATASET_SCHEMA,
        "sensitive_fields": [],
        "price_plan": {"kind": "PER_THOUSAND_RECORDS", "unit_price": "2.00"},
    }
    response = stack.http.post("/v1/datasets", json=body, headers=stack.as_(PROVIDER))
    assert response.status_code == 201, response.text
    now = datetime.now(UTC)
    request = {
        "dataset_id": dataset_id,
        "purpose": "traffic planning",
        "fields": ["record_id", "district"],
        "valid_from": now.isoformat(),
        "valid_until": (now + timedelta(days=30)).isoformat(),
        "expected_daily_records": 5000,
    }
    response = stack.http.post("/v1/requests", json=request, headers=stack.as_(TENANT))
    assert response.status_code == 202, response.text
    stack.authorization.decide(response.json()["request_id"])
    grants = stack.http.get("/v1/grants", params={"dataset_id": dataset_id}, headers=stack.as_(TENANT)).json()
    assert [g["status"] for g in grants] == ["ACTIVE"]
    return dataset_id, grants[0]["grant_id"]


def record(index: int, grant_id: str) -> dict:
    return {
        "record_id": f"r-{index}",
        "district": "Haidian\nline two" if index == 0 else "Chaoyang",
        "fare": Decimal(f"{index}.25"),
        "seen_at": SEEN_AT + timedelta(minutes=index),
        "token": bytes([index, 255, 0]),
        "pdo_provenance": {"source_offset": index, "grant_id": grant_id},
    }


def fill_topic(stack: Stack) -> None:
    settings = stack.settings
    spec = topics.spec(TopicId.TENANT_STREAM, settings).render(
        tenant_id=tenant_topic_part(f"tenant:{TENANT}"), dataset_id=stack.dataset_id
    )
    with admin_client(settings) as admin:
        assert topics.apply(admin, [spec]).clean
    registry = RegistryClient.for_settings(settings)
    codec = AvroCodec(registry)
    try:
        values = [codec.encode(stack.topic, TENANT_SCHEMA, record(i, stack.grant_id)) for i in range(RECORDS)]
    finally:
        registry.close()
    values.insert(4, b"\x00\xff\xff\xff\xffsecret bytes")  # a schema id no registry has: does not decode
    sender = producer(settings)
    try:
        for value in values:
            sender.send(stack.topic, value=value, partition=0).get(timeout=30)
    finally:
        sender.close()


def read_events(
    stack: Stack, who: str | None = TENANT, headers: dict | None = None, **params
) -> tuple[httpx.Response, list[dict]]:
    """The response and its SSE events, each {'event', 'id', 'data', 'comment'} as present."""
    sent = {**(stack.as_(who) if who else {}), **(headers or {})}
    events: list[dict] = []
    with stack.http.stream("GET", f"/v1/streams/{stack.dataset_id}", params=params, headers=sent) as response:
        if response.status_code != 200:
            response.read()
            return response, events
        current: dict = {}
        for line in response.iter_lines():
            if not line:
                if current:
                    events.append(current)
                current = {}
            elif line.startswith(":"):
                current.setdefault("comment", []).append(line[1:].strip())
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                current[field] = current[field] + "\n" + value if field in current else value
        if current:
            events.append(current)
    return response, events


def records_of(events: list[dict]) -> list[dict]:
    import json

    return [{"id": e["id"], **json.loads(e["data"])} for e in events if e.get("event") == "record"]


def test_tenant_reads_its_stream_in_order_with_ids(stack):
    started = time.monotonic()
    response, events = read_events(stack, limit=RECORDS)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    got = records_of(events)
    assert [r["record_id"] for r in got] == [f"r-{i}" for i in range(RECORDS)]
    assert [r["id"] for r in got] == [f"0-{offset}" for offset in (0, 1, 2, 3, 5, 6, 7, 8)]
    first = got[0]
    assert first["district"] == "Haidian\nline two"
    assert first["fare"] == "0.25"
    assert datetime.fromisoformat(first["seen_at"]) == SEEN_AT
    assert base64.b64decode(first["token"]) == bytes([0, 255, 0])
    assert first["pdo_provenance"] == {"source_offset": 0, "grant_id": stack.grant_id}

    errors = [e for e in events if e.get("event") == "error"]
    assert len(errors) == 1 and errors[0]["id"] == "0-4"
    assert "UNKNOWN_SCHEMA" in errors[0]["data"] and "secret" not in errors[0]["data"]
    assert time.monotonic() - started < 30


def test_resume_with_last_event_id_gives_only_later_records(stack):
    _, events = read_events(stack, headers={"Last-Event-ID": "0-2"}, limit=3)
    assert [(r["id"], r["record_id"]) for r in records_of(events)] == [
        ("0-3", "r-3"),
        ("0-5", "r-4"),
        ("0-6", "r-5"),
    ]
    _, events = read_events(stack, headers={"Last-Event-ID": "0-8"}, idle_timeout_s=1)
    assert records_of(events) == []


def test_latest_and_idle_timeout_end_an_empty_stream(stack):
    started = time.monotonic()
    response, events = read_events(stack, **{"from": "latest", "idle_timeout_s": "1.5"})
    assert response.status_code == 200 and records_of(events) == []
    assert 1.0 < time.monotonic() - started < 20


def test_no_other_key_reaches_the_stream(stack):
    response, _ = read_events(stack, who=OTHER_TENANT, limit=1)
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert stack.topic not in response.text
    response, _ = read_events(stack, who=PROVIDER, limit=1)
    assert response.status_code == 403 and response.json()["error"] == "forbidden"
    response, _ = read_events(stack, who=None, limit=1)
    assert response.status_code == 401
    response = stack.http.get(f"/v1/streams/streams-{RUN}-nothing", headers=stack.as_(TENANT))
    assert response.status_code == 404 and response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("last_event_id", "fragment"),
    [
        ("0-99", "was never written"),
        ("7-1", "names partition 7, but the stream has partitions 0-2"),
        ("0-1.0-2", "names partition 0 twice"),
        ("zero-1", "is not '<partition>-<offset>'"),
    ],
)
def test_a_bad_last_event_id_is_refused_precisely(stack, last_event_id, fragment):
    response, _ = read_events(stack, headers={"Last-Event-ID": last_event_id}, limit=1)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["message"]


def test_metrics_count_records_and_open_streams(stack):
    read_events(stack, limit=2)
    text = stack.http.get("/metrics", headers=scrape_headers(stack.settings)).text
    line = f'pdo_gateway_stream_records_total{{dataset="{stack.dataset_id}"}}'
    assert any(row.startswith(line) and float(row.split()[-1]) >= 2 for row in text.splitlines())
    assert "pdo_gateway_open_streams 0.0" in text


def test_a_client_going_away_closes_its_stream(stack):
    url = f"/v1/streams/{stack.dataset_id}"
    with stack.http.stream("GET", url, headers=stack.as_(TENANT)) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        while not next(lines).startswith("data:"):
            pass
        assert (
            "pdo_gateway_open_streams 1.0"
            in stack.http.get("/metrics", headers=scrape_headers(stack.settings)).text
        )
    deadline = time.monotonic() + 20
    while (
        "pdo_gateway_open_streams 0.0"
        not in stack.http.get("/metrics", headers=scrape_headers(stack.settings)).text
    ):
        assert time.monotonic() < deadline, "the stream stayed open after its client left"
        time.sleep(0.2)


def test_a_grant_whose_topic_does_not_exist_yet_is_404(stack):
    dataset_id, _ = granted_dataset(stack, f"streams-{RUN}-no-topic")
    response = stack.http.get(f"/v1/streams/{dataset_id}", headers=stack.as_(TENANT))
    assert response.status_code == 404, response.text
    assert response.json()["message"] == f"your stream of dataset {dataset_id!r} does not exist yet"


def test_heartbeats_keep_a_quiet_stream_alive(stack):
    stack.hub.heartbeat_s = 0.3
    try:
        response, events = read_events(stack, **{"from": "latest", "idle_timeout_s": "1.5"})
    finally:
        stack.hub.heartbeat_s = 15.0
    assert response.status_code == 200
    beats = [c for e in events for c in e.get("comment", []) if c == "heartbeat"]
    assert len(beats) >= 2 and records_of(events) == []


def test_after_revocation_the_retained_records_are_not_served(stack):
    """Runs last: it revokes the module's grant. Its topic still holds every record; none is served."""
    assert records_of(read_events(stack, limit=1)[1]), "the stream served records before the revocation"
    stack.authorization.revoke(stack.grant_id, "operator:alice", "contract ended")

    response, events = read_events(stack, limit=1)

    assert response.status_code == 403 and events == []
    body = response.json()
    assert body["error"] == "forbidden" and f"your grant {stack.grant_id}" in body["message"]
    assert "is revoked" in body["message"]
