"""Metering: the lineage of the datasets in its projection of the catalog (`metering_datasets.derived_from`, a
JSON list of ids, "[]" for data its provider publishes itself), learnt from the catalog events' `derived_from`,
so billing's asset report can attribute a derived product's revenue to its sources.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-01

Self-contained on purpose: a migration describes the database as it was at this revision. Rows projected
before it read "[]" until their dataset's next catalog event; lineage came with 0021, of the same release.
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("metering_datasets") as batch:
        batch.add_column(sa.Column("derived_from", sa.Text, nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("metering_datasets") as batch:
        batch.drop_column("derived_from")
