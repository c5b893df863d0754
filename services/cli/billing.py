"""`pdo billing statements close|show|verify`, `pdo billing reconcile`, `pdo billing assets`.

`statements close --period YYYY-MM` closes a month that has ended and issues its statements (rows and
`StatementIssued` events), listing the usage set aside for review; closing twice is refused.
`statements show` prints the issued statements; `statements verify` recomputes a closed period from the
ledger and exits 1 listing every difference (0: equal to the cent). `reconcile` compares, per grant, the
records on the tenant topics, in the ledger and on the statements: exit 0 when they agree, 1 with a table
of the grants that do not. `assets` prints the per-dataset report as CSV or JSON. `disclosure --year` writes the annual disclosure: the
authorizations granted that year (tenant, dataset, purpose, period) and the products with their prices and
the year's usage and revenue (JSON, with two CSV companions).
Exit 2 on a pdo error (a malformed period, an unreachable broker ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pdo.core import db
from pdo.core.access_log import operator_actor
from pdo.core.config import Settings
from pdo.core.errors import InvalidInput


def period_argument(text: str) -> str:
    """An argparse type: a month YYYY-MM, refused with the reason otherwise."""
    from pdo.core.months import parse_period

    try:
        return parse_period(text)
    except InvalidInput as error:
        raise argparse.ArgumentTypeError(error.message) from None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "billing", help="statements per billing period, reconciliation, dataset asset reports"
    )
    actions = parser.add_subparsers(dest="action", required=True)

    statements = actions.add_parser("statements", help="close a period, show and verify its statements")
    steps = statements.add_subparsers(dest="step", required=True)
    close = steps.add_parser("close", help="close a month that has ended and issue its statements")
    _period(close)
    close.add_argument("--by", help="who closes it, kind:name (default: operator:<your login>)")
    close.add_argument("--json", action="store_true", help="print the statements as JSON")
    close.set_defaults(func=close_statements)
    show = steps.add_parser("show", help="print a period's issued statements")
    _period(show)
    show.add_argument("--tenant", help="only this tenant's, e.g. tenant:acme")
    show.add_argument("--json", action="store_true", help="print the statements as JSON")
    show.set_defaults(func=show_statements)
    verify = steps.add_parser("verify", help="recompute a closed period and compare it with its statements")
    _period(verify)
    verify.set_defaults(func=verify_statements)

    disclosure = actions.add_parser(
        "disclosure", help="the annual disclosure: authorizations granted, products, prices, revenue"
    )
    disclosure.add_argument("--year", type=int, required=True, help="calendar year, e.g. 2026")
    disclosure.add_argument(
        "--out",
        help="write PREFIX.json, PREFIX-grants.csv and PREFIX-products.csv instead of printing the JSON",
    )
    disclosure.set_defaults(func=run_disclosure)

    reconcile = actions.add_parser(
        "reconcile", help="per grant: records on the tenant topics, in the ledger, billed; exit 1 on drift"
    )
    _period(reconcile)
    reconcile.add_argument("--all", action="store_true", help="list every grant, not only those with drift")
    reconcile.set_defaults(func=run_reconcile)

    assets = actions.add_parser(
        "assets", help="per dataset: tenants, records, bytes, revenue and attributed revenue of a period"
    )
    _period(assets)
    assets.add_argument("--format", choices=["csv", "json"], default="csv")
    assets.add_argument("--provider", help="only this provider's datasets, e.g. provider:transport-bureau")
    assets.set_defaults(func=run_assets)


def _period(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--period", required=True, type=period_argument, help="UTC month, YYYY-MM")


def _engine(settings: Settings):
    db.upgrade(settings.database_url)
    return db.make_engine(settings.database_url)


# ---------------------------------------------------------------------------------------------- statements


def close_statements(args) -> int:
    from pdo.billing.statements import close_period
    from pdo.core.events import EventPublisher

    settings = Settings.from_env()
    engine = _engine(settings)
    publisher = EventPublisher(settings)
    try:
        closing = close_period(engine, publisher, args.period, operator_actor(args.by))
        _publish_period_closed(engine, publisher, settings)
    finally:
        publisher.close()
        engine.dispose()
    print_statements(closing.statements, args.json)
    if not args.json:
        print(f"period {args.period} closed: {len(closing.statements)} statement(s) issued")
    for row in closing.set_aside:
        print(
            f"set aside, not billed: {row.delivery_id} {row.tenant_id} {row.dataset_id} {row.grant_id} "
            f"{row.records} record(s) delivered {row.delivered_at.isoformat()}: {row.reason}",
            file=sys.stderr if args.json else sys.stdout,
        )
    return 0


def _publish_period_closed(engine, publisher, settings: Settings) -> None:
    """The period is closed with its event committed; publish it now, or leave it to the metering worker."""
    from pdo.metering.public import publish_access_events

    try:
        publish_access_events(engine, publisher, settings.kafka_timeout_s)
    except Exception as error:  # committed: the metering worker's relay publishes it once it can
        print(f"note: the period's audit event waits for the metering worker ({error})", file=sys.stderr)


def show_statements(args) -> int:
    from pdo.billing.statements import list_statements, set_aside_rows

    settings = Settings.from_env()
    engine = _engine(settings)
    try:
        found = list_statements(engine, args.period, tenant_id=args.tenant)
        with engine.connect() as conn:
            set_aside = set_aside_rows(conn, args.period)
    finally:
        engine.dispose()
    print_statements(found, args.json)
    if not args.json:
        if not found:
            print(f"no statements for {args.period} (is the period closed? `pdo billing statements close`)")
        if set_aside:
            print(
                f"{len(set_aside)} ledger row(s) delivered in {args.period} are set aside for review, not billed"
            )
    return 0


def print_statements(statements, as_json: bool) -> None:
    from pdo.billing.statements import statement_json

    if as_json:
        print(json.dumps([statement_json(s) for s in statements], indent=2))
        return
    for statement in statements:
        print(
            f"{statement.statement_id}  {statement.tenant_id}  {statement.period}  total {statement.total} {statement.currency}"
        )
        for line in statement.lines:
            print(
                f"    {line.dataset_id:<24} {line.grant_id:<32} {line.records:>12,} records "
                f"{line.bytes:>15,} bytes {line.amount:>14}  {line.plan}"
            )


def verify_statements(args) -> int:
    from pdo.billing.statements import verify_period

    settings = Settings.from_env()
    engine = _engine(settings)
    try:
        differences = verify_period(engine, args.period)
    finally:
        engine.dispose()
    for difference in differences:
        print(difference)
    if differences:
        print(f"period {args.period}: {len(differences)} difference(s) between the statements and the ledger")
        return 1
    print(f"period {args.period}: the statements recompute to the cent")
    return 0


# ---------------------------------------------------------------------------------------------- reconcile


def run_reconcile(args) -> int:
    from pdo.billing.reconcile import reconcile
    from pdo.billing.report import report_lines
    from pdo.core.codec import AvroCodec
    from pdo.core.registry_client import RegistryClient

    settings = Settings.from_env()
    engine = _engine(settings)
    registry = RegistryClient.for_settings(settings)
    try:
        result = reconcile(settings, engine, args.period, AvroCodec(registry))
    finally:
        registry.close()
        engine.dispose()
    for line in report_lines(result, all_grants=args.all):
        print(line)
    return 0 if result.clean else 1


# ---------------------------------------------------------------------------------------------- assets


def run_assets(args) -> int:
    from pdo.billing.assets import asset_report
    from pdo.metering.public import datasets_of_provider

    settings = Settings.from_env()
    engine = _engine(settings)
    try:
        owned = None
        if args.provider:  # from metering's projection of the catalog: billing runs with metering's role
            with engine.connect() as conn:
                owned = datasets_of_provider(conn, args.provider)
        report = asset_report(engine, args.period, dataset_ids=owned)
    finally:
        engine.dispose()
    if args.format == "json":
        print(json.dumps(report.as_json(), indent=2))
    else:
        sys.stdout.write(report.as_csv())
    return 0


# ---------------------------------------------------------------------------------------------- disclosure


def run_disclosure(args) -> int:
    from datetime import UTC, datetime

    from pdo.authorization.public import grants_made_between
    from pdo.billing.public import Disclosure, asset_report, months_of, year_bounds
    from pdo.catalog.public import list_datasets

    start, end = year_bounds(args.year)
    settings = Settings.from_env()
    engine = _engine(settings)
    try:
        disclosure = Disclosure(
            year=args.year,
            grants=grants_made_between(engine, start, end),
            datasets=list_datasets(engine, None, include_retired=True),
            monthly=[asset_report(engine, month) for month in months_of(args.year)],
            generated_at=datetime.now(UTC),
        )
    finally:
        engine.dispose()
    companions = {"-grants.csv": disclosure.grants_csv(), "-products.csv": disclosure.products_csv()}
    return write_companions(args.out, disclosure.as_json(), companions)


def write_companions(prefix: str | None, document: Any, companions: dict[str, str]) -> int:
    """Print the JSON document, or write PREFIX.json and each companion (PREFIX + its suffix) and say where."""
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if not prefix:
        sys.stdout.write(text)
        return 0
    files = {".json": text, **companions}
    for suffix, content in files.items():
        Path(prefix + suffix).write_text(content)
    print("wrote " + ", ".join(prefix + suffix for suffix in files))
    return 0
