"""/v1/kafka-credentials: tenants and providers get Kafka credentials of their own; operators revoke anyone's.

The password is in the answer to POST only (and `Cache-Control: no-store`); pdo keeps no copy. POST again to
rotate. What the credentials may do is fixed by the platform (pdo.gateway.kafka_credentials), not by the caller.
Each issue and revocation is recorded on pdo.access before the broker changes: when it cannot be recorded,
the answer is 503 and nothing changed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from kafka.errors import KafkaError
from pydantic import BaseModel, Field

from pdo.core.errors import Unavailable
from pdo.gateway.auth import Operator, Principal, role
from pdo.gateway.kafka_credentials import KafkaCredentialIssuer
from pdo.gateway.models import ERROR_RESPONSES
from pdo.gateway.principals import PrincipalKind

router = APIRouter(responses=ERROR_RESPONSES, tags=["kafka"])

Party = Annotated[Principal, Depends(role(PrincipalKind.TENANT, PrincipalKind.PROVIDER))]


class KafkaCredentialsOut(BaseModel):
    username: str
    password: str = Field(description="shown once; POST again to rotate (the old password stops working)")
    bootstrap_servers: str
    security_protocol: str
    sasl_mechanism: str
    schema_registry_url: str = Field(
        description="authenticate with the same username and password (HTTP Basic)"
    )
    topic_prefix: str | None = Field(
        description="tenants: your topics, and the prefix your consumer groups must use"
    )
    feeds: list[str] = Field(description="providers: the feeds you may write")
    client_properties: str = Field(description="the same as librdkafka / kcat / Java client properties")


class KafkaRevokedOut(BaseModel):
    principal_id: str
    acls_removed: int


def _issuer(request: Request) -> KafkaCredentialIssuer:
    return request.app.state.kafka_credentials


def _unavailable(error: KafkaError) -> Unavailable:
    return Unavailable(f"the Kafka broker did not take the change: {error}", hint="retry in a moment")


@router.post(
    "/v1/kafka-credentials",
    status_code=201,
    summary="Issue (or rotate) your own Kafka credentials (tenants, providers); the password is shown once",
)
def issue_credentials(request: Request, response: Response, party: Party) -> KafkaCredentialsOut:
    try:
        issued = _issuer(request).issue(party.principal_id)
    except KafkaError as error:
        raise _unavailable(error) from None
    response.headers["Cache-Control"] = "no-store"
    return KafkaCredentialsOut(
        username=issued.username,
        password=issued.password,
        bootstrap_servers=issued.bootstrap_servers,
        security_protocol=issued.security_protocol,
        sasl_mechanism=issued.sasl_mechanism,
        schema_registry_url=issued.registry_url,
        topic_prefix=issued.topic_prefix,
        feeds=list(issued.feeds),
        client_properties=issued.client_properties(),
    )


@router.delete("/v1/kafka-credentials", summary="Revoke your own Kafka credentials and every ACL they had")
def revoke_own_credentials(request: Request, party: Party) -> KafkaRevokedOut:
    return _revoke(request, party.principal_id, party.principal_id)


@router.delete(
    "/v1/principals/{principal_id}/kafka-credentials",
    summary="Revoke a tenant's or provider's Kafka credentials (operators)",
)
def revoke_credentials(
    request: Request,
    _operator: Operator,
    principal_id: Annotated[str, Path(pattern=r"^(tenant|provider):[a-z0-9][a-z0-9-]{0,62}$")],
) -> KafkaRevokedOut:
    request.app.state.principals.get(principal_id)  # NotFound for a principal pdo does not know
    return _revoke(request, principal_id, _operator.principal_id)


def _revoke(request: Request, principal_id: str, actor: str) -> KafkaRevokedOut:
    try:
        removed = _issuer(request).revoke(principal_id, actor=actor)
    except KafkaError as error:
        raise _unavailable(error) from None
    return KafkaRevokedOut(principal_id=principal_id, acls_removed=removed)
