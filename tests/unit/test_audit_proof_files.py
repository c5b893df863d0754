"""`pdo audit verify-proof` on saved /v1/audit answers, with nothing else running: a sound proof exits 0, a
flipped byte in the body, a path hash, the signature or the note exits 1 naming why; `pdo audit prove
--first M --second N` prints a consistency answer that verifies the same way; every answer of a randomly
grown log verifies."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.pool import StaticPool
from test_audit_cli import logged  # noqa: F401 - the fixture: five entries under a checkpoint, a sixth not

from pdo.audit import tables
from pdo.audit.checkpoints import Signer
from pdo.audit.reading import consistency_json, consistency_proof, inclusion_json, inclusion_proof
from pdo.audit.store import AuditStore, Entry
from pdo.audit.verify import verify_answer
from pdo.cli.main import main
from pdo.core.config import Settings


@pytest.fixture
def public_key(logged, tmp_path) -> Path:  # noqa: F811
    path = tmp_path / "audit.pub"
    path.write_text(Signer.from_settings(Settings()).public_key_pem())
    return path


@pytest.fixture
def signed_twice(logged) -> AuditStore:  # noqa: F811
    """The fixture's log with a second checkpoint at size 6 (its sixth entry) and a seventh entry after."""
    logged.checkpoint(Signer.from_settings(Settings()))
    moment = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    logged.append([Entry("operator:bob", "grant.revoked", "grant:g-1", "ended", "src@6", moment)])
    return logged


def saved(tmp_path: Path, answer: dict, name: str = "answer.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(answer))
    return path


def verify_proof(path: Path, public_key: Path) -> int:
    return main(["audit", "verify-proof", str(path), "--public-key", str(public_key)])


def flip_hex(text: str) -> str:
    return ("1" if text[0] == "0" else "0") + text[1:]


def flip_base64(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[0] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_a_saved_proof_verifies_offline(logged, public_key, tmp_path, capsys, monkeypatch):  # noqa: F811
    answer = inclusion_json(inclusion_proof(logged.engine, 3))
    monkeypatch.delenv("PDO_DATABASE_URL")
    monkeypatch.delenv("PDO_AUDIT_SIGNING_KEY_FILE")  # the answer and the public key are enough
    assert verify_proof(saved(tmp_path, answer), public_key) == 0
    assert "entry 3 is in the audit log of size 5" in capsys.readouterr().out


def tamper_body(answer: dict) -> None:
    answer["entry"]["body"] = answer["entry"]["body"].replace("grant:g-3", "grant:g-8")


def tamper_path(answer: dict) -> None:
    answer["inclusion"]["path"][1] = flip_hex(answer["inclusion"]["path"][1])


def tamper_signature(answer: dict) -> None:
    answer["checkpoint"]["signature"] = flip_base64(answer["checkpoint"]["signature"])


def tamper_note(answer: dict) -> None:
    answer["checkpoint"]["note"] = answer["checkpoint"]["note"].replace("\n5\n", "\n4\n")


def tamper_shown_field(answer: dict) -> None:
    answer["entry"]["actor"] = "operator:mallory"  # what a reader sees, not what was signed


def tamper_root(answer: dict) -> None:
    checkpoint = answer["checkpoint"]
    checkpoint["root"] = flip_base64(checkpoint["root"])


def tamper_root_and_note(answer: dict) -> None:
    checkpoint = answer["checkpoint"]
    forged = flip_base64(checkpoint["root"])
    checkpoint["note"] = checkpoint["note"].replace(checkpoint["root"], forged)
    checkpoint["root"] = forged


@pytest.mark.parametrize(
    "tamper,reason",
    [
        (tamper_body, "entry 3: hash mismatch"),
        (tamper_path, "entry 3: the path does not lead from its leaf to the signed root"),
        (tamper_signature, "bad signature"),
        (tamper_note, "its note does not read its origin, size and root"),
        (tamper_shown_field, "the fields shown differ from the signed body: actor"),
        (tamper_root, "its note does not read its origin, size and root"),
        (tamper_root_and_note, "bad signature"),
    ],
)
def test_a_flipped_byte_is_caught_and_named(logged, public_key, tmp_path, capsys, tamper, reason):  # noqa: F811
    answer = inclusion_json(inclusion_proof(logged.engine, 3))
    tamper(answer)
    assert verify_proof(saved(tmp_path, answer), public_key) == 1
    err = capsys.readouterr().err
    assert err.startswith("proof NOT verified:") and reason in err


def test_a_file_that_is_no_answer_is_refused_with_the_reason(logged, public_key, tmp_path, capsys):  # noqa: F811
    (tmp_path / "garbage.json").write_text("{not json")
    assert verify_proof(tmp_path / "garbage.json", public_key) == 1
    assert "is not JSON" in capsys.readouterr().err
    assert verify_proof(saved(tmp_path, {"entries": []}), public_key) == 1
    assert "not an answer of /v1/audit/proof" in capsys.readouterr().err
    answer = inclusion_json(inclusion_proof(logged.engine, 3))
    del answer["entry"]["leaf_hash"]
    assert verify_proof(saved(tmp_path, answer), public_key) == 1
    assert "malformed" in capsys.readouterr().err


def test_prove_prints_a_consistency_answer_that_verifies(signed_twice, public_key, tmp_path, capsys):
    assert main(["audit", "prove", "--first", "5", "--second", "6"]) == 0
    captured = capsys.readouterr()
    answer = json.loads(captured.out)
    assert "size 5 is a prefix of the one of size 6" in captured.err
    assert answer == consistency_json(consistency_proof(signed_twice.engine, 5, 6))
    assert verify_proof(saved(tmp_path, answer), public_key) == 0
    answer["proof"][0] = flip_hex(answer["proof"][0])
    assert verify_proof(saved(tmp_path, answer), public_key) == 1
    assert "not shown to be a prefix" in capsys.readouterr().err


def test_a_consistency_answer_with_a_forged_second_checkpoint_is_unsound(
    signed_twice, public_key, tmp_path, capsys
):
    answer = consistency_json(consistency_proof(signed_twice.engine, 5, 6))
    answer["second"]["signature"] = flip_base64(answer["second"]["signature"])
    assert verify_proof(saved(tmp_path, answer), public_key) == 1
    assert "the second checkpoint (size 6" in capsys.readouterr().err


def test_prove_refuses_sizes_nobody_signed_and_half_a_pair(signed_twice, capsys):
    for args, reason in (
        (["--first", "3", "--second", "6"], "no checkpoint was signed at size 3"),
        (["--first", "6", "--second", "5"], "must not be larger than second"),
        (["--first", "5"], "--first needs --second"),
        (["--entry", "1", "--second", "6"], "--second goes with --first"),
    ):
        assert main(["audit", "prove", *args]) == 2
        assert reason in capsys.readouterr().err
    assert main(["audit", "prove", "--entry", "5"]) == 0  # the sixth entry is under the second checkpoint now


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=5))
def test_every_answer_of_a_growing_log_verifies_offline(batches):
    """Batches of entries with a checkpoint after each: every entry's proof under every checkpoint that
    covers it, and every pair of checkpoints' consistency, verify from the answer and the key alone."""
    engine = sa.create_engine("sqlite://", poolclass=StaticPool)
    tables.metadata.create_all(engine)
    store, signer = AuditStore(engine), Signer(Ed25519PrivateKey.generate(), "property.test/audit")
    moment = datetime(2026, 11, 30, tzinfo=UTC)
    for number, count in enumerate(batches):
        store.append(
            [Entry("a", "b", f"s{number}.{i}", None, f"src@{number}.{i}", moment) for i in range(count)]
        )
        store.checkpoint(signer)
    sizes = [signed.size for signed in store.checkpoints()]
    for size in sizes:
        for index in range(size):
            verify_answer(inclusion_json(inclusion_proof(engine, index, size)), signer.public_key)
        for later in (s for s in sizes if s >= size):
            verify_answer(consistency_json(consistency_proof(engine, size, later)), signer.public_key)
    engine.dispose()
