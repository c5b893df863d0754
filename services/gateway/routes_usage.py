"""/v1/usage: metered usage windows. A tenant sees its own usage, a provider its own datasets', an operator all.

Read straight from the metering windows (pdo.metering.usage), which the ledger transaction keeps equal to the
ledger; newest window first.

/v1/usage/digests: the delivery digests (pdo.metering.digests) a statement line is priced from, and each
digest's sorted delivery ids, so a tenant can recompute its root and count from its own records. A tenant
sees only its own (another tenant's digest answers 404 like a missing one, so ids cannot be probed); an
operator sees all.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel

from pdo.core.errors import InvalidInput, NotFound
from pdo.core.months import parse_period
from pdo.core.vocabulary import UsageWindow
from pdo.gateway.auth import AnyPrincipal, TenantOrOperator
from pdo.gateway.deps import ID_PATTERN, catalog, tenant_scope
from pdo.gateway.models import ERROR_RESPONSES
from pdo.gateway.principals import Principal, PrincipalKind
from pdo.metering.public import delivery_ids, get_digest, list_digests, list_windows

router = APIRouter(prefix="/v1/usage", responses=ERROR_RESPONSES, tags=["usage"])

DigestId = Annotated[
    str,
    Path(pattern=ID_PATTERN, max_length=200, description='id of a delivery digest, "<grant>.<period>.<seq>"'),
]

DEFAULT_SPANS = {UsageWindow.MINUTE: timedelta(hours=1), UsageWindow.DAY: timedelta(days=31)}


class UsageWindowOut(BaseModel):
    tenant_id: str
    dataset_id: str
    grant_id: str
    window_start: datetime
    window_end: datetime
    records: int
    bytes: int


class UsageOut(BaseModel):
    window: UsageWindow
    usage: list[UsageWindowOut]


@router.get(
    "",
    summary="Usage per tenant, dataset and grant in MINUTE or DAY (UTC) windows, newest first",
    description="Defaults: since = now - 1 h for MINUTE, now - 31 days for DAY; until = now. Windows are "
    "selected by their start. A tenant sees only its own usage, a provider only its own datasets', an "
    "operator all; filters outside the caller's view give an empty list.",
)
def get_usage(
    request: Request,
    principal: AnyPrincipal,
    window: UsageWindow = UsageWindow.DAY,
    since: datetime | None = None,
    until: datetime | None = None,
    tenant_id: Annotated[str | None, Query(max_length=255)] = None,
    dataset_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> UsageOut:
    until = as_utc(until) if until else datetime.now(UTC)
    since = as_utc(since) if since else until - DEFAULT_SPANS[window]
    if since >= until:
        raise InvalidInput(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    scope = usage_scope(request, principal, tenant_id, dataset_id)
    if scope is None:
        return UsageOut(window=window, usage=[])
    found = list_windows(request.app.state.engine, window.value, since, until, limit=limit, **scope)
    return UsageOut(window=window, usage=[UsageWindowOut(**w.as_json()) for w in found])


@router.get(
    "/digests",
    summary="Delivery digests (count and Merkle root of the delivery ids) by period, grant and seq",
    description="A tenant sees only its own digests, an operator all. Pages of `limit`; `next_offset` is the "
    "offset of the next page, null after the last.",
)
def get_digests(
    request: Request,
    principal: TenantOrOperator,
    grant: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=160)] = None,
    period: Annotated[str | None, Query(max_length=16, description="a UTC month YYYY-MM")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    with request.app.state.engine.connect() as conn:
        found = list_digests(
            conn,
            tenant_id=tenant_scope(principal),
            grant_id=grant,
            period=parse_period(period) if period else None,
            limit=limit,
            offset=offset,
        )
    return {
        "digests": [digest.as_json() for digest in found],
        "next_offset": offset + limit if len(found) == limit else None,
    }


@router.get(
    "/digests/{digest_id}/deliveries",
    summary="One delivery digest and its delivery ids, sorted: the leaves of its Merkle root",
)
def get_digest_deliveries(
    request: Request, principal: TenantOrOperator, digest_id: DigestId
) -> dict[str, Any]:
    scope = tenant_scope(principal)
    with request.app.state.engine.connect() as conn:
        digest = get_digest(conn, digest_id)
        if digest is None or scope not in (None, digest.tenant_id):
            raise NotFound(
                f"no delivery digest {digest_id!r}" + (" among yours" if scope else ""),
                hint="list digests with GET /v1/usage/digests?period=YYYY-MM",
            )
        ids = delivery_ids(conn, digest_id)
    return {"digest": digest.as_json(), "delivery_ids": ids}


def usage_scope(
    request: Request, principal: Principal, tenant_id: str | None, dataset_id: str | None
) -> dict[str, Any] | None:
    """The filters the caller may see with, or None when the filters ask for nothing of theirs."""
    datasets = [dataset_id] if dataset_id else None
    if principal.kind is PrincipalKind.TENANT:
        if tenant_id not in (None, principal.principal_id):
            return None
        tenant_id = principal.principal_id
    elif principal.kind is PrincipalKind.PROVIDER:
        own = {
            d.dataset_id
            for d in catalog(request).list(provider_id=principal.principal_id, include_retired=True)
        }
        datasets = sorted(own & set(datasets) if datasets else own)
        if not datasets:
            return None
    return {"tenant_id": tenant_id, "dataset_ids": datasets}


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
