"""GET /v1/usage over HTTP: windows from the metering tables, scoped to the caller (a tenant its own, a provider
its datasets', an operator all), newest first, with defaults and refusals for bad parameters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from conftest import ServerThread
from gateway_support import gateway_database
from test_gateway_api import FakeAuthorization, FakeCatalog

from pdo.catalog.public import DatasetRegistration
from pdo.core.config import Settings
from pdo.core.vocabulary import Classification, Domain, Openness, PriceKind, PricePlan
from pdo.gateway.app import create_app
from pdo.metering.ledger import Ledger
from pdo.metering.testing import insert_grant, usage_fact

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
SCHEMA = {"type": "record", "name": "Trip", "fields": [{"name": "record_id", "type": "string"}]}


@dataclass
class Gateway:
    http: httpx.Client
    keys: dict[str, str]

    def usage(self, who: str, **params) -> httpx.Response:
        return self.http.get(
            "/v1/usage", params=params, headers={"Authorization": f"Bearer {self.keys[who]}"}
        )


def register(catalog: FakeCatalog, provider: str, dataset_id: str) -> None:
    catalog.register(
        provider,
        DatasetRegistration(
            dataset_id=dataset_id,
            owner_department="Bureau",
            title=dataset_id,
            domain=Domain.TRANSPORT,
            classification=Classification.GENERAL,
            openness=Openness.OPEN,
            record_schema=SCHEMA,
            sensitive_fields=(),
            price_plan=PricePlan(PriceKind.PER_THOUSAND_RECORDS, Decimal("1.00")),
        ),
        provider,
    )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    engine, keys = gateway_database(tmp_path_factory.mktemp("usage"))
    catalog = FakeCatalog()
    register(catalog, "provider:transport", "trips")
    register(catalog, "provider:health", "clinics")
    start = NOW - timedelta(days=60)
    insert_grant(engine, "g-acme-trips", start, tenant_id="tenant:acme", dataset_id="trips")
    insert_grant(engine, "g-acme-clinics", start, tenant_id="tenant:acme", dataset_id="clinics")
    insert_grant(engine, "g-globex-trips", start, tenant_id="tenant:globex", dataset_id="trips")
    facts = [
        usage_fact(
            "a1", "g-acme-trips", NOW - timedelta(minutes=10), "tenant:acme", "trips", records=2, size=20
        ),
        usage_fact(
            "a2", "g-acme-trips", NOW - timedelta(minutes=9), "tenant:acme", "trips", records=3, size=30
        ),
        usage_fact("a3", "g-acme-clinics", NOW - timedelta(minutes=9), "tenant:acme", "clinics", size=7),
        usage_fact("g1", "g-globex-trips", NOW - timedelta(minutes=9), "tenant:globex", "trips", size=5),
        usage_fact(
            "old", "g-acme-trips", NOW - timedelta(days=40), "tenant:acme", "trips", records=9, size=90
        ),
    ]
    Ledger(engine).record(facts)
    app = create_app(Settings.from_env(), catalog, FakeAuthorization(), engine)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Gateway(http, keys)
    engine.dispose()


def seen(response: httpx.Response) -> list[tuple[str, str, int]]:
    assert response.status_code == 200, response.text
    return [(u["grant_id"], u["window_start"][:16], u["records"]) for u in response.json()["usage"]]


def minute(delta: timedelta) -> str:
    return (NOW + delta).isoformat()[:16]


def test_a_tenant_sees_only_its_own_usage(gateway):
    body = gateway.usage("acme", window="MINUTE").json()
    assert body["window"] == "MINUTE"
    assert {u["tenant_id"] for u in body["usage"]} == {"tenant:acme"}
    assert seen(gateway.usage("acme", window="MINUTE")) == [
        ("g-acme-clinics", minute(timedelta(minutes=-9)), 1),
        ("g-acme-trips", minute(timedelta(minutes=-9)), 3),
        ("g-acme-trips", minute(timedelta(minutes=-10)), 2),
    ]
    assert seen(gateway.usage("acme", window="MINUTE", tenant_id="tenant:globex")) == []
    assert seen(gateway.usage("globex", window="MINUTE")) == [
        ("g-globex-trips", minute(timedelta(minutes=-9)), 1)
    ]


def test_a_provider_sees_usage_of_its_own_datasets_only(gateway):
    assert {u["dataset_id"] for u in gateway.usage("transport", window="MINUTE").json()["usage"]} == {"trips"}
    assert {u["dataset_id"] for u in gateway.usage("health", window="MINUTE").json()["usage"]} == {"clinics"}
    assert seen(gateway.usage("health", window="MINUTE", dataset_id="trips")) == []


def test_an_operator_sees_all_and_filters(gateway):
    assert len(seen(gateway.usage("alice", window="MINUTE"))) == 4
    assert {g for g, _, _ in seen(gateway.usage("alice", window="MINUTE", tenant_id="tenant:globex"))} == {
        "g-globex-trips"
    }
    assert {g for g, _, _ in seen(gateway.usage("alice", dataset_id="clinics"))} == {"g-acme-clinics"}


def test_day_windows_default_to_the_last_31_days_and_since_reaches_further(gateway):
    # a1 (2 records) and a2 (3) fall on one UTC day, or on two just after midnight: the sum is what counts.
    recent = seen(gateway.usage("acme", window="DAY", dataset_id="trips"))
    assert sum(records for _, _, records in recent) == 5  # 40 days ago is outside the default
    older = seen(
        gateway.usage("acme", window="DAY", dataset_id="trips", since=(NOW - timedelta(days=50)).isoformat())
    )
    assert older == [*recent, ("g-acme-trips", day_of(NOW - timedelta(days=40)), 9)]  # newest first
    window = gateway.usage("acme", window="DAY", dataset_id="trips").json()["usage"][0]
    start, end = (datetime.fromisoformat(window[key]) for key in ("window_start", "window_end"))
    assert (start.hour, start.minute, end - start) == (0, 0, timedelta(days=1))


def day_of(moment: datetime) -> str:
    return moment.replace(hour=0, minute=0).isoformat()[:16]


def test_an_until_before_the_usage_finds_nothing(gateway):
    until = (NOW - timedelta(minutes=30)).isoformat()
    assert seen(gateway.usage("alice", window="MINUTE", until=until)) == []


@pytest.mark.parametrize(
    "params, status, fragment",
    [
        ({"window": "HOUR"}, 422, "window"),
        ({"since": "yesterday"}, 422, "since"),
        ({"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, 422, "must be before"),
        ({"limit": "0"}, 422, "limit"),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(gateway, params, status, fragment):
    response = gateway.usage("alice", **params)
    assert response.status_code == status, response.text
    assert fragment in response.text


def test_usage_needs_a_key(gateway):
    response = gateway.http.get("/v1/usage")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"
