"""Catalog: a dataset's data asset registration number and terms of use, for listings on data exchanges,
in the catalog's table and in the authorization worker's view of it (both filled from catalog events).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01

Self-contained on purpose: a migration describes the database as it was at this revision.
"""

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

TABLES = ("catalog_datasets", "authz_datasets")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("asset_registration_number", sa.String(128), nullable=True))
            batch.add_column(sa.Column("terms", sa.Text, nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("terms")
            batch.drop_column("asset_registration_number")
