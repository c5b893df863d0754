"""Derived data products computed by the aggregation worker's state (SQLite): the product's filter decides
which source records count, a group below the product's k is never written, a closed window's groups are
staged for the product's feed (never a tenant's topic, and with no usage fact), each becomes a record of the
product's own schema, and a retired product publishes nothing."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import fastavro
import pytest

from pdo.aggregation import tables as t
from pdo.aggregation.app import product_record
from pdo.aggregation.grants import AggregateGrants
from pdo.aggregation.state import Aggregator, FeedRecord, TopicNames
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.deadletters import SourceMessage
from pdo.core.topics import TopicId
from pdo.core.vocabulary import product_spec_from_schema
from pdo.products.declaration import parse_declaration, record_schema
from tests.unit.test_products_declaration import EXAMPLE

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SOURCE = "traffic-flow"
FEED = f"pdo.feed.{SOURCE}"
PRODUCT = parse_declaration(
    EXAMPLE, "p.yaml"
)  # k 10, 300 s windows by district, cars/buses/trucks/motorbikes
SCHEMA = record_schema(PRODUCT)
FLOOR = 3


@pytest.fixture
def engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'pdo.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    yield engine
    engine.dispose()


def book(retired: bool = False) -> AggregateGrants:
    grants = AggregateGrants()
    grants.apply_product(PRODUCT.product_id, PRODUCT.spec, retired=retired, version=1)
    return grants


def records(count: int, district: str, vehicle: str, first_offset: int) -> list[FeedRecord]:
    return [
        FeedRecord(
            SourceMessage(FEED, 0, first_offset + n, b"k", b"raw"),
            SOURCE,
            START + timedelta(seconds=n % 200),
            {
                "district": district,
                "vehicle_type": vehicle,
                "speed_kmh": 30.0 + n,
                "plate_number": "京A12345",
            },
        )
        for n in range(count)
    ]


def close_one_window(engine, grants: AggregateGrants) -> list[tuple[str, dict]]:
    worker = Aggregator(engine, lateness_s=0, floor=FLOOR, names=TopicNames(Settings.from_env()))
    worker.load()
    batch = [
        *records(12, "Haidian", "BUS", 0),  # 12 >= k: published
        *records(5, "Chaoyang", "PASSENGER_CAR", 100),  # 5 < k = 10 (above the floor 3): suppressed
        *records(30, "Dongcheng", "SPECIAL", 200),  # filtered out by `where`: counts nowhere
        FeedRecord(SourceMessage(FEED, 0, 999, b"k", b"raw"), SOURCE, START + timedelta(hours=1), {}),
    ]
    worker.save(worker.apply(batch, grants, {SOURCE: "{}"}, {SOURCE: [(FEED, 0)]}, lambda where: True))
    with engine.connect() as conn:
        return t.OUTBOX.unsent(conn)


def test_a_closed_window_stages_only_admitted_groups_of_at_least_k_for_the_products_feed(engine):
    staged = close_one_window(engine, book())
    with engine.connect() as conn:
        topics = [row.topic for row in conn.execute(t.outbox_rows.select())]
    assert topics == [TopicId.PRODUCT_FEED.value]  # no tenant aggregates, no usage fact
    (_, aggregate) = staged[0]
    assert aggregate["group"] == {"district": "Haidian"}
    assert aggregate["count"] == 12
    assert aggregate["suppressed_groups"] == 1  # Chaoyang; Dongcheng was never counted
    assert aggregate["min_group_size"] == 10


def test_a_staged_group_becomes_a_record_of_the_products_schema(engine):
    (_, aggregate) = close_one_window(engine, book())[0]
    spec = product_spec_from_schema(SCHEMA)
    assert spec is not None
    record = product_record(aggregate, spec)
    parsed = fastavro.parse_schema(json.loads(SCHEMA))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, record)
    body.seek(0)
    read = fastavro.schemaless_reader(body, parsed, None)
    assert read["district"] == "Haidian"
    assert read["records"] == 12
    assert read["speed_kmh_mean"] == pytest.approx(sum(30.0 + n for n in range(12)) / 12)
    assert read["speed_kmh_min"] == 30.0
    assert read["window_end"] - read["window_start"] == timedelta(seconds=300)
    assert read["record_id"] == aggregate["aggregate_id"]
    assert "plate_number" not in read


def test_a_retired_product_publishes_nothing(engine):
    assert close_one_window(engine, book(retired=True)) == []
