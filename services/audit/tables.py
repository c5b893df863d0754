"""SQLAlchemy Core tables the audit service owns: the log's entries and its signed checkpoints (migration 0011),
the mark of its liveness (migration 0013) and how far the Kafka mirror has got (migration 0016).

`audit_entries.seq` is the Merkle leaf index: 0, 1, 2, ... with no gaps, so the table's order is the tree's.
`source` is unique: re-reading where an entry came from appends nothing.
`tenant` and `occurred_at` (migration 0012) are copies of the body's `details.tenant` and `occurred_at`, kept as
columns only so the log can be filtered by them: they are not hashed, the body is.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

entries = sa.Table(
    "audit_entries",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("source", sa.String(255), nullable=False, unique=True),
    # The entry's canonical JSON: what the leaf hash is computed from, byte for byte.
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
    sa.Column("tenant", sa.String(255), nullable=True),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_audit_entries_tenant", "tenant"),
    sa.Index("ix_audit_entries_occurred_at", "occurred_at"),
)

checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root", sa.LargeBinary(32), nullable=False),
    sa.Column("origin", sa.String(255), nullable=False),
    sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("signature", sa.LargeBinary(64), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
)

# One row: the next entry seq and checkpoint size the mirror (pdo.audit.mirror) has still to publish.
mirror_progress = sa.Table(
    "audit_mirror_progress",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("entries_upto", sa.BigInteger, nullable=False),
    sa.Column("checkpoints_upto", sa.BigInteger, nullable=False),
    sa.CheckConstraint("id = 1", name="ck_audit_mirror_progress_one_row"),
)

# One row: when the audit worker last wrote to the log's database (an append, or its idle mark) and the log's
# size then. A write, not a read: it proves the log can be appended to (pdo.audit.liveness).
liveness = sa.Table(
    "audit_liveness",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("appended_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.CheckConstraint("id = 1", name="ck_audit_liveness_one_row"),
)
