"""Authorization: data requests, grants and the history of every grant transition.

Revision ID: 0003
Revises: 0002
Create Date: 2026-01-01

Self-contained on purpose (it does not import pdo.authorization.tables): a migration describes the database
as it was at this revision. Plain SQLAlchemy types only, so the same revision runs on SQLite and PostgreSQL.
Lists (fields), maps (masking) and the price plan are JSON text; decimals inside it are strings.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "authz_requests",
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
        # Who or which policy rule moved the request to its status, and why (a withdrawal's reason too).
        sa.Column("decided_by_rule", sa.String(128), nullable=True),
        sa.Column("decision_reason", sa.Text, nullable=True),
        sa.Column("decided_by", sa.String(255), nullable=True),
        # occurred_at of the submission and of the last event, so a rebuilt row equals the original.
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_authz_requests_tenant_id", "authz_requests", ["tenant_id"])
    op.create_index("ix_authz_requests_status", "authz_requests", ["status"])
    op.create_table(
        "authz_grants",
        sa.Column("grant_id", sa.String(160), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False),
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
        # OPERATOR or QUOTA_EXCEEDED while SUSPENDED, null otherwise.
        sa.Column("suspension_cause", sa.String(32), nullable=True),
        # Transitions so far (1 when granted); guards concurrent writers and orders snapshots.
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("request_id", name="uq_authz_grants_request_id"),
    )
    op.create_index("ix_authz_grants_tenant_id", "authz_grants", ["tenant_id"])
    op.create_index("ix_authz_grants_dataset_id", "authz_grants", ["dataset_id"])
    op.create_index("ix_authz_grants_status_valid_until", "authz_grants", ["status", "valid_until"])
    op.create_table(
        "authz_grant_transitions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("grant_id", sa.String(160), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.UniqueConstraint("event_id", name="uq_authz_grant_transitions_event_id"),
    )
    op.create_index("ix_authz_grant_transitions_grant_id", "authz_grant_transitions", ["grant_id"])


def downgrade() -> None:
    op.drop_index("ix_authz_grant_transitions_grant_id", table_name="authz_grant_transitions")
    op.drop_table("authz_grant_transitions")
    op.drop_index("ix_authz_grants_status_valid_until", table_name="authz_grants")
    op.drop_index("ix_authz_grants_dataset_id", table_name="authz_grants")
    op.drop_index("ix_authz_grants_tenant_id", table_name="authz_grants")
    op.drop_table("authz_grants")
    op.drop_index("ix_authz_requests_status", table_name="authz_requests")
    op.drop_index("ix_authz_requests_tenant_id", table_name="authz_requests")
    op.drop_table("authz_requests")
