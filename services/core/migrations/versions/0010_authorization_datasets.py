"""Authorization's own view of the catalog: datasets projected from pdo.catalog, and how far it has read.

Revision ID: 0010
Revises: 0008
Create Date: 2026-11-30

Numbered 0010 because 0009 is taken by a change made at the same time; the merge puts this one after it
(down_revision "0009"). Self-contained on purpose (it does not import pdo.authorization.tables): a
migration describes the database as it was at this revision.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "authz_datasets",
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
    )
    op.create_table(
        "authz_catalog_progress",
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("authz_catalog_progress")
    op.drop_table("authz_datasets")
