"""`pdo principals add|key|revoke|list`: a key is printed once, works, and stops working when revoked."""

from __future__ import annotations

import argparse

import pytest

from pdo.cli import gateway as gateway_cli
from pdo.core import db
from pdo.core.errors import Conflict, InvalidInput, Unauthenticated
from pdo.core.ids import ID_RULE
from pdo.gateway.principals import PrincipalStore


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pdo")
    gateway_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def store(sqlite_url, monkeypatch):
    monkeypatch.setenv("PDO_DATABASE_URL", sqlite_url)
    db.upgrade(sqlite_url)
    engine = db.make_engine(sqlite_url)
    yield PrincipalStore(engine)
    engine.dispose()


def printed_key(capsys) -> str:
    captured = capsys.readouterr()
    assert "shown once" in captured.err
    return captured.out.strip()


def test_add_prints_a_working_key_once(store, capsys):
    assert run("principals", "add", "--kind", "tenant", "--id", "health-commission", "--government") == 0
    key = printed_key(capsys)
    principal = store.authenticate(key)
    assert principal.principal_id == "tenant:health-commission" and principal.is_government


def test_key_issues_another_and_revoke_stops_it(store, capsys):
    run("principals", "add", "--kind", "operator", "--id", "alice", "--name", "Alice Wang")
    first = printed_key(capsys)
    run("principals", "key", "--id", "operator:alice")
    second = printed_key(capsys)
    assert first != second

    key_id = second.split("_")[1]
    run("principals", "revoke", "--key-id", key_id)
    assert f"key {key_id} of operator:alice revoked" in capsys.readouterr().out
    with pytest.raises(Unauthenticated):
        store.authenticate(second)
    assert store.authenticate(first).display_name == "Alice Wang"

    run("principals", "list")
    listing = capsys.readouterr().out
    assert "operator:alice\tAlice Wang" in listing and "revoked" in listing and "active" in listing
    assert first not in listing and second not in listing


def test_adding_twice_is_a_clear_error(store, capsys):
    run("principals", "add", "--kind", "provider", "--id", "transport-bureau")
    with pytest.raises(Conflict, match="exists already"):
        run("principals", "add", "--kind", "provider", "--id", "transport-bureau")


@pytest.mark.parametrize("name", ["acme.corp", "acme_corp", "Acme"])
def test_add_refuses_a_name_that_breaks_the_id_rule_and_names_the_rule(store, name):
    """`acme.corp` would share topics with `acme` (pdo.tenant.acme.corp.sales); '_' collides with '.'."""
    with pytest.raises(InvalidInput, match="principal name") as refused:
        run("principals", "add", "--kind", "tenant", "--id", name)
    assert ID_RULE in refused.value.hint
    assert store.list() == []
