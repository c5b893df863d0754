"""Pricing one grant's usage: every plan kind against amounts worked out by hand, rounding half-up."""

from __future__ import annotations

from decimal import Decimal

import pytest
from billing_support import FREE, per_megabyte, per_thousand, tiered
from hypothesis import given
from hypothesis import strategies as st

from pdo.billing.pricing import charge, describe, round_cents, tier_shares
from pdo.core.vocabulary import PriceKind, PricePlan, PriceTier

# 1-1,000 at 2.00, 1,001-5,000 at 1.50, the rest at 1.00 (per 1,000 records)
THREE_TIERS = tiered((1_000, "2.00"), (5_000, "1.50"), (None, "1.00"))


@pytest.mark.parametrize(
    ("plan", "records", "bytes_", "expected"),
    [
        # 2,345 x 0.50 / 1,000 = 1.1725 -> 1.17
        (per_thousand("0.50"), 2_345, 0, "1.17"),
        # 500 x 0.01 / 1,000 = 0.005 -> 0.01 (half-up; banker's rounding would give 0.00)
        (per_thousand("0.01"), 500, 0, "0.01"),
        # 1,500 x 0.03 / 1,000 = 0.045 -> 0.05 (banker's: 0.04)
        (per_thousand("0.03"), 1_500, 0, "0.05"),
        # 499 x 0.01 / 1,000 = 0.00499 -> 0.00
        (per_thousand("0.01"), 499, 0, "0.00"),
        # 12,345,678 bytes = 12.345678 MB x 0.30 = 3.7037034 -> 3.70; records do not matter
        (per_megabyte("0.30"), 800, 12_345_678, "3.70"),
        # 15,000 bytes = 0.015 MB x 1.00 = 0.015 -> 0.02 (half-up)
        (per_megabyte("1.00"), 1, 15_000, "0.02"),
        # tiers: 1,000 x 2.00 + 4,000 x 1.50 + 2,250 x 1.00 = 2.00 + 6.00 + 2.25 = 10.25
        (THREE_TIERS, 7_250, 0, "10.25"),
        # inside the first tier only: 999 x 2.00 / 1,000 = 1.998 -> 2.00
        (THREE_TIERS, 999, 0, "2.00"),
        # exactly at a bound: 5,000 = 1,000 x 2.00 + 4,000 x 1.50 = 8.00
        (THREE_TIERS, 5_000, 0, "8.00"),
        # bounded last tier, the plan's price beyond: 100 x 1.00 + 250 x 0.40 = 0.10 + 0.10 = 0.20
        (tiered((100, "1.00"), beyond="0.40"), 350, 0, "0.20"),
        # one rounding per line, not per tier: 3 x 1.00 / 1,000 + 3 x 1.00 / 1,000 = 0.006 -> 0.01 (per tier: 0.00)
        (tiered((3, "1.00"), (None, "1.00")), 6, 0, "0.01"),
        (FREE, 10_000, 5_000_000, "0.00"),
        (per_thousand("9.99"), 0, 0, "0.00"),
    ],
)
def test_charge_matches_hand_computation(plan, records, bytes_, expected) -> None:
    assert charge(plan, records, bytes_) == Decimal(expected)
    assert str(charge(plan, records, bytes_)) == expected  # two decimals, always


def test_tier_shares_split_the_records_over_the_tiers() -> None:
    shares = tier_shares(THREE_TIERS, 7_250)
    assert [(s.first, s.last, s.unit_price) for s in shares] == [
        (1, 1_000, Decimal("2.00")),
        (1_001, 5_000, Decimal("1.50")),
        (5_001, 7_250, Decimal("1.00")),
    ]
    assert tier_shares(THREE_TIERS, 0) == []


def test_huge_counts_keep_every_digit() -> None:
    # The largest Avro price times a huge count: Decimal's default 28-digit context cannot even quantize it.
    plan = per_thousand("9999999999999999.99")
    records = 2**62
    assert charge(plan, records, 0) == Decimal("46116860184273878993883139815726.12")


def test_negative_usage_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        charge(per_thousand("1.00"), -1, 0)


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**9))
def test_tiers_never_charge_more_than_the_top_price_and_grow_with_usage(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert charge(THREE_TIERS, low, 0) <= charge(THREE_TIERS, high, 0)
    assert charge(THREE_TIERS, high, 0) <= round_cents(Decimal("2.00") * high / 1000)


@pytest.mark.parametrize(
    ("plan", "text"),
    [
        (per_thousand("0.50"), "0.50 CNY per 1,000 records"),
        (per_megabyte("0.30"), "0.30 CNY per MB (1,000,000 bytes)"),
        (FREE, "free of charge"),
        (
            THREE_TIERS,
            "tiered per 1,000 records in the period (CNY): 1-1,000 at 2.00, 1,001-5,000 at 1.50, "
            "beyond 5,000 at 1.00",
        ),
        (
            PricePlan(PriceKind.TIERED, Decimal("0.40"), (PriceTier(100, Decimal("1.00")),), "USD"),
            "tiered per 1,000 records in the period (USD): 1-100 at 1.00, beyond 100 at 0.40",
        ),
    ],
)
def test_plans_read_in_words(plan, text) -> None:
    assert describe(plan) == text
