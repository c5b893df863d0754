"""For the delivery digest tests: a closed period with digests and statements, the digests recorded in a real
audit store with a signed checkpoint, and a stand-in of the /v1/audit entries and proof routes built from that
store (the shapes the audit-reading routes serve; the real ones replace it when the parts are merged)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from billing_support import add_grant, add_usage, per_thousand
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter

from pdo.audit.checkpoints import Signer
from pdo.audit.recorder import entry_for
from pdo.audit.store import AuditStore, LoggedEntry
from pdo.authorization.testing import RecordingPublisher
from pdo.billing.statements import close_period, statement_id_for
from pdo.core import merkle
from pdo.core.names import Event
from pdo.metering import digests

ACME = "tenant:acme"
GLOBEX = "tenant:globex"
MARCH = datetime(2026, 3, 10, 12, tzinfo=UTC)
CLOSED_AT = datetime(2026, 4, 2, 9, tzinfo=UTC)
ACME_STATEMENT = statement_id_for(ACME, "2026-03", "CNY")


@dataclass
class ClosedMarch:
    """March 2026 closed: acme's two grants (3 digests), globex's one; every delivery id by grant."""

    deliveries: dict[str, list[str]]
    digests: list[digests.Digest]
    signer: Signer


def close_march(engine: sa.Engine, record: bool = True) -> ClosedMarch:
    """Usage, a timer claim, later usage, the close (claiming the rest); the digests in the audit log, signed."""
    with engine.begin() as conn:
        add_grant(conn, "g-acme-trips", ACME, "trips", per_thousand("0.50"))
        add_grant(conn, "g-acme-clinics", ACME, "clinics", per_thousand("2.00"))
        add_grant(conn, "g-globex-trips", GLOBEX, "trips", per_thousand("0.50"))
    deliveries = {
        "g-acme-trips": _usage(engine, "g-acme-trips", ACME, "trips", 3, MARCH),
        "g-acme-clinics": _usage(engine, "g-acme-clinics", ACME, "clinics", 2, MARCH),
        "g-globex-trips": _usage(engine, "g-globex-trips", GLOBEX, "trips", 4, MARCH),
    }
    digests.claim_due(engine, CLOSED_AT)
    deliveries["g-acme-trips"] += _usage(engine, "g-acme-trips", ACME, "trips", 2, MARCH + timedelta(days=3))
    close_period(engine, RecordingPublisher(), "2026-03", "operator:alice", now=CLOSED_AT)
    with engine.connect() as conn:
        made = digests.list_digests(conn)
    signer = Signer(Ed25519PrivateKey.generate(), "pdo.test/audit")
    if record:
        record_digests(engine, made, signer)
    return ClosedMarch(deliveries, made, signer)


def _usage(
    engine: sa.Engine, grant_id: str, tenant: str, dataset: str, count: int, at: datetime
) -> list[str]:
    with engine.begin() as conn:
        return [
            add_usage(conn, grant_id, tenant, dataset, 1, 10, at + timedelta(minutes=n)) for n in range(count)
        ]


def record_digests(engine: sa.Engine, made: list[digests.Digest], signer: Signer) -> None:
    """What the audit worker does with their DeliveriesDigested events, then a signed checkpoint."""
    store = AuditStore(engine)
    store.append(
        [
            entry_for(
                Event.DELIVERIES_DIGESTED,
                digests.deliveries_digested_event(digest),
                f"pdo.delivery-digests[0]@{offset}",
            )
            for offset, digest in enumerate(made)
        ]
    )
    store.checkpoint(signer)


def entry_json(logged: LoggedEntry) -> dict:
    body = json.loads(logged.body)
    return {
        "seq": logged.seq,
        "body": logged.body,
        "leaf_hash": logged.leaf_hash.hex(),
        **{
            name: body.get(name)
            for name in ("actor", "action", "subject", "reason", "occurred_at", "details")
        },
    }


def fake_audit_routes(store: AuditStore, page_size: int = 2) -> APIRouter:
    """GET /v1/audit/entries (action and subject filters, pages of `page_size`) and /v1/audit/proof."""
    router = APIRouter(prefix="/v1/audit")

    @router.get("/entries")
    def entries(action: str | None = None, subject: str | None = None, after: int = -1) -> dict:
        found = [
            logged
            for logged in store.entries(start=after + 1)
            if all(
                wanted in (None, json.loads(logged.body)[name])
                for name, wanted in (("action", action), ("subject", subject))
            )
        ]
        page = found[:page_size]
        more = len(found) > page_size
        return {"entries": [entry_json(e) for e in page], "next_after": page[-1].seq if more else None}

    @router.get("/proof")
    def proof(entry: int) -> dict:
        latest = store.latest_checkpoint()
        assert latest is not None
        hashes = store.leaf_hashes(end=latest.size)
        [logged] = store.entries(start=entry, end=entry + 1)
        return {
            "entry": entry_json(logged),
            "checkpoint": {
                "origin": latest.origin,
                "size": latest.size,
                "root": base64.b64encode(latest.root).decode(),
                "signed_at": latest.signed_at.isoformat(),
                "key_id": latest.key_id,
                "signature": base64.b64encode(latest.signature).decode(),
                "note": latest.note_body().decode(),
            },
            "inclusion": {
                "leaf_index": entry,
                "tree_size": latest.size,
                "path": [node.hex() for node in merkle.inclusion_proof(entry, hashes)],
            },
        }

    return router
