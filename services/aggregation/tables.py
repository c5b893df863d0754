"""SQLAlchemy Core tables of the aggregation service; they mirror migration 0019 (keep them in step).

The service's state is SQL it owns, committed together in one transaction per feed batch: how far it has
read each feed partition (`aggregation_positions`), each dataset's event-time watermark, the open windows'
groups, the closed windows (one row per grant and window: a window is closed, and so published, once) and
the outbox holding the aggregates and usage facts a closing wrote.
"""

from __future__ import annotations

import sqlalchemy as sa

from pdo.core.outbox import Outbox, outbox_tables

metadata = sa.MetaData()

positions = sa.Table(
    "aggregation_positions",
    metadata,
    sa.Column("topic", sa.String(255), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
    # The latest event time read on the partition: the dataset's watermark is taken over its partitions.
    sa.Column("latest_event_time", sa.DateTime(timezone=True), nullable=True),
)

watermarks = sa.Table(
    "aggregation_watermarks",
    metadata,
    sa.Column("dataset_id", sa.String(64), primary_key=True),
    sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
)

groups = sa.Table(
    "aggregation_groups",
    metadata,
    sa.Column("grant_id", sa.String(160), primary_key=True),
    sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("group_key", sa.String(1024), primary_key=True),
    sa.Column("records", sa.BigInteger, nullable=False),
    sa.Column("stats", sa.Text, nullable=False),
)

windows = sa.Table(
    "aggregation_windows",
    metadata,
    sa.Column("grant_id", sa.String(160), primary_key=True),
    sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("records", sa.BigInteger, nullable=False),
    sa.Column("groups_published", sa.Integer, nullable=False),
    sa.Column("groups_suppressed", sa.Integer, nullable=False),
)

# Differential privacy: what each tenant has spent of its budget (epsilon) per dataset and UTC month, and when
# it was found exhausted (the suspension notice is sent once).
privacy_budgets = sa.Table(
    "aggregation_privacy_budgets",
    metadata,
    sa.Column("tenant_id", sa.String(255), primary_key=True),
    sa.Column("dataset_id", sa.String(64), primary_key=True),
    sa.Column("period", sa.String(7), primary_key=True),
    sa.Column("spent", sa.Float, nullable=False),
    sa.Column("exhausted_at", sa.DateTime(timezone=True), nullable=True),
)

outbox_rows, outbox_lease = outbox_tables(metadata, "aggregation")
OUTBOX = Outbox(outbox_rows, outbox_lease, "aggregation-outbox")
# The second row of the lease table: which worker reads the feeds (one at a time; see app.py).
FEEDS_LEASE = "aggregation-feeds"
