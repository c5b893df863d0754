"""Shared route plumbing: the injected services, validated path ids, and tenant scoping."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Request

from pdo.core.errors import NotFound
from pdo.gateway.principals import Principal, PrincipalKind

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
DatasetId = Annotated[str, Path(pattern=ID_PATTERN, max_length=128, description="catalog id of a dataset")]
RequestId = Annotated[str, Path(pattern=ID_PATTERN, max_length=128, description="id of a data request")]
GrantId = Annotated[str, Path(pattern=ID_PATTERN, max_length=160, description="id of a grant")]


def catalog(request: Request) -> Any:
    return request.app.state.catalog


def authorization(request: Request) -> Any:
    return request.app.state.authorization


def tenant_scope(principal: Principal) -> str | None:
    """The tenant a principal may see: its own id for a tenant, None (everyone) for an operator."""
    return principal.principal_id if principal.kind is PrincipalKind.TENANT else None


def owned(item: Any, principal: Principal, what: str, item_id: str) -> Any:
    """`item` when the principal may see it; a tenant gets 404 for another tenant's, so ids are not probed."""
    scope = tenant_scope(principal)
    if scope is not None and getattr(item, "tenant_id", None) != scope:
        raise NotFound(f"no {what} {item_id!r} among yours")
    return item
