"""Audit's public module: the one module of `pdo.audit` other packages may import.

`AuditStore` appends entries (idempotent by source, no gaps) and signs checkpoints with a `Signer`
(from PDO_AUDIT_SIGNING_KEY_FILE); `Entry` is one act to record.
"""

from pdo.audit.checkpoints import Signer, ensure_local_signing_key
from pdo.audit.store import AuditStore, Entry

__all__ = ["AuditStore", "Entry", "Signer", "ensure_local_signing_key"]
