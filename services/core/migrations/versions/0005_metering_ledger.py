"""Metering: the usage ledger (one row per delivery id, so a redelivered fact can never count twice) and the
billing periods it is billed in.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22

Self-contained on purpose (it does not import pdo.metering.tables): a migration describes the database as it
was at this revision. Plain SQLAlchemy types only, so it runs on SQLite and PostgreSQL alike.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metering_ledger",
        sa.Column("delivery_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("grant_id", sa.String(160), nullable=False),
        sa.Column("records", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_topic", sa.String(255), nullable=False),
        sa.Column("source_partition", sa.Integer, nullable=False),
        sa.Column("first_offset", sa.BigInteger, nullable=False),
        sa.Column("last_offset", sa.BigInteger, nullable=False),
        sa.Column("billing_period", sa.String(7), nullable=True),
        sa.Column("set_aside_reason", sa.Text, nullable=True),
        sa.CheckConstraint(
            "(billing_period IS NULL) <> (set_aside_reason IS NULL)",
            name="ck_metering_ledger_billed_or_set_aside",
        ),
    )
    op.create_index("ix_metering_ledger_grant_delivered", "metering_ledger", ["grant_id", "delivered_at"])
    op.create_index("ix_metering_ledger_tenant_period", "metering_ledger", ["tenant_id", "billing_period"])
    op.create_index("ix_metering_ledger_dataset_period", "metering_ledger", ["dataset_id", "billing_period"])
    op.create_table(
        "metering_periods",
        sa.Column("period", sa.String(7), primary_key=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(255), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("metering_periods")
    op.drop_index("ix_metering_ledger_dataset_period", table_name="metering_ledger")
    op.drop_index("ix_metering_ledger_tenant_period", table_name="metering_ledger")
    op.drop_index("ix_metering_ledger_grant_delivered", table_name="metering_ledger")
    op.drop_table("metering_ledger")
