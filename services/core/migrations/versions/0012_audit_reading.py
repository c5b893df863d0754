"""Audit reading: the auditor principal kind, and audit entries filterable by tenant and time.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30

`audit_entries.tenant` and `.occurred_at` copy the body's `details.tenant` and `occurred_at` (backfilled here
from each row's body) so the gateway can filter on them; the body and its leaf hash stay as they were.
Self-contained on purpose (it does not import pdo.audit.tables): a migration describes the database as it
was at this revision.
"""

import json
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

KINDS_BEFORE = "kind IN ('provider', 'tenant', 'operator')"
KINDS_AFTER = "kind IN ('provider', 'tenant', 'operator', 'auditor')"
BACKFILL_BATCH = 1000


def upgrade() -> None:
    _principal_kinds(KINDS_AFTER)
    with op.batch_alter_table("audit_entries") as batch:
        batch.add_column(sa.Column("tenant", sa.String(255), nullable=True))
        batch.add_column(sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True))
    _backfill()
    op.create_index("ix_audit_entries_tenant", "audit_entries", ["tenant"])
    op.create_index("ix_audit_entries_occurred_at", "audit_entries", ["occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_audit_entries_occurred_at", "audit_entries")
    op.drop_index("ix_audit_entries_tenant", "audit_entries")
    with op.batch_alter_table("audit_entries") as batch:
        batch.drop_column("occurred_at")
        batch.drop_column("tenant")
    # Refused by the database while an auditor exists: disable and delete auditors before downgrading.
    _principal_kinds(KINDS_BEFORE)


def _principal_kinds(condition: str) -> None:
    with op.batch_alter_table("gateway_principals") as batch:
        batch.drop_constraint("ck_gateway_principals_kind", type_="check")
        batch.create_check_constraint("ck_gateway_principals_kind", condition)


def _backfill() -> None:
    entries = sa.table(
        "audit_entries",
        sa.column("seq", sa.BigInteger),
        sa.column("body", sa.Text),
        sa.column("tenant", sa.String),
        sa.column("occurred_at", sa.DateTime(timezone=True)),
    )
    connection = op.get_bind()
    after = -1
    while True:
        rows = connection.execute(
            sa.select(entries.c.seq, entries.c.body)
            .where(entries.c.seq > after)
            .order_by(entries.c.seq)
            .limit(BACKFILL_BATCH)
        ).all()
        if not rows:
            return
        for seq, body in rows:
            tenant, occurred_at = _indexed(body)
            connection.execute(
                entries.update().where(entries.c.seq == seq).values(tenant=tenant, occurred_at=occurred_at)
            )
        after = rows[-1].seq


def _indexed(body: str) -> tuple[str | None, datetime | None]:
    """(details.tenant, occurred_at) of a body; None for what it lacks (a body is never rewritten here)."""
    try:
        decoded = json.loads(body)
        tenant = decoded.get("details", {}).get("tenant")
        occurred_at = datetime.fromisoformat(decoded["occurred_at"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None
    return (tenant if isinstance(tenant, str) else None), occurred_at
