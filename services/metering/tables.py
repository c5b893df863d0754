"""SQLAlchemy Core tables metering owns: the usage ledger, billing periods, windows, quota notices (migrations
0005, 0006), its projection of other services' events (0009, lineage 0023) and the delivery digests (0015). Billing's statement tables are in
pdo.billing.tables.

The ledger is where exactly-once metering holds: `delivery_id` is the primary key, so a usage fact Kafka
redelivers (a crash, a rebalance, a replay) is ignored on insert, whatever the consumer did before.
"""

from __future__ import annotations

import sqlalchemy as sa

from pdo.core.outbox import outbox_tables

metadata = sa.MetaData()

ledger = sa.Table(
    "metering_ledger",
    metadata,
    # RecordsDelivered.delivery_id: stable across redelivery of the same source record under the same grant.
    sa.Column("delivery_id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(255), nullable=False),
    sa.Column("dataset_id", sa.String(64), nullable=False),
    sa.Column("grant_id", sa.String(160), nullable=False),
    sa.Column("records", sa.BigInteger, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    # The usage fact's occurred_at: when the records reached the tenant stream. Windows and quotas use it.
    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
    # When metering wrote the row (a late fact has recorded_at long after delivered_at).
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source_topic", sa.String(255), nullable=False),
    sa.Column("source_partition", sa.Integer, nullable=False),
    sa.Column("first_offset", sa.BigInteger, nullable=False),
    sa.Column("last_offset", sa.BigInteger, nullable=False),
    # "YYYY-MM" (UTC month) the row is billed in; NULL when set aside for review, with the reason.
    sa.Column("billing_period", sa.String(7), nullable=True),
    sa.Column("set_aside_reason", sa.Text, nullable=True),
    # The delivery digest the row was claimed into (migration 0015, pdo.metering.digests); NULL until claimed.
    sa.Column("digest_id", sa.String(200), nullable=True),
    sa.CheckConstraint(
        "(billing_period IS NULL) <> (set_aside_reason IS NULL)",
        name="ck_metering_ledger_billed_or_set_aside",
    ),
    # Only the indexes the ledger's queries use (migration 0024): every delivery written maintains each one.
    # By billing period (statements, reconciliation), and by delivery time for rows set aside (period NULL).
    sa.Index("ix_metering_ledger_period_delivered", "billing_period", "delivered_at"),
    # The rows of a digest; a row is written without one.
    sa.Index(
        "ix_metering_ledger_digest",
        "digest_id",
        postgresql_where=sa.text("digest_id IS NOT NULL"),
        sqlite_where=sa.text("digest_id IS NOT NULL"),
    ),
    # What the next claim takes: billed rows in no digest yet (a partial index stays small).
    sa.Index(
        "ix_metering_ledger_undigested",
        "grant_id",
        "billing_period",
        postgresql_where=sa.text("digest_id IS NULL AND billing_period IS NOT NULL"),
        sqlite_where=sa.text("digest_id IS NULL AND billing_period IS NOT NULL"),
    ),
)

periods = sa.Table(
    "metering_periods",
    metadata,
    # "YYYY-MM", a UTC calendar month. A row exists once usage was billed in it; closed_at once it is closed.
    sa.Column("period", sa.String(7), primary_key=True),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("closed_by", sa.String(255), nullable=True),
)

# Access events (a billing period closed) committed with their change and published by the metering worker's
# relay (pdo.metering.outbox, migration 0014); the layout is the shared outbox's (pdo.core.outbox).
outbox, outbox_lease = outbox_tables(metadata, "metering")

# Usage per grant in MINUTE and DAY windows (UTC), summed from newly recorded ledger rows in the ledger's own
# transaction, so the windows always sum to the ledger. `version` counts the changes to a window;
# `published_version` is the version last published as UsageRecorded (0: never), so a window late facts
# changed after it was published is published again (the newest event per window wins).
windows = sa.Table(
    "metering_windows",
    metadata,
    sa.Column("grant_id", sa.String(160), primary_key=True),
    sa.Column("window_kind", sa.String(8), primary_key=True),  # MINUTE or DAY
    sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("tenant_id", sa.String(255), nullable=False),
    sa.Column("dataset_id", sa.String(64), nullable=False),
    sa.Column("records", sa.BigInteger, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("published_version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_metering_windows_kind_end", "window_kind", "window_end"),
    sa.Index("ix_metering_windows_tenant", "tenant_id", "window_kind", "window_start"),
    sa.Index("ix_metering_windows_dataset", "dataset_id", "window_kind", "window_start"),
)

# One row per grant and UTC day whose quota was reached: written in the ledger transaction that reached it,
# so QuotaExceeded is raised once per grant and day however often the facts are redelivered;
# `published_at` stays NULL until the broker acknowledged the event (a restart publishes what is pending).
quota_notices = sa.Table(
    "metering_quota_notices",
    metadata,
    sa.Column("grant_id", sa.String(160), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("tenant_id", sa.String(255), nullable=False),
    sa.Column("dataset_id", sa.String(64), nullable=False),
    sa.Column("quota_records", sa.BigInteger, nullable=False),
    sa.Column("used_records", sa.BigInteger, nullable=False),
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("noticed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
)

# One row per delivery digest (migration 0015, pdo.metering.digests): the ledger rows of one grant and
# billing period claimed together, their count and the RFC 6962 Merkle root of their sorted delivery ids.
# `seq` numbers a grant's digests in a period from 1 without gaps, so a statement line names its digests by
# how many there are; `published_at` stays NULL until the broker acknowledged DeliveriesDigested.
digests = sa.Table(
    "metering_digests",
    metadata,
    sa.Column("digest_id", sa.String(200), primary_key=True),  # "<grant_id>.<period>.<seq>"
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
    sa.Index("ix_metering_digests_tenant_period", "tenant_id", "period"),
    sa.Index("ix_metering_digests_published", "published_at", "created_at"),
)

# ---------------------------------------------------------------------------------------------- projection
# Migration 0009. What metering knows of other services, learnt from their events (pdo.metering.projection),
# never from their tables: the grants' terms (from pdo.authorizations) and the datasets' facts billing shows
# (from pdo.catalog). `version` orders a row's states: an event changes the row only when it is newer.

grants = sa.Table(
    "metering_grants",
    metadata,
    sa.Column("grant_id", sa.String(160), primary_key=True),
    sa.Column("tenant_id", sa.String(255), nullable=False),
    sa.Column("dataset_id", sa.String(64), nullable=False),
    sa.Column("valid_from", sa.DateTime(timezone=True), nullable=False),
    sa.Column("valid_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("daily_quota_records", sa.BigInteger, nullable=True),
    # The grant's PricePlan as JSON, in the shape authorization keeps it (kind, unit_price, tiers, currency).
    sa.Column("price_plan", sa.Text, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)

datasets = sa.Table(
    "metering_datasets",
    metadata,
    sa.Column("dataset_id", sa.String(64), primary_key=True),
    sa.Column("title", sa.String(255), nullable=False),
    sa.Column("provider_id", sa.String(255), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    # Retirement keeps the catalog version, so (version, retired) orders a dataset's states.
    sa.Column("retired", sa.Boolean, nullable=False, server_default=sa.false()),
    # Lineage (migration 0023): the ids this dataset derives from, a JSON list in id order; "[]" for data its
    # provider publishes itself. Billing attributes a derived product's revenue to them.
    sa.Column("derived_from", sa.Text, nullable=False, server_default="[]"),
)

# Per partition of a followed topic, the offset after the last event the projection applied: where a
# catch-up resumes reading (pdo.metering.projection). Only ever moves forward.
positions = sa.Table(
    "metering_projection_positions",
    metadata,
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
)
