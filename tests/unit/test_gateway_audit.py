"""/v1/audit over HTTP (a served app on SQLite): each role on each route, filters and paging, a tenant seeing only
entries about itself, hostile numbers and dates refused with a hint, the auditor confined to /v1/audit, and
the answers' exact shapes (what part 4 and tenants' verifiers code against) verified offline."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastapi
import httpx
import pytest
from conftest import ServerThread
from gateway_support import EVERYONE, audit_signing_key, gateway_database
from test_gateway_api import FakeAuthorization, FakeCatalog

from pdo.audit.checkpoints import Signer
from pdo.audit.store import AuditStore, Entry
from pdo.audit.verify import Unsound, verify_answer
from pdo.core import merkle
from pdo.core.config import Settings
from pdo.gateway.app import create_app
from pdo.gateway.kafka_credentials import InMemoryUsers, KafkaCredentialIssuer

START = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
PARTIES = (*EVERYONE, ("auditor", "carol"))
ROLES = ("carol", "alice", "acme", "transport")  # auditor, operator, tenant, provider


def entry(n: int, tenant: str | None, action: str = "grant.granted", actor: str = "operator:alice") -> Entry:
    details = {"tenant": tenant, "dataset": "trips"} if tenant else {"dataset": "trips"}
    return Entry(
        actor, action, f"grant:g-{n}", f"reason {n}", f"src@{n}", START + timedelta(minutes=n), details
    )


# seq: 0 acme, 1 globex, 2 none, 3 acme | checkpoint 4 | 4 globex, 5 acme, 6 acme (revoked) | checkpoint 7 | 7 acme
FIRST = [entry(0, "tenant:acme"), entry(1, "tenant:globex"), entry(2, None), entry(3, "tenant:acme")]
SECOND = [
    entry(4, "tenant:globex"),
    entry(5, "tenant:acme"),
    entry(6, "tenant:acme", action="grant.revoked", actor="service.authorization"),
]
UNSIGNED = [entry(7, "tenant:acme")]


@dataclass
class Gateway:
    http: httpx.Client
    app: fastapi.FastAPI
    keys: dict[str, str]
    store: AuditStore
    signer: Signer
    public_key_file: Path

    def get(self, who: str | None, path: str, **params) -> dict | list:
        response = self.call(who, path, **params)
        assert response.status_code == 200, response.text
        return response.json()

    def call(self, who: str | None, path: str, **params):
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return self.http.get(f"/v1/audit/{path}", params=params, headers=headers)


def settings_with_key(key_file: Path) -> Settings:
    return dataclasses.replace(
        Settings.from_env(),
        audit_signing_key_file=str(key_file),
        gateway_rate_per_s=10_000,
        gateway_rate_burst=10_000,
    )


def serve(folder: Path, fill: bool) -> Iterator[Gateway]:
    engine, keys = gateway_database(folder, PARTIES)
    settings = settings_with_key(audit_signing_key(folder))
    signer = Signer.from_settings(settings)
    store = AuditStore(engine)
    if fill:
        for batch in (FIRST, SECOND):
            store.append(batch)
            store.checkpoint(signer)
        store.append(UNSIGNED)
    public_key_file = folder / "audit.pub"
    public_key_file.write_text(signer.public_key_pem())
    issuer = KafkaCredentialIssuer(settings, lambda provider: [], InMemoryUsers())
    app = create_app(
        settings,
        FakeCatalog(),
        FakeAuthorization(),
        engine,
        dead_letters=lambda limit: [],
        kafka_credentials=issuer,
    )
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Gateway(http, app, keys, store, signer, public_key_file)
    engine.dispose()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    yield from serve(tmp_path_factory.mktemp("audit-api"), fill=True)


@pytest.fixture(scope="module")
def empty(tmp_path_factory) -> Iterator[Gateway]:
    yield from serve(tmp_path_factory.mktemp("audit-api-empty"), fill=False)


def seqs(answer) -> list[int]:
    return [e["seq"] for e in answer["entries"]]


def refusal(response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == kind and body["message"] and body["hint"], body
    return body


# ------------------------------------------------------------------------------------------------- shapes


def test_an_entry_carries_its_stored_body_leaf_hash_and_decoded_fields(gateway):
    answer = gateway.get("carol", "entries", limit=1)
    assert set(answer) == {"entries", "next_after"}
    (first,) = answer["entries"]
    stored = gateway.store.entries(0, 1)[0]
    assert first == {
        "seq": 0,
        "body": stored.body,
        "leaf_hash": stored.leaf_hash.hex(),
        "actor": "operator:alice",
        "action": "grant.granted",
        "subject": "grant:g-0",
        "reason": "reason 0",
        "occurred_at": "2026-11-30T09:00:00.000Z",
        "details": {"tenant": "tenant:acme", "dataset": "trips"},
    }
    assert merkle.leaf_hash(first["body"].encode()).hex() == first["leaf_hash"]


def test_checkpoints_latest_and_all_carry_the_signed_note(gateway):
    latest = gateway.get("carol", "checkpoints/latest")
    assert set(latest) == {"origin", "size", "root", "signed_at", "key_id", "signature", "note"}
    assert latest["size"] == 7 and latest["key_id"] == gateway.signer.key_id
    assert latest["note"] == f"{latest['origin']}\n7\n{latest['root']}\n"
    assert [c["size"] for c in gateway.get("carol", "checkpoints")] == [4, 7]
    assert gateway.get("alice", "checkpoints")[-1] == latest


def test_a_proof_answer_has_the_entry_its_checkpoint_and_the_path(gateway):
    answer = gateway.get("carol", "proof", entry=2, size=4)
    assert set(answer) == {"entry", "checkpoint", "inclusion"}
    assert answer["entry"]["seq"] == 2 and answer["checkpoint"]["size"] == 4
    hashes = gateway.store.leaf_hashes(end=4)
    assert answer["inclusion"] == {
        "leaf_index": 2,
        "tree_size": 4,
        "path": [node.hex() for node in merkle.inclusion_proof(2, hashes)],
    }
    assert gateway.get("carol", "proof", entry=2)["checkpoint"]["size"] == 7  # the latest by default


def test_a_consistency_answer_has_both_checkpoints_and_the_proof(gateway):
    answer = gateway.get("carol", "consistency", first=4, second=7)
    assert set(answer) == {"first", "second", "proof"}
    assert (answer["first"]["size"], answer["second"]["size"]) == (4, 7)
    hashes = gateway.store.leaf_hashes(end=7)
    assert answer["proof"] == [node.hex() for node in merkle.consistency_proof(4, hashes)]


def test_the_public_key_is_served_as_pem_to_any_principal(gateway):
    for who in (*ROLES, "globex"):
        response = gateway.call(who, "public-key")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == gateway.signer.public_key_pem()


def test_a_configured_public_key_file_is_what_is_served(gateway, tmp_path):
    other = Signer.from_settings(settings_with_key(audit_signing_key(tmp_path)))
    served = tmp_path / "served.pub"
    served.write_text(other.public_key_pem())
    settings = gateway.app.state.settings
    gateway.app.state.settings = dataclasses.replace(settings, audit_public_key_file=str(served))
    try:
        assert gateway.call("acme", "public-key").text == other.public_key_pem()
        served.write_text("not a key")
        refusal(gateway.call("acme", "public-key"), 503, "unavailable")
    finally:
        gateway.app.state.settings = settings


# -------------------------------------------------------------------------------------------------- roles

READS = [
    ("entries", {}),
    ("checkpoints", {}),
    ("checkpoints/latest", {}),
    ("proof", {"entry": 0}),
    ("consistency", {"first": 4, "second": 7}),
]


@pytest.mark.parametrize("path,params", READS)
def test_auditors_operators_and_tenants_read_and_providers_are_refused(gateway, path, params):
    for who in ("carol", "alice", "acme"):
        assert gateway.call(who, path, **params).status_code == 200, who
    refusal(gateway.call("transport", path, **params), 403, "forbidden")
    refusal(gateway.call(None, path, **params), 401, "unauthenticated")


def test_auditors_and_operators_see_every_entry(gateway):
    assert seqs(gateway.get("carol", "entries")) == list(range(8))
    assert seqs(gateway.get("alice", "entries")) == list(range(8))


def test_an_auditor_may_call_nothing_outside_the_audit_routes(gateway):
    """Every route of the app but /v1/audit's (every write among them) and /v1/me (who the key is) answers an
    auditor's key 403."""
    headers = {"Authorization": f"Bearer {gateway.keys['carol']}"}
    routes = [
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, operations in gateway.app.openapi()["paths"].items()
        if path.startswith("/v1/") and not path.startswith("/v1/audit/") and path != "/v1/me"
        for method in operations
    ]
    writes = [(method, path) for method, path in routes if method in ("POST", "PUT", "PATCH", "DELETE")]
    assert len(writes) >= 10 and ("POST", "/v1/requests/x/approve") in writes
    for method, path in routes:
        response = gateway.http.request(method, path, json={}, headers=headers)
        assert response.status_code == 403 and "auditor" in response.json()["message"], (method, path)
    assert gateway.http.get("/metrics", headers=headers).status_code == 403
    me = gateway.http.get("/v1/me", headers=headers)
    assert me.status_code == 200 and me.json()["kind"] == "auditor", me.text


# ------------------------------------------------------------------------------------------------ tenants


def test_a_tenant_sees_only_the_entries_about_itself(gateway):
    assert seqs(gateway.get("acme", "entries")) == [0, 3, 5, 6, 7]
    assert seqs(gateway.get("globex", "entries")) == [1, 4]
    assert seqs(gateway.get("acme", "entries", tenant="tenant:globex")) == []
    assert seqs(gateway.get("acme", "entries", tenant="tenant:acme", action="grant.revoked")) == [6]


def test_a_tenant_gets_the_proof_of_its_own_entry_and_404_for_anyone_elses(gateway):
    assert gateway.get("acme", "proof", entry=3)["entry"]["seq"] == 3
    others = [gateway.call("acme", "proof", entry=n) for n in (1, 2, 4)]
    messages = set()
    for response in others:
        body = refusal(response, 404, "not_found")
        assert "globex" not in json.dumps(body)
        messages.add(re.sub(r"\d+", "N", body["message"]))
    assert messages == {"no audit entry N about you"}  # one message, whoever the entry is about


# ------------------------------------------------------------------------------------------------ filters


def test_filters_by_subject_action_actor_and_tenant(gateway):
    assert seqs(gateway.get("carol", "entries", subject="grant:g-4")) == [4]
    assert seqs(gateway.get("carol", "entries", action="grant.revoked")) == [6]
    assert seqs(gateway.get("carol", "entries", actor="service.authorization")) == [6]
    assert seqs(gateway.get("carol", "entries", tenant="tenant:globex")) == [1, 4]
    assert seqs(gateway.get("carol", "entries", tenant="tenant:acme", subject="grant:g-1")) == []


def test_since_and_until_select_on_occurred_at(gateway):
    since = (START + timedelta(minutes=2)).isoformat()
    until = (START + timedelta(minutes=5)).isoformat()
    assert seqs(gateway.get("carol", "entries", since=since, until=until)) == [2, 3, 4]
    naive = (START + timedelta(minutes=6)).replace(tzinfo=None).isoformat()  # read as UTC
    assert seqs(gateway.get("carol", "entries", since=naive)) == [6, 7]


def test_pages_follow_next_after_to_the_end(gateway):
    seen, after = [], None
    while True:
        params = {"limit": 3, **({"after": after} if after is not None else {})}
        page = gateway.get("carol", "entries", **params)
        seen += seqs(page)
        after = page["next_after"]
        if after is None:
            break
        assert after == seen[-1]
    assert seen == list(range(8))
    assert gateway.get("carol", "entries", limit=8)["next_after"] is None


# ------------------------------------------------------------------------------------------ hostile input

HOSTILE = [
    ("entries", {"limit": 0}, 422),
    ("entries", {"limit": 1001}, 422),
    ("entries", {"limit": "many"}, 422),
    ("entries", {"after": -1}, 422),
    ("entries", {"after": 2**64}, 422),
    ("entries", {"since": "yesterday"}, 422),
    ("entries", {"until": "2026-13-45T00:00:00Z"}, 422),
    ("entries", {"since": "2026-12-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"}, 422),
    ("entries", {"subject": "x" * 300}, 422),
    ("proof", {}, 422),
    ("proof", {"entry": -1}, 422),
    ("proof", {"entry": 2**70}, 422),
    ("proof", {"entry": 4, "size": 4}, 422),  # N >= M
    ("proof", {"entry": 7}, 422),  # beyond the latest checkpoint
    ("proof", {"entry": 0, "size": 5}, 404),  # not a signed size
    ("proof", {"entry": 0, "size": 2**63}, 422),
    ("proof", {"entry": 0, "size": 0}, 422),
    ("consistency", {"first": 7, "second": 4}, 422),
    ("consistency", {"first": 4, "second": 6}, 404),
    ("consistency", {"first": -4, "second": 7}, 422),
    ("consistency", {"first": 4}, 422),
    ("consistency", {"first": 4, "second": 9_999_999_999_999_999_999_999}, 422),
]


@pytest.mark.parametrize("path,params,status", HOSTILE)
def test_hostile_input_is_refused_with_a_hint(gateway, path, params, status):
    kind = {404: "not_found", 422: "invalid_input"}[status]
    refusal(gateway.call("carol", path, **params), status, kind)


def test_a_size_nobody_signed_points_at_the_list_of_checkpoints(gateway):
    body = refusal(gateway.call("carol", "proof", entry=0, size=5), 404, "not_found")
    assert "size 5" in body["message"] and "/v1/audit/checkpoints" in body["hint"]
    body = refusal(gateway.call("carol", "proof", entry=4, size=4), 422, "invalid_input")
    assert "0..3" in body["message"]


def test_before_the_first_checkpoint_there_is_a_404_with_a_hint(empty):
    body = refusal(empty.call("carol", "checkpoints/latest"), 404, "not_found")
    assert "PDO_AUDIT_CHECKPOINT_INTERVAL_S" in body["hint"]
    refusal(empty.call("carol", "proof", entry=0), 404, "not_found")
    assert empty.get("carol", "checkpoints") == []
    assert empty.get("carol", "entries") == {"entries": [], "next_after": None}


# ---------------------------------------------------------------------------------------- offline checks


def test_the_answers_verify_offline_under_the_public_key(gateway):
    for n in range(7):
        proof = gateway.get("acme" if n in (0, 3, 5, 6) else "carol", "proof", entry=n)
        assert f"entry {n} is in the audit log of size 7" in verify_answer(proof, gateway.signer.public_key)
    consistency = gateway.get("acme", "consistency", first=4, second=7)
    assert "size 4 is a prefix" in verify_answer(consistency, gateway.signer.public_key)
    same = gateway.get("acme", "consistency", first=7, second=7)
    assert same["proof"] == [] and verify_answer(same, gateway.signer.public_key)


def test_an_answer_under_another_key_is_unsound(gateway, tmp_path):
    other = Signer.from_settings(settings_with_key(audit_signing_key(tmp_path)))
    with pytest.raises(Unsound, match="bad signature"):
        verify_answer(gateway.get("carol", "proof", entry=1), other.public_key)
