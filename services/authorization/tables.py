"""SQLAlchemy Core tables of the authorization service; they mirror migrations 0003, 0008, 0010, 0014 and
0019 (keep them in step)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

requests = sa.Table(
    "authz_requests",
    metadata,
    sa.Column("request_id", sa.String(128), primary_key=True),
    sa.Column("tenant_id", sa.String(255), nullable=False),
    sa.Column("tenant_kind", sa.String(16), nullable=False),
    sa.Column("dataset_id", sa.String(64), nullable=False),
    sa.Column("purpose", sa.Text, nullable=False),
    sa.Column("fields", sa.Text, nullable=False),
    sa.Column("row_filter", sa.Text, nullable=True),
    sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
    sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expected_daily_records", sa.BigInteger, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("decided_by_rule", sa.String(128), nullable=True),
    sa.Column("decision_reason", sa.Text, nullable=True),
    sa.Column("decided_by", sa.String(255), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # ROWS or AGGREGATE, and the aggregate spec as JSON (null for ROWS); migration 0019.
    sa.Column("kind", sa.String(16), nullable=False, server_default="ROWS"),
    sa.Column("aggregate", sa.Text, nullable=True),
)

grants = sa.Table(
    "authz_grants",
    metadata,
    sa.Column("grant_id", sa.String(160), primary_key=True),
    sa.Column("request_id", sa.String(128), nullable=False, unique=True),
    sa.Column("tenant_id", sa.String(255), nullable=False),
    sa.Column("dataset_id", sa.String(64), nullable=False),
    sa.Column("fields", sa.Text, nullable=False),
    sa.Column("masking", sa.Text, nullable=False),
    sa.Column("row_filter", sa.Text, nullable=True),
    sa.Column("daily_quota_records", sa.BigInteger, nullable=True),
    sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
    sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("price_plan", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("status_reason", sa.Text, nullable=True),
    sa.Column("suspension_cause", sa.String(32), nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False, server_default="ROWS"),
    sa.Column("aggregate", sa.Text, nullable=True),
)

grant_transitions = sa.Table(
    "authz_grant_transitions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("grant_id", sa.String(160), nullable=False),
    sa.Column("from_status", sa.String(16), nullable=True),
    sa.Column("to_status", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
)

# Events waiting for (or done with) the broker, written in the transaction of the change they describe
# (outbox.py). `body` is the Avro body of `schema_name`; at most one event per grant version.
outbox = sa.Table(
    "authz_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(64), nullable=False),
    sa.Column("schema_name", sa.String(255), nullable=False),
    sa.Column("event_key", sa.String(255), nullable=False),
    sa.Column("grant_version", sa.Integer, nullable=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("event_key", "grant_version", name="uq_authz_outbox_grant_version"),
    sa.Index("ix_authz_outbox_sent_at", "sent_at", "id"),
)

# One row per relay name: who may publish the outbox now, and until when (outbox.OutboxRelay).
outbox_lease = sa.Table(
    "authz_outbox_lease",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
)

# The policy file in force when a worker last started, by its SHA-256 (policy_in_force.py): a worker starting
# with another one records the change as an access event, in the transaction that updates this row.
policy_in_force = sa.Table(
    "authz_policy_in_force",
    metadata,
    sa.Column("policy", sa.String(64), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
)

# The worker's own view of the catalog (datasets.py), projected from pdo.catalog: each dataset's latest
# state as its events carry it. The worker never reads the catalog's tables.
datasets = sa.Table(
    "authz_datasets",
    metadata,
    sa.Column("dataset_id", sa.String(64), primary_key=True),
    sa.Column("provider_id", sa.String(255), nullable=False),
    sa.Column("owner_department", sa.String(255), nullable=False),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("domain", sa.String(32), nullable=False),
    sa.Column("classification", sa.String(16), nullable=False),
    sa.Column("openness", sa.String(16), nullable=False),
    sa.Column("schema_subject", sa.String(255), nullable=False),
    sa.Column("schema_id", sa.Integer, nullable=False),
    sa.Column("record_schema", sa.Text, nullable=False),
    sa.Column("sensitive_fields", sa.Text, nullable=False),
    sa.Column("price_plan", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("retired", sa.Boolean, nullable=False),
    sa.Column("asset_registration_number", sa.String(128), nullable=True),
    sa.Column("terms", sa.Text, nullable=True),
    sa.Column("derived_from", sa.Text, nullable=False, server_default="[]"),
)

# How far the view has read pdo.catalog: per partition, the offset after the last event applied.
catalog_progress = sa.Table(
    "authz_catalog_progress",
    metadata,
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
)

# What the authorization worker reads of other services' tables, by table name (its role gets exactly this,
# services/stack/database_roles.py): the audit log's liveness mark, asked before every automatic approval
# (pdo.audit.public.require_appendable: fail closed).
BORROWED: dict[str, tuple[str, ...]] = {
    "audit_liveness": ("SELECT",),
}
