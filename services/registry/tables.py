"""SQLAlchemy Core tables of the schema registry; they mirror migration 0001 (keep the two in step)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

schemas = sa.Table(
    "registry_schemas",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("schema_type", sa.String(16), nullable=False),
    # The schema as registered, JSON-normalized (see pdo.registry.schemas.normalize).
    sa.Column("schema_text", sa.Text, nullable=False),
    # sha256 of schema type + normalized text: the dedupe key that makes ids global across subjects.
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.UniqueConstraint("fingerprint", name="uq_registry_schemas_fingerprint"),
    sqlite_autoincrement=True,
)

subject_versions = sa.Table(
    "registry_subject_versions",
    metadata,
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
    sa.Index("ix_registry_subject_versions_schema_id", "schema_id"),
)

config = sa.Table(
    "registry_config",
    metadata,
    # GLOBAL_SUBJECT ('') holds the global level; any other value is that subject's own level.
    sa.Column("subject", sa.String(255), primary_key=True),
    sa.Column("compatibility_level", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

GLOBAL_SUBJECT = ""
