"""Audit's public module: the one module of `pdo.audit` other packages may import.

`AuditStore` appends entries (idempotent by source, no gaps) and signs checkpoints with a `Signer`
(from PDO_AUDIT_SIGNING_KEY_FILE); `Entry` is one act to record.

Fail closed (pdo.audit.liveness): `require_appendable(engine, settings.audit_fail_closed_after_s)` raises
`AuditLogNotAppendable` (an Unavailable) unless the audit log was appended to recently enough: callers ask
before every change that widens access, never before one that narrows it. `appendability` answers the
question without raising (for gauges). Readers need SELECT on `audit_liveness`, declared for their role.
"""

from pdo.audit.checkpoints import Signer, ensure_local_signing_key
from pdo.audit.liveness import Appendability, AuditLogNotAppendable, appendability, require_appendable
from pdo.audit.store import AuditStore, Entry

__all__ = ["AuditStore", "Entry", "Signer", "ensure_local_signing_key"]
__all__ += ["Appendability", "AuditLogNotAppendable", "appendability", "require_appendable"]
