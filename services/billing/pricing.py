"""Pricing one grant's usage in a billing period by the grant's price plan, in Decimal money only.

The plan is the one the grant carries (copied from the catalog when the grant was made; government tenants'
grants are FREE; billing reads it from metering's projection of the grant events), so a later catalog price
change never reprices a grant.
Units, as the PricePlan schema documents them:

- FREE: nothing.
- PER_THOUSAND_RECORDS: unit_price per 1,000 records.
- PER_MEGABYTE: unit_price per megabyte, 1 MB = 1,000,000 bytes (the decimal megabyte).
- TIERED: graduated by the grant's records in the billing period. Each tier covers the records up to its
  `up_to_records` (inclusive, counted from the period's first record) above the previous tier's bound and
  charges its unit_price per 1,000 of them; `up_to_records` None is the rest. When the last tier is bounded,
  records beyond it cost the plan's own unit_price per 1,000 (the schema's "price beyond the last tier").

A line's amount is computed exactly and rounded once, half-up to the cent; a statement's total is the sum of
its rounded lines, so the lines a tenant reads always add up to the total.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext

from pdo.core.vocabulary import PriceKind, PricePlan

CENT = Decimal("0.01")
RECORDS_PER_UNIT = 1_000
BYTES_PER_MEGABYTE = 1_000_000
# Enough digits for any count Kafka can hold times the largest price Avro's decimal(18, 2) carries:
# Decimal's default 28 would round such products silently.
PRECISION = 60


@dataclass(frozen=True)
class TierShare:
    """Records of one tier: `first`..`last` of the period's records (1-based), at `unit_price` per 1,000."""

    first: int
    last: int
    unit_price: Decimal

    @property
    def records(self) -> int:
        return self.last - self.first + 1


def round_cents(amount: Decimal) -> Decimal:
    """Half-up to the cent: 0.005 → 0.01, 0.0049 → 0.00."""
    with localcontext() as context:
        context.prec = PRECISION
        return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def exact_charge(plan: PricePlan, records: int, bytes_: int) -> Decimal:
    """The charge before rounding."""
    with localcontext() as context:
        context.prec = PRECISION
        if plan.kind is PriceKind.FREE:
            return Decimal(0)
        if plan.kind is PriceKind.PER_THOUSAND_RECORDS:
            return plan.unit_price * records / RECORDS_PER_UNIT
        if plan.kind is PriceKind.PER_MEGABYTE:
            return plan.unit_price * bytes_ / BYTES_PER_MEGABYTE
        return sum(
            (share.unit_price * share.records / RECORDS_PER_UNIT for share in tier_shares(plan, records)),
            Decimal(0),
        )


def charge(plan: PricePlan, records: int, bytes_: int) -> Decimal:
    """What `records` records of `bytes_` bytes in one billing period cost under `plan`, to the cent."""
    if records < 0 or bytes_ < 0:
        raise ValueError(f"usage cannot be negative: {records} records, {bytes_} bytes")
    return round_cents(exact_charge(plan, records, bytes_))


def tier_shares(plan: PricePlan, records: int) -> list[TierShare]:
    """How a TIERED plan splits `records` over its tiers (and the plan's price beyond a bounded last tier)."""
    shares: list[TierShare] = []
    below = 0  # records the earlier tiers took
    for tier in plan.tiers:
        if below >= records:
            return shares
        top = records if tier.up_to_records is None else min(records, tier.up_to_records)
        shares.append(TierShare(below + 1, top, tier.unit_price))
        below = top
    if below < records:
        shares.append(TierShare(below + 1, records, plan.unit_price))
    return shares


def describe(plan: PricePlan) -> str:
    """The plan in words for a statement line, e.g. "0.50 CNY per 1,000 records"."""
    currency = plan.currency
    if plan.kind is PriceKind.FREE:
        return "free of charge"
    if plan.kind is PriceKind.PER_THOUSAND_RECORDS:
        return f"{plan.unit_price:.2f} {currency} per 1,000 records"
    if plan.kind is PriceKind.PER_MEGABYTE:
        return f"{plan.unit_price:.2f} {currency} per MB (1,000,000 bytes)"
    steps = []
    below = 0
    for tier in plan.tiers:
        if tier.up_to_records is None:
            steps.append(f"beyond {below:,} at {tier.unit_price:.2f}")
            break
        steps.append(f"{below + 1:,}-{tier.up_to_records:,} at {tier.unit_price:.2f}")
        below = tier.up_to_records
    else:
        steps.append(f"beyond {below:,} at {plan.unit_price:.2f}")
    return f"tiered per 1,000 records in the period ({currency}): " + ", ".join(steps)
