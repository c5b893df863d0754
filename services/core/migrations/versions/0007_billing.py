"""Billing: statements per tenant and billing period, with one line per grant; money in whole cents.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22

Self-contained on purpose (it does not import pdo.metering.tables): a migration describes the database as it
was at this revision. Plain SQLAlchemy types only, so it runs on SQLite and PostgreSQL alike.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metering_statements",
        sa.Column("statement_id", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(255), nullable=False),
        sa.Column("period", sa.String(7), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total_cents", sa.BigInteger, nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_by", sa.String(255), nullable=False),
        sa.UniqueConstraint("tenant_id", "period", "currency", name="uq_metering_statements_tenant_period"),
    )
    op.create_index("ix_metering_statements_period", "metering_statements", ["period"])
    op.create_table(
        "metering_statement_lines",
        sa.Column(
            "statement_id",
            sa.String(64),
            sa.ForeignKey("metering_statements.statement_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("grant_id", sa.String(160), primary_key=True),
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("records", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("price_plan", sa.Text, nullable=False),
    )
    op.create_index("ix_metering_statement_lines_dataset", "metering_statement_lines", ["dataset_id"])


def downgrade() -> None:
    op.drop_index("ix_metering_statement_lines_dataset", table_name="metering_statement_lines")
    op.drop_table("metering_statement_lines")
    op.drop_index("ix_metering_statements_period", table_name="metering_statements")
    op.drop_table("metering_statements")
