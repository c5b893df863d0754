"""/v1/grants: tenants read their grants (status and reason included); operators read all and move them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from pdo.authorization.public import Grant
from pdo.core.vocabulary import GrantStatus
from pdo.gateway.auth import Operator, TenantOrOperator
from pdo.gateway.deps import GrantId, authorization, owned, tenant_scope
from pdo.gateway.models import ERROR_RESPONSES, OptionalReason, Reason

router = APIRouter(prefix="/v1/grants", responses=ERROR_RESPONSES, tags=["grants"])


@router.get("", summary="List grants (a tenant sees its own; operators see all)")
def list_grants(
    request: Request,
    principal: TenantOrOperator,
    dataset_id: Annotated[str | None, Query(max_length=128)] = None,
    status: GrantStatus | None = None,
    tenant_id: Annotated[str | None, Query(max_length=128)] = None,
) -> list[Grant]:
    scope = tenant_scope(principal)
    if scope is not None and tenant_id not in (None, scope):
        return []  # another tenant's grants are never in a tenant's view
    found = authorization(request).list_grants(
        tenant_id=scope or tenant_id, dataset_id=dataset_id, status=status
    )
    return found


@router.get("/{grant_id}", summary="One grant, with its status, the reason for it, and its history")
def get_grant(request: Request, principal: TenantOrOperator, grant_id: GrantId) -> Grant:
    found = authorization(request).get_grant(grant_id, tenant_id=tenant_scope(principal))
    return owned(found, principal, "grant", grant_id)


@router.post("/{grant_id}/suspend", summary="Suspend an active grant, saying why")
def suspend_grant(request: Request, operator: Operator, grant_id: GrantId, body: Reason) -> Grant:
    return authorization(request).suspend(grant_id, operator.principal_id, body.reason)


@router.post(
    "/{grant_id}/resume",
    summary="Resume a suspended grant",
    description="503 (nothing changes) while the audit log cannot be appended to: access is widened only "
    "when the change can be recorded. Suspensions and revocations go through regardless.",
)
def resume_grant(
    request: Request, operator: Operator, grant_id: GrantId, body: OptionalReason | None = None
) -> Grant:
    reason = body.reason if body else None
    return authorization(request).resume(grant_id, operator.principal_id, reason)


@router.post("/{grant_id}/revoke", summary="Revoke a grant for good, saying why")
def revoke_grant(request: Request, operator: Operator, grant_id: GrantId, body: Reason) -> Grant:
    return authorization(request).revoke(grant_id, operator.principal_id, body.reason)
