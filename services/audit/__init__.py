"""Audit: the tamper-evident log of who did what, when and why (issue #13).

An append-only list of entries, hashed into an RFC 6962 Merkle tree whose roots are signed (Ed25519) at
checkpoints, so anyone holding the public key can verify the log offline. Other services use it only
through pdo.audit.public."""
