"""The tenant stream endpoint's pure parts: SSE formatting, JSON forms, resume ids; and its refusals
before any Kafka is touched (roles, missing grants, hostile Last-Event-ID values).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace

import httpx
import pytest
from conftest import ServerThread
from gateway_support import gateway_database
from hypothesis import given
from hypothesis import strategies as st

from pdo.core.codec import UndecodableError
from pdo.core.config import Settings
from pdo.core.errors import InvalidInput
from pdo.gateway import routes_streams as rs
from pdo.gateway.app import create_app

# ------------------------------------------------------------------------------------------ formatting


def test_an_event_has_its_name_id_and_one_data_line_per_line():
    assert rs.sse_event("record", '{"a":1}', "0-17") == 'event: record\nid: 0-17\ndata: {"a":1}\n\n'
    assert rs.sse_event("error", "x\ny") == "event: error\ndata: x\ndata: y\n\n"
    assert rs.sse_comment("heartbeat") == ": heartbeat\n\n"


def test_record_json_is_one_line_with_iso_dates_decimal_strings_and_base64_bytes():
    when = datetime(2026, 3, 1, 8, 30, 0, 123000, tzinfo=UTC)
    value = {
        "at": when,
        "day": date(2026, 3, 1),
        "fare": Decimal("12.50"),
        "blob": b"\x00\xffsecret",
        "id": uuid.UUID(int=1),
        "text": "two\nlines",
        "nested": {"items": [Decimal("1.0"), b"\x01"]},
        "nan": float("nan"),
    }
    line = rs.record_json(value)
    assert "\n" not in line
    back = json.loads(line)
    assert back["at"] == "2026-03-01T08:30:00.123000+00:00"
    assert back["day"] == "2026-03-01" and back["fare"] == "12.50"
    assert base64.b64decode(back["blob"]) == b"\x00\xffsecret"
    assert back["id"] == "00000000-0000-0000-0000-000000000001"
    assert back["text"] == "two\nlines" and back["nested"] == {"items": ["1.0", "AQ=="]}
    assert back["nan"] == "nan"


@given(st.dictionaries(st.integers(0, 10_000), st.integers(0, 2**63 - 1), max_size=20))
def test_event_ids_round_trip(positions):
    assert rs.parse_last_event_id(rs.format_event_id(positions)) == positions


def test_event_ids_list_partitions_in_order():
    assert rs.format_event_id({2: 4, 0: 17}) == "0-17.2-4"
    assert rs.parse_last_event_id("0-17.2-4") == {0: 17, 2: 4}
    assert rs.parse_last_event_id(None) == {} and rs.parse_last_event_id("  ") == {}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("17", "part 1 ('17') is not '<partition>-<offset>'"),
        ("0-1.", "part 2 ('') is not"),
        ("0--1", "is not '<partition>-<offset>'"),
        ("00-1", "without leading zeros"),
        ("0-1e3", "is not"),
        ("0-١٢", "is not"),  # Arabic-Indic digits: int() would take them
        ("0-1.0-2", "names partition 0 twice"),
        ("0-99999999999999999999", "is not"),  # 20 digits
        ("0-9999999999999999999", "beyond any Kafka offset"),
        ("0-1" + ".1-1" * 400, "at most 1024 are accepted"),
        ("0-1\x00", "'0-1\\x00'"),
        ("<script>-1", "'<script>-1'"),
    ],
)
def test_hostile_last_event_ids_are_refused_precisely(raw, fragment):
    with pytest.raises(InvalidInput) as refused:
        rs.parse_last_event_id(raw)
    assert fragment in refused.value.message
    assert len(refused.value.message) < 200


def test_resume_positions_must_exist_on_the_topic():
    rs.check_positions({0: 3, 2: 0}, {0: 4, 1: 0, 2: 1})
    with pytest.raises(InvalidInput, match="names partition 5, but the stream has partitions 0-2"):
        rs.check_positions({5: 0}, {0: 4, 1: 0, 2: 1})
    with pytest.raises(InvalidInput, match="offset 4 on partition 0 was never written"):
        rs.check_positions({0: 4}, {0: 4, 1: 0, 2: 1})


def test_undecodable_records_become_outcomes_without_their_bytes():
    class Codec:
        def decode(self, data):
            if data.startswith(b"bad"):
                raise UndecodableError(f"cannot read {data!r}")
            return SimpleNamespace(value={"v": data.decode()})

    messages = [SimpleNamespace(partition=0, offset=i, value=v) for i, v in enumerate([b"ok", b"bad secret"])]
    good, bad = rs.decode_all(Codec(), messages)
    assert good == rs.Outcome(0, 0, {"v": "ok"})
    assert bad == rs.Outcome(0, 1, None, "UNDECODABLE")


# --------------------------------------------------------------------------- refusals before any Kafka


class Grants:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def list_grants(self, tenant_id=None, dataset_id=None, status=None):
        self.calls.append((tenant_id, dataset_id))
        return []


class NoKafka(rs.StreamHub):
    def consumer(self):
        raise AssertionError("a refused request must not reach Kafka")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[tuple[httpx.Client, dict[str, str], Grants]]:

    engine, keys = gateway_database(
        tmp_path_factory.mktemp("streams"),
        (("tenant", "acme"), ("provider", "transport"), ("operator", "alice")),
    )
    grants = Grants()
    settings = Settings.from_env()
    app = create_app(settings, None, grants, engine, feeds=SimpleNamespace(), streams=NoKafka(settings))
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield http, keys, grants
    engine.dispose()


def get(gateway, who: str | None, path: str = "/v1/streams/transport-trips", **headers) -> httpx.Response:
    http, keys, _ = gateway
    if who:
        headers["Authorization"] = f"Bearer {keys[who]}"
    return http.get(path, headers=headers)


@pytest.mark.parametrize("who", ["transport", "alice"])
def test_only_tenants_may_stream(gateway, who):
    response = get(gateway, who)
    assert response.status_code == 403 and response.json()["error"] == "forbidden"


def test_no_key_is_401(gateway):
    assert get(gateway, None).status_code == 401


def test_no_grant_is_404_and_the_stream_is_the_callers_own(gateway):
    response = get(gateway, "acme")
    assert response.status_code == 404, response.text
    assert response.json()["message"] == "you have no stream of dataset 'transport-trips'"
    assert gateway[2].calls[-1] == ("tenant:acme", "transport-trips")


def test_a_hostile_last_event_id_is_422_before_any_lookup(gateway):
    before = len(gateway[2].calls)
    response = get(gateway, "acme", **{"Last-Event-ID": "0-1;DROP TABLE"})
    assert response.status_code == 422
    assert "Last-Event-ID part 1 ('0-1;DROP TABLE') is not" in response.json()["message"]
    assert len(gateway[2].calls) == before


@pytest.mark.parametrize(
    "query", ["from=middle", "limit=0", "limit=-1", "idle_timeout_s=0", "idle_timeout_s=nan", "limit=x"]
)
def test_bad_query_values_are_422(gateway, query):
    response = get(gateway, "acme", path=f"/v1/streams/transport-trips?{query}")
    assert response.status_code == 422 and response.json()["error"] == "invalid_input"


def test_metrics_are_declared(gateway):
    text = gateway[0].get("/metrics", headers={"Authorization": f"Bearer {gateway[1]['alice']}"}).text
    assert "pdo_gateway_open_streams 0.0" in text
    assert "# TYPE pdo_gateway_stream_records_total counter" in text
