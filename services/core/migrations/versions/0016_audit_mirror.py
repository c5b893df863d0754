"""Audit: how far the mirror of the audit log on the pdo.audit topic has got.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01

Self-contained on purpose (it does not import pdo.audit.tables): a migration describes the database as it
was at this revision.
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_mirror_progress",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("entries_upto", sa.BigInteger, nullable=False),
        sa.Column("checkpoints_upto", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_mirror_progress_one_row"),
    )


def downgrade() -> None:
    op.drop_table("audit_mirror_progress")
