"""/v1/principals and /v1/api-keys: operators create principals, issue and revoke API keys, disable principals.
/v1/me tells any key's holder who it is (the console picks its pages by the kind).

Each change commits with its access event (pdo.gateway.principals, through the gateway's outbox), so the
audit log names who did it, to whom, when and why. A new key is in the answer to the POST only
(`Cache-Control: no-store`); pdo keeps only its hash, and no event ever carries it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, Field

from pdo.core.ids import ID_RULE
from pdo.gateway.auth import AnyPrincipal, Operator
from pdo.gateway.models import ERROR_RESPONSES, Body, Line, OptionalReason, Text
from pdo.gateway.principals import Principal, PrincipalKind, PrincipalStore

router = APIRouter(responses=ERROR_RESPONSES, tags=["principals"])

PrincipalId = Annotated[
    str, Path(pattern=r"^[a-z]{1,16}:[a-z0-9][a-z0-9-]{0,62}$", description="kind:name, e.g. tenant:acme")
]
KeyId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="the key's public id")]


class NewPrincipal(Body):
    kind: PrincipalKind
    name: str = Field(pattern=ID_RULE, description="1 to 63 lower-case letters, digits and '-'")
    display_name: Line | None = None
    is_government: bool = Field(default=False, description="tenants only: a government department")
    reason: Text | None = None


class PrincipalOut(BaseModel):
    principal_id: str
    kind: PrincipalKind
    display_name: str
    is_government: bool
    disabled: bool


class IssuedKeyOut(BaseModel):
    principal_id: str
    key_id: str = Field(description="the key's public id: revoke it by this")
    api_key: str = Field(description="shown once; pdo keeps only its hash")


class RevokedKeyOut(BaseModel):
    key_id: str
    principal_id: str
    revoked_at: datetime | None


def _store(request: Request) -> PrincipalStore:
    return request.app.state.principals


def _principal_out(principal: Principal) -> PrincipalOut:
    return PrincipalOut(
        principal_id=principal.principal_id,
        kind=principal.kind,
        display_name=principal.display_name,
        is_government=principal.is_government,
        disabled=principal.disabled,
    )


def _issue(
    request: Request, response: Response, principal_id: str, actor: str, reason: str | None
) -> IssuedKeyOut:
    issued = _store(request).issue_key(principal_id, actor=actor, reason=reason)
    response.headers["Cache-Control"] = "no-store"
    return IssuedKeyOut(principal_id=issued.principal_id, key_id=issued.key_id, api_key=issued.key)


@router.get("/v1/me", summary="Who this key belongs to: the principal and its kind (any principal)")
def who_am_i(principal: AnyPrincipal) -> PrincipalOut:
    return _principal_out(principal)


@router.post(
    "/v1/principals",
    status_code=201,
    summary="Create a principal and issue its first API key (operators); the key is shown once",
)
def create_principal(
    request: Request, response: Response, operator: Operator, body: NewPrincipal
) -> IssuedKeyOut:
    created = _store(request).create_principal(
        body.kind,
        body.name,
        body.display_name,
        body.is_government,
        actor=operator.principal_id,
        reason=body.reason,
    )
    return _issue(request, response, created.principal_id, operator.principal_id, body.reason)


@router.post(
    "/v1/principals/{principal_id}/api-keys",
    status_code=201,
    summary="Issue another API key to a principal (operators); the key is shown once",
)
def issue_key(
    request: Request,
    response: Response,
    operator: Operator,
    principal_id: PrincipalId,
    body: OptionalReason | None = None,
) -> IssuedKeyOut:
    return _issue(request, response, principal_id, operator.principal_id, body.reason if body else None)


@router.delete("/v1/api-keys/{key_id}", summary="Revoke an API key by its public id (operators)")
def revoke_key(
    request: Request,
    operator: Operator,
    key_id: KeyId,
    reason: Annotated[Text | None, Query(description="why")] = None,
) -> RevokedKeyOut:
    info = _store(request).revoke_key(key_id, actor=operator.principal_id, reason=reason)
    return RevokedKeyOut(key_id=info.key_id, principal_id=info.principal_id, revoked_at=info.revoked_at)


@router.post(
    "/v1/principals/{principal_id}/disable",
    summary="Disable a principal: its API keys stop working at once (operators); "
    "its Kafka credentials go with DELETE /v1/principals/{principal_id}/kafka-credentials",
)
def disable_principal(
    request: Request, operator: Operator, principal_id: PrincipalId, body: OptionalReason | None = None
) -> PrincipalOut:
    reason = body.reason if body else None
    return _principal_out(
        _store(request).set_disabled(principal_id, True, actor=operator.principal_id, reason=reason)
    )
