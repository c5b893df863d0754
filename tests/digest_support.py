"""For the delivery digest tests: a closed period with digests and statements, the digests recorded in a real
audit store with a signed checkpoint, which the gateway's real /v1/audit routes serve to the tenant's check."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from billing_support import add_grant, add_usage, per_thousand
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdo.audit.checkpoints import Signer
from pdo.audit.recorder import entry_for
from pdo.audit.store import AuditStore
from pdo.authorization.testing import RecordingPublisher
from pdo.billing.statements import close_period, statement_id_for
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
