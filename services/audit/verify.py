"""Offline verification of the audit log: from the database or from an export file, with nothing but the
entries, the checkpoints and the public key.

Guarantee: `verify` reports the FIRST bad leaf index and why — a body whose hash is not its leaf hash, a
missing seq, entries out of order, a log shorter than a signed size or whose root at a signed size differs,
a checkpoint whose signature does not verify under the public key — or None when every entry is in place
and every checkpoint is a valid signature over the root of the log's prefix of its size (so the checkpoints
are also consistent with each other).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pdo.audit.checkpoints import Checkpoint, load_public_key, public_key_pem, verify
from pdo.audit.store import LoggedEntry
from pdo.core import merkle
from pdo.core.errors import InvalidInput

HASH_MISMATCH = "hash mismatch"
MISSING_ENTRY = "missing entry"
REORDERED = "reordered"
TRUNCATED = "truncated"
ROOT_MISMATCH = "root mismatch"
BAD_SIGNATURE = "bad signature"


@dataclass(frozen=True)
class Problem:
    index: int
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"entry {self.index}: {self.reason}: {self.detail}"


@dataclass(frozen=True)
class Verdict:
    size: int
    latest: Checkpoint | None
    problem: Problem | None

    @property
    def good(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        """One line for people: the verdict, the log's size and its latest checkpoint."""
        if self.problem is not None:
            return f"audit log NOT verified: {self.problem}"
        latest = (
            f"latest checkpoint: size {self.latest.size}, signed {self.latest.signed_at.isoformat()} "
            f"by key {self.latest.key_id}"
            if self.latest
            else "no checkpoint yet"
        )
        return f"audit log verified: {self.size} entries; {latest}"


def verify_log(
    logged: Sequence[LoggedEntry], checkpoints: Sequence[Checkpoint], public_key: Ed25519PublicKey
) -> Verdict:
    ordered = sorted(checkpoints, key=lambda checkpoint: checkpoint.size)
    found = [p for p in (first_bad_entry(logged), first_bad_checkpoint(logged, ordered, public_key)) if p]
    problem = min(found, key=lambda p: p.index) if found else None
    return Verdict(size=len(logged), latest=ordered[-1] if ordered else None, problem=problem)


def first_bad_entry(logged: Sequence[LoggedEntry]) -> Problem | None:
    present = {entry.seq for entry in logged}
    for index, entry in enumerate(logged):
        if entry.seq != index:
            if index not in present:
                return Problem(
                    index, MISSING_ENTRY, f"seq {index} is not in the log (next is seq {entry.seq})"
                )
            return Problem(index, REORDERED, f"seq {entry.seq} stands where seq {index} belongs")
        if merkle.leaf_hash(entry.body.encode()) != entry.leaf_hash:
            return Problem(index, HASH_MISMATCH, "the body's hash is not its recorded leaf hash")
        claimed = _body_seq(entry.body)
        if claimed != index:
            return Problem(index, REORDERED, f"the body of seq {claimed} stands at seq {index}")
    return None


def _body_seq(body: str) -> object:
    try:
        return json.loads(body).get("seq")
    except (ValueError, AttributeError):
        return None


def first_bad_checkpoint(
    logged: Sequence[LoggedEntry], ordered: Sequence[Checkpoint], public_key: Ed25519PublicKey
) -> Problem | None:
    hashes = [merkle.leaf_hash(entry.body.encode()) for entry in logged]
    for checkpoint in ordered:
        if not verify(checkpoint, public_key):
            return Problem(
                checkpoint.size - 1,
                BAD_SIGNATURE,
                f"the checkpoint of size {checkpoint.size} (key {checkpoint.key_id}) does not verify under the public key",
            )
        if len(hashes) < checkpoint.size:
            return Problem(
                len(hashes),
                TRUNCATED,
                f"the log has {len(hashes)} entries, a checkpoint signed {checkpoint.size}",
            )
        if merkle.root(hashes[: checkpoint.size]) != checkpoint.root:
            return Problem(
                checkpoint.size - 1,
                ROOT_MISMATCH,
                f"the root of the first {checkpoint.size} entries is not the signed root",
            )
    return None


# ------------------------------------------------------------------------------------------- export file


def export_lines(
    logged: Iterable[LoggedEntry], checkpoints: Iterable[Checkpoint], public_key: Ed25519PublicKey
) -> Iterator[str]:
    """JSON lines: every entry, then every checkpoint, then the public key (PEM)."""
    for entry in logged:
        yield _line(
            {"type": "entry", "seq": entry.seq, "body": entry.body, "leaf_hash": entry.leaf_hash.hex()}
        )
    for checkpoint in checkpoints:
        yield _line(
            {
                "type": "checkpoint",
                "origin": checkpoint.origin,
                "size": checkpoint.size,
                "root": base64.b64encode(checkpoint.root).decode(),
                "signed_at": checkpoint.signed_at.isoformat(),
                "signature": base64.b64encode(checkpoint.signature).decode(),
                "key_id": checkpoint.key_id,
            }
        )
    yield _line({"type": "public_key", "pem": public_key_pem(public_key)})


def _line(record: dict[str, object]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Export:
    entries: list[LoggedEntry]
    checkpoints: list[Checkpoint]
    public_key: Ed25519PublicKey | None


def read_export(path: Path) -> Export:
    logged: list[LoggedEntry] = []
    signed: list[Checkpoint] = []
    public_key = None
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            record = json.loads(text)
            kind = record["type"]
            if kind == "entry":
                logged.append(
                    LoggedEntry(
                        seq=int(record["seq"]),
                        body=record["body"],
                        leaf_hash=bytes.fromhex(record["leaf_hash"]),
                    )
                )
            elif kind == "checkpoint":
                signed.append(_checkpoint_record(record))
            elif kind == "public_key":
                public_key = load_public_key(record["pem"].encode())
        except (ValueError, KeyError, TypeError) as error:
            raise InvalidInput(
                f"{path}, line {number}: not an audit export line ({error})",
                hint="make the file with `pdo audit export --out FILE`",
            ) from None
    return Export(logged, signed, public_key)


def _checkpoint_record(record: dict[str, str]) -> Checkpoint:
    return Checkpoint(
        origin=record["origin"],
        size=int(record["size"]),
        root=base64.b64decode(record["root"]),
        signed_at=datetime.fromisoformat(record["signed_at"]),
        signature=base64.b64decode(record["signature"]),
        key_id=record["key_id"],
    )


# ------------------------------------------------------------------------------------ saved API answers
# What GET /v1/audit/proof and /v1/audit/consistency hand out (pdo.audit.reading's *_json), checked with
# nothing but the answer and the public key.

ENTRY_FIELDS = ("actor", "action", "subject", "reason", "occurred_at", "details")


class Unsound(Exception):
    """An answer that does not prove what it claims; the message says why."""


def verify_answer(answer: object, public_key: Ed25519PublicKey) -> str:
    """What a saved proof or consistency answer proves, as one line; Unsound with the reason otherwise."""
    try:
        if isinstance(answer, dict) and "inclusion" in answer:
            return _verify_inclusion_answer(answer, public_key)
        if isinstance(answer, dict) and {"first", "second", "proof"} <= answer.keys():
            return _verify_consistency_answer(answer, public_key)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise Unsound(f"the answer is malformed ({type(error).__name__}: {error})") from None
    raise Unsound("not an answer of /v1/audit/proof or /v1/audit/consistency")


def _verify_inclusion_answer(answer: dict[str, Any], public_key: Ed25519PublicKey) -> str:
    signed = _signed_checkpoint(answer["checkpoint"], public_key, "the checkpoint")
    entry, inclusion = answer["entry"], answer["inclusion"]
    body: str = entry["body"]
    leaf = merkle.leaf_hash(body.encode())
    if leaf != bytes.fromhex(entry["leaf_hash"]):
        raise Unsound(f"entry {entry['seq']}: {HASH_MISMATCH}: the body's hash is not its leaf hash")
    decoded = json.loads(body)
    index, size = inclusion["leaf_index"], inclusion["tree_size"]
    if not decoded["seq"] == entry["seq"] == index:
        raise Unsound(f"the body is entry {decoded['seq']}, the answer says {entry['seq']} at leaf {index}")
    shown = [name for name in ENTRY_FIELDS if entry.get(name) != decoded.get(name)]
    if shown:
        raise Unsound(f"entry {index}: the fields shown differ from the signed body: {', '.join(shown)}")
    if size != signed.size:
        raise Unsound(f"the proof is for a tree of {size}, the checkpoint signs {signed.size}")
    path = [bytes.fromhex(node) for node in inclusion["path"]]
    if not merkle.verify_inclusion(leaf, index, size, path, signed.root):
        raise Unsound(f"entry {index}: the path does not lead from its leaf to the signed root")
    return f"entry {index} is in the audit log of size {size} signed by key {signed.key_id}"


def _verify_consistency_answer(answer: dict[str, Any], public_key: Ed25519PublicKey) -> str:
    first = _signed_checkpoint(answer["first"], public_key, "the first checkpoint")
    second = _signed_checkpoint(answer["second"], public_key, "the second checkpoint")
    proof = [bytes.fromhex(node) for node in answer["proof"]]
    if not merkle.verify_consistency(first.size, second.size, first.root, second.root, proof):
        raise Unsound(
            f"the log of size {first.size} is not shown to be a prefix of the log of size {second.size}"
        )
    return (
        f"the audit log of size {first.size} is a prefix of the one of size {second.size} "
        f"(keys {first.key_id}, {second.key_id})"
    )


def _signed_checkpoint(record: dict[str, Any], public_key: Ed25519PublicKey, which: str) -> Checkpoint:
    """The checkpoint of an answer, once its signature verifies and its note is what was signed."""
    checkpoint = _checkpoint_record(record)
    if record["note"].encode() != checkpoint.note_body():
        raise Unsound(f"{which}: its note does not read its origin, size and root")
    if not verify(checkpoint, public_key):
        raise Unsound(
            f"{which} (size {checkpoint.size}, key {checkpoint.key_id}): {BAD_SIGNATURE}: "
            "it does not verify under the public key"
        )
    return checkpoint
