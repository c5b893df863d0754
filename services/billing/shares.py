"""Revenue shares: a derived product's revenue split among the datasets it derives from, to the cent.

The rule (issue #15, "usage of a product is attributed back to the source datasets"): a product's revenue in
a period is split equally among its sources in whole cents, and the cents an equal split leaves over go one
each to the sources in id order. So the shares always sum exactly to the product's revenue, no source gets
more than one cent over another, and the same revenue and sources always split the same way (a closed
period's report can be recomputed to the cent).
"""

from __future__ import annotations

from collections.abc import Collection


def split_cents(cents: int, sources: Collection[str]) -> dict[str, int]:
    """Each source's share of `cents` (whole cents, >= 0): equal, the remainder one cent each in id order."""
    if cents < 0:
        raise ValueError(f"revenue to attribute must not be negative: {cents} cents")
    if not sources:
        raise ValueError("a product's revenue needs at least one source to be attributed to")
    ordered = sorted(set(sources))
    share, left_over = divmod(cents, len(ordered))
    return {source: share + (1 if rank < left_over else 0) for rank, source in enumerate(ordered)}
