"""Audit: the liveness mark of the audit log (one row: when it was last appended to, and its size then).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01

Self-contained on purpose (it does not import pdo.audit.tables): a migration describes the database as it
was at this revision. No row is made here: until the audit worker writes its first mark, the log has never
been shown appendable and access-widening changes wait (pdo.audit.liveness).
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_liveness",
        sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("appended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_audit_liveness_one_row"),
    )


def downgrade() -> None:
    op.drop_table("audit_liveness")
