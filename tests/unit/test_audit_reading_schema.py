"""Migration 0012 on SQLite: entries already logged get their tenant and time columns from their bodies (leaf
hashes untouched), the principals' kinds widen to the auditor and nothing else, and it downgrades; the store
fills the new columns on append; `pdo principals add --kind auditor` works and its help names the kind."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from pdo.audit.store import AuditStore, Entry
from pdo.audit.tables import entries
from pdo.cli import gateway as gateway_cli
from pdo.core import db, merkle
from pdo.gateway.principals import PrincipalKind, PrincipalStore

MOMENT = datetime(2026, 11, 30, 9, 30, 15, 123000, tzinfo=UTC)


def body(seq: int, details: dict[str, str]) -> str:
    return json.dumps(
        {
            "seq": seq,
            "occurred_at": "2026-11-30T09:30:15.123Z",
            "actor": "operator:alice",
            "action": "grant.granted",
            "subject": f"grant:g-{seq}",
            "reason": None,
            "source": f"src@{seq}",
            "details": details,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def old_row(seq: int, text: str) -> dict[str, object]:
    return {
        "seq": seq,
        "recorded_at": MOMENT,
        "actor": "operator:alice",
        "action": "grant.granted",
        "subject": f"grant:g-{seq}",
        "reason": None,
        "source": f"src@{seq}",
        "body": text,
        "leaf_hash": merkle.leaf_hash(text.encode()),
    }


def indexed(url: str) -> list[tuple]:
    engine = db.make_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT seq, tenant, occurred_at, leaf_hash FROM audit_entries ORDER BY seq")
        ).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def test_the_migration_backfills_tenant_and_time_from_each_body(sqlite_url):
    db.upgrade(sqlite_url, "0011")
    bodies = [body(0, {"tenant": "tenant:acme", "dataset": "trips"}), body(1, {"dataset": "trips"})]
    engine = db.make_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO audit_entries (seq, recorded_at, actor, action, subject, reason, source, body, "
                "leaf_hash) VALUES (:seq, :recorded_at, :actor, :action, :subject, :reason, :source, :body, "
                ":leaf_hash)"
            ),
            [old_row(seq, text) for seq, text in enumerate(bodies)],
        )
    engine.dispose()
    db.upgrade(sqlite_url)
    (first, second) = indexed(sqlite_url)
    assert first[1] == "tenant:acme" and second[1] is None
    assert str(first[2]).startswith("2026-11-30 09:30:15.123")
    assert [bytes(row[3]) for row in (first, second)] == [merkle.leaf_hash(b.encode()) for b in bodies]


def test_the_store_fills_tenant_and_time_on_append(sqlite_url):
    db.upgrade(sqlite_url)
    engine = db.make_engine(sqlite_url)
    AuditStore(engine).append(
        [
            Entry(
                "operator:alice", "grant.granted", "grant:g-0", None, "s0", MOMENT, {"tenant": "tenant:acme"}
            ),
            Entry("operator:alice", "dataset.registered", "dataset:trips", None, "s1", MOMENT),
        ]
    )
    with engine.connect() as connection:
        rows = connection.execute(sa.select(entries.c.tenant, entries.c.occurred_at)).all()
    engine.dispose()
    assert [row.tenant for row in rows] == ["tenant:acme", None]
    assert {row.occurred_at.replace(tzinfo=UTC) for row in rows} == {MOMENT}


def test_principal_kinds_widen_to_the_auditor_only_and_the_migration_downgrades(sqlite_url):
    db.upgrade(sqlite_url)
    engine = db.make_engine(sqlite_url)
    store = PrincipalStore(engine)
    assert store.create_principal("auditor", "carol").kind is PrincipalKind.AUDITOR
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO gateway_principals (principal_id, kind, display_name, is_government, disabled, "
                "created_at) VALUES ('admin:x', 'admin', 'x', false, false, '2026-11-30')"
            )
        )
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM gateway_principals WHERE kind = 'auditor'"))
    engine.dispose()
    downgrade(sqlite_url, "0011")
    engine = db.make_engine(sqlite_url)
    columns = {column["name"] for column in sa.inspect(engine).get_columns("audit_entries")}
    engine.dispose()
    assert "tenant" not in columns and "occurred_at" not in columns
    db.upgrade(sqlite_url)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    engine = db.make_engine(url)
    with engine.begin() as connection:
        config = db.alembic_config(url)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
    engine.dispose()


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="pdo")
    gateway_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_pdo_principals_add_makes_an_auditor_and_its_help_names_the_kind(sqlite_url, monkeypatch, capsys):
    monkeypatch.setenv("PDO_DATABASE_URL", sqlite_url)
    assert run("principals", "add", "--kind", "auditor", "--id", "carol") == 0
    key = capsys.readouterr().out.strip()
    db.upgrade(sqlite_url)
    engine = db.make_engine(sqlite_url)
    assert PrincipalStore(engine).authenticate(key).principal_id == "auditor:carol"
    engine.dispose()
    with pytest.raises(SystemExit):
        run("principals", "add", "--help")
    assert "auditor" in capsys.readouterr().out
    assert [kind.value for kind in PrincipalKind] == gateway_cli.KINDS
