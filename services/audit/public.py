"""Audit's public module: the one module of `pdo.audit` other packages may import.

`AuditStore` appends entries (idempotent by source, no gaps) and signs checkpoints with a `Signer`
(from PDO_AUDIT_SIGNING_KEY_FILE); `Entry` is one act to record.
Reading (pdo.audit.reading): `list_entries` by an `EntryFilter`, the checkpoints, `inclusion_proof` and
`consistency_proof` against signed checkpoints, their JSON answers (`*_json`), and `served_public_key_pem`.
"""

from pdo.audit.checkpoints import Signer, ensure_local_signing_key
from pdo.audit.store import AuditStore, Entry

__all__ = ["AuditStore", "Entry", "Signer", "ensure_local_signing_key"]

from pdo.audit.reading import (  # noqa: E402 - reading's names, apart so the lists above stay as they were
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

__all__ += [
    "MAX_INDEX",
    "MAX_PAGE",
    "EntryFilter",
    "EntryPage",
    "checkpoint_json",
    "consistency_json",
    "consistency_proof",
    "entry_json",
    "inclusion_json",
    "inclusion_proof",
    "latest_checkpoint",
    "list_checkpoints",
    "list_entries",
    "served_public_key_pem",
]
