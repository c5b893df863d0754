"""Metering: usage windows (MINUTE and DAY per grant) and the quota notices raised once per grant and day.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22

Self-contained on purpose (it does not import pdo.metering.tables): a migration describes the database as it
was at this revision. Plain SQLAlchemy types only, so it runs on SQLite and PostgreSQL alike.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metering_windows",
        sa.Column("grant_id", sa.String(160), primary_key=True),
        sa.Column("window_kind", sa.String(8), primary_key=True),
        sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("records", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("published_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_metering_windows_kind_end", "metering_windows", ["window_kind", "window_end"])
    op.create_index(
        "ix_metering_windows_tenant", "metering_windows", ["tenant_id", "window_kind", "window_start"]
    )
    op.create_index(
        "ix_metering_windows_dataset", "metering_windows", ["dataset_id", "window_kind", "window_start"]
    )
    op.create_table(
        "metering_quota_notices",
        sa.Column("grant_id", sa.String(160), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("quota_records", sa.BigInteger, nullable=False),
        sa.Column("used_records", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("noticed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("metering_quota_notices")
    op.drop_index("ix_metering_windows_dataset", table_name="metering_windows")
    op.drop_index("ix_metering_windows_tenant", table_name="metering_windows")
    op.drop_index("ix_metering_windows_kind_end", table_name="metering_windows")
    op.drop_table("metering_windows")
