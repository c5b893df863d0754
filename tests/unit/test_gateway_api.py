"""The gateway over HTTP with fake services: keys, roles, tenant isolation, error mapping, bad input, metrics.

The fakes keep just enough state to answer like the real services; the integration tests run the real ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import ServerThread
from gateway_support import audit_signing_key, gateway_database, quiet_feeds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdo.authorization.models import grant_id_for
from pdo.authorization.public import DataRequest, Grant, Narrowing, RequestSpec, RequestStatus
from pdo.authorization.testing import RecordingPublisher
from pdo.catalog.public import Dataset, DatasetRegistration
from pdo.core import db
from pdo.core.config import ConfigError, Settings
from pdo.core.errors import Conflict, Forbidden, InvalidInput, NotFound, PdoError, Unavailable
from pdo.core.ids import ID_RULE
from pdo.core.vocabulary import (
    AggregateFunction,
    AggregateSpec,
    GrantKind,
    GrantStatus,
    PriceKind,
    PricePlan,
    TenantKind,
)
from pdo.gateway.app import create_app
from pdo.gateway.caps import RateLimiter
from pdo.gateway.kafka_credentials import InMemoryUsers, KafkaCredentialIssuer
from pdo.gateway.principals import PrincipalStore

NOW = datetime(2026, 3, 1, tzinfo=UTC)
SCHEMA = {"type": "record", "name": "Trip", "fields": [{"name": "record_id", "type": "string"}]}


class FakeCatalog:
    """Datasets in a dict; another provider's dataset is Forbidden, as in CatalogService."""

    def __init__(self) -> None:
        self.datasets: dict[str, Dataset] = {}
        self.fail_with: Exception | None = None

    def _check(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def register(self, provider_id: str, registration: DatasetRegistration, actor: str) -> Dataset:
        self._check()
        if registration.dataset_id in self.datasets:
            raise Conflict(f"dataset {registration.dataset_id!r} exists already")
        fields = {f.name: getattr(registration, f.name) for f in dataclasses.fields(registration)}
        dataset = Dataset(
            **fields, provider_id=provider_id, schema_subject=f"{registration.dataset_id}-value", schema_id=1
        )
        self.datasets[dataset.dataset_id] = dataset
        return dataset

    def get(self, dataset_id: str) -> Dataset:
        self._check()
        if dataset_id not in self.datasets:
            raise NotFound(f"no dataset {dataset_id!r} in the catalog")
        return self.datasets[dataset_id]

    def list(self, provider_id: str | None = None, include_retired: bool = False) -> list[Dataset]:
        self._check()
        return [
            d
            for d in self.datasets.values()
            if (provider_id is None or d.provider_id == provider_id) and (include_retired or not d.retired)
        ]

    def _owned(self, provider_id: str, dataset_id: str) -> Dataset:
        dataset = self.get(dataset_id)
        if dataset.provider_id != provider_id:
            raise Forbidden(f"dataset {dataset_id!r} belongs to another provider")
        return dataset

    def update(self, provider_id, dataset_id, changes, actor) -> Dataset:
        dataset = self._owned(provider_id, dataset_id)
        given_changes = {k: v for k, v in dataclasses.asdict(changes).items() if v is not None}
        if "sensitive_fields" in given_changes:
            given_changes["sensitive_fields"] = changes.sensitive_fields
        if "price_plan" in given_changes:
            given_changes["price_plan"] = changes.price_plan
        updated = dataclasses.replace(dataset, **given_changes, version=dataset.version + 1)
        self.datasets[dataset_id] = updated
        return updated

    def retire(self, provider_id, dataset_id, reason, actor) -> Dataset:
        dataset = self._owned(provider_id, dataset_id)
        retired = dataclasses.replace(dataset, retired=True, version=dataset.version + 1)
        self.datasets[dataset_id] = retired
        return retired


class FakeAuthorization:
    """Requests and grants in dicts; a tenant asking for another's gets NotFound, as the real service does."""

    def __init__(self) -> None:
        self.requests: dict[str, DataRequest] = {}
        self.grants: dict[str, Grant] = {}
        self.calls: list[tuple] = []

    def submit_request(
        self, tenant_id: str, spec: RequestSpec, actor: str, tenant_is_government: bool = False
    ) -> DataRequest:
        self.calls.append(("submit", tenant_id, spec, actor, tenant_is_government))
        if spec.valid_until <= spec.valid_from:
            raise InvalidInput("valid_until must be after valid_from")
        request_id = spec.request_id or f"r-{len(self.requests) + 1}"
        if request_id in self.requests:
            raise Conflict(f"request id {request_id!r} is taken")
        request = DataRequest(
            request_id=request_id,
            tenant_id=tenant_id,
            tenant_kind=TenantKind.COMPANY,
            dataset_id=spec.dataset_id,
            purpose=spec.purpose,
            fields=spec.fields,
            row_filter=spec.row_filter,
            valid_from=spec.valid_from,
            valid_until=spec.valid_until,
            expected_daily_records=spec.expected_daily_records,
            status=RequestStatus.SUBMITTED,
            created_at=NOW,
            updated_at=NOW,
        )
        self.requests[request_id] = request
        return request

    def get_request(self, request_id: str, tenant_id: str | None = None) -> DataRequest:
        found = self.requests.get(request_id)
        if found is None or (tenant_id is not None and found.tenant_id != tenant_id):
            raise NotFound(f"no data request {request_id!r}")
        return found

    def list_requests(self, tenant_id=None, status=None) -> list[DataRequest]:
        return [
            r
            for r in self.requests.values()
            if (tenant_id is None or r.tenant_id == tenant_id) and (status is None or r.status == status)
        ]

    def _move(self, request_id: str, status: RequestStatus, **extra) -> DataRequest:
        current = self.get_request(request_id)
        if current.status not in (RequestStatus.SUBMITTED, RequestStatus.PENDING_REVIEW):
            raise Conflict(f"request {request_id!r} is {current.status.value} already")
        moved = dataclasses.replace(current, status=status, **extra)
        self.requests[request_id] = moved
        return moved

    def withdraw_request(self, tenant_id, request_id, reason, actor) -> DataRequest:
        self.get_request(request_id, tenant_id)
        return self._move(request_id, RequestStatus.WITHDRAWN, decision_reason=reason)

    def deny(self, request_id, operator_id, reason) -> DataRequest:
        return self._move(request_id, RequestStatus.DENIED, decided_by=operator_id, decision_reason=reason)

    def approve(self, request_id, operator_id, narrowing: Narrowing, reason=None) -> Grant:
        self.calls.append(("approve", request_id, operator_id, narrowing, reason))
        request = self._move(request_id, RequestStatus.APPROVED, decided_by=operator_id)
        grant = Grant(
            grant_id=grant_id_for(request_id),
            request_id=request_id,
            tenant_id=request.tenant_id,
            dataset_id=request.dataset_id,
            fields=narrowing.fields or request.fields,
            masking={},
            row_filter=narrowing.row_filter or request.row_filter,
            daily_quota_records=narrowing.daily_quota_records,
            valid_from=request.valid_from,
            valid_until=request.valid_until,
            price_plan=PricePlan(kind=PriceKind.PER_THOUSAND_RECORDS, unit_price=Decimal("1.50")),
            status=GrantStatus.ACTIVE,
            version=1,
            created_at=NOW,
            updated_at=NOW,
        )
        self.grants[grant.grant_id] = grant
        return grant

    def get_grant(self, grant_id, tenant_id=None) -> Grant:
        found = self.grants.get(grant_id)
        if found is None or (tenant_id is not None and found.tenant_id != tenant_id):
            raise NotFound(f"no grant {grant_id!r}")
        return found

    def list_grants(self, tenant_id=None, dataset_id=None, status=None) -> list[Grant]:
        return [
            g
            for g in self.grants.values()
            if (tenant_id is None or g.tenant_id == tenant_id)
            and (dataset_id is None or g.dataset_id == dataset_id)
            and (status is None or g.status == status)
        ]

    def _transition(self, grant_id, allowed_from, to, reason) -> Grant:
        grant = self.get_grant(grant_id)
        if grant.status not in allowed_from:
            raise Conflict(f"grant {grant_id!r} is {grant.status.value}; it cannot become {to.value}")
        moved = dataclasses.replace(grant, status=to, status_reason=reason, version=grant.version + 1)
        self.grants[grant_id] = moved
        return moved

    def suspend(self, grant_id, actor, reason, cause="OPERATOR") -> Grant:
        return self._transition(grant_id, {GrantStatus.ACTIVE}, GrantStatus.SUSPENDED, reason)

    def resume(self, grant_id, actor, reason=None) -> Grant:
        return self._transition(grant_id, {GrantStatus.SUSPENDED}, GrantStatus.ACTIVE, reason)

    def revoke(self, grant_id, actor, reason) -> Grant:
        allowed = {GrantStatus.ACTIVE, GrantStatus.SUSPENDED}
        return self._transition(grant_id, allowed, GrantStatus.REVOKED, reason)


@dataclasses.dataclass
class Gateway:
    http: httpx.Client
    catalog: FakeCatalog
    authorization: FakeAuthorization
    store: PrincipalStore
    keys: dict[str, str]
    users: InMemoryUsers

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("gateway")
    engine, keys = gateway_database(folder)
    store = PrincipalStore(engine)
    catalog, authorization = FakeCatalog(), FakeAuthorization()
    # No broker in unit tests: the dead-letter topic is swept as an empty one (its reads: test_gateway_console),
    # Kafka users live in a dict. The caps have tests of their own (below); here they would only make the
    # sweeps flaky.
    settings = dataclasses.replace(
        Settings.from_env(),
        gateway_rate_per_s=0,
        max_grants_per_tenant_dataset=10**6,
        audit_signing_key_file=str(audit_signing_key(folder)),  # /v1/audit/public-key serves its public half
    )
    users = InMemoryUsers()
    # Access acts are recorded in a list (their recording on the broker: tests/integration).
    events = RecordingPublisher()
    issuer = KafkaCredentialIssuer(
        settings, lambda provider: [d.dataset_id for d in catalog.list(provider)], users, events
    )
    app = create_app(
        settings,
        catalog,
        authorization,
        engine,
        dead_letters=lambda limit: [],
        kafka_credentials=issuer,
        access_events=events,
        feed_offsets=quiet_feeds,
    )
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Gateway(http, catalog, authorization, store, keys, users)
    engine.dispose()


@pytest.fixture
def capped(tmp_path) -> Iterator[Callable[..., tuple[Gateway, Any]]]:
    """A fresh gateway over fresh fakes with the given settings changed; (gateway, its app)."""
    engine, keys = gateway_database(tmp_path)
    with contextlib.ExitStack() as stack:

        def make(**changes) -> tuple[Gateway, Any]:
            settings = dataclasses.replace(Settings.from_env(), **changes)
            catalog, authorization = FakeCatalog(), FakeAuthorization()
            events = RecordingPublisher()
            issuer = KafkaCredentialIssuer(settings, lambda provider: [], InMemoryUsers(), events)
            app = create_app(
                settings,
                catalog,
                authorization,
                engine,
                dead_letters=lambda limit: [],
                kafka_credentials=issuer,
                access_events=events,
                feed_offsets=quiet_feeds,
            )
            server = stack.enter_context(ServerThread(app))
            http = stack.enter_context(httpx.Client(base_url=server.url, timeout=30))
            return Gateway(http, catalog, authorization, PrincipalStore(engine), keys, InMemoryUsers()), app

        yield make
    engine.dispose()


def limited(app, limit: str) -> float:
    return app.state.metrics.registry.get_sample_value("pdo_gateway_limited_total", {"limit": limit}) or 0.0


def dataset_body(dataset_id: str, **overrides) -> dict:
    body = {
        "dataset_id": dataset_id,
        "owner_department": "Transport Bureau",
        "title": "Trips",
        "domain": "TRANSPORT",
        "classification": "GENERAL",
        "openness": "CONDITIONAL",
        "record_schema": SCHEMA,
        "sensitive_fields": [{"field": "record_id", "masking": "KEYED_HASH"}],
        "price_plan": {"kind": "PER_THOUSAND_RECORDS", "unit_price": "1.50", "tiers": [], "currency": "CNY"},
    }
    return {**body, **overrides}


def request_body(dataset_id: str = "transport-trips", **overrides) -> dict:
    body = {
        "dataset_id": dataset_id,
        "purpose": "route planning",
        "fields": ["record_id"],
        "valid_from": NOW.isoformat(),
        "valid_until": (NOW + timedelta(days=30)).isoformat(),
    }
    return {**body, **overrides}


def assert_refused(response: httpx.Response, status: int, kind: str, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == kind, body
    assert set(body) >= {"error", "message", "hint"}
    for fragment in fragments:
        assert fragment in body["message"], body
    return body


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    text = gateway.http.get("/metrics", headers=gateway.as_("alice")).text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- authentication ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, message",
    [
        ({}, "no API key"),
        ({"Authorization": "Bearer nonsense"}, "not a pdo API key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "must read 'Bearer <key>'"),
        ({"X-API-Key": "pdo_0123456789abcdef_" + "x" * 43}, "unknown API key"),
    ],
)
def test_missing_or_wrong_key_is_401_and_counted(gateway, headers, message):
    before = metric(gateway, "pdo_gateway_refusals_total", route="/v1/datasets", reason="unauthenticated")
    response = gateway.http.get("/v1/datasets", headers=headers)
    assert_refused(response, 401, "unauthenticated", message)
    assert response.headers["www-authenticate"] == "Bearer"
    after = metric(gateway, "pdo_gateway_refusals_total", route="/v1/datasets", reason="unauthenticated")
    assert after == before + 1


def test_key_in_x_api_key_header_works(gateway):
    response = gateway.http.get("/v1/datasets", headers={"X-API-Key": gateway.keys["acme"]})
    assert response.status_code == 200, response.text


def test_revoked_key_is_401_at_once(gateway):
    issued = gateway.store.issue_key("tenant:acme")
    headers = {"Authorization": f"Bearer {issued.key}"}
    assert gateway.http.get("/v1/grants", headers=headers).status_code == 200
    gateway.store.revoke_key(issued.key_id)
    assert_refused(gateway.http.get("/v1/grants", headers=headers), 401, "unauthenticated", "revoked")


def test_healthz_and_openapi_need_no_key(gateway):
    assert gateway.http.get("/healthz").json() == {"status": "ok"}
    spec = gateway.http.get("/openapi.json").json()
    assert "/v1/requests/{request_id}/approve" in spec["paths"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])
    assert gateway.http.get("/docs").status_code == 200


# -- roles ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "who, method, path, body",
    [
        ("acme", "POST", "/v1/datasets", dataset_body("transport-x")),
        ("alice", "POST", "/v1/datasets", dataset_body("transport-x")),
        ("transport", "POST", "/v1/requests", request_body()),
        ("alice", "POST", "/v1/requests", request_body()),
        ("acme", "POST", "/v1/requests/r-1/approve", {}),
        ("acme", "POST", "/v1/requests/r-1/deny", {"reason": "no"}),
        ("transport", "GET", "/v1/requests", None),
        ("transport", "GET", "/v1/grants", None),
        ("acme", "POST", "/v1/grants/g-1/suspend", {"reason": "no"}),
        ("acme", "POST", "/v1/grants/g-1/revoke", {"reason": "no"}),
        ("alice", "POST", "/v1/requests/r-1/withdraw", {}),
    ],
)
def test_wrong_role_is_403(gateway, who, method, path, body):
    response = gateway.http.request(method, path, json=body, headers=gateway.as_(who))
    assert_refused(response, 403, "forbidden", "may do this")


# -- catalog -------------------------------------------------------------------------------------------


def test_provider_registers_updates_and_retires_its_dataset(gateway):
    created = gateway.http.post(
        "/v1/datasets", json=dataset_body("transport-trips"), headers=gateway.as_("transport")
    )
    assert created.status_code == 201, created.text
    dataset = created.json()
    assert dataset["provider_id"] == "provider:transport"
    assert dataset["price_plan"]["unit_price"] == "1.50"
    assert json.loads(dataset["record_schema"]) == SCHEMA

    for reader in ("acme", "alice", "health"):
        listed = gateway.http.get("/v1/datasets", headers=gateway.as_(reader)).json()
        assert "transport-trips" in [d["dataset_id"] for d in listed]

    patched = gateway.http.patch(
        "/v1/datasets/transport-trips", json={"title": "All trips"}, headers=gateway.as_("transport")
    )
    assert patched.json()["title"] == "All trips" and patched.json()["version"] == 2

    foreign = gateway.http.patch(
        "/v1/datasets/transport-trips", json={"title": "Mine now"}, headers=gateway.as_("health")
    )
    assert_refused(foreign, 403, "forbidden", "another provider")

    retire_without_reason = gateway.http.post(
        "/v1/datasets/transport-trips/retire", json={}, headers=gateway.as_("transport")
    )
    assert_refused(retire_without_reason, 422, "invalid_input", "body.reason: Field required")


def test_a_derived_datasets_lineage_is_visible_in_the_catalog_api(gateway):
    source = dataset_body("transport-source")
    assert gateway.http.post("/v1/datasets", json=source, headers=gateway.as_("transport")).status_code == 201
    derived = dataset_body("transport-index", derived_from=["transport-source"])
    assert (
        gateway.http.post("/v1/datasets", json=derived, headers=gateway.as_("transport")).status_code == 201
    )

    seen = gateway.http.get("/v1/datasets/transport-index", headers=gateway.as_("acme"))

    assert seen.status_code == 200 and seen.json()["derived_from"] == ["transport-source"]
    # (the catalog's checks of the sources: tests/unit/test_catalog_service.py)
    too_many = dataset_body("transport-wide", derived_from=[f"source-{n}" for n in range(17)])
    refused = gateway.http.post("/v1/datasets", json=too_many, headers=gateway.as_("transport"))
    assert_refused(refused, 422, "invalid_input", "derived_from")


def test_a_dataset_listing_is_for_its_provider_and_operators(gateway):
    body = dataset_body("transport-listed", asset_registration_number="SZ-DA-1", terms="planning only")
    assert gateway.http.post("/v1/datasets", json=body, headers=gateway.as_("transport")).status_code == 201

    listing = gateway.http.get("/v1/datasets/transport-listed/listing", headers=gateway.as_("transport"))

    assert listing.status_code == 200, listing.text
    document = listing.json()
    assert (document["asset_registration_number"], document["terms"]) == ("SZ-DA-1", "planning only")
    assert document["update_frequency"]["in_words"] == "no records in the last 24 h"
    assert document["usage"]["records"] == 0 and document["sensitive_fields"] == ["record_id"]
    foreign = gateway.http.get("/v1/datasets/transport-listed/listing", headers=gateway.as_("health"))
    assert_refused(foreign, 403, "forbidden", "another provider")
    tenant = gateway.http.get("/v1/datasets/transport-listed/listing", headers=gateway.as_("acme"))
    assert tenant.status_code == 403
    bad_period = gateway.http.get(
        "/v1/datasets/transport-listed/listing?period=2026-13", headers=gateway.as_("transport")
    )
    assert bad_period.status_code == 422


def test_duplicate_dataset_is_409(gateway):
    body = dataset_body("transport-dupe")
    assert gateway.http.post("/v1/datasets", json=body, headers=gateway.as_("transport")).status_code == 201
    again = gateway.http.post("/v1/datasets", json=body, headers=gateway.as_("transport"))
    assert_refused(again, 409, "conflict", "exists already")


@pytest.mark.parametrize("dataset_id", ["corp.sales", "corp_sales", "Sales", "x" * 64])
def test_a_dataset_id_that_breaks_the_id_rule_is_422_naming_the_rule(gateway, dataset_id):
    """`tenant:acme` + `corp.sales` would share pdo.tenant.acme.corp.sales with `tenant:acme.corp` + `sales`."""
    response = gateway.http.post(
        "/v1/datasets", json=dataset_body(dataset_id), headers=gateway.as_("transport")
    )
    assert_refused(response, 422, "invalid_input", "body.dataset_id", ID_RULE)
    assert dataset_id not in gateway.catalog.datasets


def test_record_schema_may_be_json_text(gateway):
    body = dataset_body("transport-text-schema", record_schema=json.dumps(SCHEMA))
    response = gateway.http.post("/v1/datasets", json=body, headers=gateway.as_("transport"))
    assert response.status_code == 201, response.text


def test_unknown_dataset_is_404(gateway):
    response = gateway.http.get("/v1/datasets/transport-nothing", headers=gateway.as_("acme"))
    assert_refused(response, 404, "not_found", "no dataset")


# -- requests and grants: tenant isolation -------------------------------------------------------------


def submit(gateway: Gateway, tenant: str, **overrides) -> dict:
    response = gateway.http.post("/v1/requests", json=request_body(**overrides), headers=gateway.as_(tenant))
    assert response.status_code == 202, response.text
    return response.json()


def test_tenant_submits_and_sees_only_its_own(gateway):
    mine = submit(gateway, "acme", request_id="iso-acme-1")
    theirs = submit(gateway, "globex", request_id="iso-globex-1")
    assert mine["status"] == "SUBMITTED" and mine["tenant_id"] == "tenant:acme"
    assert mine["grant_id"] is None

    own = gateway.http.get("/v1/requests", headers=gateway.as_("acme")).json()
    assert "iso-acme-1" in [r["request_id"] for r in own]
    assert all(r["tenant_id"] == "tenant:acme" for r in own)

    peeking = gateway.http.get(
        "/v1/requests", params={"tenant_id": "tenant:globex"}, headers=gateway.as_("acme")
    )
    assert peeking.json() == []

    other = gateway.http.get(f"/v1/requests/{theirs['request_id']}", headers=gateway.as_("acme"))
    assert_refused(other, 404, "not_found")
    withdraw = gateway.http.post(f"/v1/requests/{theirs['request_id']}/withdraw", headers=gateway.as_("acme"))
    assert_refused(withdraw, 404, "not_found")

    everyone = gateway.http.get("/v1/requests", headers=gateway.as_("alice")).json()
    assert {"iso-acme-1", "iso-globex-1"} <= {r["request_id"] for r in everyone}


def test_operator_approves_with_narrowing_and_moves_the_grant(gateway):
    submit(gateway, "acme", request_id="flow-1")
    pending = gateway.http.get("/v1/requests", params={"status": "SUBMITTED"}, headers=gateway.as_("alice"))
    assert "flow-1" in [r["request_id"] for r in pending.json()]

    approved = gateway.http.post(
        "/v1/requests/flow-1/approve",
        json={"fields": ["record_id"], "daily_quota_records": 1000, "reason": "ok for planning"},
        headers=gateway.as_("alice"),
    )
    assert approved.status_code == 201, approved.text
    grant = approved.json()
    assert grant["grant_id"] == "g-flow-1" and grant["daily_quota_records"] == 1000
    call = gateway.authorization.calls[-1]
    assert call[:3] == ("approve", "flow-1", "operator:alice") and call[4] == "ok for planning"
    assert (
        gateway.http.get("/v1/requests/flow-1", headers=gateway.as_("acme")).json()["grant_id"] == "g-flow-1"
    )

    suspended = gateway.http.post(
        "/v1/grants/g-flow-1/suspend", json={"reason": "audit"}, headers=gateway.as_("alice")
    )
    assert suspended.json()["status"] == "SUSPENDED"
    seen = gateway.http.get("/v1/grants/g-flow-1", headers=gateway.as_("acme")).json()
    assert (seen["status"], seen["status_reason"]) == ("SUSPENDED", "audit")
    assert_refused(gateway.http.get("/v1/grants/g-flow-1", headers=gateway.as_("globex")), 404, "not_found")
    assert gateway.http.get("/v1/grants", headers=gateway.as_("globex")).json() == []

    resumed = gateway.http.post("/v1/grants/g-flow-1/resume", headers=gateway.as_("alice"))
    assert resumed.json()["status"] == "ACTIVE"
    no_reason = gateway.http.post("/v1/grants/g-flow-1/revoke", json={}, headers=gateway.as_("alice"))
    assert_refused(no_reason, 422, "invalid_input", "body.reason")
    revoked = gateway.http.post(
        "/v1/grants/g-flow-1/revoke", json={"reason": "contract ended"}, headers=gateway.as_("alice")
    )
    assert revoked.json()["status"] == "REVOKED"
    again = gateway.http.post("/v1/grants/g-flow-1/resume", headers=gateway.as_("alice"))
    assert_refused(again, 409, "conflict", "REVOKED")


def test_deny_requires_a_reason_and_is_final(gateway):
    submit(gateway, "globex", request_id="deny-1")
    assert_refused(
        gateway.http.post("/v1/requests/deny-1/deny", json={}, headers=gateway.as_("alice")),
        422,
        "invalid_input",
        "body.reason: Field required",
    )
    denied = gateway.http.post(
        "/v1/requests/deny-1/deny", json={"reason": "no purpose"}, headers=gateway.as_("alice")
    )
    assert denied.json()["status"] == "DENIED"
    approve = gateway.http.post("/v1/requests/deny-1/approve", headers=gateway.as_("alice"))
    assert_refused(approve, 409, "conflict", "DENIED")


def test_service_errors_map_to_statuses(gateway):
    for error, status, kind in [
        (Unavailable("kafka is down", hint="start it"), 503, "unavailable"),
        (InvalidInput("bad"), 422, "invalid_input"),
        (PdoError("unclassified"), 500, "internal"),
    ]:
        gateway.catalog.fail_with = error
        try:
            response = gateway.http.get("/v1/datasets", headers=gateway.as_("acme"))
        finally:
            gateway.catalog.fail_with = None
        body = assert_refused(response, status, kind, error.message)
        assert body["hint"] == error.hint


def test_an_unexpected_failure_is_a_json_500_and_counted(gateway):
    before = metric(gateway, "pdo_gateway_refusals_total", route="/v1/datasets", reason="internal")
    gateway.catalog.fail_with = RuntimeError("boom with secrets inside")
    try:
        response = gateway.http.get("/v1/datasets", headers=gateway.as_("acme"))
    finally:
        gateway.catalog.fail_with = None
    body = assert_refused(response, 500, "internal", "failed unexpectedly")
    assert "boom" not in json.dumps(body)
    assert (
        metric(gateway, "pdo_gateway_refusals_total", route="/v1/datasets", reason="internal") == before + 1
    )


# -- bad input -----------------------------------------------------------------------------------------


def post_request(gateway: Gateway, body, **kwargs) -> httpx.Response:
    return gateway.http.post("/v1/requests", headers=gateway.as_("acme"), json=body, **kwargs)


@pytest.mark.parametrize(
    "body, fragment",
    [
        (request_body(bogus=1), "body.bogus: Extra inputs are not permitted"),
        (request_body(fields="record_id"), "body.fields: Input should be a valid list"),
        (request_body(fields=[]), "body.fields: List should have at least 1 item"),
        (request_body(fields=["x y"]), "body.fields[0]: String should match pattern"),
        (request_body(valid_from="2026-03-01T00:00:00"), "body.valid_from: Input should have timezone info"),
        (request_body(purpose="a" * 5000), "body.purpose: String should have at most 4000 characters"),
        (
            request_body(purpose="ok\x07bell"),
            "body.purpose: Value error, must not contain control characters",
        ),
        (request_body(purpose="   "), "body.purpose: Value error, must not be blank"),
        (
            request_body(expected_daily_records=-1),
            "body.expected_daily_records: Input should be greater than",
        ),
        (request_body(dataset_id="../etc"), "body.dataset_id: String should match pattern"),
        ([1, 2], "body: Input should be a valid dictionary"),
    ],
)
def test_bad_bodies_are_422_with_field_paths(gateway, body, fragment):
    before = metric(gateway, "pdo_gateway_refusals_total", route="/v1/requests", reason="invalid_input")
    response = post_request(gateway, body)
    details = assert_refused(response, 422, "invalid_input", fragment)["details"]
    assert details and all(set(d) == {"field", "message"} for d in details)
    after = metric(gateway, "pdo_gateway_refusals_total", route="/v1/requests", reason="invalid_input")
    assert after == before + 1


def test_malformed_json_is_422(gateway):
    response = gateway.http.post(
        "/v1/requests",
        content=b'{"dataset_id": ',
        headers={**gateway.as_("acme"), "Content-Type": "application/json"},
    )
    assert_refused(response, 422, "invalid_input", "not valid JSON")


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_a_body_sent_as_anything_but_json_is_415_with_the_fix(gateway, content_type):
    headers = dict(gateway.as_("acme"))
    if content_type:
        headers["Content-Type"] = content_type
    response = gateway.http.post("/v1/requests", content=b'{"dataset_id": "x"}', headers=headers)
    assert_refused(response, 415, "unsupported_media_type", "the body must be JSON")
    assert "Content-Type: application/json" in response.json()["hint"]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_prices_are_422(gateway, number):
    body = json.dumps(dataset_body("transport-nan")).replace('"1.50"', number)
    response = gateway.http.post(
        "/v1/datasets",
        content=body.encode(),
        headers={**gateway.as_("transport"), "Content-Type": "application/json"},
    )
    assert_refused(response, 422, "invalid_input", "body.price_plan.unit_price")


def test_oversize_body_is_413_and_counted(gateway):
    before = metric(gateway, "pdo_gateway_refusals_total", route="/v1/requests", reason="payload_too_large")
    response = post_request(gateway, request_body(purpose="x" * (1024 * 1024 + 10)))
    assert_refused(response, 413, "payload_too_large", "larger than the gateway accepts")
    after = metric(gateway, "pdo_gateway_refusals_total", route="/v1/requests", reason="payload_too_large")
    assert after == before + 1


def test_oversize_chunked_body_is_413(gateway):
    def chunks():
        for _ in range(20):
            yield b"x" * 65536

    response = gateway.http.post(
        "/v1/requests", content=chunks(), headers={**gateway.as_("acme"), "Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_refused(response, 413, "payload_too_large")


def test_hostile_path_ids_are_refused(gateway):
    for path in ["/v1/requests/" + "a" * 500, "/v1/requests/%00abc", "/v1/grants/..%2F..%2Fetc"]:
        response = gateway.http.get(path, headers=gateway.as_("acme"))
        assert response.status_code in (404, 422), response.text
        assert response.json()["error"] in ("invalid_input", "not_found")


def test_unknown_route_and_method_are_json(gateway):
    assert_refused(gateway.http.get("/v2/nothing"), 404, "not_found")
    assert_refused(
        gateway.http.delete("/v1/datasets", headers=gateway.as_("acme")), 405, "method_not_allowed"
    )


def test_unknown_status_filter_is_422(gateway):
    response = gateway.http.get("/v1/grants", params={"status": "HAPPY"}, headers=gateway.as_("alice"))
    assert_refused(response, 422, "invalid_input", "query.status")


def test_requests_are_counted_by_route_template(gateway):
    gateway.http.get("/v1/requests/whatever-1", headers=gateway.as_("acme"))
    text = gateway.http.get("/metrics", headers=gateway.as_("alice")).text
    assert (
        'pdo_gateway_http_requests_total{method="GET",route="/v1/requests/{request_id}",status="404"}' in text
    )
    assert "whatever-1" not in text


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
# Deferred rather than st.recursive: with schemathesis loaded in the same run, hypothesis misreports the
# recursive form's extend function as unused (a deprecation warning, an error under this suite's settings).
JSON_VALUES = st.deferred(
    lambda: (
        JSON_SCALARS
        | st.lists(JSON_VALUES, max_size=4)
        | st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=4)
    )
)


def operations() -> list[tuple[str, str, list[str]]]:
    """(method, path template, body field names) of every operation /openapi.json declares."""
    spec = create_app(Settings.from_env(), None, None, db.make_engine("sqlite://")).openapi()
    found = []
    for path, methods in spec["paths"].items():
        if path.startswith("/v1/streams/"):
            continue  # reads Kafka; its refusals are swept in test_gateway_stream_endpoint.py
        for method, operation in methods.items():
            ref = (
                operation.get("requestBody", {})
                .get("content", {})
                .get("application/json", {})
                .get("schema", {})
            )
            ref = ref.get("$ref") or next(
                (item["$ref"] for item in ref.get("anyOf", []) if "$ref" in item), ""
            )
            fields = list(spec["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]) if ref else []
            found.append((method.upper(), path, fields))
    return found


OPERATIONS = operations()
PATH_IDS = st.one_of(
    st.sampled_from(["r-none", "g-none", "transport-trips", "flow-1", "g-flow-1"]),
    st.text(min_size=1, max_size=40).map(lambda text: quote(text, safe="")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    operation=st.sampled_from(OPERATIONS),
    data=st.data(),
    path_id=PATH_IDS,
    who=st.sampled_from(["acme", "globex", "alice", "transport", None]),
)
def test_openapi_sweep_never_causes_a_server_error(gateway, operation, data, path_id, who):
    """Every declared operation, random ids and bodies, every role: always a 2xx or a 4xx in our shape."""
    method, template, fields = operation
    keys = st.sampled_from([*fields, "unexpected"]) if fields else st.text(max_size=10)
    body = data.draw(st.dictionaries(keys, JSON_VALUES, max_size=6))
    path = (
        template.replace("{dataset_id}", path_id)
        .replace("{request_id}", path_id)
        .replace("{grant_id}", path_id)
    )
    headers = gateway.as_(who) if who else {}
    send = {"json": body} if method in ("POST", "PATCH") else {}
    response = gateway.http.request(method, path, headers=headers, **send)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"] in {
            "invalid_input",
            "forbidden",
            "not_found",
            "conflict",
            "unauthenticated",
        }, response.text


# ---------------------------------------------------------------------------------------------- Kafka credentials


def test_a_tenant_gets_kafka_credentials_that_read_only_its_own_topics(gateway):
    response = gateway.http.post("/v1/kafka-credentials", headers=gateway.as_("acme"))
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    issued = response.json()
    assert issued["username"] == "tenant.acme" and len(issued["password"]) >= 40
    assert issued["topic_prefix"] == "pdo.tenant.acme."
    assert f"sasl.password={issued['password']}" in issued["client_properties"]
    password, grants = gateway.users.users["tenant.acme"]
    assert password == issued["password"]  # what the broker is given is what the tenant is shown
    assert {(g.resource_type, g.resource_name, g.pattern, g.operation) for g in grants} == {
        ("TOPIC", "pdo.tenant.acme.", "PREFIXED", "READ"),
        ("TOPIC", "pdo.tenant.acme.", "PREFIXED", "DESCRIBE"),
        ("GROUP", "pdo.tenant.acme.", "PREFIXED", "READ"),
        ("GROUP", "pdo.tenant.acme.", "PREFIXED", "DESCRIBE"),
    }
    rotated = gateway.http.post("/v1/kafka-credentials", headers=gateway.as_("acme")).json()
    assert rotated["password"] != issued["password"]
    assert gateway.users.users["tenant.acme"][0] == rotated["password"]


def test_a_provider_gets_write_access_to_its_own_feeds_only(gateway):
    gateway.http.post("/v1/datasets", json=dataset_body("kafka-feed"), headers=gateway.as_("transport"))
    issued = gateway.http.post("/v1/kafka-credentials", headers=gateway.as_("transport")).json()
    own = {f"pdo.feed.{d.dataset_id}" for d in gateway.catalog.list("provider:transport")}
    assert "pdo.feed.kafka-feed" in own and issued["topic_prefix"] is None
    assert set(issued["feeds"]) == own  # every dataset it owns, none of another provider's
    grants = gateway.users.users["provider.transport"][1]
    assert {(g.resource_name, g.operation) for g in grants} == {
        (feed, operation) for feed in own for operation in ("WRITE", "DESCRIBE")
    }


def test_operators_get_no_kafka_credentials_and_only_operators_revoke_others(gateway):
    assert gateway.http.post("/v1/kafka-credentials", headers=gateway.as_("alice")).status_code == 403
    gateway.http.post("/v1/kafka-credentials", headers=gateway.as_("globex"))
    path = "/v1/principals/tenant:globex/kafka-credentials"
    assert gateway.http.delete(path, headers=gateway.as_("acme")).status_code == 403
    revoked = gateway.http.delete(path, headers=gateway.as_("alice"))
    assert revoked.status_code == 200 and revoked.json()["acls_removed"] == 4
    assert "tenant.globex" not in gateway.users.users
    unknown = gateway.http.delete(
        "/v1/principals/tenant:nobody/kafka-credentials", headers=gateway.as_("alice")
    )
    assert unknown.status_code == 404


# ---------------------------------------------------------------------------------------------- caps


def test_a_principal_over_its_request_rate_gets_429_with_retry_after(capped):
    gateway, app = capped(gateway_rate_per_s=1, gateway_rate_burst=3)
    answers = [gateway.http.get("/v1/grants", headers=gateway.as_("acme")).status_code for _ in range(3)]
    assert answers == [200, 200, 200]

    refused = gateway.http.get("/v1/grants", headers=gateway.as_("acme"))

    body = assert_refused(
        refused, 429, "too_many_requests", "tenant:acme sent more than 1 requests per second"
    )
    assert "Retry-After" in body["hint"] and int(refused.headers["Retry-After"]) >= 1
    assert limited(app, "rate") == 1
    # Another principal has its own allowance.
    assert gateway.http.get("/v1/grants", headers=gateway.as_("globex")).status_code == 200


def test_the_rate_limit_refills_with_time_and_zero_turns_it_off():
    clock = [0.0]
    bucket = RateLimiter(per_second=2, burst=2, clock=lambda: clock[0])
    assert [bucket.take("a"), bucket.take("a")] == [None, None]
    assert bucket.take("a") == 1  # empty: one token is back in half a second, so "retry after 1 s"
    clock[0] += 0.5
    assert bucket.take("a") is None and bucket.take("a") == 1
    unlimited = RateLimiter(per_second=0, burst=1)
    assert all(unlimited.take("a") is None for _ in range(1000))


def test_a_tenant_cannot_pile_up_requests_and_grants_on_one_dataset(capped):
    gateway, app = capped(max_grants_per_tenant_dataset=2)
    first = post_request(gateway, request_body())
    assert first.status_code == 202, first.text
    gateway.http.post(f"/v1/requests/{first.json()['request_id']}/approve", headers=gateway.as_("alice"))
    assert post_request(gateway, request_body()).status_code == 202  # one grant + one undecided: the cap

    refused = post_request(gateway, request_body())

    body = assert_refused(refused, 429, "too_many_requests", "1 live grant(s) and 1 undecided request(s)")
    assert "at most 2" in body["message"] and "withdraw" in body["hint"]
    assert "Retry-After" not in refused.headers  # waiting alone does not help
    assert limited(app, "grants_per_tenant_dataset") == 1
    assert len(gateway.authorization.requests) == 2  # the refused request reached no service
    # Other datasets and other tenants are not affected.
    assert post_request(gateway, request_body("transport-other")).status_code == 202
    other = gateway.http.post("/v1/requests", headers=gateway.as_("globex"), json=request_body())
    assert other.status_code == 202


def test_revoked_grants_and_decided_requests_do_not_count_against_the_cap(capped):
    gateway, _ = capped(max_grants_per_tenant_dataset=1)
    submitted = post_request(gateway, request_body()).json()["request_id"]
    gateway.http.post(f"/v1/requests/{submitted}/approve", headers=gateway.as_("alice"))
    gateway.http.post(
        f"/v1/grants/{grant_id_for(submitted)}/revoke", headers=gateway.as_("alice"), json={"reason": "ended"}
    )
    assert post_request(gateway, request_body()).status_code == 202


# ---------------------------------------------------------------------------------------------- /metrics


@pytest.mark.parametrize(
    ("who", "status"),
    [(None, 401), ("acme", 403), ("transport", 403)],
)
def test_metrics_with_per_tenant_usage_are_operators_only(gateway, who, status):
    response = gateway.http.get("/metrics", headers=gateway.as_(who) if who else {})
    assert response.status_code == status, response.text
    assert "pdo_gateway" not in response.text


def test_metrics_answer_an_operator_and_the_scrape_token_only(gateway):
    token = Settings.from_env().metrics_token
    assert gateway.http.get("/metrics", headers=gateway.as_("alice")).status_code == 200
    scraped = gateway.http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert scraped.status_code == 200 and "pdo_gateway_http_requests_total" in scraped.text
    wrong = gateway.http.get("/metrics", headers={"Authorization": f"Bearer {token[:-1]}x"})
    assert wrong.status_code == 401


def test_a_weak_scrape_token_stops_the_gateway_outside_development(monkeypatch):
    monkeypatch.delenv("PDO_ENVIRONMENT", raising=False)
    settings = dataclasses.replace(Settings.from_env(), metrics_token="change-me")
    with pytest.raises(ConfigError, match="PDO_METRICS_TOKEN"):
        create_app(settings, FakeCatalog(), FakeAuthorization(), db.make_engine("sqlite://"))


def test_guessing_keys_is_throttled_by_address(capped):
    gateway, app = capped(gateway_rate_per_s=1, gateway_rate_burst=2)
    guess = {"Authorization": "Bearer pdo_0123456789abcdef_" + "x" * 43}
    answers = [gateway.http.get("/v1/grants", headers=guess).status_code for _ in range(3)]
    assert answers == [401, 401, 429]
    assert limited(app, "rate") == 1


def test_a_tenant_asks_for_aggregates_only_over_http(gateway):
    aggregate = {"window_seconds": 300, "group_by": [], "numeric_fields": [], "functions": ["COUNT"]}
    submit(gateway, "acme", request_id="agg-1", kind="AGGREGATE", aggregate=aggregate)
    spec = gateway.authorization.calls[-1][2]
    assert (spec.kind, spec.aggregate) == (
        GrantKind.AGGREGATE,
        AggregateSpec(300, (), (), (AggregateFunction.COUNT,)),
    )
    submit(gateway, "acme", request_id="rows-1")
    assert gateway.authorization.calls[-1][2].kind is GrantKind.ROWS  # the default: rows, as before
    unknown = gateway.http.post(
        "/v1/requests",
        json=request_body(kind="AGGREGATE", aggregate={**aggregate, "functions": ["MEDIAN"]}),
        headers=gateway.as_("acme"),
    )
    assert_refused(unknown, 422, "invalid_input")
