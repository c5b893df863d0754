"""Reading the audit log: entries by filter, the signed checkpoints, and proofs against them.

Guarantee: every proof is built from the stored leaf hashes (pdo.core.merkle) and is tied to a checkpoint
that was signed, never to a size nobody signed. A caller scoped to one tenant (`tenant=`) sees only entries
whose `tenant` column is that tenant: for any other entry the answer is the same NotFound as for an entry
that does not exist, so nothing about others' entries can be learned. What is handed out is the body
exactly as stored: whoever holds the public key checks it with pdo.audit.verify, trusting nothing else.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from pdo.audit.checkpoints import Checkpoint, Signer, load_public_key, public_key_pem
from pdo.audit.store import AuditStore, LoggedEntry
from pdo.audit.tables import entries
from pdo.core import merkle
from pdo.core.config import ConfigError, Settings
from pdo.core.errors import InvalidInput, NotFound, PdoError

MAX_PAGE = 1000
# The largest seq or size SQL can hold (BIGINT): anything above is refused before it reaches the database.
MAX_INDEX = 2**63 - 1
CHECKPOINTS_HINT = "GET /v1/audit/checkpoints (or `pdo audit verify`) lists the signed sizes"


@dataclass(frozen=True)
class EntryFilter:
    """Which entries to list: every given field must match; `after` pages on from a seq (exclusive)."""

    subject: str | None = None
    action: str | None = None
    actor: str | None = None
    tenant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: int | None = None
    limit: int = 100


@dataclass(frozen=True)
class EntryPage:
    entries: list[LoggedEntry]
    next_after: int | None  # pass it as `after` for the next page; None when this page is the last


@dataclass(frozen=True)
class InclusionProof:
    entry: LoggedEntry
    checkpoint: Checkpoint
    path: list[bytes]


@dataclass(frozen=True)
class ConsistencyProof:
    first: Checkpoint
    second: Checkpoint
    path: list[bytes]


def list_entries(engine: sa.Engine, wanted: EntryFilter) -> EntryPage:
    """The matching entries in seq order, at most `wanted.limit` (1..1000)."""
    if not 1 <= wanted.limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1 to {MAX_PAGE}, not {wanted.limit}", hint="page on with `after`")
    since, until = _utc(wanted.since), _utc(wanted.until)
    if since is not None and until is not None and since >= until:
        raise InvalidInput(
            f"since ({since.isoformat()}) must be before until ({until.isoformat()})",
            hint="since is inclusive, until exclusive",
        )
    conditions = [
        column == value
        for column, value in (
            (entries.c.subject, wanted.subject),
            (entries.c.action, wanted.action),
            (entries.c.actor, wanted.actor),
            (entries.c.tenant, wanted.tenant),
        )
        if value is not None
    ]
    if since is not None:
        conditions.append(entries.c.occurred_at >= since)
    if until is not None:
        conditions.append(entries.c.occurred_at < until)
    if wanted.after is not None:
        conditions.append(entries.c.seq > wanted.after)
    query = (
        sa.select(entries.c.seq, entries.c.body, entries.c.leaf_hash)
        .where(*conditions)
        .order_by(entries.c.seq)
        .limit(wanted.limit + 1)  # one more than asked says whether there is a next page
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    found = [_logged(row) for row in rows[: wanted.limit]]
    more = len(rows) > wanted.limit
    return EntryPage(found, found[-1].seq if more else None)


def list_checkpoints(engine: sa.Engine) -> list[Checkpoint]:
    return AuditStore(engine).checkpoints()


def latest_checkpoint(engine: sa.Engine) -> Checkpoint:
    """The newest signed checkpoint; NotFound before the first."""
    latest = AuditStore(engine).latest_checkpoint()
    if latest is None:
        raise NotFound(
            "the audit log has no signed checkpoint yet",
            hint="the audit worker signs one every PDO_AUDIT_CHECKPOINT_INTERVAL_S once the log holds entries",
        )
    return latest


def checkpoint_of_size(engine: sa.Engine, size: int) -> Checkpoint:
    _check_index("size", size)
    signed = AuditStore(engine).checkpoint_of_size(size)
    if signed is None:
        raise NotFound(f"no checkpoint was signed at size {size}", hint=CHECKPOINTS_HINT)
    return signed


def inclusion_proof(
    engine: sa.Engine, entry: int, size: int | None = None, tenant: str | None = None
) -> InclusionProof:
    """Entry `entry` and its audit path to the root of the checkpoint of `size` (default: the latest).

    InvalidInput unless entry < size; NotFound for a size nobody signed, and (for `tenant`) an entry of
    another tenant's, which reads exactly as one that does not exist.
    """
    _check_index("entry", entry)
    signed = latest_checkpoint(engine) if size is None else checkpoint_of_size(engine, size)
    if entry >= signed.size:
        raise InvalidInput(
            f"entry {entry} is not under the checkpoint of size {signed.size} (it covers 0..{signed.size - 1})",
            hint="name a later checkpoint's size, or wait for the next checkpoint",
        )
    query = sa.select(entries.c.seq, entries.c.body, entries.c.leaf_hash).where(entries.c.seq == entry)
    if tenant is not None:
        query = query.where(entries.c.tenant == tenant)
    with engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        raise NotFound(
            f"no audit entry {entry}" + (" about you" if tenant is not None else ""),
            hint="GET /v1/audit/entries lists the entries you may see",
        )
    return InclusionProof(_logged(row), signed, merkle.inclusion_proof(entry, _signed_prefix(engine, signed)))


def consistency_proof(engine: sa.Engine, first: int, second: int) -> ConsistencyProof:
    """The proof that the log signed at size `first` is a prefix of the one signed at size `second`."""
    if first > second:
        raise InvalidInput(
            f"first ({first}) must not be larger than second ({second})", hint="the older size comes first"
        )
    older, newer = checkpoint_of_size(engine, first), checkpoint_of_size(engine, second)
    return ConsistencyProof(older, newer, merkle.consistency_proof(first, _signed_prefix(engine, newer)))


def served_public_key_pem(settings: Settings) -> str:
    """The PEM public key that verifies the checkpoints: PDO_AUDIT_PUBLIC_KEY_FILE, or else the one of
    the signing key (so a gateway need not hold the private key when the public one is configured)."""
    if settings.audit_public_key_file:
        path = Path(settings.audit_public_key_file)
        try:
            pem = path.read_bytes()
        except OSError as error:
            raise ConfigError(
                f"PDO_AUDIT_PUBLIC_KEY_FILE names {path}, which cannot be read ({error.strerror})",
                hint="write it with `pdo audit public-key > FILE`",
            ) from None
        return public_key_pem(load_public_key(pem))
    return Signer.from_settings(settings).public_key_pem()


# ------------------------------------------------------------------------------------------ JSON answers
# The shapes the gateway serves under /v1/audit and `pdo audit verify-proof` checks (pdo.audit.verify).


def entry_json(logged: LoggedEntry) -> dict[str, Any]:
    """The stored body exactly, its leaf hash, and the body's fields decoded for reading."""
    decoded = json.loads(logged.body)
    return {
        "seq": logged.seq,
        "body": logged.body,
        "leaf_hash": logged.leaf_hash.hex(),
        **{
            name: decoded.get(name)
            for name in ("actor", "action", "subject", "reason", "occurred_at", "details")
        },
    }


def checkpoint_json(checkpoint: Checkpoint) -> dict[str, Any]:
    return {
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root": _base64(checkpoint.root),
        "signed_at": checkpoint.signed_at.astimezone(UTC).isoformat(),
        "key_id": checkpoint.key_id,
        "signature": _base64(checkpoint.signature),
        "note": checkpoint.note_body().decode(),
    }


def inclusion_json(proof: InclusionProof) -> dict[str, Any]:
    return {
        "entry": entry_json(proof.entry),
        "checkpoint": checkpoint_json(proof.checkpoint),
        "inclusion": {
            "leaf_index": proof.entry.seq,
            "tree_size": proof.checkpoint.size,
            "path": [node.hex() for node in proof.path],
        },
    }


def consistency_json(proof: ConsistencyProof) -> dict[str, Any]:
    return {
        "first": checkpoint_json(proof.first),
        "second": checkpoint_json(proof.second),
        "proof": [node.hex() for node in proof.path],
    }


def _base64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# ------------------------------------------------------------------------------------------------ helpers


def _check_index(name: str, value: int) -> None:
    if not 0 <= value <= MAX_INDEX:
        raise InvalidInput(f"{name} must be 0 to {MAX_INDEX}, not {value}", hint=CHECKPOINTS_HINT)


def _signed_prefix(engine: sa.Engine, signed: Checkpoint) -> list[bytes]:
    """The leaf hashes the checkpoint signed. Rows below a signed size never change, so reading them apart
    from the entry or the checkpoint is safe."""
    hashes = AuditStore(engine).leaf_hashes(end=signed.size)
    if len(hashes) != signed.size:
        # Rows under a signed size are gone: no honest proof exists, and the log needs an operator's look.
        raise PdoError(
            f"the audit log holds {len(hashes)} entries below the checkpoint of size {signed.size}",
            hint="run `pdo audit verify`: entries were removed after they were signed",
        )
    return hashes


def _logged(row: Any) -> LoggedEntry:
    return LoggedEntry(seq=row.seq, body=row.body, leaf_hash=bytes(row.leaf_hash))


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
