"""The gateway's HTTP ingest with a fake catalog and a fake Kafka producer: who may publish where, what a
batch answers, the limits, and the metric. The real broker, registry and catalog are in the integration tests.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ServerThread

from pdo.catalog.public import Dataset
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.errors import NotFound
from pdo.core.vocabulary import Classification, Domain, Openness, PriceKind, PricePlan
from pdo.gateway.app import create_app
from pdo.gateway.principals import PrincipalStore
from pdo.publishing.public import FeedPublishers

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_TEXT = json.dumps(
    json.loads((ROOT / "deploy/examples/air-quality.dataset.json").read_text())["record_schema"]
)
RECORDS = [
    json.loads(line) for line in (ROOT / "deploy/examples/air-quality.records.jsonl").read_text().splitlines()
]
OWNER = "provider:ecology"


def dataset(dataset_id: str, **changes) -> Dataset:
    base = Dataset(
        dataset_id=dataset_id,
        provider_id=OWNER,
        owner_department="Ecology and Environment Bureau",
        title="Air quality",
        domain=Domain.ENVIRONMENT,
        classification=Classification.GENERAL,
        openness=Openness.OPEN,
        schema_subject=f"pdo.feed.{dataset_id}-pdo.datasets.v1.AirQuality",
        schema_id=7,
        record_schema=SCHEMA_TEXT,
        price_plan=PricePlan(PriceKind.FREE),
    )
    return dataclasses.replace(base, **changes)


class Catalog:
    def __init__(self, *datasets: Dataset) -> None:
        self.datasets = {item.dataset_id: item for item in datasets}

    def get(self, dataset_id: str) -> Dataset:
        if dataset_id not in self.datasets:
            raise NotFound(f"no dataset {dataset_id!r} in the catalog")
        return self.datasets[dataset_id]


class Ack:
    def get(self, timeout=None) -> str:
        return "metadata"


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> Ack:
        self.sent.append((topic, key))
        return Ack()

    def close(self, timeout=None) -> None:
        pass


@dataclasses.dataclass
class Gateway:
    http: httpx.Client
    producer: Producer
    keys: dict[str, str]

    def post(self, who: str, dataset_id: str, body) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[who]}"}
        return self.http.post(f"/v1/datasets/{dataset_id}/records", json=body, headers=headers)

    def metric(self, **labels: str) -> float:
        operator = {"Authorization": f"Bearer {self.keys['alice']}"}
        for line in self.http.get("/metrics", headers=operator).text.splitlines():
            if line.startswith("pdo_gateway_ingested_records_total{") and all(
                f'{k}="{v}"' in line for k, v in labels.items()
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    url = f"sqlite:///{tmp_path_factory.mktemp('ingest') / 'pdo.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    store = PrincipalStore(engine)
    keys = {}
    for kind, name in [
        ("provider", "ecology"),
        ("provider", "transport"),
        ("tenant", "acme"),
        ("operator", "alice"),
    ]:
        keys[name] = store.issue_key(store.create_principal(kind, name).principal_id).key
    catalog = Catalog(dataset("air-quality"), dataset("old-air", retired=True))
    producer = Producer()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pdo.publishing.publisher.kafka_producer", lambda _settings, **_config: producer)
        app = create_app(
            Settings.from_env(), catalog, None, engine, feeds=FeedPublishers(Settings.from_env())
        )
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
            yield Gateway(http, producer, keys)
    engine.dispose()


def test_the_owner_publishes_a_batch(gateway):
    before = len(gateway.producer.sent)

    response = gateway.post("ecology", "air-quality", {"records": RECORDS})

    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 20, "rejected": [], "duplicates": []}
    sent = gateway.producer.sent[before:]
    assert [key.decode() for _, key in sent] == [record["record_id"] for record in RECORDS]
    assert {topic for topic, _ in sent} == {"pdo.feed.air-quality"}


def test_a_mixed_batch_sends_the_good_and_lists_the_bad(gateway):
    accepted_before = gateway.metric(dataset="air-quality", outcome="accepted")
    rejected_before = gateway.metric(dataset="air-quality", outcome="rejected")
    batch = [RECORDS[0], {**RECORDS[1], "pm25": "high"}, 42]

    response = gateway.post("ecology", "air-quality", {"records": batch})

    assert response.status_code == 200, response.text
    assert response.json() == {
        "accepted": 1,
        "rejected": [
            {"index": 1, "reason": "pm25: expected double, got 'high'"},
            {"index": 2, "reason": "expected record AirQuality (a JSON object), got 42"},
        ],
        "duplicates": [],
    }
    assert gateway.metric(dataset="air-quality", outcome="accepted") == accepted_before + 1
    assert gateway.metric(dataset="air-quality", outcome="rejected") == rejected_before + 2


def test_a_batch_with_nothing_valid_is_422_with_every_reason(gateway):
    response = gateway.post("ecology", "air-quality", {"records": [{**RECORDS[0], "aqi": "bad"}, {}]})

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_input"
    assert body["accepted"] == 0
    assert [item["index"] for item in body["rejected"]] == [0, 1]
    assert "aqi: expected int, got 'bad'" in body["message"]
    assert body["rejected"][1]["reason"].startswith("record_id: is missing")


def test_nan_in_the_body_is_refused_per_record(gateway):
    body = '{"records": [' + json.dumps(RECORDS[0])[:-1] + ', "pm10": NaN}]}'
    body = body.replace('"pm10": 57.7, ', "")

    response = gateway.http.post(
        "/v1/datasets/air-quality/records",
        content=body,
        headers={"Authorization": f"Bearer {gateway.keys['ecology']}", "Content-Type": "application/json"},
    )

    assert response.status_code == 422, response.text
    assert "pm10: NaN is not a finite number" in response.json()["rejected"][0]["reason"]


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"records": [RECORDS[0]] * 1001}, "at most 1000"),
        ({"records": []}, "at least 1"),
        ({}, "body.records"),
        ({"records": RECORDS[:1], "extra": True}, "body.extra"),
        ({"records": "all of them"}, "body.records"),
    ],
)
def test_malformed_batches_are_422(gateway, body, fragment):
    response = gateway.post("ecology", "air-quality", body)

    assert response.status_code == 422, response.text
    assert fragment in response.text


def test_another_providers_dataset_is_403(gateway):
    response = gateway.post("transport", "air-quality", {"records": RECORDS[:1]})

    assert response.status_code == 403
    assert "belongs to another provider" in response.json()["message"]


@pytest.mark.parametrize("who", ["acme", "alice"])
def test_tenants_and_operators_may_not_publish(gateway, who):
    response = gateway.post(who, "air-quality", {"records": RECORDS[:1]})

    assert response.status_code == 403
    assert "only providers may do this" in response.json()["message"]


def test_no_key_is_401(gateway):
    response = gateway.http.post("/v1/datasets/air-quality/records", json={"records": RECORDS[:1]})

    assert response.status_code == 401


def test_unknown_dataset_is_404_and_not_counted(gateway):
    response = gateway.post("ecology", "no-such-data", {"records": RECORDS[:1]})

    assert response.status_code == 404
    assert gateway.metric(dataset="no-such-data") == 0


def test_retired_dataset_is_409(gateway):
    response = gateway.post("ecology", "old-air", {"records": RECORDS[:1]})

    assert response.status_code == 409
    assert response.json()["error"] == "conflict"


def test_the_route_is_in_the_api_description(gateway):
    spec = gateway.http.get("/openapi.json").json()

    assert "post" in spec["paths"]["/v1/datasets/{dataset_id}/records"]
