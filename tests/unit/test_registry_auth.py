"""The schema registry's gate: HTTP Basic with pdo's Kafka users, roles, and parties limited to their topics.

The registry runs in-process with stand-ins for Kafka: a table of passwords and of the topics each party's
ACLs reach. The attacks of issue #10 (anonymous register, compatibility change, delete; a tenant reading
another tenant's or a feed's subject) are refused; what services and parties need still works.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed
from conftest import serving_registry
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourceType,
)

from pdo.core.config import Settings
from pdo.registry.auth import (
    CachedAuthenticator,
    Guard,
    KafkaAclAccess,
    KafkaLogin,
    Role,
    may_read,
    role_of,
    topic_of_subject,
)
from pdo.registry.errors import RegistryError

PASSWORDS = {
    "admin": "admin-pw",
    "service.catalog": "catalog-pw",
    "tenant.acme": "acme-pw",
    "tenant.globex": "globex-pw",
    "provider.bureau": "bureau-pw",
}
READABLE = {  # what each party's ACLs let it read or write
    "tenant.acme": ("pdo.tenant.acme.",),
    "tenant.globex": ("pdo.tenant.globex.",),
    "provider.bureau": ("pdo.feed.trips",),
}
SCHEMA = json.dumps(
    {"type": "record", "name": "Trip", "namespace": "t.v1", "fields": [{"name": "id", "type": "string"}]}
)
ACME_SUBJECT = "pdo.tenant.acme.trips-t.v1.Trip"
GLOBEX_SUBJECT = "pdo.tenant.globex.trips-t.v1.Trip"
FEED_SUBJECT = "pdo.feed.trips-t.v1.Trip"


def guard(metrics) -> Guard:
    return Guard(
        lambda user, password: PASSWORDS.get(user) == password,
        lambda user, topic: any(topic.startswith(prefix) for prefix in READABLE.get(user, ())),
        metrics,
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[str]:
    with serving_registry(f"sqlite:///{tmp_path_factory.mktemp('registry') / 'registry.db'}", guard) as url:
        with httpx.Client(base_url=url, auth=("service.catalog", "catalog-pw")) as catalog:
            for subject in (ACME_SUBJECT, GLOBEX_SUBJECT, FEED_SUBJECT):
                assert (
                    catalog.post(f"/subjects/{subject}/versions", json={"schema": SCHEMA}).status_code == 200
                )
        yield url


def as_(registry: str, user: str | None, password: str | None = None) -> httpx.Client:
    auth = (user, password or PASSWORDS[user]) if user else None
    return httpx.Client(base_url=registry, auth=auth, timeout=30)


def schema_id(registry: str) -> int:
    with as_(registry, "admin") as admin:
        return admin.get(f"/subjects/{ACME_SUBJECT}/versions/latest").json()["id"]


# ---------------------------------------------------------------------------------------------- anonymous


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", f"/subjects/{ACME_SUBJECT}/versions", {"schema": SCHEMA}),
        ("PUT", "/config", {"compatibility": "NONE"}),
        ("PUT", f"/config/{FEED_SUBJECT}", {"compatibility": "NONE"}),
        ("DELETE", f"/subjects/{FEED_SUBJECT}", None),
        ("DELETE", f"/subjects/{FEED_SUBJECT}?permanent=true", None),
        ("GET", "/subjects", None),
        ("GET", "/schemas/ids/1", None),
    ],
)
def test_without_credentials_nothing_is_answered(registry, method, path, body):
    with as_(registry, None) as anonymous:
        response = anonymous.request(method, path, json=body)
    assert response.status_code == 401
    assert response.json()["error_code"] == 40101
    assert response.headers["www-authenticate"].startswith("Basic")
    assert "basic.auth.user.info" in response.json()["message"]


def test_a_wrong_password_or_a_malformed_header_is_refused(registry):
    with as_(registry, "admin", "guess") as wrong:
        assert wrong.get("/subjects").status_code == 401
    raw = httpx.get(f"{registry}/subjects", headers={"Authorization": "Basic !!!not-base64"})
    assert raw.status_code == 401


def test_metrics_need_no_credentials_and_count_refusals(registry):
    with as_(registry, None) as anonymous:
        anonymous.get("/subjects")
        text = anonymous.get("/metrics").text
    assert 'pdo_registry_refusals_total{reason="unauthenticated"}' in text


# ---------------------------------------------------------------------------------------------- parties


def test_a_tenant_reads_its_own_subjects_only(registry):
    with as_(registry, "tenant.acme") as acme:
        assert acme.get("/subjects").json() == [ACME_SUBJECT]
        assert acme.get(f"/subjects/{ACME_SUBJECT}/versions/latest").status_code == 200
        for subject in (GLOBEX_SUBJECT, FEED_SUBJECT):
            refused = acme.get(f"/subjects/{subject}/versions/latest")
            assert refused.status_code == 403 and refused.json()["error_code"] == 40301
            assert SCHEMA not in refused.text


def test_confluents_deserializer_path_by_id_works_for_the_tenant_and_not_for_another(registry):
    identity = schema_id(registry)
    with as_(registry, "tenant.acme") as acme:
        assert json.loads(acme.get(f"/schemas/ids/{identity}").json()["schema"])["name"] == "Trip"
        assert acme.get(f"/schemas/ids/{identity}/subjects").json() == [ACME_SUBJECT]
    with as_(registry, "provider.bureau") as provider:  # the same schema sits under the feed's subject
        assert provider.get(f"/schemas/ids/{identity}/subjects").json() == [FEED_SUBJECT]


def test_a_party_with_no_subject_holding_the_id_gets_nothing(registry):
    with as_(registry, "admin") as admin:
        other = json.dumps({"type": "record", "name": "Secret", "fields": [{"name": "x", "type": "int"}]})
        identity = admin.post(
            "/subjects/pdo.usage-pdo.metering.v1.Secret/versions", json={"schema": other}
        ).json()["id"]
    with as_(registry, "tenant.acme") as acme:
        assert acme.get(f"/schemas/ids/{identity}").status_code == 403


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", f"/subjects/{ACME_SUBJECT}/versions", {"schema": SCHEMA}),
        ("PUT", "/config", {"compatibility": "NONE"}),
        ("PUT", f"/config/{ACME_SUBJECT}", {"compatibility": "NONE"}),
        ("DELETE", f"/config/{ACME_SUBJECT}", None),
        ("DELETE", f"/subjects/{ACME_SUBJECT}", None),
        ("DELETE", f"/subjects/{ACME_SUBJECT}/versions/1?permanent=true", None),
    ],
)
def test_parties_change_nothing_not_even_their_own_subjects(registry, method, path, body):
    with as_(registry, "tenant.acme") as acme:
        response = acme.request(method, path, json=body)
    assert response.status_code == 403, response.text
    with as_(registry, "admin") as admin:
        assert admin.get(f"/subjects/{ACME_SUBJECT}/versions").json() == [1]


# ---------------------------------------------------------------------------------------------- services and operators


def test_a_service_registers_and_may_only_tighten_a_subject_to_full_transitive(registry):
    with as_(registry, "service.catalog") as catalog:
        assert (
            catalog.put(f"/config/{FEED_SUBJECT}", json={"compatibility": "FULL_TRANSITIVE"}).status_code
            == 200
        )
        assert catalog.put(f"/config/{FEED_SUBJECT}", json={"compatibility": "NONE"}).status_code == 403
        assert catalog.put("/config", json={"compatibility": "NONE"}).status_code == 403
        assert catalog.delete(f"/subjects/{FEED_SUBJECT}").status_code == 403
        assert {ACME_SUBJECT, GLOBEX_SUBJECT, FEED_SUBJECT} <= set(catalog.get("/subjects").json())


def test_only_an_operator_deletes_and_changes_compatibility(registry):
    with as_(registry, "admin") as admin:
        assert admin.put("/config", json={"compatibility": "BACKWARD"}).status_code == 200
        extra = "pdo.tenant.acme.extra-t.v1.Trip"
        assert admin.post(f"/subjects/{extra}/versions", json={"schema": SCHEMA}).status_code == 200
        assert admin.delete(f"/subjects/{extra}").json() == [1]


# ---------------------------------------------------------------------------------------------- pure rules


def test_roles_follow_the_user_names():
    assert role_of("admin") is Role.OPERATOR and role_of("operator.alice") is Role.OPERATOR
    assert role_of("service.sharing") is Role.SERVICE
    assert role_of("tenant.acme") is Role.PARTY and role_of("provider.x") is Role.PARTY
    assert role_of("administrator") is Role.PARTY and role_of("service") is Role.PARTY


def test_a_subject_names_its_topic():
    assert topic_of_subject("pdo.tenant.acme-corp.traffic-flow-pdo.datasets.v1.TrafficFlow") == (
        "pdo.tenant.acme-corp.traffic-flow"
    )
    assert topic_of_subject("pdo.dead-letters-value") == "pdo.dead-letters"


def acl(name: str, pattern: str, operation: str = "READ", permission: str = "ALLOW") -> ACL:
    return ACL(
        principal="User:tenant.acme",
        host="*",
        operation=ACLOperation[operation],
        permission_type=ACLPermissionType[permission],
        resource_pattern=ResourcePattern(ResourceType.TOPIC, name, ACLResourcePatternType[pattern]),
    )


def test_acl_matching_literal_prefixed_wildcard_and_deny_wins():
    topic = "pdo.tenant.acme.trips"
    assert may_read([acl(topic, "LITERAL")], topic)
    assert not may_read([acl(topic, "LITERAL")], topic + "-more")
    assert may_read([acl("pdo.tenant.acme.", "PREFIXED")], topic)
    assert not may_read([acl("pdo.tenant.acme.", "PREFIXED")], "pdo.tenant.acmex.trips")
    assert may_read([acl("*", "LITERAL", "WRITE")], topic)
    assert not may_read([acl(topic, "LITERAL", "DESCRIBE")], topic)  # describing is not reading
    assert not may_read([acl("pdo.tenant.", "PREFIXED"), acl(topic, "LITERAL", "ALL", "DENY")], topic)
    assert not may_read([acl("*", "LITERAL"), acl("pdo.tenant.", "PREFIXED", "READ", "DENY")], topic)
    assert not may_read([acl("*", "PREFIXED")], topic)  # Kafka's wildcard is LITERAL '*' only
    assert not may_read([], topic)


def test_acls_are_asked_once_per_user_until_their_cache_time_ends():
    listed: list[str] = []
    held = {"tenant.acme": [acl("pdo.tenant.acme.", "PREFIXED")]}
    now = [0.0]

    def list_acls(user: str) -> list[ACL]:
        listed.append(user)
        return list(held.get(user, []))

    access = KafkaAclAccess(list_acls, ttl_s=5, clock=lambda: now[0])
    assert access("tenant.acme", "pdo.tenant.acme.trips") and access("tenant.acme", "pdo.tenant.acme.bus")
    assert not access("tenant.globex", "pdo.tenant.acme.trips")
    assert listed == ["tenant.acme", "tenant.globex"]
    held["tenant.acme"] = []  # the operator removes the tenant's ACLs
    now[0] = 5
    assert not access("tenant.acme", "pdo.tenant.acme.trips")
    assert listed.count("tenant.acme") == 2


def test_a_checked_password_is_trusted_for_the_cache_time_and_a_wrong_one_never_is():
    calls: list[tuple[str, str]] = []
    valid = {"tenant.acme": "right"}
    now = [0.0]

    def check(user: str, password: str) -> bool:
        calls.append((user, password))
        return valid.get(user) == password

    cached = CachedAuthenticator(check, ttl_s=30, clock=lambda: now[0])
    assert cached("tenant.acme", "right") and cached("tenant.acme", "right")
    assert len(calls) == 1
    assert not cached("tenant.acme", "wrong") and not cached("tenant.acme", "wrong")
    assert len(calls) == 3  # failures are asked every time
    del valid["tenant.acme"]  # the user is removed from Kafka
    assert cached("tenant.acme", "right")  # still inside the cache time
    now[0] = 31
    assert not cached("tenant.acme", "right")


class StandInBroker:
    """aiokafka's create_conn as the broker would answer it: a login with the right password connects."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure
        self.logins: list[dict] = []
        self.closed = 0

    async def __call__(self, host: str, port: int, **options):
        self.logins.append({"address": (host, port), **options})
        if self.failure is not None:
            raise self.failure
        if options["sasl_plain_password"] != PASSWORDS.get(options["sasl_plain_username"]):
            raise SaslAuthenticationFailed(
                "Authentication failed during authentication due to invalid credentials"
            )
        return self

    def close(self) -> None:
        self.closed += 1


def kafka_login(broker: StandInBroker) -> KafkaLogin:
    settings = dataclasses.replace(
        Settings.from_env(),
        kafka_bootstrap="broker-1:9094,broker-2:9094",
        kafka_security_protocol="SASL_PLAINTEXT",
    )
    return KafkaLogin(settings, connect=broker)


def test_a_password_is_checked_by_a_scram_login_to_the_broker():
    broker = StandInBroker()
    login = kafka_login(broker)
    assert login("tenant.acme", "acme-pw")
    assert not login("tenant.acme", "globex-pw") and not login("nobody", "")
    assert broker.closed == 1  # the one successful login's connection is not left open
    first = broker.logins[0]
    assert first["address"] == ("broker-1", 9094)
    assert (first["security_protocol"], first["sasl_mechanism"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")


def test_a_broker_that_cannot_answer_is_a_503_never_a_refusal_or_a_pass():
    for failure in (KafkaConnectionError("refused"), OSError("unreachable"), TimeoutError()):
        with pytest.raises(RegistryError) as unavailable:
            kafka_login(StandInBroker(failure))("tenant.acme", "acme-pw")
        assert (unavailable.value.status, unavailable.value.code) == (503, 50301)
