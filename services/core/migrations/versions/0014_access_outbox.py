"""Access acts: the gateway's and metering's outboxes of access events, and the authorization policy in force.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30

Self-contained on purpose (it does not import the services' tables modules): a migration describes the
database as it was at this revision. Plain SQLAlchemy types only, so it runs on SQLite and PostgreSQL alike.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# service -> the name of its outbox's lease row (pdo.gateway.outbox, pdo.metering.outbox)
OUTBOXES = {"gateway": "gateway-outbox", "metering": "metering-outbox"}


def _create_outbox(service: str, lease_name: str) -> None:
    op.create_table(
        f"{service}_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("schema_name", sa.String(255), nullable=False),
        sa.Column("event_key", sa.String(255), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index(f"ix_{service}_outbox_sent_at", f"{service}_outbox", ["sent_at", "id"])
    lease = op.create_table(
        f"{service}_outbox_lease",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.bulk_insert(lease, [{"name": lease_name, "holder": None, "expires_at": None}])


def upgrade() -> None:
    for service, lease_name in OUTBOXES.items():
        _create_outbox(service, lease_name)
    op.create_table(
        "authz_policy_in_force",
        sa.Column("policy", sa.String(64), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("authz_policy_in_force")
    for service in OUTBOXES:
        op.drop_table(f"{service}_outbox_lease")
        op.drop_index(f"ix_{service}_outbox_sent_at", table_name=f"{service}_outbox")
        op.drop_table(f"{service}_outbox")
