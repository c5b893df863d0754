"""Idempotent publishing: the gateway's Idempotency-Key answers and the feed's record_id claims.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-01

Self-contained on purpose (it imports neither pdo.gateway.tables nor pdo.publishing.tables): a migration
describes the database as it was at this revision.
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_idempotency_keys",
        sa.Column("principal_id", sa.String(128), primary_key=True),
        sa.Column("idempotency_key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("response_body", sa.Text, nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_gateway_idempotency_keys_expires_at", "gateway_idempotency_keys", ["expires_at"])
    op.create_table(
        "gateway_feed_record_ids",
        sa.Column("dataset_id", sa.String(64), primary_key=True),
        sa.Column("record_key_sha256", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("state IN ('SENDING', 'SENT')", name="ck_gateway_feed_record_ids_state"),
    )
    op.create_index("ix_gateway_feed_record_ids_since", "gateway_feed_record_ids", ["since"])


def downgrade() -> None:
    op.drop_index("ix_gateway_feed_record_ids_since", "gateway_feed_record_ids")
    op.drop_table("gateway_feed_record_ids")
    op.drop_index("ix_gateway_idempotency_keys_expires_at", "gateway_idempotency_keys")
    op.drop_table("gateway_idempotency_keys")
