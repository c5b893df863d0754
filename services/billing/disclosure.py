"""The annual disclosure a data group publishes under the 2026 rules for authorized operation of public data:
for one calendar year, every authorization granted (tenant, dataset or product, purpose, period of use,
status today) and every dataset and product offered, with its price plan and the year's usage and revenue.

Figures come from where they are kept: grants and purposes from authorization (pdo.authorization.public),
datasets and prices from the catalog (pdo.catalog.public), usage and revenue from the twelve months' asset
reports (pdo.billing.assets; a month not yet closed is priced from the ledger and marked provisional). This
module only assembles them, so it runs where those reads are allowed: the operator's CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pdo.authorization.public import GrantMade
from pdo.billing.assets import AssetReport
from pdo.billing.pricing import describe
from pdo.catalog.public import Dataset
from pdo.core.errors import InvalidInput
from pdo.core.spreadsheet import csv_text

DISCLOSURE_FORMAT = "pdo.disclosure.v1"
FIRST_YEAR, LAST_YEAR = 2000, 2999
GRANT_COLUMNS = (
    "grant_id",
    "tenant_id",
    "dataset_id",
    "kind",
    "purpose",
    "valid_from",
    "valid_until",
    "status",
    "granted_at",
)
PRODUCT_COLUMNS = (
    "dataset_id",
    "kind",
    "derived_from",
    "title",
    "provider_id",
    "classification",
    "openness",
    "asset_registration_number",
    "price_plan",
    "records",
    "revenue",
    "currency",
    "provisional",
)


def year_bounds(year: int) -> tuple[datetime, datetime]:
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise InvalidInput(
            f"year {year} is out of range", hint=f"give a year from {FIRST_YEAR} to {LAST_YEAR}"
        )
    return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)


def months_of(year: int) -> list[str]:
    return [f"{year:04d}-{month:02d}" for month in range(1, 13)]


@dataclass(frozen=True)
class Disclosure:
    year: int
    grants: Sequence[GrantMade]
    datasets: Sequence[Dataset]
    monthly: Sequence[AssetReport]
    generated_at: datetime

    @property
    def provisional(self) -> bool:
        return any(report.provisional and report.rows for report in self.monthly)

    def products(self) -> list[dict[str, Any]]:
        """Each dataset offered this year, with the year's records and revenue summed over the months."""
        totals: dict[str, dict[str, Any]] = {}
        for report in self.monthly:
            for row in report.rows:
                total = totals.setdefault(
                    row.dataset_id, {"records": 0, "revenue": Decimal("0.00"), "currency": None}
                )
                total["records"] += row.records
                total["revenue"] += row.revenue
                total["currency"] = total["currency"] or row.currency
                total["provisional"] = total.get("provisional", False) or row.provisional
        return [self._product(dataset, totals.get(dataset.dataset_id, {})) for dataset in self.datasets]

    @staticmethod
    def _product(dataset: Dataset, total: dict[str, Any]) -> dict[str, Any]:
        return {
            "dataset_id": dataset.dataset_id,
            # A dataset a provider publishes, or a derived data product computed from `derived_from`.
            "kind": "DERIVED_PRODUCT" if dataset.derived_from else "DATASET",
            "derived_from": " ".join(dataset.derived_from),
            "title": dataset.title,
            "provider_id": dataset.provider_id,
            "classification": dataset.classification.value,
            "openness": dataset.openness.value,
            "asset_registration_number": dataset.asset_registration_number,
            "price_plan": describe(dataset.price_plan),
            "records": total.get("records", 0),
            "revenue": str(total.get("revenue", Decimal("0.00"))),
            "currency": total.get("currency") or dataset.price_plan.currency,
            "provisional": total.get("provisional", False),
        }

    def grant_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "grant_id": grant.grant_id,
                "tenant_id": grant.tenant_id,
                "dataset_id": grant.dataset_id,
                "kind": grant.kind,
                "purpose": grant.purpose,
                "valid_from": grant.valid_from.isoformat(),
                "valid_until": grant.valid_until.isoformat(),
                "status": grant.status,
                "granted_at": grant.granted_at.isoformat(),
            }
            for grant in self.grants
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "disclosure_format": DISCLOSURE_FORMAT,
            "year": self.year,
            "generated_at": self.generated_at.isoformat(),
            "provisional": self.provisional,
            "authorizations_granted": self.grant_rows(),
            "products": self.products(),
        }

    def grants_csv(self) -> str:
        return csv_text(GRANT_COLUMNS, ([row[c] for c in GRANT_COLUMNS] for row in self.grant_rows()))

    def products_csv(self) -> str:
        return csv_text(PRODUCT_COLUMNS, ([row[c] for c in PRODUCT_COLUMNS] for row in self.products()))
