"""Catalog: a dataset's lineage, the datasets it is derived from (a JSON list of ids, "[]" for data its
provider publishes itself), in the catalog's table and in the authorization worker's view of it (both filled
from catalog events).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-01

Self-contained on purpose: a migration describes the database as it was at this revision.
"""

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


TABLES = ("catalog_datasets", "authz_datasets")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("derived_from", sa.Text, nullable=False, server_default="[]"))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("derived_from")
