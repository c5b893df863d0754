"""Asset reports: per dataset and billing period, who was served, how much was delivered, and the revenue.

The figures a data group needs to register a dataset as a data asset and to list it on a data exchange:
tenants served, grants used, records and bytes delivered (billed in the period), records set aside for
review, and revenue. Revenue of a closed period is read from its issued statements; of an open period it is
priced from the ledger so far, with the same code that will price the statements, and marked provisional.
Both come from statement lines, so a dataset's revenue is always the sum of its lines on the statements.
Titles and providers come from metering's projection of the catalog events (pdo.metering.public).

One row per dataset and currency (a dataset's grants normally share its currency). CSV cells a spreadsheet
would run as a formula are defused (pdo.core.spreadsheet): titles are written by providers.

**Attribution, not an additional charge.** A derived product keeps its own row and its own revenue. Each of
its sources (its lineage, `derived_from`, from metering's projection of the catalog events) also shows
`attributed_revenue`, its share of what the products derived from it earned in the period, split by
pdo.billing.shares so the shares of a product sum exactly to its revenue, and `attributed_from`, the ids of
those products (the ones that earned in the period). Attribution goes one step, from a product's own revenue
to the datasets it names, in the product's currency; a source with no usage of its own gets a row for it.
It is computed over every dataset before a provider's selection, so a provider sees what other providers'
products attribute to its data. Summing `revenue` over the report still gives what tenants were charged:
attributed revenue added to it would count the products' revenue twice.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine

from pdo.billing.shares import split_cents
from pdo.billing.statements import Statement, compute_statements, from_cents, load_statements, to_cents
from pdo.core.months import parse_period, period_end, period_start
from pdo.core.spreadsheet import csv_text
from pdo.metering.public import dataset_lineage, dataset_names, is_closed, set_aside_records_by_dataset

COLUMNS = (
    "period",
    "dataset_id",
    "title",
    "provider_id",
    "tenants",
    "grants",
    "records",
    "bytes",
    "set_aside_records",
    "revenue",
    "currency",
    "provisional",
    "attributed_revenue",
    "attributed_from",
)


@dataclass
class AssetRow:
    period: str
    dataset_id: str
    title: str | None
    provider_id: str | None
    currency: str | None
    provisional: bool
    tenants: int = 0
    grants: int = 0
    records: int = 0
    bytes: int = 0
    set_aside_records: int = 0
    revenue: Decimal = Decimal("0.00")
    attributed_revenue: Decimal = Decimal("0.00")  # attribution, not an additional charge
    attributed_from: list[str] = field(default_factory=list)  # product ids, in id order
    _tenant_ids: set[str] = field(default_factory=set, repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        data = {name: value for name, value in asdict(self).items() if not name.startswith("_")}
        data["revenue"] = str(self.revenue)
        data["attributed_revenue"] = str(self.attributed_revenue)
        return {column: data[column] for column in COLUMNS}

    def csv_cells(self) -> list[Any]:
        """The row as CSV cells: the product ids in one cell, space-separated (ids hold no spaces)."""
        data = self.as_json()
        data["attributed_from"] = " ".join(self.attributed_from)
        return list(data.values())


@dataclass(frozen=True)
class AssetReport:
    period: str
    provisional: bool
    rows: list[AssetRow]

    def as_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "period_start": period_start(self.period).isoformat(),
            "period_end": period_end(self.period).isoformat(),
            "provisional": self.provisional,
            "datasets": [row.as_json() for row in self.rows],
        }

    def as_csv(self) -> str:
        return csv_text(COLUMNS, (row.csv_cells() for row in self.rows))


def asset_report(engine: Engine, period: str, dataset_ids: Collection[str] | None = None) -> AssetReport:
    """The period's report, for every dataset with usage or only those in `dataset_ids` (a provider's own)."""
    period = parse_period(period)
    with engine.connect() as conn:
        closed = is_closed(conn, period)
        statements = load_statements(conn, period=period) if closed else compute_statements(conn, period)
        set_aside = set_aside_records_by_dataset(conn, period)
        datasets = dataset_names(conn)
        lineage = dataset_lineage(conn)
    rows = _rows(period, statements, datasets, provisional=not closed)
    _attribute(rows, lineage, datasets, period, provisional=not closed)
    for dataset_id, records in set_aside.items():
        _row_for(rows, period, dataset_id, datasets, not closed).set_aside_records = records
    selected = [
        row for _, row in sorted(rows.items()) if dataset_ids is None or row.dataset_id in dataset_ids
    ]
    return AssetReport(period, not closed, selected)


def _rows(
    period: str,
    statements: list[Statement],
    datasets: Mapping[str, tuple[str | None, str | None]],
    provisional: bool,
) -> dict[tuple[str, str], AssetRow]:
    rows: dict[tuple[str, str], AssetRow] = {}
    for statement in statements:
        for line in statement.lines:
            row = _keyed_row(rows, line.dataset_id, statement.currency, datasets, period, provisional)
            row._tenant_ids.add(statement.tenant_id)
            row.tenants = len(row._tenant_ids)
            row.grants += 1
            row.records += line.records
            row.bytes += line.bytes
            row.revenue += line.amount
    return rows


def _attribute(
    rows: dict[tuple[str, str], AssetRow],
    lineage: Mapping[str, tuple[str, ...]],
    datasets: Mapping[str, tuple[str | None, str | None]],
    period: str,
    provisional: bool,
) -> None:
    """Add each product's revenue, split among its sources, to their rows in the product's currency."""
    earning = [
        (dataset_id, currency, row.revenue)
        for (dataset_id, currency), row in sorted(rows.items())
        if lineage.get(dataset_id) and row.revenue > 0
    ]
    for product_id, currency, revenue in earning:
        for source_id, cents in split_cents(to_cents(revenue), lineage[product_id]).items():
            row = _keyed_row(rows, source_id, currency, datasets, period, provisional)
            row.attributed_revenue += from_cents(cents)
            row.attributed_from.append(product_id)  # products come in id order


def _keyed_row(
    rows: dict[tuple[str, str], AssetRow],
    dataset_id: str,
    currency: str | None,
    datasets: Mapping[str, tuple[str | None, str | None]],
    period: str,
    provisional: bool,
) -> AssetRow:
    """The dataset's row in `currency` (None: a row without one), made empty if it has none yet."""
    key = (dataset_id, currency or "")
    if key not in rows:
        title, owner = datasets.get(dataset_id, (None, None))
        rows[key] = AssetRow(period, dataset_id, title, owner, currency, provisional)
    return rows[key]


def _row_for(
    rows: dict[tuple[str, str], AssetRow],
    period: str,
    dataset_id: str,
    datasets: Mapping[str, tuple[str | None, str | None]],
    provisional: bool,
) -> AssetRow:
    """The dataset's first row; a dataset with only set-aside usage gets one without a currency."""
    found = [row for key, row in sorted(rows.items()) if key[0] == dataset_id]
    return found[0] if found else _keyed_row(rows, dataset_id, None, datasets, period, provisional)
