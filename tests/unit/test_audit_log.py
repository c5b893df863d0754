"""The audit log on SQLite (pdo.audit.store, .checkpoints, .verify): appends without gaps and once per
source, signed checkpoints, and the offline verifier naming the first bad entry and why for each kind of
tampering."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import serialization

from pdo.audit import verify
from pdo.audit.checkpoints import Signer, generate_private_key_pem, load_public_key
from pdo.audit.checkpoints import verify as verify_signature
from pdo.audit.store import AuditStore, Entry
from pdo.audit.tables import checkpoints as checkpoints_table
from pdo.audit.tables import entries as entries_table
from pdo.core import db, merkle
from pdo.core.config import ConfigError, Settings

MOMENT = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)


def entry(n: int, **changes) -> Entry:
    made = Entry(
        actor="operator:alice",
        action="grant.suspended",
        subject=f"grant:g-{n}",
        reason="quota exceeded",
        source=f"pdo.authorizations[0]@{n}",
        occurred_at=MOMENT,
        details={"dataset": "traffic-flow"},
    )
    return dataclasses.replace(made, **changes)


@pytest.fixture
def engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'pdo.db'}"
    db.upgrade(url)
    return db.make_engine(url)


@pytest.fixture
def signer(tmp_path) -> Signer:
    key = tmp_path / "audit-signing-key.pem"
    key.write_text(generate_private_key_pem())
    settings = dataclasses.replace(
        Settings(), audit_signing_key_file=str(key), audit_origin="test.local/audit"
    )
    return Signer.from_settings(settings)


@pytest.fixture
def store(engine, signer) -> AuditStore:
    """A log of 8 entries with checkpoints at sizes 4 and 8."""
    audit = AuditStore(engine)
    audit.append([entry(n) for n in range(4)])
    audit.checkpoint(signer)
    audit.append([entry(n) for n in range(4, 8)])
    audit.checkpoint(signer)
    return audit


def test_the_body_is_canonical_json_with_milliseconds_and_z():
    assert entry(1).body(7) == (
        '{"action":"grant.suspended","actor":"operator:alice","details":{"dataset":"traffic-flow"},'
        '"occurred_at":"2026-11-30T12:00:00.123Z","reason":"quota exceeded",'
        '"seq":7,"source":"pdo.authorizations[0]@1","subject":"grant:g-1"}'
    )


def test_append_numbers_entries_without_gaps_and_hashes_their_bodies(engine):
    audit = AuditStore(engine)
    assert audit.append([entry(0), entry(1)]) == 2
    assert audit.append([entry(2)]) == 1
    logged = audit.entries()
    assert [e.seq for e in logged] == [0, 1, 2]
    assert all(e.leaf_hash == merkle.leaf_hash(e.body.encode()) for e in logged)
    assert audit.leaf_hashes(end=2) == [e.leaf_hash for e in logged[:2]]
    assert [e.seq for e in audit.entries(start=1, end=2)] == [1]


def test_rereading_a_source_appends_nothing(engine):
    audit = AuditStore(engine)
    audit.append([entry(0), entry(1)])
    assert audit.append([entry(1), entry(2), entry(2)]) == 1
    assert audit.size() == 3
    assert audit.entries()[2].body == entry(2).body(2)


def test_a_checkpoint_is_signed_only_when_the_log_grew(engine, signer):
    audit = AuditStore(engine)
    assert audit.checkpoint(signer) is None  # nothing to sign
    audit.append([entry(0), entry(1), entry(2)])
    signed = audit.checkpoint(signer)
    assert signed is not None and signed.size == 3 and signed.root == merkle.root(audit.leaf_hashes())
    assert signed.note_body().decode().startswith("test.local/audit\n3\n")
    assert audit.checkpoint(signer) is None
    assert audit.latest_checkpoint() == signed


def test_a_checkpoint_verifies_only_under_its_key_and_for_its_root(store, signer):
    latest = store.latest_checkpoint()
    other = Signer(load_private_key_pem(generate_private_key_pem()), signer.origin)
    assert verify_signature(latest, signer.public_key)
    assert not verify_signature(latest, other.public_key)
    assert not verify_signature(dataclasses.replace(latest, size=7), signer.public_key)
    assert not verify_signature(dataclasses.replace(latest, root=b"\x00" * 32), signer.public_key)


def load_private_key_pem(pem: str):
    return serialization.load_pem_private_key(pem.encode(), password=None)


def test_without_a_key_file_only_development_signs(tmp_path):
    production = dataclasses.replace(Settings(), audit_signing_key_file="", deployment="production")
    with pytest.raises(ConfigError) as refused:
        Signer.from_settings(production)
    assert "PDO_AUDIT_SIGNING_KEY_FILE" in str(refused.value) and refused.value.hint
    development = dataclasses.replace(production, deployment="development", run_dir=tmp_path / "run")
    assert Signer.from_settings(development).key_id == Signer.from_settings(development).key_id  # made once
    assert (tmp_path / "run" / "secrets" / "audit-signing-key.pem").exists()


def test_a_key_file_that_is_not_a_key_is_refused_without_printing_it(tmp_path):
    bad = tmp_path / "key.pem"
    bad.write_text("not-a-key-but-a-secret-anyway")
    settings = dataclasses.replace(Settings(), audit_signing_key_file=str(bad))
    with pytest.raises(ConfigError) as refused:
        Signer.from_settings(settings)
    assert "not-a-key-but-a-secret-anyway" not in str(refused.value)


def test_signer_repr_names_no_key(signer):
    assert "PRIVATE" not in repr(signer) and signer.key_id in repr(signer)


# ------------------------------------------------------------------------------------------ the verifier


def check(store: AuditStore, signer: Signer) -> verify.Verdict:
    return verify.verify_log(store.entries(), store.checkpoints(), signer.public_key)


def test_an_untouched_log_verifies(store, signer):
    verdict = check(store, signer)
    assert verdict.good and verdict.size == 8 and verdict.latest.size == 8


def update(store: AuditStore, seq: int, **values) -> None:
    with store.engine.begin() as connection:
        connection.execute(entries_table.update().where(entries_table.c.seq == seq).values(**values))


def delete(store: AuditStore, condition) -> None:
    with store.engine.begin() as connection:
        connection.execute(entries_table.delete().where(condition))


def test_a_flipped_byte_in_a_body_is_a_hash_mismatch_at_its_index(store, signer):
    body = store.entries(5, 6)[0].body
    update(store, 5, body=body.replace("quota", "quotb"))
    assert check(store, signer).problem.index == 5
    assert check(store, signer).problem.reason == verify.HASH_MISMATCH


def test_a_deleted_entry_is_missing_at_its_index(store, signer):
    delete(store, entries_table.c.seq == 3)
    problem = check(store, signer).problem
    assert (problem.index, problem.reason) == (3, verify.MISSING_ENTRY)


def test_two_swapped_entries_are_reordered_at_the_first(store, signer):
    second, fifth = store.entries(2, 3)[0], store.entries(5, 6)[0]
    update(store, 2, body=fifth.body, leaf_hash=fifth.leaf_hash, source="swap-a")
    update(store, 5, body=second.body, leaf_hash=second.leaf_hash, source="swap-b")
    problem = check(store, signer).problem
    assert (problem.index, problem.reason) == (2, verify.REORDERED)


def test_a_log_shorter_than_a_signed_size_is_truncated(store, signer):
    delete(store, entries_table.c.seq >= 6)
    problem = check(store, signer).problem
    assert (problem.index, problem.reason) == (6, verify.TRUNCATED)


def test_a_rewritten_entry_with_a_fresh_hash_breaks_the_signed_root(store, signer):
    forged = entry(1, reason="nothing to see").body(1)
    update(store, 1, body=forged, leaf_hash=merkle.leaf_hash(forged.encode()))
    problem = check(store, signer).problem
    assert (problem.index, problem.reason) == (3, verify.ROOT_MISMATCH)  # the checkpoint of size 4 covers it


def test_a_forged_checkpoint_signature_is_a_bad_signature(store, signer):
    latest = store.latest_checkpoint()
    forged = bytes([latest.signature[0] ^ 1]) + latest.signature[1:]
    with store.engine.begin() as connection:
        connection.execute(
            checkpoints_table.update().where(checkpoints_table.c.size == 8).values(signature=forged)
        )
    problem = check(store, signer).problem
    assert (problem.index, problem.reason) == (7, verify.BAD_SIGNATURE)


def test_the_first_bad_index_is_reported_when_there_are_several(store, signer):
    delete(store, entries_table.c.seq == 6)
    update(store, 2, body="{}")
    assert check(store, signer).problem.index == 2


def test_an_export_reads_back_to_the_same_log(store, signer, tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(verify.export_lines(store.entries(), store.checkpoints(), signer.public_key)))
    exported = verify.read_export(path)
    assert exported.entries == store.entries()
    assert exported.checkpoints == store.checkpoints()
    assert verify.verify_log(exported.entries, exported.checkpoints, exported.public_key).good
    assert load_public_key(signer.public_key_pem().encode()) == exported.public_key
