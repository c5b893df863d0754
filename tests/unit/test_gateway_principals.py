"""Principals and API keys: ids, salted hashes only, and every way a key can fail to authenticate."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from pdo.core import db
from pdo.core.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from pdo.gateway.principals import PrincipalKind, PrincipalStore, principal_id
from pdo.gateway.tables import api_keys


@pytest.fixture
def store(sqlite_url) -> PrincipalStore:
    db.upgrade(sqlite_url)
    engine = db.make_engine(sqlite_url)
    yield PrincipalStore(engine)
    engine.dispose()


def test_ids_are_kind_and_name():
    assert principal_id("tenant", "acme-logistics") == "tenant:acme-logistics"
    assert principal_id(PrincipalKind.OPERATOR, "alice") == "operator:alice"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Acme",
        "-acme",
        "a" * 64,
        "acme corp",
        "acme:x",
        "ac\x00me",
        "ac/me",
        "acme.corp",
        "acme_corp",
        "acme\n",
    ],
)
def test_bad_names_are_refused(name):
    with pytest.raises(InvalidInput, match="principal name"):
        principal_id("tenant", name)


def test_unknown_kind_is_refused():
    with pytest.raises(InvalidInput, match="unknown principal kind 'admin'"):
        principal_id("admin", "bob")


def test_create_and_get(store):
    created = store.create_principal("tenant", "acme", display_name="Acme Logistics", is_government=False)
    assert created.principal_id == "tenant:acme"
    assert store.get("tenant:acme") == created
    assert [p.principal_id for p in store.list(PrincipalKind.TENANT)] == ["tenant:acme"]
    assert store.list(PrincipalKind.PROVIDER) == []


def test_duplicate_principal_is_a_conflict(store):
    store.create_principal("provider", "transport-bureau")
    with pytest.raises(Conflict, match="exists already"):
        store.create_principal("provider", "transport-bureau")


def test_only_tenants_can_be_government(store):
    assert store.create_principal("tenant", "health-commission", is_government=True).is_government
    with pytest.raises(InvalidInput, match="only a tenant"):
        store.create_principal("operator", "alice", is_government=True)


def test_display_name_with_control_characters_is_refused(store):
    with pytest.raises(InvalidInput, match="display name"):
        store.create_principal("tenant", "acme", display_name="Acme\x1b[31m")


def test_key_is_issued_once_and_only_a_salted_hash_is_stored(store):
    store.create_principal("tenant", "acme")
    first = store.issue_key("tenant:acme")
    second = store.issue_key("tenant:acme")
    assert first.key.startswith(f"pdo_{first.key_id}_")
    assert first.key != second.key
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(api_keys)).mappings().all()
    stored = " ".join(str(value) for row in rows for value in row.values())
    for issued in (first, second):
        secret = issued.key.split("_", 2)[2]
        assert secret not in stored and issued.key not in stored
    assert rows[0]["salt"] != rows[1]["salt"]
    assert all(row["kdf"].startswith("pbkdf2-sha256:") for row in rows)


def test_authenticate_returns_the_principal(store):
    created = store.create_principal("operator", "alice")
    issued = store.issue_key(created.principal_id)
    assert store.authenticate(issued.key) == created


def test_key_for_a_missing_principal_is_not_found(store):
    with pytest.raises(NotFound):
        store.issue_key("tenant:ghost")


@pytest.mark.parametrize(
    "key, message",
    [
        (None, "no API key"),
        ("", "no API key"),
        ("hunter2", "not a pdo API key"),
        ("pdo_0123456789abcdef_" + "A" * 43, "unknown API key"),
    ],
)
def test_bad_keys_are_unauthenticated(store, key, message):
    with pytest.raises(Unauthenticated, match=message):
        store.authenticate(key)


def test_right_key_id_with_a_wrong_secret_is_refused(store):
    store.create_principal("tenant", "acme")
    issued = store.issue_key("tenant:acme")
    forged = issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B")
    with pytest.raises(Unauthenticated, match="unknown API key"):
        store.authenticate(forged)


def test_revoked_key_stops_working_and_others_keep_working(store):
    store.create_principal("tenant", "acme")
    old, new = store.issue_key("tenant:acme"), store.issue_key("tenant:acme")
    info = store.revoke_key(old.key_id)
    assert info.revoked_at is not None
    assert store.revoke_key(old.key_id).revoked_at == info.revoked_at  # idempotent
    with pytest.raises(Unauthenticated, match="revoked"):
        store.authenticate(old.key)
    assert store.authenticate(new.key).principal_id == "tenant:acme"
    assert {k.key_id for k in store.keys("tenant:acme")} == {old.key_id, new.key_id}


def test_revoking_an_unknown_key_is_not_found(store):
    with pytest.raises(NotFound):
        store.revoke_key("0123456789abcdef")


def test_disabled_principal_cannot_authenticate(store):
    store.create_principal("provider", "transport-bureau")
    issued = store.issue_key("provider:transport-bureau")
    store.set_disabled("provider:transport-bureau", True)
    with pytest.raises(Unauthenticated, match="disabled"):
        store.authenticate(issued.key)
    store.set_disabled("provider:transport-bureau", False)
    assert store.authenticate(issued.key).kind is PrincipalKind.PROVIDER
