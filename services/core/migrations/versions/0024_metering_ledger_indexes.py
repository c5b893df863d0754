"""Metering: the ledger keeps only the indexes its queries use, so each delivery written maintains fewer.

- (grant_id, delivered_at), (tenant_id, billing_period), (dataset_id, billing_period) served no query: the
  ledger is read by billing period (statements, reconciliation), by delivery time for rows set aside
  (billing_period NULL), by digest, and by undigested grant and period. One index on
  (billing_period, delivered_at) serves the first two; before it, a statement scanned the whole table;
- the digest index covers only rows in a digest (digest_id IS NOT NULL): a row is written without one, and
  the lookups by digest name a digest.

Measured on PostgreSQL (bench/pipeline.py, issue #17): a ledger row cost about 14 µs of the server's time with
the old indexes, 11 µs with these.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-01

Self-contained on purpose: a migration describes the database as it was at this revision. On a large ledger
the new indexes take a while to build, and writes to the ledger wait meanwhile: run it in a quiet hour.
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

DIGESTED = "digest_id IS NOT NULL"
UNUSED = {
    "ix_metering_ledger_grant_delivered": ["grant_id", "delivered_at"],
    "ix_metering_ledger_tenant_period": ["tenant_id", "billing_period"],
    "ix_metering_ledger_dataset_period": ["dataset_id", "billing_period"],
}


def upgrade() -> None:
    for name in UNUSED:
        op.drop_index(name, table_name="metering_ledger")
    op.drop_index("ix_metering_ledger_digest", table_name="metering_ledger")
    op.create_index(
        "ix_metering_ledger_period_delivered", "metering_ledger", ["billing_period", "delivered_at"]
    )
    op.create_index(
        "ix_metering_ledger_digest",
        "metering_ledger",
        ["digest_id"],
        postgresql_where=sa.text(DIGESTED),
        sqlite_where=sa.text(DIGESTED),
    )


def downgrade() -> None:
    op.drop_index("ix_metering_ledger_digest", table_name="metering_ledger")
    op.drop_index("ix_metering_ledger_period_delivered", table_name="metering_ledger")
    op.create_index("ix_metering_ledger_digest", "metering_ledger", ["digest_id"])
    for name, columns in UNUSED.items():
        op.create_index(name, "metering_ledger", columns)
