"""Authorization outbox: grant and request events written in the transaction of their change.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

Self-contained on purpose (it does not import pdo.authorization.tables): a migration describes the database
as it was at this revision. Plain SQLAlchemy types only, so it runs on SQLite and PostgreSQL alike.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "authz_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("schema_name", sa.String(255), nullable=False),
        sa.Column("event_key", sa.String(255), nullable=False),
        sa.Column("grant_version", sa.Integer, nullable=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("event_key", "grant_version", name="uq_authz_outbox_grant_version"),
    )
    op.create_index("ix_authz_outbox_sent_at", "authz_outbox", ["sent_at", "id"])
    lease = op.create_table(
        "authz_outbox_lease",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.bulk_insert(lease, [{"name": "authorization-outbox", "holder": None, "expires_at": None}])


def downgrade() -> None:
    op.drop_table("authz_outbox_lease")
    op.drop_index("ix_authz_outbox_sent_at", table_name="authz_outbox")
    op.drop_table("authz_outbox")
