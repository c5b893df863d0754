"""Statements: closing a billing period prices each tenant's ledger usage into statements, rows and events.

Closing follows the period lock protocol the ledger writer keeps too: in one transaction the period's
`metering_periods` row is made to exist and read FOR UPDATE through pdo.metering.public (so the close waits
for ledger inserts still billing into it, and later inserts see it closed and bill into the next open
period), `closed_at` is set,
the ledger rows billed in the period are priced, the statements and their lines are written, and each
`StatementIssued` event is published before the transaction commits. If the broker does not acknowledge, the
transaction rolls back and the period stays open; if the commit fails after a publish, closing again
publishes the same statement ids again, so consumers keep the latest event per statement id.

One statement per tenant and currency (a tenant's grants are normally all in CNY, so one per tenant), with
one line per grant that has usage billed in the period — FREE grants too, at 0.00. Its id is derived from
(tenant, period, currency), so recomputing a closed period names the same statements, and `verify_period`
recomputes the period from the ledger and the grants' plans (metering's projection of the grant events) and lists every difference from what was issued:
none, to the cent, when the ledger and the plans are unchanged. Rows set aside for review (billing_period
NULL, delivered in the period) are never billed; `set_aside_rows` lists them beside the statements.

**Delivery digests.** Before pricing, the close claims every row billed in the period that is in no delivery
digest yet (pdo.metering.public.claim_period, in the same transaction, under the period's lock), so each
line names its digests — `digest_count` of them, the grant's digests 1..n in the period — and they cover
exactly the deliveries the line bills: their counts sum to its records. `verify_period` reports a line whose
digests changed and any billed delivery left outside a digest.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import Connection, Engine

from pdo.billing import pricing
from pdo.billing import tables as t
from pdo.core.errors import Conflict, InvalidInput, NotFound, PdoError
from pdo.core.events import utc, utc_now
from pdo.core.months import parse_period, period_end, period_start
from pdo.core.names import Event
from pdo.core.topics import TopicId
from pdo.core.vocabulary import PricePlan, price_plan_from_json, price_plan_to_json
from pdo.metering import public as metering
from pdo.metering.public import SetAsideRow, is_closed, set_aside_rows

STATEMENT_ISSUED = Event.STATEMENT_ISSUED
CENTS_PER_UNIT = 100
CHUNK = 500  # ids per IN (...) list: bounded statements on both databases


class Publisher(Protocol):
    def publish(self, topic: TopicId, schema_name: str, value: dict[str, Any]) -> tuple[str, int, int]: ...


@dataclass(frozen=True)
class StatementLine:
    dataset_id: str
    grant_id: str
    records: int
    bytes: int
    amount: Decimal
    plan: str  # the plan in words
    price_plan: PricePlan
    digest_count: int = 0  # the delivery digests priced: seq 1..digest_count of the grant in the period


@dataclass(frozen=True)
class Statement:
    statement_id: str
    tenant_id: str
    period: str
    currency: str
    lines: tuple[StatementLine, ...]
    total: Decimal  # the sum of the lines' rounded amounts when computed; as stored when loaded
    issued_at: datetime | None = None  # None: computed, not issued
    issued_by: str | None = None


def sum_of_lines(lines: Iterable[StatementLine]) -> Decimal:
    return sum((line.amount for line in lines), Decimal("0.00"))


@dataclass(frozen=True)
class Closing:
    period: str
    statements: list[Statement]
    set_aside: list[SetAsideRow]


# ---------------------------------------------------------------------------------------------- ids


def statement_id_for(tenant_id: str, period: str, currency: str) -> str:
    """Stable for (tenant, period, currency): "st-2026-03-" and 16 hex digits."""
    parts = (tenant_id, period, currency)
    text = "".join(f"{len(part)}:{part}" for part in parts)  # length-prefixed: no two tuples join alike
    return f"st-{period}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]}"


# ---------------------------------------------------------------------------------------------- computing


def compute_statements(conn: Connection, period: str) -> list[Statement]:
    """The statements the ledger's rows billed in `period` price to now, by each grant's plan (not stored)."""
    usage = metering.billed_usage(conn, period)
    plans = grant_plans(conn, {row.grant_id for row in usage})
    digest_counts = metering.digest_counts(conn, period)
    lines: dict[tuple[str, str], list[StatementLine]] = defaultdict(list)
    for row in usage:
        plan = plans[row.grant_id]
        line = StatementLine(
            row.dataset_id,
            row.grant_id,
            row.records,
            row.bytes,
            pricing.charge(plan, row.records, row.bytes),
            pricing.describe(plan),
            plan,
            digest_counts.get(row.grant_id, 0),
        )
        lines[(row.tenant_id, plan.currency)].append(line)
    return [
        Statement(
            statement_id_for(tenant_id, period, currency),
            tenant_id,
            period,
            currency,
            tuple(sorted(found, key=lambda line: (line.dataset_id, line.grant_id))),
            sum_of_lines(found),
        )
        for (tenant_id, currency), found in sorted(lines.items())
    ]


def grant_plans(conn: Connection, grant_ids: set[str]) -> dict[str, PricePlan]:
    """Each grant's price plan; a billed grant metering's projection does not know is an error, never a free ride."""
    plans = {
        grant_id: price_plan_from_json(text)
        for grant_id, text in metering.grant_price_plans(conn, grant_ids).items()
    }
    unknown = sorted(grant_ids - plans.keys())
    if unknown:
        raise PdoError(
            f"usage is billed under {len(unknown)} grant(s) metering's projection of pdo.authorizations does not hold: "
            + ", ".join(unknown[:5])
            + (" …" if len(unknown) > 5 else ""),
            hint="let `pdo metering worker` catch up with pdo.authorizations before pricing this period",
        )
    return plans


# ---------------------------------------------------------------------------------------------- closing


def close_period(
    engine: Engine, publisher: Publisher, period: str, actor: str, now: datetime | None = None
) -> Closing:
    """Close `period` and issue its statements (rows and events), in one transaction; see the module doc.

    Refused (Conflict) when the period is already closed or has not ended yet.
    """
    period = parse_period(period)
    now = utc(now or utc_now())
    if now < period_end(period):
        raise Conflict(
            f"period {period} has not ended: usage is still billed into it until {period_end(period).isoformat()}",
            hint="close a month once it is over",
        )
    with engine.begin() as conn:
        _lock_open_period(conn, period)
        metering.mark_closed(conn, period, now, actor)
        metering.claim_period(conn, period, now)
        statements = [replace(s, issued_at=now, issued_by=actor) for s in compute_statements(conn, period)]
        for statement in statements:
            _insert_statement(conn, statement)
        metering.record_period_closed(conn, period, actor, len(statements))
        for statement in statements:
            publisher.publish(TopicId.STATEMENTS, STATEMENT_ISSUED, statement_event(statement))
        return Closing(period, statements, set_aside_rows(conn, period))


def _lock_open_period(conn: Connection, period: str) -> None:
    """Make the period's row exist, lock it FOR UPDATE, and refuse when it is closed already."""
    state = metering.lock_period(conn, period)
    if state.closed_at is not None:
        raise Conflict(
            f"period {period} was closed at {utc(state.closed_at).isoformat()} by {state.closed_by}; "
            "its statements stand and cannot be issued twice",
            hint=f"see them with `pdo billing statements show --period {period}`; "
            f"check them with `pdo billing statements verify --period {period}`",
        )


def _insert_statement(conn: Connection, statement: Statement) -> None:
    conn.execute(
        t.statements.insert().values(
            statement_id=statement.statement_id,
            tenant_id=statement.tenant_id,
            period=statement.period,
            currency=statement.currency,
            total_cents=to_cents(statement.total),
            issued_at=statement.issued_at,
            issued_by=statement.issued_by,
        )
    )
    conn.execute(
        t.statement_lines.insert(),
        [
            {
                "statement_id": statement.statement_id,
                "grant_id": line.grant_id,
                "dataset_id": line.dataset_id,
                "records": line.records,
                "bytes": line.bytes,
                "amount_cents": to_cents(line.amount),
                "plan": line.plan,
                "price_plan": price_plan_to_json(line.price_plan),
                "digest_count": line.digest_count,
            }
            for line in statement.lines
        ],
    )


def statement_event(statement: Statement) -> dict[str, Any]:
    """The StatementIssued value of an issued statement."""
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": statement.issued_at,
        "actor": statement.issued_by,
        "statement_id": statement.statement_id,
        "tenant_id": statement.tenant_id,
        "period_start": period_start(statement.period),
        "period_end": period_end(statement.period),
        "lines": [
            {
                "dataset_id": line.dataset_id,
                "grant_id": line.grant_id,
                "records": line.records,
                "bytes": line.bytes,
                "amount": line.amount,
                "plan": line.plan,
                "digest_count": line.digest_count,
            }
            for line in statement.lines
        ],
        "total": statement.total,
        "currency": statement.currency,
    }


def to_cents(amount: Decimal) -> int:
    cents = amount * CENTS_PER_UNIT
    if cents != cents.to_integral_value():
        raise ValueError(f"{amount} is not a whole number of cents")
    return int(cents)


def from_cents(cents: int) -> Decimal:
    return (Decimal(cents) / CENTS_PER_UNIT).quantize(pricing.CENT)


# ---------------------------------------------------------------------------------------------- reading


def load_statements(
    conn: Connection,
    period: str | None = None,
    tenant_id: str | None = None,
    statement_id: str | None = None,
) -> list[Statement]:
    """Issued statements, filtered by what is given, by tenant and currency."""
    query = sa.select(t.statements).order_by(t.statements.c.period, t.statements.c.tenant_id)
    for column, value in (("period", period), ("tenant_id", tenant_id), ("statement_id", statement_id)):
        if value is not None:
            query = query.where(t.statements.c[column] == value)
    heads = conn.execute(query).mappings().all()
    lines = _lines_of(conn, [head["statement_id"] for head in heads])
    return [
        Statement(
            head["statement_id"],
            head["tenant_id"],
            head["period"],
            head["currency"],
            tuple(lines.get(head["statement_id"], ())),
            from_cents(head["total_cents"]),
            utc(head["issued_at"]),
            head["issued_by"],
        )
        for head in heads
    ]


def _lines_of(conn: Connection, statement_ids: Sequence[str]) -> dict[str, list[StatementLine]]:
    found: dict[str, list[StatementLine]] = defaultdict(list)
    for start in range(0, len(statement_ids), CHUNK):
        rows = conn.execute(
            sa.select(t.statement_lines)
            .where(t.statement_lines.c.statement_id.in_(statement_ids[start : start + CHUNK]))
            .order_by(t.statement_lines.c.dataset_id, t.statement_lines.c.grant_id)
        ).mappings()
        for row in rows:
            found[row["statement_id"]].append(
                StatementLine(
                    row["dataset_id"],
                    row["grant_id"],
                    row["records"],
                    row["bytes"],
                    from_cents(row["amount_cents"]),
                    row["plan"],
                    price_plan_from_json(row["price_plan"]),
                    row["digest_count"],
                )
            )
    return found


def get_statement(engine: Engine, statement_id: str, tenant_id: str | None = None) -> Statement:
    """One issued statement; NotFound for an unknown id and, for a tenant, for another tenant's."""
    with engine.connect() as conn:
        found = load_statements(conn, statement_id=statement_id, tenant_id=tenant_id)
    if not found:
        raise NotFound(
            f"no statement {statement_id!r}" + (" among yours" if tenant_id else ""),
            hint="list statements with GET /v1/statements?period=YYYY-MM",
        )
    return found[0]


def list_statements(engine: Engine, period: str, tenant_id: str | None = None) -> list[Statement]:
    with engine.connect() as conn:
        return load_statements(conn, period=parse_period(period), tenant_id=tenant_id)


# ---------------------------------------------------------------------------------------------- verifying


def verify_period(engine: Engine, period: str) -> list[str]:
    """Every difference between the issued statements of closed `period` and a recomputation; [] when equal."""
    period = parse_period(period)
    with engine.connect() as conn:
        if not is_closed(conn, period):
            raise InvalidInput(
                f"period {period} is not closed: it has no statements to verify",
                hint=f"close it first with `pdo billing statements close --period {period}`",
            )
        issued = {s.statement_id: s for s in load_statements(conn, period=period)}
        recomputed = {s.statement_id: s for s in compute_statements(conn, period)}
        undigested = metering.undigested_rows(conn, period)
    differences = [
        f"period {period} grant {grant_id}: {rows} billed deliveries are in no delivery digest"
        for grant_id, rows in sorted(undigested.items())
    ]
    for statement_id in sorted(issued.keys() | recomputed.keys()):
        differences += statement_differences(
            statement_id, issued.get(statement_id), recomputed.get(statement_id)
        )
    return differences


def statement_differences(
    statement_id: str, issued: Statement | None, recomputed: Statement | None
) -> list[str]:
    if issued is None or recomputed is None:
        missing = "was never issued" if issued is None else "has no usage in the ledger any more"
        other = recomputed or issued
        assert other is not None  # a statement is on one side at least
        return [f"{statement_id} ({other.tenant_id}, {other.currency}): {missing}"]
    differences = []
    before = {line.grant_id: line for line in issued.lines}
    after = {line.grant_id: line for line in recomputed.lines}
    for grant_id in sorted(before.keys() | after.keys()):
        differences += _line_differences(statement_id, grant_id, before.get(grant_id), after.get(grant_id))
    if issued.total != recomputed.total:
        differences.append(f"{statement_id}: total issued {issued.total}, recomputed {recomputed.total}")
    if issued.total != sum_of_lines(issued.lines):
        differences.append(
            f"{statement_id}: total issued {issued.total}, but its lines add up to {sum_of_lines(issued.lines)}"
        )
    return differences


def _line_differences(
    statement_id: str, grant_id: str, issued: StatementLine | None, recomputed: StatementLine | None
) -> list[str]:
    where = f"{statement_id} grant {grant_id}"
    if issued is None:
        assert recomputed is not None  # a line is on one side at least
        return [f"{where}: not on the statement, recomputed {recomputed.records} records {recomputed.amount}"]
    if recomputed is None:
        return [f"{where}: on the statement ({issued.records} records {issued.amount}), no usage recomputed"]
    return [
        f"{where}: {name} issued {getattr(issued, name)}, recomputed {getattr(recomputed, name)}"
        for name in ("records", "bytes", "amount", "plan", "digest_count")
        if getattr(issued, name) != getattr(recomputed, name)
    ]


def statement_json(statement: Statement) -> dict[str, Any]:
    """A statement as the API and `--json` show it; amounts as strings with two decimals."""
    return {
        "statement_id": statement.statement_id,
        "tenant_id": statement.tenant_id,
        "period": statement.period,
        "period_start": period_start(statement.period).isoformat(),
        "period_end": period_end(statement.period).isoformat(),
        "currency": statement.currency,
        "total": str(statement.total),
        "issued_at": statement.issued_at.isoformat() if statement.issued_at else None,
        "issued_by": statement.issued_by,
        "lines": [
            {
                "dataset_id": line.dataset_id,
                "grant_id": line.grant_id,
                "records": line.records,
                "bytes": line.bytes,
                "amount": str(line.amount),
                "plan": line.plan,
                "price_plan": json.loads(price_plan_to_json(line.price_plan)),
                # The delivery digests the line was priced from (GET /v1/usage/digests/{id}/deliveries).
                "digests": [
                    metering.digest_id(line.grant_id, statement.period, seq)
                    for seq in range(1, line.digest_count + 1)
                ],
            }
            for line in statement.lines
        ],
    }
