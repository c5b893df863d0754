"""SQLAlchemy Core table of the feed's record_id claims (migration 0017): which record ids of a dataset were
sent to its feed lately, so a record sent again within the window is recognised and not written twice
(pdo.publishing.record_ids). Publishing runs in the gateway's process (HTTP ingest), so the gateway's
database role owns it (pdo.stack.database_roles), hence its name."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

record_ids = sa.Table(
    "gateway_feed_record_ids",
    metadata,
    sa.Column("dataset_id", sa.String(64), primary_key=True),
    # SHA-256 of the record's feed key (its record_id): bounded in size, and no record value is kept.
    sa.Column("record_key_sha256", sa.String(64), primary_key=True),
    # SENDING: claimed, its send not yet acknowledged; SENT: on the feed.
    sa.Column("state", sa.String(8), nullable=False),
    # When the claim was made (SENDING) or the broker acknowledged it (SENT); the window counts from here.
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("state IN ('SENDING', 'SENT')", name="ck_gateway_feed_record_ids_state"),
    sa.Index("ix_gateway_feed_record_ids_since", "since"),
)
