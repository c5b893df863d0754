"""A derived data product from its declaration to a tenant consuming it, metered and billed, on the real
(secured) broker with real worker processes.

An operator declares a product over a TrafficFlow dataset (buses, trucks and cars only; k = 10; one-minute
windows by district) and applies it: the catalog lists it with its lineage, a second apply changes nothing.
A tenant is granted the product's rows like any dataset's. `pdo aggregation worker` computes it, `pdo sharing
worker` delivers it, `pdo metering worker` meters it: the tenant (read_committed, the way the README tells it
to consume) sees exactly one record for the one district with at least k admitted records — its count and
speeds right, nothing of any source record (no plate, phone, record id) — and the ledger and the asset report
count that one delivery under the product at the product's price, attributed to it, not to the source.
"""

# ruff: noqa: F811  (pytest fixtures imported from sharing_support are parameters here)
from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fastavro
import pytest
import yaml
from metering_support import ledger_count
from sharing_support import (  # noqa: F401  (fixtures)
    ACME,
    PdoProcesses,
    TimedFeed,
    committed_messages,
    db_url,
    grant,
    platform,
    settings,
    wait_for,
)

from pdo.authorization.testing import register_traffic_dataset
from pdo.billing.public import asset_report
from pdo.core import db
from pdo.core.topics import tenant_topic
from pdo.metering.public import dataset_lineage
from pdo.products.declaration import parse_declaration
from pdo.products.registration import apply_products

pytestmark = pytest.mark.integration

WINDOW_S = 60
K = 10
EXAMPLE_DECLARATION = (
    Path(__file__).resolve().parents[2] / "products/product-congestion-index.yaml"
).read_text()


def declared(source: str, product_id: str):
    data = yaml.safe_load(EXAMPLE_DECLARATION)
    data.update(
        id=product_id,
        source=source,
        window_seconds=WINDOW_S,
        min_group_size=K,
        where={"vehicle_type": ["BUS", "TRUCK", "PASSENGER_CAR"]},
        # 1.00 a record, so the one record delivered is billed a visible amount.
        price_plan={"kind": "PER_THOUSAND_RECORDS", "unit_price": "1000.00", "currency": "CNY"},
    )
    return parse_declaration(yaml.safe_dump(data), f"{product_id}.yaml")


def lineage(engine) -> dict[str, tuple[str, ...]]:
    with engine.connect() as conn:
        return dataset_lineage(conn)


def test_a_product_from_declaration_to_a_tenant_metered_and_billed(settings, platform, tmp_path):
    source = register_traffic_dataset(platform["catalog"])
    product_id = f"product-{source}"[:63]
    product = declared(source, product_id)
    assert apply_products(platform["catalog"], [product], "operator:test").registered == [product_id]
    assert apply_products(platform["catalog"], [product], "operator:test").unchanged == [product_id]
    listed = platform["catalog"].get(product_id)
    assert listed.derived_from == (source,)
    assert listed.sensitive_fields == ()

    fields = (
        "record_id",
        "window_start",
        "window_end",
        "district",
        "records",
        "speed_kmh_mean",
        "speed_kmh_min",
        "suppressed_groups",
    )
    grant(platform["service"], ACME, product_id, fields)

    processes = PdoProcesses(settings, tmp_path, {"PDO_AGGREGATION_ALLOWED_LATENESS_S": "1"})
    feed = TimedFeed(settings, platform["codec"], source)
    now = datetime.now(UTC)
    window = datetime.fromtimestamp((int(now.timestamp()) // WINDOW_S) * WINDOW_S, UTC)
    tenant_topic_name = tenant_topic(ACME, product_id, settings)
    try:
        workers = [
            processes.start("aggregation", "worker", "--loglevel", "info"),
            processes.start("sharing", "worker", "--loglevel", "info"),
            processes.start("metering", "worker", "--loglevel", "info"),
        ]
        feed.window(window, {"Haidian": 12}, "bus", vehicle="BUS")  # >= k: published
        feed.window(window, {"Chaoyang": 4}, "car")  # < k: suppressed
        feed.window(window, {"Dongcheng": 15}, "special", vehicle="SPECIAL")  # filtered out: counts nowhere
        feed.publish(
            window + timedelta(seconds=WINDOW_S + 2), "Haidian", "closer", "BUS"
        )  # closes the window
        delivered = wait_for(
            "the product's record on the tenant's topic",
            lambda: committed_messages(settings, tenant_topic_name, idle_s=1.0),
            workers,
        )
        engine = db.make_engine(settings.database_url)
        try:
            wait_for("the delivery in the ledger", lambda: ledger_count(engine) >= 1, workers)
            wait_for("the product's lineage in metering", lambda: product_id in lineage(engine), workers)
            time.sleep(2)  # anything doubled would show by now
            report = asset_report(engine, window.strftime("%Y-%m"))
            assert ledger_count(engine) == 1
        finally:
            engine.dispose()
    finally:
        processes.stop()
        feed.close()

    assert len(delivered) == 1
    schema = fastavro.parse_schema(json.loads(listed.record_schema))
    row = fastavro.schemaless_reader(io.BytesIO(delivered[0].value[5:]), schema, None)
    assert (row["district"], row["records"], row["suppressed_groups"]) == ("Haidian", 12, 1)
    haidian = [
        r["speed_kmh"]
        for r in feed.published
        if r["district"] == "Haidian" and r["record_id"].startswith("bus")
    ]
    assert row["speed_kmh_mean"] == pytest.approx(sum(haidian) / len(haidian))
    assert row["speed_kmh_min"] == min(haidian)
    assert row["window_start"] == window
    raw = {str(r[name]) for r in feed.published for name in ("record_id", "plate_number", "driver_phone")}
    assert not any(value.encode() in delivered[0].value for value in raw)

    (billed,) = [line for line in report.rows if line.dataset_id == product_id]
    assert (billed.records, billed.grants, str(billed.revenue)) == (1, 1, "1.00")
    # No row of the source went out; the product's revenue is attributed back to it, not charged again.
    (attributed,) = [line for line in report.rows if line.dataset_id == source]
    assert (attributed.records, attributed.grants, str(attributed.revenue)) == (0, 0, "0.00")
    assert (str(attributed.attributed_revenue), attributed.attributed_from) == ("1.00", [product_id])
