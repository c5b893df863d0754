"""Cases generated from the gateway's own OpenAPI document, for every role: none may answer 5xx.

The gateway runs in-process (a server thread) over the real catalog and authorization services on SQLite, with the real
schema registry app (in a thread); only Kafka is stood in for (events are kept in a list, feed topics are
not created, ingest accepts what it is given). Path ids are pointed at a seeded dataset, request and grant
so the generated bodies reach the services' rules, not only the 404 for an unknown id (random ids are swept
in test_gateway_api.py). Bounded: a few examples per operation and role, no deadline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest
import schemathesis
from conftest import ServerThread, static_guard
from gateway_support import audit_signing_key, gateway_database, quiet_feeds
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from pdo.authorization.public import AuthorizationService, load_policy
from pdo.authorization.testing import RecordingPublisher
from pdo.catalog.public import CatalogService
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.registry_client import RegistryClient
from pdo.gateway.app import create_app
from pdo.gateway.kafka_credentials import InMemoryUsers, KafkaCredentialIssuer
from pdo.publishing.public import PublishReport
from pdo.registry.app import create_app as create_registry_app

DATASET = "transport-trips"
SCHEMA = {
    "type": "record",
    "name": "Trip",
    "namespace": "fuzz.v1",
    "fields": [{"name": "record_id", "type": "string"}, {"name": "plate", "type": "string"}],
}
ROLES = ("transport", "acme", "alice")  # a provider, a tenant, an operator
# Reads Kafka for as long as the client listens; its refusals are swept in test_gateway_stream_endpoint.py.
STREAMS = r"^/v1/streams/"


class AcceptingFeeds:
    """HTTP ingest without Kafka: every record offered is reported accepted."""

    def for_dataset(self, dataset):
        return SimpleNamespace(
            publish_json=lambda records: PublishReport(f"pdo.feed.{dataset.dataset_id}", len(records))
        )


@dataclasses.dataclass
class Seeded:
    keys: dict[str, str]
    ids: dict[str, str]  # path parameter -> a seeded id


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[tuple[str, Seeded]]:
    folder = tmp_path_factory.mktemp("fuzz")
    engine, keys = gateway_database(folder)
    with ServerThread(
        create_registry_app(f"sqlite:///{folder / 'pdo.db'}", guard=static_guard)
    ) as registry_server:
        settings = dataclasses.replace(
            Settings.from_env(),
            registry_url=registry_server.url,
            gateway_rate_per_s=0,  # the fuzzer calls far faster than any client should
            audit_signing_key_file=str(audit_signing_key(folder)),  # /v1/audit/public-key serves its half
        )
        registry, publisher = RegistryClient.for_settings(settings), RecordingPublisher()
        catalog = CatalogService(engine, publisher, registry, settings)
        # No broker in the unit tier: feeds open and close without Kafka, Kafka users live in a dict.
        catalog._open_feed = lambda dataset_id, provider_id: None  # noqa: SLF001
        catalog._close_feed = lambda dataset_id, provider_id: None  # noqa: SLF001
        authorization = AuthorizationService(engine, publisher, catalog, load_policy(), settings)
        users = KafkaCredentialIssuer(settings, lambda provider: [], InMemoryUsers(), publisher)
        app = create_app(
            settings,
            catalog,
            authorization,
            engine,
            feeds=AcceptingFeeds(),
            dead_letters=lambda limit: [],
            kafka_credentials=users,
            access_events=publisher,
            feed_offsets=quiet_feeds,
        )
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            yield server.url, seed(client, authorization, keys)
        registry.close()
    engine.dispose()


def dataset_body(dataset_id: str) -> dict:
    return {
        "dataset_id": dataset_id,
        "owner_department": "Transport Bureau",
        "title": "Trips",
        "domain": "TRANSPORT",
        "classification": "GENERAL",
        "openness": "CONDITIONAL",
        "record_schema": SCHEMA,
        "sensitive_fields": [{"field": "plate", "masking": "KEYED_HASH"}],
        "price_plan": {"kind": "PER_THOUSAND_RECORDS", "unit_price": "1.50"},
    }


def seed(client: httpx.Client, authorization: AuthorizationService, keys: dict[str, str]) -> Seeded:
    """A dataset of `transport`, a request of `acme` on it, approved by `alice` into a grant."""

    def call(who: str, method: str, path: str, body: dict | None = None) -> dict:
        response = client.request(method, path, json=body, headers={"Authorization": f"Bearer {keys[who]}"})
        assert response.status_code < 300, response.text
        return response.json()

    call("transport", "POST", "/v1/datasets", dataset_body(DATASET))
    now = datetime.now(UTC)
    request = {
        "dataset_id": DATASET,
        "purpose": "route planning",
        "fields": ["record_id", "plate"],
        "valid_from": now.isoformat(),
        "valid_until": (now + timedelta(days=30)).isoformat(),
    }
    request_id = call("acme", "POST", "/v1/requests", request)["request_id"]
    authorization.decide(request_id)  # the worker's part: the policy sends it to review
    grant_id = call("alice", "POST", f"/v1/requests/{request_id}/approve", {})["grant_id"]
    return Seeded(keys, {"dataset_id": DATASET, "request_id": request_id, "grant_id": grant_id})


# The document as the gateway serves it at /openapi.json (the app is built only to render it).
schema = schemathesis.openapi.from_dict(
    create_app(Settings.from_env(), None, None, db.make_engine("sqlite://")).openapi()
).exclude(path_regex=STREAMS)


@schema.parametrize()
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_call_answers_a_server_error(case, gateway):
    """Each generated case is sent with a provider's, a tenant's and an operator's key in turn."""
    url, seeded = gateway
    for name in case.path_parameters or {}:
        if name in seeded.ids:
            case.path_parameters[name] = seeded.ids[name]
    for who in ROLES:
        response = case.call(base_url=url, headers={"Authorization": f"Bearer {seeded.keys[who]}"})
        case.validate_response(response, checks=(not_a_server_error,))


@pytest.mark.parametrize("text", ["", " ", "{", "null"])
def test_patching_an_unparsable_record_schema_is_422_like_registering_one(gateway, text):
    """It once answered 500: "" was read as "no new schema" and then parsed as JSON."""
    url, seeded = gateway
    headers = {"Authorization": f"Bearer {seeded.keys['transport']}"}
    dataset_id = f"patched-{len(text)}-{ord(text[0]) if text else 0}"
    registered = httpx.post(f"{url}/v1/datasets", json=dataset_body(dataset_id), headers=headers)
    assert registered.status_code == 201, registered.text
    response = httpx.patch(f"{url}/v1/datasets/{dataset_id}", json={"record_schema": text}, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid_input" and "record_schema" in response.json()["message"]
