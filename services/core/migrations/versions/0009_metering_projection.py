"""Metering's own projection of other services' events: grants' terms, datasets' facts, read positions.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30

Metering stops reading `authz_grants` and `catalog_datasets`: it keeps `metering_grants` (from
pdo.authorizations) and `metering_datasets` (from pdo.catalog), and `metering_projection_positions`, where a
catch-up with a topic resumes. An existing database is filled once from the owners' tables here, so billing
prices the grants it billed before the worker first follows the topics (which then keeps them current);
the versions copied are the owners', so the events that follow apply on top as they would have.

Self-contained on purpose (it does not import pdo.metering.tables). Plain SQLAlchemy types only.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metering_grants",
        sa.Column("grant_id", sa.String(160), primary_key=True),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("daily_quota_records", sa.BigInteger, nullable=True),
        sa.Column("price_plan", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "metering_datasets",
        sa.Column("dataset_id", sa.String(64), primary_key=True),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("provider_id", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("retired", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "metering_projection_positions",
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO metering_grants (grant_id, tenant_id, dataset_id, valid_from, valid_until, "
        "daily_quota_records, price_plan, version) SELECT grant_id, tenant_id, dataset_id, valid_from, "
        "valid_until, daily_quota_records, price_plan, version FROM authz_grants"
    )
    op.execute(
        "INSERT INTO metering_datasets (dataset_id, title, provider_id, version, retired) "
        "SELECT dataset_id, title, provider_id, version, retired FROM catalog_datasets"
    )


def downgrade() -> None:
    op.drop_table("metering_projection_positions")
    op.drop_table("metering_datasets")
    op.drop_table("metering_grants")
