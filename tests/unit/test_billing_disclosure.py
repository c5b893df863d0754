"""The annual disclosure: the authorizations granted in the year with their purposes, and every dataset
offered with its price and the year's usage and revenue, through `pdo billing disclosure` on SQLite."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from billing_support import add_grant, add_usage, per_thousand, traffic

from pdo.authorization import tables as authz
from pdo.billing.disclosure import Disclosure, year_bounds
from pdo.catalog import mapping
from pdo.catalog.tables import datasets
from pdo.cli.main import main
from pdo.core import db
from pdo.core.errors import InvalidInput

MARCH, LAST_DECEMBER = datetime(2026, 3, 4, 9, tzinfo=UTC), datetime(2025, 12, 30, tzinfo=UTC)


def add_request_and_grant(conn, grant_id: str, tenant: str, purpose: str, granted_at: datetime) -> None:
    request_id = f"r-{grant_id}"
    period = {"valid_from": granted_at, "valid_until": granted_at + timedelta(days=90)}
    stamps = {"created_at": granted_at, "updated_at": granted_at}
    common = {"tenant_id": tenant, "dataset_id": "traffic", "fields": '["vehicles"]', **period, **stamps}
    conn.execute(
        sa.insert(authz.requests).values(
            request_id=request_id, tenant_kind="ENTERPRISE", purpose=purpose, status="APPROVED", **common
        )
    )
    conn.execute(
        sa.insert(authz.grants).values(
            grant_id=grant_id,
            request_id=request_id,
            masking="{}",
            price_plan='{"kind":"FREE","unit_price":"0.00","tiers":[],"currency":"CNY"}',
            status="ACTIVE",
            version=1,
            **common,
        )
    )


@pytest.fixture
def database(sqlite_url, monkeypatch) -> str:
    db.upgrade(sqlite_url)
    engine = db.make_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(datasets).values(
                **mapping.dataset_to_row(traffic(title="=cmd|' /C calc'!A0")),
                updated_at=MARCH,
                last_event_id="e-1",
            )
        )
        add_request_and_grant(conn, "g-1", "tenant:acme", "congestion study", MARCH)
        add_request_and_grant(conn, "g-old", "tenant:acme", "last year's", LAST_DECEMBER)
        add_grant(conn, "g-1", "tenant:acme", "traffic", per_thousand("0.50"))
        add_usage(conn, "g-1", "tenant:acme", "traffic", 2_000, 20_000, MARCH)
        add_usage(conn, "g-1", "tenant:acme", "traffic", 4_000, 40_000, MARCH + timedelta(days=40))
    engine.dispose()
    monkeypatch.setenv("PDO_DATABASE_URL", sqlite_url)
    return sqlite_url


def test_the_disclosure_lists_the_years_grants_with_purposes_and_products_with_revenue(database, capsys):
    assert main(["billing", "disclosure", "--year", "2026"]) == 0
    document = json.loads(capsys.readouterr().out)

    grants = document["authorizations_granted"]
    assert [(g["grant_id"], g["tenant_id"], g["purpose"]) for g in grants] == [
        ("g-1", "tenant:acme", "congestion study")
    ]  # the grant made in December 2025 belongs to last year's disclosure
    assert grants[0]["valid_until"].startswith("2026-06-02")
    (product,) = document["products"]
    assert (product["dataset_id"], product["price_plan"], product["records"]) == (
        "traffic",
        "0.50 CNY per 1,000 records",
        6_000,
    )
    assert (product["revenue"], product["provisional"], document["provisional"]) == ("3.00", True, True)
    assert product["asset_registration_number"] == "SZ-DA-2026-0042"


def test_the_csv_companions_are_written_beside_the_json_and_defuse_formulas(database, tmp_path, capsys):
    prefix = str(tmp_path / "disclosure-2026")
    assert main(["billing", "disclosure", "--year", "2026", "--out", prefix]) == 0

    assert "disclosure-2026-products.csv" in capsys.readouterr().out
    products = list(csv.DictReader(io.StringIO((tmp_path / "disclosure-2026-products.csv").read_text())))
    grants = list(csv.DictReader(io.StringIO((tmp_path / "disclosure-2026-grants.csv").read_text())))
    assert products[0]["title"].startswith("'=") and products[0]["revenue"] == "3.00"
    assert [row["purpose"] for row in grants] == ["congestion study"]
    assert json.loads((tmp_path / "disclosure-2026.json").read_text())["year"] == 2026


def test_a_year_out_of_range_is_refused_with_the_reason(database, capsys):
    assert main(["billing", "disclosure", "--year", "99999"]) == 2
    assert "year 99999 is out of range" in capsys.readouterr().err
    with pytest.raises(InvalidInput):
        year_bounds(1)


def test_a_year_with_nothing_granted_discloses_the_catalog_at_zero():
    empty = Disclosure(2024, [], [traffic()], [], datetime(2025, 1, 2, tzinfo=UTC))
    assert empty.as_json()["authorizations_granted"] == []
    assert (
        empty.products()[0] | {"records": 0, "revenue": "0.00", "provisional": False} == empty.products()[0]
    )


def test_a_derived_product_is_disclosed_as_one_with_its_sources_and_grants_with_their_kind(database, capsys):
    product = traffic(dataset_id="product-congestion", derived_from=("traffic",))
    disclosure = Disclosure(2026, [], [traffic(), product], [], datetime(2027, 1, 2, tzinfo=UTC))
    kinds = {row["dataset_id"]: (row["kind"], row["derived_from"]) for row in disclosure.products()}
    assert kinds == {"traffic": ("DATASET", ""), "product-congestion": ("DERIVED_PRODUCT", "traffic")}

    assert main(["billing", "disclosure", "--year", "2026"]) == 0
    (grant,) = json.loads(capsys.readouterr().out)["authorizations_granted"]
    assert grant["kind"] == "ROWS"
