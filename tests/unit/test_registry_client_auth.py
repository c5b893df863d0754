"""pdo's registry client sends this process's Kafka user as HTTP Basic, and says what to fix when refused."""

from __future__ import annotations

import base64
import dataclasses

import httpx
import pytest

from pdo.core.config import Settings
from pdo.core.registry_client import RegistryClient, RegistryError

PASSWORD = "s3cret-pw-for-the-test"


@pytest.fixture
def answering(monkeypatch):
    """Builds the client as services do (`for_settings`), its HTTP answered by a stand-in registry."""

    def build(status: int, body: dict, seen: list[httpx.Request]) -> RegistryClient:
        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(status, json=body)

        real_client = httpx.Client
        monkeypatch.setattr(
            httpx, "Client", lambda **options: real_client(transport=httpx.MockTransport(answer), **options)
        )
        settings = dataclasses.replace(
            Settings.from_env(), kafka_username="service.catalog", kafka_password=PASSWORD
        )
        return RegistryClient.for_settings(settings)

    return build


def test_every_call_carries_the_process_credentials(answering):
    seen: list[httpx.Request] = []
    with answering(200, {"id": 7, "schema": "{}"}, seen) as client:
        assert client.register("pdo.usage-pdo.metering.v1.Usage", "{}") == 7
        assert client.schema_by_id(8) == "{}"
    expected = "Basic " + base64.b64encode(f"service.catalog:{PASSWORD}".encode()).decode()
    assert [request.headers["authorization"] for request in seen] == [expected, expected]


@pytest.mark.parametrize(
    "status, code, fix",
    [(401, 40101, "PDO_KAFKA_USERNAME / PDO_KAFKA_PASSWORD"), (403, 40301, "pdo acls list")],
)
def test_a_refusal_names_the_user_and_what_to_fix_never_the_password(answering, status, code, fix):
    with (
        answering(status, {"error_code": code, "message": "no"}, []) as client,
        pytest.raises(RegistryError) as refused,
    ):
        client.register("pdo.usage-pdo.metering.v1.Usage", "{}")
    shown = str(refused.value)
    assert "'service.catalog'" in shown and f"HTTP {status}" in shown and fix in refused.value.hint
    assert PASSWORD not in shown
    assert refused.value.error_code == code
