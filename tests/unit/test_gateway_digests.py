"""GET /v1/usage/digests and /v1/usage/digests/{id}/deliveries over HTTP: a tenant sees its own digests only
(another tenant's answers 404 like a missing one), an operator all, a provider none; hostile ids are refused;
the delivery ids served hash to the digest's root."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from digest_support import GLOBEX, ClosedMarch, close_march
from gateway_support import gateway_database
from test_gateway_api import FakeAuthorization, FakeCatalog

from pdo.core.config import Settings
from pdo.core.provenance import delivery_root
from pdo.core.serving import ServerThread
from pdo.gateway.app import create_app


@dataclass
class Served:
    http: httpx.Client
    keys: dict[str, str]
    march: ClosedMarch

    def get(self, who: str, path: str, **params) -> httpx.Response:
        return self.http.get(path, params=params, headers={"Authorization": f"Bearer {self.keys[who]}"})


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    engine, keys = gateway_database(tmp_path_factory.mktemp("digests"))
    march = close_march(engine, record=False)
    app = create_app(Settings.from_env(), FakeCatalog(), FakeAuthorization(), engine)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Served(http, keys, march)
    engine.dispose()


def ids_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [d["digest_id"] for d in response.json()["digests"]]


def test_a_tenant_lists_its_own_digests_by_period_grant_and_seq(served):
    assert ids_of(served.get("acme", "/v1/usage/digests", period="2026-03")) == [
        "g-acme-clinics.2026-03.1",
        "g-acme-trips.2026-03.1",
        "g-acme-trips.2026-03.2",
    ]
    assert ids_of(served.get("acme", "/v1/usage/digests", grant="g-acme-trips")) == [
        "g-acme-trips.2026-03.1",
        "g-acme-trips.2026-03.2",
    ]
    assert ids_of(served.get("acme", "/v1/usage/digests", grant="g-globex-trips")) == []
    assert ids_of(served.get("acme", "/v1/usage/digests", period="2026-04")) == []
    [digest] = served.get("globex", "/v1/usage/digests").json()["digests"]
    assert (digest["tenant_id"], digest["count"], digest["seq"]) == (GLOBEX, 4, 1)


def test_an_operator_sees_every_digest_in_pages(served):
    first = served.get("alice", "/v1/usage/digests", limit=3).json()
    assert (len(first["digests"]), first["next_offset"]) == (3, 3)
    rest = served.get("alice", "/v1/usage/digests", limit=3, offset=3).json()
    assert [d["digest_id"] for d in rest["digests"]] == ["g-globex-trips.2026-03.1"]
    assert rest["next_offset"] is None


def test_a_providers_key_is_refused(served):
    assert served.get("transport", "/v1/usage/digests").status_code == 403
    assert served.get("transport", "/v1/usage/digests/g-acme-trips.2026-03.1/deliveries").status_code == 403


def test_the_deliveries_of_a_digest_are_its_sorted_ids_and_hash_to_its_root(served):
    body = served.get("acme", "/v1/usage/digests/g-acme-trips.2026-03.2/deliveries").json()
    ids = body["delivery_ids"]
    assert ids == sorted(served.march.deliveries["g-acme-trips"][3:])
    assert (body["digest"]["count"], body["digest"]["root"]) == (2, delivery_root(ids).hex())
    assert (
        served.get("alice", "/v1/usage/digests/g-acme-trips.2026-03.2/deliveries").json()["delivery_ids"]
        == ids
    )


def test_another_tenants_digest_reads_as_missing(served):
    theirs = served.get("acme", "/v1/usage/digests/g-globex-trips.2026-03.1/deliveries")
    missing = served.get("acme", "/v1/usage/digests/g-nobody.2026-03.1/deliveries")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["message"] == "no delivery digest 'g-globex-trips.2026-03.1' among yours"
    assert "g-globex" not in missing.text


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/usage/digests/..%2F..%2Fetc/deliveries", {}),
        ("/v1/usage/digests/" + "a" * 201 + "/deliveries", {}),
        ("/v1/usage/digests/x%00y/deliveries", {}),
        ("/v1/usage/digests/' OR 1=1 --/deliveries", {}),
        ("/v1/usage/digests", {"period": "2026-13"}),
        ("/v1/usage/digests", {"grant": "g' OR '1'='1"}),
        ("/v1/usage/digests", {"limit": "0"}),
        ("/v1/usage/digests", {"offset": "-1"}),
    ],
)
def test_hostile_ids_and_parameters_are_refused(served, path, params):
    answer = served.get("acme", path, **params)
    assert answer.status_code in (404, 422), answer.text
    assert "g-globex" not in answer.text
