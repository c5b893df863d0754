"""Who is calling and what their role lets them do: FastAPI dependencies for every route.

The key comes as `Authorization: Bearer <key>` or in `X-API-Key`. Checking it hashes (a few ms) and reads
SQL, so the dependencies are plain `def`s and FastAPI runs them in its threadpool, off the event loop.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from pdo.core.errors import Forbidden, Unauthenticated
from pdo.gateway.principals import Principal, PrincipalKind, PrincipalStore

# The only routes an auditor's key opens (pdo.gateway.routes_audit).
AUDIT_ROUTES = "/v1/audit/"
# Who the key belongs to: changes nothing, and tells the console which pages to show.
WHO_AM_I = "/v1/me"

# Declared for the OpenAPI description (the "Authorize" button in /docs); the header is parsed below.
bearer_scheme = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer pdo_…`")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key: `pdo_…`")


def presented_key(request: Request) -> str | None:
    """The API key in the request headers, or None; a non-Bearer Authorization header is refused."""
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthenticated(
                "the Authorization header must read 'Bearer <key>'", hint="or send the key in X-API-Key"
            )
        return credentials.strip()
    return request.headers.get("x-api-key") or None


def authenticated(
    request: Request,
    _bearer: Annotated[object, Security(bearer_scheme)] = None,
    _api_key: Annotated[object, Security(api_key_scheme)] = None,
) -> Principal:
    """The principal whose key the request carries; 401 when there is none or it is not valid, 429 when
    it is over its request rate (pdo.gateway.caps)."""
    store: PrincipalStore = request.app.state.principals
    caps = request.app.state.caps
    try:
        principal = store.authenticate(presented_key(request))
    except Unauthenticated:
        # Failed keys count against the caller's address, so guessing keys is throttled too.
        caps.spend_request(f"address {request.client.host if request.client else 'unknown'}")
        raise
    caps.spend_request(principal.principal_id)
    # The matched route's template, not the raw path: nothing a caller spells into the URL can widen it.
    confine_auditor(principal, getattr(request.scope.get("route"), "path", ""))
    return principal


def confine_auditor(principal: Principal, path: str) -> None:
    """An auditor reads the audit log and nothing else: every other route answers it 403, whatever role
    check that route makes, so no route added later can let an auditor change state by mistake. /v1/me, which
    only names the caller, is the one exception."""
    if principal.kind is PrincipalKind.AUDITOR and not path.startswith(AUDIT_ROUTES) and path != WHO_AM_I:
        raise Forbidden(
            f"{principal.principal_id} is an auditor; auditors may call only {AUDIT_ROUTES}...",
            hint="use a key of a principal with the role this route needs",
        )


def role(*kinds: PrincipalKind) -> Callable[..., Principal]:
    """A dependency admitting only principals of `kinds`; others get 403."""
    allowed = " or ".join(f"{kind.value}s" for kind in kinds)

    def check(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
        if principal.kind not in kinds:
            raise Forbidden(
                f"{principal.principal_id} is a {principal.kind.value}; only {allowed} may do this",
                hint="use a key of a principal with that role",
            )
        return principal

    return check


def require_metrics_reader(request: Request) -> None:
    """/metrics answers the scrape token (PDO_METRICS_TOKEN, as a bearer token) or an operator's API key;
    anyone else gets 401 or 403: the metrics carry per-tenant usage."""
    token: str = request.app.state.metrics_token
    presented = presented_key(request)
    if token and presented and hmac.compare_digest(presented.encode(), token.encode()):
        return
    principal = authenticated(request)
    if principal.kind is not PrincipalKind.OPERATOR:
        raise Forbidden(
            f"{principal.principal_id} is a {principal.kind.value}; only operators and the scrape token may read "
            "the metrics",
            hint="Prometheus sends PDO_METRICS_TOKEN as a bearer token (authorization: credentials_file:)",
        )


AnyPrincipal = Annotated[Principal, Depends(authenticated)]
Provider = Annotated[Principal, Depends(role(PrincipalKind.PROVIDER))]
Tenant = Annotated[Principal, Depends(role(PrincipalKind.TENANT))]
Operator = Annotated[Principal, Depends(role(PrincipalKind.OPERATOR))]
AuditReader = Annotated[
    Principal, Depends(role(PrincipalKind.AUDITOR, PrincipalKind.OPERATOR, PrincipalKind.TENANT))
]
TenantOrOperator = Annotated[Principal, Depends(role(PrincipalKind.TENANT, PrincipalKind.OPERATOR))]
