"""Aggregate-only grants: a request's and a grant's kind and aggregate spec; the aggregation service's tables.

Revision ID: 0019
Revises: 0016
Create Date: 2026-12-01

Self-contained on purpose (it does not import pdo.authorization.tables or pdo.aggregation.tables): a
migration describes the database as it was at this revision. Every request and grant made before it is of
kind ROWS (the server default), with no aggregate spec.
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("authz_requests", "authz_grants"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="ROWS"))
            batch.add_column(sa.Column("aggregate", sa.Text, nullable=True))
    op.create_table(
        "aggregation_positions",
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("latest_event_time", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "aggregation_watermarks",
        sa.Column("dataset_id", sa.String(64), primary_key=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "aggregation_groups",
        sa.Column("grant_id", sa.String(160), primary_key=True),
        sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("group_key", sa.String(1024), primary_key=True),
        sa.Column("records", sa.BigInteger, nullable=False),
        sa.Column("stats", sa.Text, nullable=False),
    )
    op.create_table(
        "aggregation_windows",
        sa.Column("grant_id", sa.String(160), primary_key=True),
        sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("records", sa.BigInteger, nullable=False),
        sa.Column("groups_published", sa.Integer, nullable=False),
        sa.Column("groups_suppressed", sa.Integer, nullable=False),
    )
    op.create_table(
        "aggregation_privacy_budgets",
        sa.Column("tenant_id", sa.String(255), primary_key=True),
        sa.Column("dataset_id", sa.String(64), primary_key=True),
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("spent", sa.Float, nullable=False),
        sa.Column("exhausted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "aggregation_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("schema_name", sa.String(255), nullable=False),
        sa.Column("event_key", sa.String(255), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_aggregation_outbox_sent_at", "aggregation_outbox", ["sent_at", "id"])
    lease = op.create_table(
        "aggregation_outbox_lease",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.bulk_insert(
        lease,
        [
            {"name": "aggregation-outbox", "holder": None, "expires_at": None},
            {"name": "aggregation-feeds", "holder": None, "expires_at": None},
        ],
    )


def downgrade() -> None:
    op.drop_table("aggregation_outbox_lease")
    op.drop_index("ix_aggregation_outbox_sent_at", table_name="aggregation_outbox")
    for table in (
        "aggregation_outbox",
        "aggregation_privacy_budgets",
        "aggregation_windows",
        "aggregation_groups",
    ):
        op.drop_table(table)
    op.drop_table("aggregation_watermarks")
    op.drop_table("aggregation_positions")
    for table in ("authz_grants", "authz_requests"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("aggregate")
            batch.drop_column("kind")
