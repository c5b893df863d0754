"""Catalog: one row per dataset, the current state of its catalog entry.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02

Self-contained on purpose (it does not import pdo.catalog.tables): a migration describes the database as
it was at this revision. Plain SQLAlchemy types only, so the same revision runs on SQLite and PostgreSQL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "catalog_datasets",
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
        # JSON text: [{"field", "masking", "doc"}] and {"kind", "unit_price", "tiers", "currency"},
        # decimals written as strings so no database rounds a price through a float.
        sa.Column("sensitive_fields", sa.Text, nullable=False),
        sa.Column("price_plan", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("retired", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("retired_reason", sa.Text, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        # The catalog event this row reflects, so replays and rebuilds can tell what was applied.
        sa.Column("last_event_id", sa.String(64), nullable=False),
        sa.Column("last_event_partition", sa.Integer, nullable=True),
        sa.Column("last_event_offset", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_catalog_datasets_provider_id", "catalog_datasets", ["provider_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_catalog_datasets_provider_id", table_name="catalog_datasets")
    op.drop_table("catalog_datasets")
