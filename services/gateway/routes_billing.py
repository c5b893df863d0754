"""/v1/statements, /v1/reports/assets and /v1/datasets/{id}/listing: issued statements, per-dataset asset
reports, and a dataset's listing for data exchanges (pdo.billing.listing).

A tenant reads its own statements (another tenant's id answers 404, so ids cannot be probed); an operator
reads all. Asset reports are for providers, covering only their own datasets, and for operators, covering
all; the same for listings. Revenue of an open period is provisional (priced from the ledger so far). Periods are UTC months
"YYYY-MM", checked strictly (422 otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from pdo.billing.public import (
    OffsetReader,
    asset_report,
    get_statement,
    list_statements,
    listings_for,
    statement_json,
)
from pdo.core.config import Settings
from pdo.core.errors import Forbidden
from pdo.core.kafka import consumer
from pdo.core.months import parse_period, previous_period
from pdo.core.topics import feed_topic
from pdo.gateway.auth import TenantOrOperator, role
from pdo.gateway.deps import ID_PATTERN, DatasetId, catalog, tenant_scope
from pdo.gateway.models import ERROR_RESPONSES
from pdo.gateway.principals import Principal, PrincipalKind

ProviderOrOperator = Annotated[Principal, Depends(role(PrincipalKind.PROVIDER, PrincipalKind.OPERATOR))]

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES, tags=["billing"])

Period = Annotated[str, Query(max_length=16, description="billing period, a UTC month YYYY-MM")]
StatementId = Annotated[str, Path(pattern=ID_PATTERN, max_length=64, description="id of a statement")]


def engine(request: Request) -> Any:
    return request.app.state.engine


@router.get("/statements", summary="Statements of a billing period (a tenant sees its own; operators all)")
def list_period_statements(
    request: Request,
    principal: TenantOrOperator,
    period: Period,
    tenant_id: Annotated[str | None, Query(max_length=255)] = None,
) -> dict[str, Any]:
    scope = tenant_scope(principal)
    period = parse_period(period)
    if scope is not None and tenant_id not in (None, scope):
        found = []  # another tenant's statements are never in a tenant's view
    else:
        found = list_statements(engine(request), period, tenant_id=scope or tenant_id)
    return {"period": period, "statements": [statement_json(statement) for statement in found]}


@router.get("/statements/{statement_id}", summary="One statement with its lines")
def get_one_statement(
    request: Request, principal: TenantOrOperator, statement_id: StatementId
) -> dict[str, Any]:
    return statement_json(get_statement(engine(request), statement_id, tenant_id=tenant_scope(principal)))


@router.get(
    "/reports/assets",
    summary="Per dataset: tenants served, records and bytes delivered, revenue (providers: own datasets)",
    description="Each dataset's row also carries `attributed_revenue`, its share of the revenue the derived "
    "products naming it in `derived_from` earned in the period (split equally in whole cents, left-over cents "
    "one each to the sources in id order), and `attributed_from`, those products' ids: attribution, not an "
    "additional charge.",
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
def assets_report(
    request: Request,
    principal: ProviderOrOperator,
    period: Period,
    format: Literal["json", "csv"] = "json",
) -> Any:
    period = parse_period(period)
    owned = None
    if principal.kind is PrincipalKind.PROVIDER:
        found = catalog(request).list(provider_id=principal.principal_id, include_retired=True)
        owned = {dataset.dataset_id for dataset in found}
    report = asset_report(engine(request), period, dataset_ids=owned)
    if format == "csv":
        return Response(
            report.as_csv(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="assets-{period}.csv"'},
        )
    return report.as_json()


@router.get(
    "/datasets/{dataset_id}/listing",
    summary="The dataset's listing for data exchanges (pdo.listing.v1); providers: own datasets",
)
def dataset_listing(
    request: Request, principal: ProviderOrOperator, dataset_id: DatasetId, period: Period | None = None
) -> dict[str, Any]:
    dataset = catalog(request).get(dataset_id)
    if principal.kind is PrincipalKind.PROVIDER and dataset.provider_id != principal.principal_id:
        raise Forbidden(f"dataset {dataset_id!r} belongs to another provider; only its owner lists it")
    now = datetime.now(UTC)
    period = parse_period(period) if period else previous_period(now)
    settings = request.app.state.settings
    with request.app.state.feed_offsets() as offsets:
        (listing,) = listings_for(
            engine(request), [dataset], period, offsets, lambda d: feed_topic(d, settings), now
        )
    return listing.as_json()


FeedOffsets = Callable[[], AbstractContextManager[OffsetReader]]


def broker_offsets(settings: Settings) -> FeedOffsets:
    """A Kafka consumer per listing, closed after it: it only reads offsets (DESCRIBE on the feed)."""

    @contextmanager
    def opened() -> Iterator[OffsetReader]:
        offsets = consumer(settings)
        try:
            yield offsets
        finally:
            offsets.close()

    return opened
