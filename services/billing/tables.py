"""SQLAlchemy Core tables billing owns: issued statements and their lines (migration 0007).

They keep the names migration 0007 gave them (`metering_statements`, `metering_statement_lines`): billing
runs with the metering service's database role, and renaming live tables buys no privilege. Billing reads
metering's ledger and periods only through pdo.metering.public. Money is kept as whole cents (BIGINT):
exact on SQLite too, whose NUMERIC is a float.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

statements = sa.Table(
    "metering_statements",
    metadata,
    # "st-<period>-<16 hex>", derived from (tenant, period, currency): recomputing names the same statement.
    sa.Column("statement_id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(255), nullable=False),
    sa.Column("period", sa.String(7), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("total_cents", sa.BigInteger, nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("issued_by", sa.String(255), nullable=False),
    sa.UniqueConstraint("tenant_id", "period", "currency", name="uq_metering_statements_tenant_period"),
    sa.Index("ix_metering_statements_period", "period"),
)

statement_lines = sa.Table(
    "metering_statement_lines",
    metadata,
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
    # The plan in words, as printed on the statement, and the plan itself (JSON) as it was applied.
    sa.Column("plan", sa.Text, nullable=False),
    sa.Column("price_plan", sa.Text, nullable=False),
    # The delivery digests the line was priced from (migration 0015): seq 1..digest_count of its grant and period
    # (pdo.metering.public.digest_id). 0 on lines issued before digests existed.
    sa.Column("digest_count", sa.Integer, nullable=False, server_default="0"),
    sa.Index("ix_metering_statement_lines_dataset", "dataset_id"),
)
