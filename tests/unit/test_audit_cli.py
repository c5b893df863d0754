"""`pdo audit export|verify|prove|public-key` on SQLite: a good log verifies (exit 0, one line), a tampered
export names the first bad entry (exit 1), proofs verify, and the private key is never printed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization

from pdo.audit.checkpoints import Signer, generate_private_key_pem
from pdo.audit.store import AuditStore, Entry
from pdo.cli.main import main
from pdo.core import db, merkle
from pdo.core.config import Settings


@pytest.fixture
def logged(tmp_path, monkeypatch) -> AuditStore:
    """Five entries under a checkpoint, a sixth not yet signed."""
    url = f"sqlite:///{tmp_path / 'pdo.db'}"
    key = tmp_path / "audit-signing-key.pem"
    key.write_text(generate_private_key_pem())
    monkeypatch.setenv("PDO_DATABASE_URL", url)
    monkeypatch.setenv("PDO_AUDIT_SIGNING_KEY_FILE", str(key))
    db.upgrade(url)
    store = AuditStore(db.make_engine(url))
    moment = datetime(2026, 11, 30, 9, 30, tzinfo=UTC)
    store.append(
        [
            Entry("operator:alice", "grant.approved", f"grant:g-{n}", None, f"src@{n}", moment)
            for n in range(5)
        ]
    )
    store.checkpoint(Signer.from_settings(Settings()))
    store.append([Entry("operator:alice", "grant.revoked", "grant:g-0", "ended", "src@5", moment)])
    return store


def test_verify_a_good_log_prints_one_line_with_size_and_latest_checkpoint(logged, capsys):
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "6 entries" in out and "latest checkpoint: size 5" in out


def test_an_export_verifies_offline_and_a_flipped_byte_is_named(logged, tmp_path, capsys, monkeypatch):
    export = tmp_path / "audit.jsonl"
    assert main(["audit", "export", "--out", str(export)]) == 0
    monkeypatch.delenv("PDO_DATABASE_URL")
    monkeypatch.delenv("PDO_AUDIT_SIGNING_KEY_FILE")  # the export alone is enough
    assert main(["audit", "verify", "--file", str(export)]) == 0
    lines = export.read_text().splitlines()
    lines[3] = lines[3].replace("grant:g-3", "grant:g-9")
    export.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["audit", "verify", "--file", str(export)]) == 1
    assert "entry 3: hash mismatch" in capsys.readouterr().err


def test_verify_with_another_trusted_key_is_a_bad_signature(logged, tmp_path, capsys):
    export = tmp_path / "audit.jsonl"
    main(["audit", "export", "--out", str(export)])
    stranger = tmp_path / "stranger.pem"
    stranger.write_text(Signer(_private(generate_private_key_pem()), "x").public_key_pem())
    capsys.readouterr()
    assert main(["audit", "verify", "--file", str(export), "--public-key", str(stranger)]) == 1
    assert "entry 4: bad signature" in capsys.readouterr().err


def _private(pem: str):
    return serialization.load_pem_private_key(pem.encode(), password=None)


def test_prove_prints_a_verified_inclusion_proof_against_the_latest_checkpoint(logged, capsys):
    assert main(["audit", "prove", "--entry", "2"]) == 0
    proof = json.loads(capsys.readouterr().out)
    assert proof["verified"] is True and proof["size"] == 5
    assert merkle.verify_inclusion(
        bytes.fromhex(proof["leaf_hash"]),
        2,
        5,
        [bytes.fromhex(p) for p in proof["proof"]],
        bytes.fromhex(proof["root"]),
    )


def test_prove_refuses_an_entry_no_checkpoint_covers(logged, capsys):
    assert main(["audit", "prove", "--entry", "5"]) == 2
    assert "not under a checkpoint" in capsys.readouterr().err


def test_public_key_prints_the_public_key_and_never_the_private_one(logged, tmp_path, capsys):
    assert main(["audit", "public-key"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("-----BEGIN PUBLIC KEY-----") and "PRIVATE" not in out


def test_without_a_key_outside_development_the_error_says_what_to_set(logged, monkeypatch, capsys):
    monkeypatch.delenv("PDO_AUDIT_SIGNING_KEY_FILE")
    monkeypatch.setenv("PDO_ENVIRONMENT", "production")
    assert main(["audit", "public-key"]) == 2
    assert "PDO_AUDIT_SIGNING_KEY_FILE" in capsys.readouterr().err
