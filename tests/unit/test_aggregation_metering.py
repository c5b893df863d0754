# ruff: noqa: F811  (the engine fixture imported from test_aggregation_state is a parameter here)
"""An aggregate window's usage fact is metering's own RecordsDelivered: the ledger takes it (its checks
pass), counts it once however often it is delivered, and the grant's price plan prices it like any delivery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from test_aggregation_state import (  # noqa: F401  (engine: a fixture)
    DATASET,
    FEEDS,
    SCHEMAS,
    Feed,
    aggregator,
    engine,
    granted,
    outbox,
)

from pdo.aggregation.grants import AggregateGrants
from pdo.billing.pricing import exact_charge
from pdo.core.names import Event
from pdo.core.vocabulary import PriceKind, PricePlan, price_plan_to_json
from pdo.metering.ledger import Ledger, UsageFact
from pdo.metering.public import billed_usage
from pdo.metering.testing import put_grant

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PLAN = PricePlan(PriceKind.PER_THOUSAND_RECORDS, Decimal("2.50"))


def test_a_window_delivered_is_one_usage_fact_counted_once_and_priced_by_the_grants_plan(engine):
    book, feed = AggregateGrants(), Feed()
    granted(book)
    worker = aggregator(engine)
    worker.clock = lambda: START + timedelta(minutes=5)
    batch = [feed(s, district) for district in ("Haidian", "Chaoyang") for s in (1, 2, 3)] + [feed(100)]
    worker.save(worker.apply(batch, book, SCHEMAS, FEEDS, lambda where: True))
    (fact,) = [value for name, value in outbox(engine) if name == Event.RECORDS_DELIVERED]

    with engine.begin() as conn:
        put_grant(
            conn,
            "g-1",
            "tenant:acme",
            DATASET,
            START - timedelta(days=1),
            price_plan=price_plan_to_json(PLAN),
        )
    ledger = Ledger(engine, clock=lambda: START + timedelta(minutes=6))
    usage = UsageFact.from_event(fact)  # metering's own checks (records within the offsets it covers, ...)
    assert len(ledger.record([usage]).new_delivery_ids) == 1
    assert ledger.record([usage]).duplicates == 1  # the same window again: counted once
    with engine.connect() as conn:
        (billed,) = billed_usage(conn, "2026-03")
    assert (billed.grant_id, billed.records, billed.bytes) == ("g-1", 2, fact["bytes"])
    assert exact_charge(PLAN, billed.records, billed.bytes) == Decimal("0.005")  # 2 aggregates at 2.50 / 1000
