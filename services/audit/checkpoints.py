"""Stand-in for audit-log's signed checkpoints (the shared contract), replaced by theirs at merge."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdo.core.config import Settings


@dataclass(frozen=True)
class Signer:
    origin: str
    key: Ed25519PrivateKey

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer:
        # The stand-in signs with a key of its own: the real one reads PDO_AUDIT_SIGNING_KEY_FILE.
        return cls("pdo.local/audit", Ed25519PrivateKey.generate())

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.origin.encode()).hexdigest()[:16]

    def sign(self, size: int, root: bytes) -> bytes:
        return self.key.sign(f"{self.origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode())
