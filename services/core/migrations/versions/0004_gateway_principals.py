"""Gateway: principals (providers, tenants, operators) and their API keys, stored as salted hashes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-01-01

Self-contained on purpose (it does not import pdo.gateway.tables): a migration describes the database as it
was at this revision. Plain SQLAlchemy types only, so it runs on SQLite and PostgreSQL alike.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_principals",
        sa.Column("principal_id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("is_government", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('provider', 'tenant', 'operator')", name="ck_gateway_principals_kind"),
    )
    op.create_table(
        "gateway_api_keys",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column(
            "principal_id",
            sa.String(128),
            sa.ForeignKey("gateway_principals.principal_id", name="fk_gateway_api_keys_principal_id"),
            nullable=False,
        ),
        sa.Column("kdf", sa.String(32), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_gateway_api_keys_principal_id", "gateway_api_keys", ["principal_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_gateway_api_keys_principal_id", table_name="gateway_api_keys")
    op.drop_table("gateway_api_keys")
    op.drop_table("gateway_principals")
