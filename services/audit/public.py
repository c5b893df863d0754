"""Audit's public module: the one module of `pdo.audit` other packages may import.

`AuditStore` appends entries (idempotent by source, no gaps) and signs checkpoints with a `Signer`
(from PDO_AUDIT_SIGNING_KEY_FILE); `Entry` is one act to record.
Reading (pdo.audit.reading): `list_entries` by an `EntryFilter`, the checkpoints, `inclusion_proof` and
`consistency_proof` against signed checkpoints, their JSON answers (`*_json`), and `served_public_key_pem`.

Fail closed (pdo.audit.liveness): `require_appendable(engine, settings.audit_fail_closed_after_s)` raises
`AuditLogNotAppendable` (an Unavailable) unless the audit log was appended to recently enough: callers ask
before every change that widens access, never before one that narrows it. `appendability` answers the
question without raising (for gauges). Readers need SELECT on `audit_liveness`, declared for their role.
"""

from pdo.audit.checkpoints import Signer, ensure_local_signing_key, write_local_public_key
from pdo.audit.liveness import Appendability, AuditLogNotAppendable, appendability, require_appendable
from pdo.audit.reading import (
    MAX_INDEX,
    MAX_PAGE,
    EntryFilter,
    EntryPage,
    checkpoint_json,
    consistency_json,
    consistency_proof,
    entry_json,
    inclusion_json,
    inclusion_proof,
    latest_checkpoint,
    list_checkpoints,
    list_entries,
    served_public_key_pem,
)
from pdo.audit.store import AuditStore, Entry

__all__ = [
    "MAX_INDEX",
    "MAX_PAGE",
    "Appendability",
    "AuditLogNotAppendable",
    "AuditStore",
    "Entry",
    "EntryFilter",
    "EntryPage",
    "Signer",
    "appendability",
    "checkpoint_json",
    "consistency_json",
    "consistency_proof",
    "ensure_local_signing_key",
    "write_local_public_key",
    "entry_json",
    "inclusion_json",
    "inclusion_proof",
    "latest_checkpoint",
    "list_checkpoints",
    "list_entries",
    "require_appendable",
    "served_public_key_pem",
]
