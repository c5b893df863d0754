"""/v1/usage: metered usage windows. A tenant sees its own usage, a provider its own datasets', an operator all.

Read straight from the metering windows (pdo.metering.usage), which the ledger transaction keeps equal to the
ledger; newest window first.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from pdo.core.errors import InvalidInput
from pdo.core.vocabulary import UsageWindow
from pdo.gateway.auth import AnyPrincipal
from pdo.gateway.deps import catalog
from pdo.gateway.models import ERROR_RESPONSES
from pdo.gateway.principals import Principal, PrincipalKind
from pdo.metering.public import list_windows

router = APIRouter(prefix="/v1/usage", responses=ERROR_RESPONSES, tags=["usage"])

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
    until = _utc(until) if until else datetime.now(UTC)
    since = _utc(since) if since else until - DEFAULT_SPANS[window]
    if since >= until:
        raise InvalidInput(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    scope = _scope(request, principal, tenant_id, dataset_id)
    if scope is None:
        return UsageOut(window=window, usage=[])
    found = list_windows(request.app.state.engine, window.value, since, until, limit=limit, **scope)
    return UsageOut(window=window, usage=[UsageWindowOut(**w.as_json()) for w in found])


def _scope(
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


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
