"""/v1/series: time series for the console's charts, from the platform's own records and metrics.

Each answer is a grid (pdo.gateway.series): `times` in Unix seconds, one `values` list per line, a `unit`.

- deliveries: records per second per tenant and dataset, from metering's minute windows (a tenant sees its
  own, a provider its own datasets', an operator all, as for /v1/usage).
- dead-letters: dead letters per minute per service and reason code, from the dead-letter topic (operators).
- refusals: requests the gateway refused, per minute and reason, from its own counter (operators).
- lag: consumer lag per stream worker (operators), from the workers' metrics on this host.
- decisions: request decisions per hour, by outcome and by whom (the policy or an operator) (operators).
- revenue: this month's revenue so far per dataset, priced from the ledger (provisional until the period
  is closed) (operators).

Refusals and lag come from the gateway's in-memory history (pdo.gateway.history): it starts when the
gateway starts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from pdo.billing.public import asset_report
from pdo.core.vocabulary import UsageWindow
from pdo.gateway.auth import AnyPrincipal, Operator
from pdo.gateway.deps import authorization
from pdo.gateway.history import History
from pdo.gateway.models import ERROR_RESPONSES
from pdo.gateway.routes_usage import as_utc, usage_scope
from pdo.gateway.series import Grid, answer, bucket_latest, bucket_sums
from pdo.metering.public import list_windows

router = APIRouter(prefix="/v1/series", responses=ERROR_RESPONSES, tags=["series"])

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
Minutes = Annotated[int, Query(ge=1, le=24 * 60, description="how many minutes back, up to now")]
Hours = Annotated[int, Query(ge=1, le=31 * 24, description="how many hours back, up to now")]
# The dead-letter chart reads at most this many of the newest dead letters (per partition).
DEAD_LETTER_SCAN = 1000
DECIDED = {"APPROVED", "DENIED"}


@router.get("/deliveries", summary="Records delivered per second, per tenant and dataset, per minute")
def deliveries(request: Request, principal: AnyPrincipal, minutes: Minutes = 60) -> dict[str, Any]:
    grid = Grid.ending_at(datetime.now(UTC), MINUTE, minutes)
    scope = usage_scope(request, principal, None, None)
    windows = (
        []
        if scope is None
        else list_windows(request.app.state.engine, UsageWindow.MINUTE.value, grid.start, grid.end, **scope)
    )
    seconds = MINUTE.total_seconds()
    points = (
        (w.window_start, {"tenant": w.tenant_id, "dataset": w.dataset_id}, w.records / seconds)
        for w in windows
    )
    return answer(grid, "records/s", bucket_sums(grid, points))


@router.get("/dead-letters", summary="Dead letters per minute, per service and reason code (operators)")
def dead_letters(request: Request, operator: Operator, minutes: Minutes = 60) -> dict[str, Any]:
    grid = Grid.ending_at(datetime.now(UTC), MINUTE, minutes)
    letters = request.app.state.dead_letters(DEAD_LETTER_SCAN)
    points = (
        (as_utc(letter.value["failed_at"]), _dead_letter_labels(letter.value), 1.0)
        for letter in letters
        if isinstance(letter.value.get("failed_at"), datetime)
    )
    return answer(grid, "dead letters/min", bucket_sums(grid, points))


@router.get("/refusals", summary="Requests the gateway refused per minute, per reason (operators)")
def refusals(request: Request, operator: Operator, minutes: Minutes = 60) -> dict[str, Any]:
    now = datetime.now(UTC)
    history: History = request.app.state.refusal_history
    grid = Grid.ending_at(now, MINUTE, minutes)
    points = (
        (at, {"reason": labels.get("reason", "")}, value) for at, labels, value in history.increases(now)
    )
    return answer(grid, "refusals/min", bucket_sums(grid, points))


@router.get("/lag", summary="Consumer lag per stream worker, in records (operators)")
def lag(request: Request, operator: Operator, minutes: Minutes = 60) -> dict[str, Any]:
    now = datetime.now(UTC)
    history: History = request.app.state.lag_history
    grid = Grid.ending_at(now, MINUTE, minutes)
    return answer(
        grid,
        "records",
        bucket_latest(grid, history.levels(now)),
        sources=sorted(request.app.state.lag_sources),
    )


@router.get("/decisions", summary="Request decisions per hour, by outcome and by whom (operators)")
def decisions(request: Request, operator: Operator, hours: Hours = 24) -> dict[str, Any]:
    grid = Grid.ending_at(datetime.now(UTC), HOUR, hours)
    points = (
        (
            as_utc(decided.updated_at),
            {"outcome": decided.status.value, "by": "policy" if decided.decided_by_rule else "operator"},
            1.0,
        )
        for decided in authorization(request).list_requests()
        if decided.status.value in DECIDED
    )
    return answer(grid, "decisions/h", bucket_sums(grid, points))


@router.get(
    "/revenue", summary="This month's revenue so far per dataset (provisional until closed) (operators)"
)
def revenue(request: Request, operator: Operator) -> dict[str, Any]:
    period = datetime.now(UTC).strftime("%Y-%m")
    rows = [row for row in asset_report(request.app.state.engine, period).rows if row.records]
    rows.sort(key=lambda row: row.revenue, reverse=True)
    totals: dict[str, Decimal] = {}
    for row in rows:
        currency = row.currency or ""
        totals[currency] = totals.get(currency, Decimal("0.00")) + row.revenue
    return {
        "period": period,
        "totals": [
            {"currency": currency, "revenue": str(total)} for currency, total in sorted(totals.items())
        ],
        "datasets": [
            {
                "dataset_id": row.dataset_id,
                "title": row.title,
                "currency": row.currency,
                "records": row.records,
                "tenants": row.tenants,
                "revenue": str(row.revenue),
                "provisional": row.provisional,
            }
            for row in rows
        ],
    }


def _dead_letter_labels(value: dict[str, Any]) -> dict[str, str]:
    return {"service": str(value.get("service", "")), "reason": str(value.get("reason_code", ""))}
