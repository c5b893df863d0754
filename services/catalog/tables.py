"""SQLAlchemy Core table of the catalog; it mirrors migration 0002 (keep the two in step)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

datasets = sa.Table(
    "catalog_datasets",
    metadata,
    sa.Column("dataset_id", sa.String(64), primary_key=True),
    sa.Column("provider_id", sa.String(255), nullable=False),
    sa.Column("owner_department", sa.String(255), nullable=False),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("domain", sa.String(32), nullable=False),
    sa.Column("classification", sa.String(16), nullable=False),
    sa.Column("openness", sa.String(16), nullable=False),
    sa.Column("schema_subject", sa.String(255), nullable=False),
    sa.Column("schema_id", sa.Integer, nullable=False),
    # The record schema as the registry holds it (JSON without insignificant whitespace).
    sa.Column("record_schema", sa.Text, nullable=False),
    # JSON text; decimals as strings (see pdo.catalog.mapping).
    sa.Column("sensitive_fields", sa.Text, nullable=False),
    sa.Column("price_plan", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("retired", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("retired_reason", sa.Text, nullable=True),
    sa.Column("asset_registration_number", sa.String(128), nullable=True),
    sa.Column("terms", sa.Text, nullable=True),
    # Lineage: the source dataset ids, a JSON list in id order ("[]" for a provider's own data).
    sa.Column("derived_from", sa.Text, nullable=False, server_default="[]"),
    # occurred_at of the last applied event, so a rebuilt row equals the original.
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_event_id", sa.String(64), nullable=False),
    sa.Column("last_event_partition", sa.Integer, nullable=True),
    sa.Column("last_event_offset", sa.BigInteger, nullable=True),
    sa.Index("ix_catalog_datasets_provider_id", "provider_id"),
)
