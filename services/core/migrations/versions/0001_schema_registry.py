"""Schema registry: schemas, subject versions and compatibility config.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Self-contained on purpose (it does not import pdo.registry.tables): a migration describes the database as
it was at this revision, whatever the application code becomes later. Plain SQLAlchemy types only, so the
same revision runs on SQLite and PostgreSQL.
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_schemas",
        # Global schema ids are never reused, even after a permanent delete removes the row:
        # PostgreSQL sequences never go back, and SQLite needs AUTOINCREMENT for the same promise.
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("schema_type", sa.String(16), nullable=False),
        sa.Column("schema_text", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("fingerprint", name="uq_registry_schemas_fingerprint"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "registry_subject_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column(
            "schema_id",
            sa.Integer,
            sa.ForeignKey("registry_schemas.id", name="fk_registry_subject_versions_schema_id"),
            nullable=False,
        ),
        sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("subject", "version", name="uq_registry_subject_versions_subject_version"),
    )
    op.create_index(
        "ix_registry_subject_versions_schema_id", "registry_subject_versions", ["schema_id"], unique=False
    )
    op.create_table(
        "registry_config",
        # '' is the global level; any other value is a subject's own level.
        sa.Column("subject", sa.String(255), primary_key=True),
        sa.Column("compatibility_level", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def downgrade() -> None:
    op.drop_table("registry_config")
    op.drop_index("ix_registry_subject_versions_schema_id", table_name="registry_subject_versions")
    op.drop_table("registry_subject_versions")
    op.drop_table("registry_schemas")
