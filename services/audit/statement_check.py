"""A tenant's check of a statement against what it received and what the audit log signed.

Guarantee: `check_statement` passes only when, for every line of the statement,
(1) its records equal the sum of the counts of the delivery digests it names;
(2) each digest's delivery ids are `count` distinct ids whose RFC 6962 root is the digest's root;
(3) every one of those ids is a delivery the tenant received (recomputed from its own records' provenance);
(4) each digest is an entry of the audit log — its body names the digest, grant, count and root — and that
entry is included, by its audit path, in a checkpoint whose Ed25519 signature verifies under the audit
public key the tenant trusts.
Nothing is taken on the platform's word but what the signature covers: a digest's count and root come from
the signed entry's body, never from the route that served the digest. The first failure stops the check
with its reason (`StatementNotVerified`); the checks passed so far are in `verdicts`.

The evidence is gathered by the caller (`pdo audit verify-statement` over HTTP and Kafka), so this module
is pure and takes JSON shaped as the gateway serves it: the statement (/v1/statements/{id}), the digests
(/v1/usage/digests), their delivery ids (/v1/usage/digests/{id}/deliveries), the audit entries
(/v1/audit/entries) and proofs (/v1/audit/proof).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from pdo.audit.checkpoints import Checkpoint, verify
from pdo.core import merkle
from pdo.core.errors import PdoError
from pdo.core.provenance import delivery_root

DIGESTED = "deliveries.digested"

Json = Mapping[str, Any]


class StatementNotVerified(PdoError):
    """One check failed; the message says which and why."""


@dataclass(frozen=True)
class Evidence:
    """What the caller fetched for one statement."""

    statement: Json
    digests: Mapping[str, Json]  # digest id -> the digest as /v1/usage/digests lists it
    deliveries: Callable[[str], Sequence[str]]  # digest id -> its delivery ids
    received: Collection[str]  # delivery ids recomputed from the tenant's own records
    logged: Callable[[str], Sequence[Json]]  # grant id -> its "deliveries.digested" audit entries
    proof: Callable[[int], Json]  # entry seq -> its inclusion proof under a signed checkpoint
    public_key: Ed25519PublicKey


@dataclass
class Outcome:
    verdicts: list[str] = field(default_factory=list)

    def passed(self, text: str) -> None:
        self.verdicts.append(f"ok    {text}")


def check_statement(evidence: Evidence, outcome: Outcome | None = None) -> Outcome:
    outcome = outcome or Outcome()
    # A statement saved before lines named their digests has no "digests": it names none.
    lines = [{"digests": [], **line} for line in evidence.statement["lines"]]
    for line in lines:
        check_line_sum(line, evidence.digests, evidence.statement["period"])
        outcome.passed(
            f"(1) grant {line['grant_id']}: {line['records']} records billed = the counts of its "
            f"{len(line['digests'])} digest(s)"
        )
    for line in lines:
        for digest_id in line["digests"]:
            digest = evidence.digests[digest_id]
            ids = evidence.deliveries(digest_id)
            check_root(digest, ids)
            outcome.passed(f"(2) digest {digest_id}: {len(ids)} delivery ids hash to its root")
            check_received(digest, ids, evidence.received)
            outcome.passed(f"(3) digest {digest_id}: every delivery billed is one you received")
            seq = check_logged(
                digest, evidence.logged(digest["grant_id"]), evidence.proof, evidence.public_key
            )
            outcome.passed(f"(4) digest {digest_id}: audit entry {seq} is in the signed log")
    return outcome


def check_line_sum(line: Json, digests: Mapping[str, Json], period: str) -> None:
    where = f"(1) line of grant {line['grant_id']}"
    if not line["digests"]:
        raise StatementNotVerified(
            f"{where}: billed {line['records']} records but names no delivery digest",
            hint="a statement issued before delivery digests existed cannot be checked this way",
        )
    counted = 0
    for digest_id in line["digests"]:
        digest = digests.get(digest_id)
        if digest is None:
            raise StatementNotVerified(f"{where}: names digest {digest_id}, which the platform does not list")
        if (digest["grant_id"], digest["period"]) != (line["grant_id"], period):
            raise StatementNotVerified(
                f"{where}: digest {digest_id} is of grant {digest['grant_id']} in {digest['period']}, "
                f"not of this line's grant in {period}"
            )
        counted += int(digest["count"])
    if counted != int(line["records"]):
        raise StatementNotVerified(
            f"{where}: billed {line['records']} records, but its {len(line['digests'])} digest(s) count {counted} deliveries"
        )


def check_root(digest: Json, ids: Sequence[str]) -> None:
    where = f"(2) digest {digest['digest_id']}"
    if len(set(ids)) != len(ids):
        raise StatementNotVerified(f"{where}: its delivery list repeats an id")
    if len(ids) != int(digest["count"]):
        raise StatementNotVerified(f"{where}: counts {digest['count']} deliveries but lists {len(ids)}")
    if delivery_root(ids).hex() != digest["root"]:
        raise StatementNotVerified(f"{where}: its delivery ids do not hash to its root {digest['root']}")


def check_received(digest: Json, ids: Sequence[str], received: Collection[str]) -> None:
    missing = [delivery for delivery in ids if delivery not in received]
    if missing:
        raise StatementNotVerified(
            f"(3) digest {digest['digest_id']}: {len(missing)} billed delivery id(s) are not among the records "
            f"you received, e.g. {missing[0]}",
            hint="records older than your topic's retention are no longer on it: pass the delivery ids you "
            "kept with --received, or ask the operator",
        )


def check_logged(
    digest: Json,
    entries: Sequence[Json],
    proof: Callable[[int], Json],
    public_key: Ed25519PublicKey,
) -> int:
    """The seq of the signed audit entry recording `digest` (count and root as listed); else the reason."""
    where = f"(4) digest {digest['digest_id']}"
    matching = [entry for entry in entries if _body_details(entry).get("digest") == digest["digest_id"]]
    if not matching:
        raise StatementNotVerified(f"{where}: no {DIGESTED} entry of the audit log names it")
    entry = matching[0]
    details = _body_details(entry)
    if (details.get("count"), details.get("root")) != (str(digest["count"]), digest["root"]):
        raise StatementNotVerified(
            f"{where}: the audit log recorded count {details.get('count')} root {details.get('root')}, "
            f"not count {digest['count']} root {digest['root']}"
        )
    check_inclusion(entry, proof(int(entry["seq"])), public_key, where)
    return int(entry["seq"])


def check_inclusion(entry: Json, proven: Json, public_key: Ed25519PublicKey, where: str) -> None:
    """The proof's entry is `entry`, its path leads to the checkpoint's root, the checkpoint is signed."""
    if proven["entry"]["body"] != entry["body"]:
        raise StatementNotVerified(f"{where}: the proof is of another entry than {entry['seq']}")
    checkpoint = _checkpoint(proven["checkpoint"])
    inclusion = proven["inclusion"]
    leaf = merkle.leaf_hash(entry["body"].encode("utf-8"))
    included = int(inclusion["tree_size"]) == checkpoint.size and merkle.verify_inclusion(
        leaf,
        int(inclusion["leaf_index"]),
        int(inclusion["tree_size"]),
        [bytes.fromhex(node) for node in inclusion["path"]],
        checkpoint.root,
    )
    if int(inclusion["leaf_index"]) != int(entry["seq"]) or not included:
        raise StatementNotVerified(
            f"{where}: audit entry {entry['seq']} is not included in the checkpoint of size {checkpoint.size}"
        )
    if proven["checkpoint"].get("note") != checkpoint.note_body().decode() or not verify(
        checkpoint, public_key
    ):
        raise StatementNotVerified(
            f"{where}: the checkpoint of size {checkpoint.size} (key {checkpoint.key_id}) is not signed by the "
            "audit public key you trust",
            hint="check the key file: `pdo audit public-key` prints the platform's, GET /v1/audit/public-key serves it",
        )


def _body_details(entry: Json) -> dict[str, Any]:
    """The details as the signed body holds them (what the leaf hash covers), not as served beside it."""
    try:
        body = json.loads(entry["body"])
    except (ValueError, TypeError):
        return {}
    if not isinstance(body, dict) or body.get("action") != DIGESTED:
        return {}
    details = body.get("details")
    return details if isinstance(details, dict) else {}


def _checkpoint(served: Json) -> Checkpoint:
    return Checkpoint(
        origin=served["origin"],
        size=int(served["size"]),
        root=base64.b64decode(served["root"]),
        signed_at=datetime.fromisoformat(served["signed_at"]),
        signature=base64.b64decode(served["signature"]),
        key_id=served["key_id"],
    )
