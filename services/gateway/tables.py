"""SQLAlchemy Core tables of the gateway's principals and API keys (migration 0004), of its outbox of
access events (migration 0014) and of the answers it keeps per Idempotency-Key (migration 0017)."""

from __future__ import annotations

import sqlalchemy as sa

from pdo.core.outbox import outbox_tables

metadata = sa.MetaData()

principals = sa.Table(
    "gateway_principals",
    metadata,
    # kind:name, e.g. "tenant:acme", "provider:transport-bureau", "operator:alice".
    sa.Column("principal_id", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("display_name", sa.String(200), nullable=False),
    # Government departments as tenants: free intra-government sharing. Always false for other kinds.
    sa.Column("is_government", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint(
        "kind IN ('provider', 'tenant', 'operator', 'auditor')", name="ck_gateway_principals_kind"
    ),
)

api_keys = sa.Table(
    "gateway_api_keys",
    metadata,
    # The public prefix of the key (pdo_<key_id>_<secret>); the secret itself is never stored.
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column(
        "principal_id",
        sa.String(128),
        sa.ForeignKey("gateway_principals.principal_id", name="fk_gateway_api_keys_principal_id"),
        nullable=False,
    ),
    # How `hash` was derived from the whole key, e.g. "pbkdf2-sha256:20000", so it can be raised later.
    sa.Column("kdf", sa.String(32), nullable=False),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_gateway_api_keys_principal_id", "principal_id"),
)

# Access events (principals and keys created, disabled, revoked) committed with their change and published
# by the gateway's relay (pdo.gateway.outbox); the layout is the shared outbox's (pdo.core.outbox).
outbox, outbox_lease = outbox_tables(metadata, "gateway")

# The first complete answer to a call made with an `Idempotency-Key` (pdo.gateway.idempotency), per principal
# and key: a retry with the same key and body gets it back instead of running again. A row whose status_code
# is NULL is a claim: the call is running (or its process died; a claim is taken over once stale).
idempotency_keys = sa.Table(
    "gateway_idempotency_keys",
    metadata,
    sa.Column("principal_id", sa.String(128), primary_key=True),
    sa.Column("idempotency_key", sa.String(255), primary_key=True),
    # SHA-256 of the route and the request's body as parsed, so the same key with another body is refused.
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("response_body", sa.Text, nullable=True),
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_gateway_idempotency_keys_expires_at", "expires_at"),
)

# What the gateway does to other services' tables, by table name (it imports none of their modules), so its
# database role gets exactly this (services/stack/database_roles.py). It is the command side of the catalog
# and the authorization service: their services run in the gateway's process on their tables (registering
# and updating datasets; submitting and withdrawing requests, operators' decisions, suspending, resuming and
# revoking grants, with the history and the outbox, which it publishes right after each commit). Deleting is
# theirs alone (the authorization worker prunes the outbox and rebuilds its tables). It only reads the
# metering and billing tables it serves over HTTP: usage windows, statements, and the ledger, periods and
# metering's projection of grants and datasets that the asset report prices an open month from. It reads the
# audit log and its checkpoints it serves under /v1/audit (pdo.audit.public), and never writes them.
WRITE = ("SELECT", "INSERT", "UPDATE")
BORROWED: dict[str, tuple[str, ...]] = {
    "catalog_datasets": WRITE,
    "authz_requests": WRITE,
    "authz_grants": WRITE,
    "authz_grant_transitions": ("SELECT", "INSERT"),
    "authz_outbox": WRITE,
    "authz_outbox_lease": ("SELECT", "UPDATE"),
    "metering_windows": ("SELECT",),
    "metering_statements": ("SELECT",),
    "metering_statement_lines": ("SELECT",),
    "metering_periods": ("SELECT",),
    "metering_ledger": ("SELECT",),
    "metering_grants": ("SELECT",),
    "metering_datasets": ("SELECT",),
    "audit_entries": ("SELECT",),
    "audit_checkpoints": ("SELECT",),
    # The audit log's liveness mark, asked before approvals and resumptions (fail closed).
    "audit_liveness": ("SELECT",),
    "metering_digests": ("SELECT",),  # delivery digests, served under /v1/usage/digests
}
