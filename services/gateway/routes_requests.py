"""/v1/requests: tenants submit and withdraw their data requests; operators review and decide them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from pdo.authorization.public import Grant, RequestStatus
from pdo.gateway.auth import Operator, Tenant, TenantOrOperator
from pdo.gateway.deps import RequestId, authorization, owned, tenant_scope
from pdo.gateway.models import (
    ERROR_RESPONSES,
    ApprovalIn,
    DataRequestOut,
    OptionalReason,
    Reason,
    RequestIn,
    request_view,
)

router = APIRouter(prefix="/v1/requests", responses=ERROR_RESPONSES, tags=["requests"])


@router.post(
    "",
    status_code=202,
    summary="Submit a data request (tenants)",
    description="Accepted as SUBMITTED; the policy decides it shortly after (auto-approve, auto-deny or "
    "operator review). Poll GET /v1/requests/{request_id} for the decision. 429 when you already hold "
    "PDO_MAX_GRANTS_PER_TENANT_DATASET live grants and undecided requests on the dataset.",
)
def submit_request(request: Request, tenant: Tenant, body: RequestIn) -> DataRequestOut:
    who = tenant.principal_id
    request.app.state.caps.check_grants(authorization(request), who, body.dataset_id)
    submitted = authorization(request).submit_request(
        who, body.to_domain(), actor=who, tenant_is_government=tenant.is_government
    )
    return request_view(submitted)


@router.get("", summary="List data requests (a tenant sees its own; operators see all)")
def list_requests(
    request: Request,
    principal: TenantOrOperator,
    status: RequestStatus | None = None,
    tenant_id: Annotated[str | None, Query(max_length=128)] = None,
) -> list[DataRequestOut]:
    scope = tenant_scope(principal)
    if scope is not None and tenant_id not in (None, scope):
        return []  # another tenant's requests are never in a tenant's view
    found = authorization(request).list_requests(tenant_id=scope or tenant_id, status=status)
    return [request_view(item) for item in found]


@router.get("/{request_id}", summary="One data request")
def get_request(request: Request, principal: TenantOrOperator, request_id: RequestId) -> DataRequestOut:
    found = authorization(request).get_request(request_id, tenant_id=tenant_scope(principal))
    return request_view(owned(found, principal, "data request", request_id))


@router.post("/{request_id}/withdraw", summary="Withdraw your undecided data request")
def withdraw_request(
    request: Request, tenant: Tenant, request_id: RequestId, body: OptionalReason | None = None
) -> DataRequestOut:
    who = tenant.principal_id
    reason = body.reason if body else None
    return request_view(authorization(request).withdraw_request(who, request_id, reason, actor=who))


@router.post(
    "/{request_id}/approve",
    status_code=201,
    summary="Approve a request, optionally narrowed",
    description="503 (nothing changes) while the audit log cannot be appended to: access is widened only "
    "when the change can be recorded. Denials go through regardless.",
)
def approve_request(
    request: Request, operator: Operator, request_id: RequestId, body: ApprovalIn | None = None
) -> Grant:
    body = body or ApprovalIn()
    grant = authorization(request).approve(request_id, operator.principal_id, body.to_domain(), body.reason)
    return grant


@router.post("/{request_id}/deny", summary="Deny a request, saying why")
def deny_request(request: Request, operator: Operator, request_id: RequestId, body: Reason) -> DataRequestOut:
    return request_view(authorization(request).deny(request_id, operator.principal_id, body.reason))
