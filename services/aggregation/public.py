"""What other services may know of the aggregation service: how its usage facts are told apart.

Guarantee: every usage fact the aggregation worker sends (one per window delivered) has a delivery id made by
`window_delivery_id`, and `is_window_delivery` recognizes exactly those; row deliveries never start with the
prefix (theirs are hexadecimal digests, pdo.core.provenance.delivery_id).
"""

from __future__ import annotations

from datetime import datetime

WINDOW_DELIVERY_PREFIX = "agg-"


def window_delivery_id(grant_id: str, window_start: datetime) -> str:
    """The delivery id of an aggregate grant's window: the same whenever the same window is metered."""
    return f"{WINDOW_DELIVERY_PREFIX}{grant_id}-{int(window_start.timestamp() * 1000)}"


def is_window_delivery(delivery_id: str) -> bool:
    """Whether a ledger row is an aggregate window's (its aggregates are on the aggregates topic, not a row
    topic)."""
    return delivery_id.startswith(WINDOW_DELIVERY_PREFIX)
