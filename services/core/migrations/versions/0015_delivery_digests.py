"""Delivery digests: metering's Merkle roots of the delivery ids per grant and claim, and the statement
lines that name them.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30

Self-contained on purpose (it does not import pdo.metering.tables): a migration describes the database as it
was at this revision. Ledger rows written before it have no digest; the next claim takes them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

UNDIGESTED = "digest_id IS NULL AND billing_period IS NOT NULL"


def upgrade() -> None:
    op.create_table(
        "metering_digests",
        sa.Column("digest_id", sa.String(200), primary_key=True),
        sa.Column("grant_id", sa.String(160), nullable=False),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("first_delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_delivered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("grant_id", "period", "seq", name="uq_metering_digests_grant_period_seq"),
    )
    op.create_index("ix_metering_digests_tenant_period", "metering_digests", ["tenant_id", "period"])
    op.create_index("ix_metering_digests_published", "metering_digests", ["published_at", "created_at"])
    with op.batch_alter_table("metering_ledger") as batch:
        batch.add_column(sa.Column("digest_id", sa.String(200), nullable=True))
    op.create_index("ix_metering_ledger_digest", "metering_ledger", ["digest_id"])
    op.create_index(
        "ix_metering_ledger_undigested",
        "metering_ledger",
        ["grant_id", "billing_period"],
        postgresql_where=sa.text(UNDIGESTED),
        sqlite_where=sa.text(UNDIGESTED),
    )
    with op.batch_alter_table("metering_statement_lines") as batch:
        batch.add_column(sa.Column("digest_count", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("metering_statement_lines") as batch:
        batch.drop_column("digest_count")
    op.drop_index("ix_metering_ledger_undigested", table_name="metering_ledger")
    op.drop_index("ix_metering_ledger_digest", table_name="metering_ledger")
    with op.batch_alter_table("metering_ledger") as batch:
        batch.drop_column("digest_id")
    op.drop_index("ix_metering_digests_published", table_name="metering_digests")
    op.drop_index("ix_metering_digests_tenant_period", table_name="metering_digests")
    op.drop_table("metering_digests")
