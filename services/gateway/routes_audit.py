"""/v1/audit: the audit log for people: entries by filter, signed checkpoints, proofs, the public key.

Auditors and operators read everything; a tenant reads only the entries about itself (its `tenant` filter is
forced to its own id, and a proof of another tenant's entry answers 404 as for one that does not exist);
providers are refused. The public key is public: any authenticated principal may fetch it. Every answer
carries what `pdo audit verify-proof` needs to check it offline: the body exactly as stored, hex leaf and
path hashes, base64 root and signature, and the signed note text. The shapes are a contract (digests and
tenants' verifiers code against them): change them only by adding.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from pdo.audit.public import (
    MAX_INDEX,
    MAX_PAGE,
    EntryFilter,
    checkpoint_json,
    consistency_json,
    consistency_proof,
    entry_json,
    inclusion_json,
    inclusion_proof,
    latest_checkpoint,
    list_checkpoints,
    list_entries,
    served_public_key_pem,
)
from pdo.core.config import ConfigError
from pdo.core.errors import Unavailable
from pdo.gateway.auth import AnyPrincipal, AuditReader
from pdo.gateway.deps import tenant_scope
from pdo.gateway.models import ERROR_RESPONSES

router = APIRouter(prefix="/v1/audit", responses=ERROR_RESPONSES, tags=["audit"])

Text = Annotated[str | None, Query(max_length=255)]
Index = Annotated[int, Query(ge=0, le=MAX_INDEX)]
Size = Annotated[int, Query(ge=1, le=MAX_INDEX, description="the size of a signed checkpoint")]


class AuditEntryOut(BaseModel):
    seq: int = Field(description="the entry's leaf index")
    body: str = Field(description="the canonical JSON exactly as stored: what the leaf hash covers")
    leaf_hash: str = Field(description="hex SHA-256 of 0x00 || body (RFC 6962)")
    actor: str
    action: str
    subject: str
    reason: str | None
    occurred_at: str
    details: dict[str, Any] = Field(
        description="identifiers and grades the entry names (tenant, dataset, ...)"
    )


class EntriesOut(BaseModel):
    entries: list[AuditEntryOut]
    next_after: int | None = Field(description="pass as `after` for the next page; null on the last")


class CheckpointOut(BaseModel):
    origin: str
    size: int
    root: str = Field(description="base64 Merkle root of the first `size` entries")
    signed_at: str
    key_id: str
    signature: str = Field(description="base64 Ed25519 signature over `note`")
    note: str = Field(description='the exact signed text: "<origin>\\n<size>\\n<base64 root>\\n"')


class InclusionOut(BaseModel):
    leaf_index: int
    tree_size: int
    path: list[str] = Field(description="hex hashes of the audit path, leaf to root")


class ProofOut(BaseModel):
    entry: AuditEntryOut
    checkpoint: CheckpointOut
    inclusion: InclusionOut


class ConsistencyOut(BaseModel):
    first: CheckpointOut
    second: CheckpointOut
    proof: list[str] = Field(description="hex hashes of the RFC 6962 consistency proof")


@router.get(
    "/entries",
    summary="Audit entries in seq order, filtered (auditors, operators; a tenant: those about itself)",
    description="Every given filter must match; since (inclusive) and until (exclusive) are on occurred_at; "
    "page on with after=next_after. A tenant's tenant filter is its own id: asking for another's gives an "
    "empty list.",
)
def get_entries(
    request: Request,
    principal: AuditReader,
    subject: Text = None,
    action: Text = None,
    actor: Text = None,
    tenant: Text = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_INDEX, description="the last seq seen")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> EntriesOut:
    scope = tenant_scope(principal)
    if scope is not None and tenant not in (None, scope):
        return EntriesOut(entries=[], next_after=None)
    wanted = EntryFilter(subject, action, actor, scope or tenant, since, until, after, limit)
    page = list_entries(request.app.state.engine, wanted)
    return EntriesOut(
        entries=[AuditEntryOut(**entry_json(entry)) for entry in page.entries], next_after=page.next_after
    )


@router.get("/checkpoints/latest", summary="The newest signed checkpoint (404 before the first)")
def get_latest_checkpoint(request: Request, principal: AuditReader) -> CheckpointOut:
    return CheckpointOut(**checkpoint_json(latest_checkpoint(request.app.state.engine)))


@router.get("/checkpoints", summary="Every signed checkpoint, smallest size first")
def get_checkpoints(request: Request, principal: AuditReader) -> list[CheckpointOut]:
    return [CheckpointOut(**checkpoint_json(signed)) for signed in list_checkpoints(request.app.state.engine)]


@router.get(
    "/proof",
    summary="Entry N and its inclusion proof under the checkpoint of size M (default: the latest)",
    description="N must be below M and M a signed size (see /v1/audit/checkpoints). A tenant gets 404 for an "
    "entry that is not about itself.",
)
def get_proof(
    request: Request,
    principal: AuditReader,
    entry: Index,
    size: Annotated[int | None, Query(ge=1, le=MAX_INDEX, description="a signed size")] = None,
) -> ProofOut:
    proof = inclusion_proof(request.app.state.engine, entry, size, tenant=tenant_scope(principal))
    return ProofOut.model_validate(inclusion_json(proof))


@router.get(
    "/consistency",
    summary="The proof that the log signed at size `first` is a prefix of the one signed at `second`",
)
def get_consistency(request: Request, principal: AuditReader, first: Size, second: Size) -> ConsistencyOut:
    return ConsistencyOut.model_validate(
        consistency_json(consistency_proof(request.app.state.engine, first, second))
    )


@router.get(
    "/public-key",
    summary="The PEM public key that verifies the checkpoints (any authenticated principal)",
    response_class=PlainTextResponse,
)
def get_public_key(request: Request, principal: AnyPrincipal) -> PlainTextResponse:
    try:
        pem = served_public_key_pem(request.app.state.settings)
    except ConfigError as error:
        raise Unavailable(
            f"the audit public key is not configured: {error.message}", hint=error.hint
        ) from None
    return PlainTextResponse(pem)
