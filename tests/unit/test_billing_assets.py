"""Asset reports on SQLite and PostgreSQL: figures per dataset from the statements of a closed period, priced
from the ledger (provisional) for an open one, set-aside records, provider selection, CSV that a spreadsheet
cannot run."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from billing_support import FREE, add_grant, add_usage, per_megabyte, per_thousand

from pdo.authorization.testing import RecordingPublisher
from pdo.billing.assets import AssetReport, AssetRow, asset_report
from pdo.billing.statements import close_period
from pdo.core import db
from pdo.core.errors import InvalidInput

MAY, JUNE = datetime(2026, 5, 9, tzinfo=UTC), datetime(2026, 6, 2, tzinfo=UTC)


@pytest.fixture
def engine(database_url) -> Iterator[sa.Engine]:
    db.upgrade(database_url)
    engine = db.make_engine(database_url)
    with engine.begin() as conn:
        add_grant(conn, "g-a1", "tenant:a", "traffic", per_thousand("1.20"))
        add_grant(conn, "g-a2", "tenant:a", "traffic", per_megabyte("0.50"))
        add_grant(conn, "g-b", "tenant:b", "traffic", per_thousand("1.20"))
        add_grant(conn, "g-gov", "tenant:gov", "air", FREE)
        add_usage(conn, "g-a1", "tenant:a", "traffic", 1_000, 2_000_000, MAY)  # 1.20
        add_usage(conn, "g-a2", "tenant:a", "traffic", 10, 3_000_000, MAY)  # 3 MB x 0.50 = 1.50
        add_usage(conn, "g-b", "tenant:b", "traffic", 2_500, 1_000_000, MAY)  # 2,500 x 1.20 / 1,000 = 3.00
        add_usage(conn, "g-gov", "tenant:gov", "air", 9_000, 90_000, MAY)  # free
        add_usage(conn, "g-b", "tenant:b", "traffic", 5, 50, MAY, set_aside_reason="BEFORE_GRANT: early")
        add_usage(conn, "g-x", "tenant:c", "weather", 3, 30, MAY, set_aside_reason="UNKNOWN_GRANT: g-x")
    yield engine
    engine.dispose()


def by_dataset(report: AssetReport) -> dict[str, dict]:
    return {row.dataset_id: row.as_json() for row in report.rows}


def test_an_open_period_is_priced_from_the_ledger_and_provisional(engine) -> None:
    report = asset_report(engine, "2026-05")
    assert report.provisional
    rows = by_dataset(report)
    traffic = rows["traffic"]
    # 1.20 + 1.50 + 3.00 = 5.70 from two tenants over three grants; the set-aside 5 records apart
    assert (traffic["tenants"], traffic["grants"], traffic["records"], traffic["bytes"]) == (
        2,
        3,
        3_510,
        6_000_000,
    )
    assert (traffic["revenue"], traffic["currency"], traffic["set_aside_records"]) == ("5.70", "CNY", 5)
    assert (rows["air"]["tenants"], rows["air"]["records"], rows["air"]["revenue"]) == (1, 9_000, "0.00")
    # only set-aside usage: listed, nothing billed, no currency
    assert (
        rows["weather"]["records"],
        rows["weather"]["set_aside_records"],
        rows["weather"]["currency"],
    ) == (0, 3, None)


def test_a_closed_period_reads_the_revenue_from_its_statements(engine) -> None:
    open_report = asset_report(engine, "2026-05")
    close_period(engine, RecordingPublisher(), "2026-05", "operator:alice", now=JUNE)
    closed = asset_report(engine, "2026-05")
    assert not closed.provisional
    assert [row.revenue for row in closed.rows] == [row.revenue for row in open_report.rows]
    assert sum(row.revenue for row in closed.rows) == Decimal("5.70")
    assert asset_report(engine, "2026-06").rows == []


def test_a_selection_keeps_only_those_datasets(engine) -> None:
    assert [row.dataset_id for row in asset_report(engine, "2026-05", dataset_ids={"air"}).rows] == ["air"]
    assert asset_report(engine, "2026-05", dataset_ids=set()).rows == []


def test_json_and_csv_carry_the_same_figures(engine) -> None:
    report = asset_report(engine, "2026-05")
    data = report.as_json()
    assert (
        data["period_start"] == "2026-05-01T00:00:00+00:00"
        and data["period_end"] == "2026-06-01T00:00:00+00:00"
    )
    rows = list(csv.DictReader(io.StringIO(report.as_csv())))
    assert [r["dataset_id"] for r in rows] == [d["dataset_id"] for d in data["datasets"]]
    assert rows[1]["revenue"] == "5.70" and rows[1]["records"] == "3510"


def test_csv_cells_a_spreadsheet_would_run_are_defused() -> None:
    row = AssetRow("2026-05", "traffic", '=HYPERLINK("http://evil","x")', "@provider", "CNY", True)
    text = AssetReport("2026-05", True, [row]).as_csv()
    (parsed,) = csv.DictReader(io.StringIO(text))
    assert parsed["title"] == '\'=HYPERLINK("http://evil","x")' and parsed["provider_id"] == "'@provider"
    assert parsed["revenue"] == "0.00"


def test_a_malformed_period_is_refused(engine) -> None:
    with pytest.raises(InvalidInput, match="month 13"):
        asset_report(engine, "2026-13")
