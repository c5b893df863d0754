"""SQLAlchemy Core tables of the usage ledger and billing periods; they mirror migration 0005.

The ledger is where exactly-once metering holds: `delivery_id` is the primary key, so a usage fact Kafka
redelivers (a crash, a rebalance, a replay) is ignored on insert, whatever the consumer did before.
"""

from __future__ import annotations

import sqlalchemy as sa

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
    sa.CheckConstraint(
        "(billing_period IS NULL) <> (set_aside_reason IS NULL)",
        name="ck_metering_ledger_billed_or_set_aside",
    ),
    sa.Index("ix_metering_ledger_grant_delivered", "grant_id", "delivered_at"),
    sa.Index("ix_metering_ledger_tenant_period", "tenant_id", "billing_period"),
    sa.Index("ix_metering_ledger_dataset_period", "dataset_id", "billing_period"),
)

periods = sa.Table(
    "metering_periods",
    metadata,
    # "YYYY-MM", a UTC calendar month. A row exists once usage was billed in it; closed_at once it is closed.
    sa.Column("period", sa.String(7), primary_key=True),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("closed_by", sa.String(255), nullable=True),
)

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

# ---------------------------------------------------------------------------------------------- statements
# Migration 0007. Money is kept as whole cents (BIGINT): exact on SQLite too, whose NUMERIC is a float.

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
    sa.Index("ix_metering_statement_lines_dataset", "dataset_id"),
)
