"""Revenue shares: a derived product's revenue split among its sources to the cent (a property of the pure
split), and the asset report attributing it — learnt from the catalog events' lineage — to each source
beside its own figures, the product's own row unchanged."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from billing_support import add_grant, add_usage, per_thousand
from hypothesis import given
from hypothesis import strategies as st

from pdo.authorization.testing import RecordingPublisher
from pdo.billing.assets import AssetReport, asset_report
from pdo.billing.shares import split_cents
from pdo.billing.statements import close_period
from pdo.core import db
from pdo.metering import public as metering
from pdo.metering.projection import TopicEvent, apply_events

MAY, JUNE = datetime(2026, 5, 9, tzinfo=UTC), datetime(2026, 6, 2, tzinfo=UTC)
REGISTERED = "pdo.catalog.v1.DatasetRegistered"

source_ids = st.sets(st.text("abcdefgh-", min_size=1, max_size=6), min_size=1, max_size=16)


# ---------------------------------------------------------------------------------------------- the split


@given(cents=st.integers(min_value=0, max_value=10**12), sources=source_ids)
def test_shares_sum_exactly_to_the_revenue_and_differ_by_at_most_a_cent(
    cents: int, sources: set[str]
) -> None:
    shares = split_cents(cents, sources)
    assert set(shares) == sources
    assert sum(shares.values()) == cents
    assert max(shares.values()) - min(shares.values()) <= 1


@given(cents=st.integers(min_value=0, max_value=10**6), sources=source_ids)
def test_the_left_over_cents_go_to_the_first_sources_in_id_order(cents: int, sources: set[str]) -> None:
    shares = split_cents(cents, sources)
    in_id_order = [shares[source] for source in sorted(sources)]
    assert in_id_order == sorted(in_id_order, reverse=True)
    assert sum(1 for share in in_id_order if share > cents // len(sources)) == cents % len(sources)


orderings = source_ids.map(sorted).flatmap(lambda ids: st.lists(st.permutations(ids), min_size=2, max_size=4))


@given(cents=st.integers(min_value=0, max_value=10**6), orders=orderings)
def test_the_order_sources_are_named_in_changes_nothing(cents: int, orders: list[list[str]]) -> None:
    splits = [split_cents(cents, order) for order in orders]
    assert all(split == splits[0] for split in splits)


def test_one_cent_over_three_sources_goes_to_the_first_by_id() -> None:
    assert split_cents(1, ["c", "a", "b"]) == {"a": 1, "b": 0, "c": 0}
    assert split_cents(101, ["traffic", "air"]) == {"air": 51, "traffic": 50}


@pytest.mark.parametrize(("cents", "sources"), [(-1, ["a"]), (100, [])])
def test_negative_revenue_or_no_source_is_refused(cents: int, sources: list[str]) -> None:
    with pytest.raises(ValueError):
        split_cents(cents, sources)


# ---------------------------------------------------------------------------------------------- the report


def registered(dataset_id: str, provider_id: str, *sources: str) -> dict:
    """A DatasetRegistered event as metering's projection decodes it (lineage as the catalog writes it)."""
    return {
        "dataset_id": dataset_id,
        "title": dataset_id.title(),
        "provider_id": provider_id,
        "version": 1,
        "derived_from": sorted(sources),
    }


@pytest.fixture
def engine(database_url) -> Iterator[sa.Engine]:
    """Sources `traffic` (own usage, 1.20) and `air` (none); product `congestion` derived from both earns
    1.01 — 101 cents: 51 to `air`, 50 to `traffic`."""
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    catalog = [
        registered("air", "provider:environment"),
        registered("traffic", "provider:transport"),
        registered("congestion", "provider:datagroup", "traffic", "air"),
    ]
    with engine.begin() as conn:
        events = [TopicEvent(0, offset, REGISTERED, value) for offset, value in enumerate(catalog)]
        apply_events(conn, "pdo.catalog", events, {0: len(events)})
        add_grant(conn, "g-traffic", "tenant:a", "traffic", per_thousand("1.20"))
        add_grant(conn, "g-congestion", "tenant:b", "congestion", per_thousand("1.01"))
        add_usage(conn, "g-traffic", "tenant:a", "traffic", 1_000, 10_000, MAY)
        add_usage(conn, "g-congestion", "tenant:b", "congestion", 1_000, 20_000, MAY)
    yield engine
    engine.dispose()


def by_dataset(report: AssetReport) -> dict[str, dict]:
    return {row.dataset_id: row.as_json() for row in report.rows}


def test_lineage_is_learnt_from_the_catalog_events_and_an_event_without_it_names_none(engine) -> None:
    older = {"dataset_id": "weather", "title": "Weather", "provider_id": "provider:met", "version": 1}
    with engine.begin() as conn:
        apply_events(conn, "pdo.catalog", [TopicEvent(0, 3, REGISTERED, older)], {0: 4})
        assert metering.dataset_lineage(conn) == {"congestion": ("air", "traffic")}


def test_a_products_revenue_is_attributed_to_its_sources_and_its_own_row_is_unchanged(engine) -> None:
    rows = by_dataset(asset_report(engine, "2026-05"))
    product, traffic, air = rows["congestion"], rows["traffic"], rows["air"]
    assert (product["revenue"], product["records"], product["attributed_revenue"]) == ("1.01", 1_000, "0.00")
    assert product["attributed_from"] == []
    assert (traffic["revenue"], traffic["attributed_revenue"], traffic["attributed_from"]) == (
        "1.20",
        "0.50",
        ["congestion"],
    )
    # no usage of its own: a row for what is attributed to it, in the product's currency
    assert (air["revenue"], air["records"], air["currency"], air["title"]) == ("0.00", 0, "CNY", "Air")
    assert (air["attributed_revenue"], air["attributed_from"]) == ("0.51", ["congestion"])


def test_attribution_is_no_additional_charge(engine) -> None:
    report = asset_report(engine, "2026-05")
    assert sum(row.revenue for row in report.rows) == Decimal("2.21")  # 1.20 + 1.01, what tenants pay
    assert sum(row.attributed_revenue for row in report.rows) == Decimal("1.01")  # the product's, once


def test_a_closed_period_attributes_the_same_shares(engine) -> None:
    open_rows = by_dataset(asset_report(engine, "2026-05"))
    close_period(engine, RecordingPublisher(), "2026-05", "operator:alice", now=JUNE)
    closed = asset_report(engine, "2026-05")
    assert not closed.provisional
    assert {key: row["attributed_revenue"] for key, row in by_dataset(closed).items()} == {
        key: row["attributed_revenue"] for key, row in open_rows.items()
    }


def test_attribution_goes_one_step_from_a_product_to_the_datasets_it_names(engine) -> None:
    forecast = registered("forecast", "provider:datagroup", "congestion")
    with engine.begin() as conn:
        apply_events(conn, "pdo.catalog", [TopicEvent(0, 3, REGISTERED, forecast)], {0: 4})
        add_grant(conn, "g-forecast", "tenant:b", "forecast", per_thousand("2.00"))
        add_usage(conn, "g-forecast", "tenant:b", "forecast", 1_000, 1_000, MAY)
    rows = by_dataset(asset_report(engine, "2026-05"))
    assert (rows["congestion"]["attributed_revenue"], rows["congestion"]["attributed_from"]) == (
        "2.00",
        ["forecast"],
    )
    # the sources of congestion share its own 1.01, not what forecast attributed to it
    assert (rows["air"]["attributed_revenue"], rows["traffic"]["attributed_revenue"]) == ("0.51", "0.50")


def test_a_providers_selection_keeps_what_other_providers_products_attribute_to_its_data(engine) -> None:
    (air,) = asset_report(engine, "2026-05", dataset_ids={"air"}).rows
    assert (air.attributed_revenue, air.attributed_from) == (Decimal("0.51"), ["congestion"])


def test_the_csv_carries_the_attribution_in_its_own_columns(engine) -> None:
    rows = {
        row["dataset_id"]: row
        for row in csv.DictReader(io.StringIO(asset_report(engine, "2026-05").as_csv()))
    }
    assert (rows["air"]["attributed_revenue"], rows["air"]["attributed_from"]) == ("0.51", "congestion")
    assert (rows["congestion"]["revenue"], rows["congestion"]["attributed_from"]) == ("1.01", "")
