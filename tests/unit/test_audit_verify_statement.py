"""`pdo audit verify-statement` against a served gateway (its real statement and digest routes, the audit
entries and proof routes as stand-ins over a real audit store): it passes an honest statement and stops,
exit 1 with the reason, on an overbilled line, a digest whose ids do not hash to its root, a billed delivery
the tenant never received, a digest missing from the audit log, and a checkpoint whose signature is forged.
The tenant's records are given as the set of delivery ids its topic scan would find."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from digest_support import ACME_STATEMENT, ClosedMarch, close_march, record_digests
from gateway_support import gateway_database
from test_gateway_api import FakeAuthorization, FakeCatalog

from pdo.audit import tables as audit_tables
from pdo.billing import tables as billing_tables
from pdo.cli import verify_statement
from pdo.cli.main import main
from pdo.core.config import Settings
from pdo.core.provenance import delivery_root
from pdo.core.serving import ServerThread
from pdo.gateway.app import create_app
from pdo.metering import tables as metering_tables


@dataclass
class Tenant:
    """What acme holds: its API key, Kafka properties and the trusted public key in files, and the command."""

    folder: Path
    url: str
    engine: sa.Engine
    march: ClosedMarch
    received: set[str]

    def verify(self, *extra: str) -> int:
        return main(
            [
                "audit",
                "verify-statement",
                *(extra or ("--statement", ACME_STATEMENT)),
                "--gateway",
                self.url,
                "--api-key-file",
                str(self.folder / "acme.key"),
                "--kafka-properties",
                str(self.folder / "acme.properties"),
                "--public-key",
                str(self.folder / "audit.pem"),
            ]
        )


def setup(tmp_path: Path, monkeypatch, record: bool = True) -> Iterator[Tenant]:
    engine, keys = gateway_database(tmp_path)
    march = close_march(engine, record=record)
    app = create_app(Settings.from_env(), FakeCatalog(), FakeAuthorization(), engine)
    (tmp_path / "acme.key").write_text(keys["acme"] + "\n")
    (tmp_path / "acme.properties").write_text(
        "bootstrap.servers=127.0.0.1:1\nsecurity.protocol=SASL_PLAINTEXT\nsasl.mechanisms=SCRAM-SHA-512\n"
        "sasl.username=tenant.acme\nsasl.password=secret\n"
    )
    (tmp_path / "audit.pem").write_text(march.signer.public_key_pem())
    received = {d for grant, ids in march.deliveries.items() if grant.startswith("g-acme") for d in ids}
    tenant = Tenant(tmp_path, "", engine, march, received)

    def scan(settings: Settings, statement: dict) -> set[str]:
        # The tenant's own credentials are what the scan would connect with.
        assert (settings.kafka_username, settings.kafka_password) == ("tenant.acme", "secret")
        return set(tenant.received)

    monkeypatch.setattr(verify_statement, "received_delivery_ids", scan)
    with ServerThread(app) as server:
        tenant.url = server.url
        yield tenant
    engine.dispose()


@pytest.fixture
def tenant(tmp_path, monkeypatch) -> Iterator[Tenant]:
    yield from setup(tmp_path, monkeypatch)


def test_an_honest_statement_is_verified_line_by_line_and_digest_by_digest(tenant, capsys):
    assert tenant.verify() == 0
    out = capsys.readouterr().out
    assert "ok    (1) grant g-acme-trips: 5 records billed = the counts of its 2 digest(s)" in out
    assert "ok    (1) grant g-acme-clinics: 2 records billed = the counts of its 1 digest(s)" in out
    for digest in ("g-acme-trips.2026-03.1", "g-acme-trips.2026-03.2", "g-acme-clinics.2026-03.1"):
        assert f"ok    (2) digest {digest}:" in out
        assert f"ok    (3) digest {digest}: every delivery billed is one you received" in out
        assert f"ok    (4) digest {digest}: audit entry" in out
    assert f"statement {ACME_STATEMENT} verified: 2 line(s), 3 digest(s), all in the signed audit log" in out


def test_a_saved_statement_is_verified_too(tenant, capsys, tmp_path):
    with httpx.Client(base_url=tenant.url) as http:
        key = (tmp_path / "acme.key").read_text().strip()
        saved = http.get(
            f"/v1/statements/{ACME_STATEMENT}", headers={"Authorization": f"Bearer {key}"}
        ).json()
    (tmp_path / "statement.json").write_text(json.dumps(saved))
    assert tenant.verify("--statement-file", str(tmp_path / "statement.json")) == 0


def failure(tenant: Tenant, capsys) -> str:
    assert tenant.verify() == 1
    err = capsys.readouterr().err
    assert f"statement {ACME_STATEMENT} NOT verified" in err
    return err


def test_an_overbilled_line_fails_check_1(tenant, capsys):
    lines = billing_tables.statement_lines
    with tenant.engine.begin() as conn:
        conn.execute(lines.update().where(lines.c.grant_id == "g-acme-trips").values(records=6))
    assert (
        "FAIL  (1) line of grant g-acme-trips: billed 6 records, but its 2 digest(s) count 5 deliveries"
        in (failure(tenant, capsys))
    )


def test_a_digest_whose_ids_do_not_hash_to_its_root_fails_check_2(tenant, capsys):
    ledger = metering_tables.ledger
    moved = tenant.march.deliveries["g-acme-trips"][
        0
    ]  # from digest 1 into digest 2: counts stay, roots break
    other = tenant.march.deliveries["g-acme-trips"][3]
    with tenant.engine.begin() as conn:
        conn.execute(
            ledger.update().where(ledger.c.delivery_id == moved).values(digest_id="g-acme-trips.2026-03.2")
        )
        conn.execute(
            ledger.update().where(ledger.c.delivery_id == other).values(digest_id="g-acme-trips.2026-03.1")
        )
    assert "FAIL  (2) digest g-acme-trips.2026-03.1: its delivery ids do not hash to its root" in failure(
        tenant, capsys
    )


def test_a_billed_delivery_the_tenant_never_received_fails_check_3(tenant, capsys):
    never = tenant.march.deliveries["g-acme-clinics"][1]
    tenant.received.discard(never)
    err = failure(tenant, capsys)
    assert (
        f"FAIL  (3) digest g-acme-clinics.2026-03.1: 1 billed delivery id(s) are not among the records you "
        f"received, e.g. {never}"
    ) in err
    assert "--received" in err


def test_delivery_ids_the_tenant_kept_count_as_received(tenant, capsys, tmp_path):
    kept = tenant.march.deliveries["g-acme-clinics"]
    tenant.received -= set(kept)
    (tmp_path / "kept.txt").write_text("\n".join(kept) + "\n")
    assert tenant.verify("--statement", ACME_STATEMENT, "--received", str(tmp_path / "kept.txt")) == 0


def test_a_digest_missing_from_the_audit_log_fails_check_4(tmp_path, monkeypatch, capsys):
    setups = setup(tmp_path, monkeypatch, record=False)
    tenant = next(setups)
    try:
        # Every digest but the last of acme's trips is recorded and signed.
        logged = [d for d in tenant.march.digests if d.digest_id != "g-acme-trips.2026-03.2"]
        record_digests(tenant.engine, logged, tenant.march.signer)
        assert (
            "FAIL  (4) digest g-acme-trips.2026-03.2: no deliveries.digested entry of the audit log names it"
            in (failure(tenant, capsys))
        )
    finally:
        setups.close()


def test_a_forged_checkpoint_signature_fails_check_4(tenant, capsys):
    checkpoints = audit_tables.checkpoints
    with tenant.engine.begin() as conn:
        signature = conn.execute(sa.select(checkpoints.c.signature)).scalar_one()
        forged = bytes([signature[0] ^ 1]) + bytes(signature[1:])
        conn.execute(checkpoints.update().values(signature=forged))
    assert "is not signed by the audit public key you trust" in failure(tenant, capsys)


def test_a_digest_rewritten_after_the_audit_log_recorded_it_fails_check_4(tenant, capsys):
    # Metering's tables rewritten consistently (one delivery fewer billed, digest and line to match): only the
    # signed audit entry still says what was digested then.
    kept, dropped = tenant.march.deliveries["g-acme-clinics"]
    ledger, digests, lines = metering_tables.ledger, metering_tables.digests, billing_tables.statement_lines
    with tenant.engine.begin() as conn:
        conn.execute(ledger.update().where(ledger.c.delivery_id == dropped).values(digest_id=None))
        conn.execute(
            digests.update()
            .where(digests.c.digest_id == "g-acme-clinics.2026-03.1")
            .values(count=1, root=delivery_root([kept]))
        )
        conn.execute(lines.update().where(lines.c.grant_id == "g-acme-clinics").values(records=1))
    err = failure(tenant, capsys)
    assert "FAIL  (4) digest g-acme-clinics.2026-03.1: the audit log recorded count 2 root " in err
    assert f"not count 1 root {delivery_root([kept]).hex()}" in err


def test_a_line_naming_no_digest_fails_check_1_with_a_hint(tenant, capsys):
    lines = billing_tables.statement_lines
    with tenant.engine.begin() as conn:  # as on a statement issued before digests existed
        conn.execute(lines.update().where(lines.c.grant_id == "g-acme-clinics").values(digest_count=0))
    err = failure(tenant, capsys)
    assert "FAIL  (1) line of grant g-acme-clinics: billed 2 records but names no delivery digest" in err
    assert "issued before delivery digests existed" in err
