"""The billing routes over HTTP: tenants see their own statements only, providers the asset reports of their own
datasets, operators everything; malformed periods, unknown ids and hostile parameters are clear 4xx."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import pytest
from billing_support import FREE, add_grant, add_usage, per_thousand
from conftest import ServerThread
from gateway_support import gateway_database

from pdo.authorization.testing import RecordingPublisher
from pdo.billing.statements import close_period, statement_id_for
from pdo.core.config import Settings
from pdo.gateway.app import create_app

ACME, GLOBEX = "tenant:acme", "tenant:globex"
MARCH, APRIL = datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 4, 3, tzinfo=UTC)


@dataclasses.dataclass(frozen=True)
class Owned:
    dataset_id: str
    provider_id: str


class OwnedDatasets:
    """The one catalog call the billing routes make: a provider's datasets."""

    datasets = (Owned("traffic", "provider:transport"), Owned("clinics", "provider:health"))

    def list(self, provider_id: str | None = None, include_retired: bool = False) -> list[Owned]:
        return [d for d in self.datasets if provider_id in (None, d.provider_id)]


@dataclasses.dataclass
class Api:
    http: httpx.Client
    keys: dict[str, str]

    def get(self, who: str, path: str) -> httpx.Response:
        return self.http.get(path, headers={"Authorization": f"Bearer {self.keys[who]}"})


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Api]:
    engine, keys = gateway_database(tmp_path_factory.mktemp("billing-api"))
    with engine.begin() as conn:
        add_grant(conn, "g-acme-traffic", ACME, "traffic", per_thousand("2.00"))
        add_grant(conn, "g-globex-clinics", GLOBEX, "clinics", per_thousand("1.00"))
        add_grant(conn, "g-globex-traffic", GLOBEX, "traffic", FREE)
        add_usage(conn, "g-acme-traffic", ACME, "traffic", 1_500, 1_000, MARCH)  # 1,500 x 2.00 / 1,000 = 3.00
        add_usage(conn, "g-globex-clinics", GLOBEX, "clinics", 2_000, 3_000, MARCH)  # 2.00
        add_usage(conn, "g-globex-traffic", GLOBEX, "traffic", 700, 500, MARCH)  # free
        add_usage(conn, "g-acme-traffic", ACME, "traffic", 250, 100, APRIL)  # April, open: 0.50 so far
    close_period(engine, RecordingPublisher(), "2026-03", "operator:alice", now=APRIL)
    app = create_app(Settings.from_env(), OwnedDatasets(), None, engine, streams=None)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Api(http, keys)
    engine.dispose()


def refused(response: httpx.Response, status: int, kind: str, fragment: str = "") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == kind and fragment in body["message"], body
    return body


def test_a_tenant_lists_only_its_own_statements(api) -> None:
    body = api.get("acme", "/v1/statements?period=2026-03").json()
    assert body["period"] == "2026-03"
    assert [(s["tenant_id"], s["total"]) for s in body["statements"]] == [(ACME, "3.00")]
    line = body["statements"][0]["lines"][0]
    assert (line["grant_id"], line["records"], line["amount"], line["plan"]) == (
        "g-acme-traffic", 1_500, "3.00", "2.00 CNY per 1,000 records",
    )  # fmt: skip
    assert (
        api.get("acme", f"/v1/statements?period=2026-03&tenant_id={quote(GLOBEX)}").json()["statements"] == []
    )


def test_an_operator_lists_every_statement_and_may_filter(api) -> None:
    body = api.get("alice", "/v1/statements?period=2026-03").json()
    assert sorted((s["tenant_id"], s["total"]) for s in body["statements"]) == [
        (ACME, "3.00"),
        (GLOBEX, "2.00"),
    ]
    only = api.get("alice", f"/v1/statements?period=2026-03&tenant_id={quote(GLOBEX)}").json()
    assert [s["tenant_id"] for s in only["statements"]] == [GLOBEX]
    assert api.get("alice", "/v1/statements?period=2026-04").json()["statements"] == []  # open: none issued


def test_one_statement_is_its_tenants_and_another_tenants_id_is_not_found(api) -> None:
    own = statement_id_for(ACME, "2026-03", "CNY")
    other = statement_id_for(GLOBEX, "2026-03", "CNY")
    body = api.get("acme", f"/v1/statements/{own}").json()
    assert body["statement_id"] == own and body["total"] == "3.00"
    assert body["period_start"] == "2026-03-01T00:00:00+00:00" and body["issued_by"] == "operator:alice"
    refused(api.get("acme", f"/v1/statements/{other}"), 404, "not_found", "among yours")
    assert api.get("alice", f"/v1/statements/{other}").json()["tenant_id"] == GLOBEX
    refused(api.get("alice", "/v1/statements/st-2026-03-0000000000000000"), 404, "not_found", "no statement")


def test_providers_may_not_read_statements_and_tenants_not_asset_reports(api) -> None:
    refused(api.get("transport", "/v1/statements?period=2026-03"), 403, "forbidden")
    refused(api.get("acme", "/v1/reports/assets?period=2026-03"), 403, "forbidden")


def test_a_provider_gets_the_report_of_its_own_datasets_only(api) -> None:
    body = api.get("transport", "/v1/reports/assets?period=2026-03").json()
    assert body["provisional"] is False
    (traffic,) = body["datasets"]
    # acme 3.00 + globex free: two tenants, 1,500 + 700 records
    assert (traffic["dataset_id"], traffic["tenants"], traffic["records"], traffic["revenue"]) == (
        "traffic", 2, 2_200, "3.00",
    )  # fmt: skip
    assert [
        d["dataset_id"] for d in api.get("health", "/v1/reports/assets?period=2026-03").json()["datasets"]
    ] == ["clinics"]


def test_an_operator_gets_every_dataset_as_json_or_csv_and_open_periods_are_provisional(api) -> None:
    body = api.get("alice", "/v1/reports/assets?period=2026-03&format=json").json()
    assert [(d["dataset_id"], d["revenue"]) for d in body["datasets"]] == [
        ("clinics", "2.00"),
        ("traffic", "3.00"),
    ]
    response = api.get("alice", "/v1/reports/assets?period=2026-03&format=csv")
    assert response.headers["content-type"].startswith("text/csv")
    assert 'filename="assets-2026-03.csv"' in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["dataset_id"], r["records"], r["bytes"], r["revenue"], r["provisional"]) for r in rows] == [
        ("clinics", "2000", "3000", "2.00", "False"),
        ("traffic", "2200", "1500", "3.00", "False"),
    ]
    april = api.get("alice", "/v1/reports/assets?period=2026-04").json()
    assert april["provisional"] is True
    assert [(d["dataset_id"], d["revenue"], d["provisional"]) for d in april["datasets"]] == [
        ("traffic", "0.50", True)
    ]


@pytest.mark.parametrize(
    "query",
    ["period=2026-13", "period=abc", "period=2026-3", "period=" + quote("2026-03' OR 1=1 --"), "period=" + "9" * 5000,
     "period=" + quote("２０２６-03"), "period=" + quote("2026-03\n"), ""],
)  # fmt: skip
@pytest.mark.parametrize("path", ["/v1/statements", "/v1/reports/assets"])
def test_malformed_or_hostile_periods_are_422(api, path, query) -> None:
    body = refused(api.get("alice", f"{path}?{query}"), 422, "invalid_input", "period")
    assert len(body["message"]) < 300  # nothing the caller sent is echoed back unbounded


@pytest.mark.parametrize("format_", ["xml", "CSV", quote("json<script>")])
def test_an_unknown_report_format_is_422(api, format_) -> None:
    refused(
        api.get("alice", f"/v1/reports/assets?period=2026-03&format={format_}"),
        422,
        "invalid_input",
        "format",
    )


@pytest.mark.parametrize(
    ("statement_id", "status", "kind"),
    [
        ("a" * 65, 422, "invalid_input"),  # longer than any statement id
        ("-st", 422, "invalid_input"),
        (quote("st 1"), 422, "invalid_input"),
        (quote("../../etc/passwd", safe=""), 404, "not_found"),  # no such route
    ],
)
def test_malformed_statement_ids_are_refused(api, statement_id, status, kind) -> None:
    refused(api.get("alice", f"/v1/statements/{statement_id}"), status, kind)
