"""Billing's public module: the one module of `pdo.billing` other services may import (the gateway serves
statements and asset reports over HTTP with it).

Billing prices what metering's ledger holds: statements per tenant and closed period, asset reports per
dataset, and the reconciliation of tenant topics against the ledger and the statements. It reads metering
only through `pdo.metering.public`, and runs with the metering service's database role.
"""

from pdo.billing.assets import asset_report
from pdo.billing.disclosure import Disclosure, months_of, year_bounds
from pdo.billing.listing import Listing, OffsetReader, listings_csv, listings_for
from pdo.billing.statements import get_statement, list_statements, statement_json

__all__ = [
    "Disclosure",
    "Listing",
    "OffsetReader",
    "asset_report",
    "get_statement",
    "list_statements",
    "listings_csv",
    "listings_for",
    "months_of",
    "statement_json",
    "year_bounds",
]
