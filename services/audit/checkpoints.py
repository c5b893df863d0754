"""Signed checkpoints: Ed25519 signatures over the log's (origin, size, root), in the C2SP tlog-checkpoint
note body form `"<origin>\n<size>\n<base64 root>\n"`.

Guarantee: a checkpoint verifies only under the public key of the private key that signed it, and only for
exactly that origin, size and root. The private key never leaves its PEM file: nothing here prints or logs
it. Without a configured key file, only a development environment gets one made in the run dir.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pdo.core.config import ConfigError, Settings, local_secret_path, write_private

SIGNING_KEY_NAME = "audit-signing-key.pem"
PUBLIC_KEY_NAME = "audit-public-key.pem"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    signed_at: datetime
    signature: bytes
    key_id: str

    def note_body(self) -> bytes:
        return note_body(self.origin, self.size, self.root)


def note_body(origin: str, size: int, root: bytes) -> bytes:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n".encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name of a public key (hex of the first 8 bytes of SHA-256 of its raw form): says which key
    signed, so a verifier holding another key can tell a wrong key from a forged signature."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise ConfigError(
            "the audit public key is not a PEM public key", hint="print it with `pdo audit public-key`"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(
            "the audit public key is not an Ed25519 key", hint="print it with `pdo audit public-key`"
        )
    return key


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def verify(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    if checkpoint.key_id != key_id(public_key):
        return False
    try:
        public_key.verify(checkpoint.signature, checkpoint.note_body())
    except InvalidSignature:
        return False
    return True


class Signer:
    """Signs checkpoints with the operator's Ed25519 private key."""

    def __init__(self, private_key: Ed25519PrivateKey, origin: str) -> None:
        self._private_key = private_key
        self.origin = origin
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    def __repr__(self) -> str:  # never the key
        return f"Signer(origin={self.origin!r}, key_id={self.key_id!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> Signer:
        """The signer of PDO_AUDIT_SIGNING_KEY_FILE; unset, the run dir's key in development (made once)
        and a ConfigError elsewhere."""
        configured = settings.audit_signing_key_file
        if configured:
            return cls(load_private_key(Path(configured)), settings.audit_origin)
        if not settings.development:
            raise ConfigError(
                "PDO_AUDIT_SIGNING_KEY_FILE is not set, so there is no audit signing key to sign or check checkpoints with",
                hint="point PDO_AUDIT_SIGNING_KEY_FILE at an Ed25519 private key in PEM (e.g. from "
                "`openssl genpkey -algorithm ed25519 -out audit-signing-key.pem`, mode 0600); `pdo up` makes "
                "one in PDO_RUN_DIR/secrets/; or, on a developer's machine only, set PDO_ENVIRONMENT=development",
            )
        return cls(load_private_key(ensure_local_signing_key(settings.run_dir)), settings.audit_origin)

    def public_key_pem(self) -> str:
        return public_key_pem(self.public_key)

    def sign(self, size: int, root: bytes, signed_at: datetime | None = None) -> Checkpoint:
        signature = self._private_key.sign(note_body(self.origin, size, root))
        return Checkpoint(
            origin=self.origin,
            size=size,
            root=root,
            signed_at=signed_at or datetime.now(UTC),
            signature=signature,
            key_id=self.key_id,
        )


def generate_private_key_pem() -> str:
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(
            f"PDO_AUDIT_SIGNING_KEY_FILE names {path}, which does not exist",
            hint="point it at the audit signing key's PEM file",
        ) from None
    except (ValueError, TypeError):
        # The reason only, never the file's content.
        raise ConfigError(
            f"{path} is not an unencrypted PEM private key",
            hint="make one with `openssl genpkey -algorithm ed25519 -out FILE`",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{path} holds a private key that is not Ed25519", hint="audit checkpoints use Ed25519"
        )
    return key


def ensure_local_signing_key(run_dir: Path) -> Path:
    """The local stack's signing key file (0600), made once under PDO_RUN_DIR/secrets/."""
    path = local_secret_path(run_dir, SIGNING_KEY_NAME)
    if not path.exists():
        write_private(path, generate_private_key_pem())
    return path


def write_local_public_key(run_dir: Path, signing_key_file: Path) -> Path:
    """The public half of `signing_key_file`, written beside the local secrets: what the services that only
    check or serve checkpoints (the gateway) are given instead of the private key."""
    path = local_secret_path(run_dir, PUBLIC_KEY_NAME)
    write_private(path, public_key_pem(load_private_key(signing_key_file).public_key()))
    return path
