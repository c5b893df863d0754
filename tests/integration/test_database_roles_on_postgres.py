"""Each service's PostgreSQL role on a real server: it does its work and is refused every other service's
table; applying twice changes nothing; a table declared later is granted on the next apply; what the
declaration no longer says is taken away. Roles get a prefix of this test's own and are dropped after it.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from conftest import ServerThread, fresh_postgres_database, isolated_namespace, static_guard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.exc import ProgrammingError

from pdo.audit.checkpoints import Signer
from pdo.audit.public import EntryFilter, inclusion_json, inclusion_proof, list_entries
from pdo.audit.store import AuditStore, Entry
from pdo.audit.verify import verify_answer
from pdo.authorization import outbox
from pdo.authorization.datasets import CatalogCatchUp, ProjectedDatasets
from pdo.authorization.models import Narrowing, RequestSpec, RequestStatus
from pdo.authorization.policy import load_policy
from pdo.authorization.service import AuthorizationService
from pdo.billing.assets import asset_report
from pdo.billing.statements import list_statements
from pdo.catalog.public import DatasetRegistration
from pdo.catalog.service import CatalogService
from pdo.cli.main import main
from pdo.core import db_roles
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.events import EventPublisher
from pdo.core.registry_client import RegistryClient
from pdo.core.vocabulary import (
    Classification,
    Domain,
    MaskingRule,
    Openness,
    PriceKind,
    PricePlan,
    SensitiveField,
)
from pdo.gateway.principals import PrincipalStore
from pdo.metering.usage import list_windows
from pdo.registry.app import create_app as create_registry_app
from pdo.stack import database_roles
from pdo.stack.platform import prepare_databases

pytestmark = pytest.mark.integration
INSUFFICIENT_PRIVILEGE = "42501"


@pytest.fixture
def settings(postgres_url, tmp_path) -> Iterator[Settings]:
    """A migrated database of its own (the registry's store in it too), roles prefixed for this test only."""
    database = fresh_postgres_database(postgres_url)
    url = next(database)
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield dataclasses.replace(
        Settings.from_env(),
        database_url=url,
        registry_database_url=url,
        run_dir=tmp_path / "run",
        database_role_prefix=prefix,
    )
    next(database, None)  # drops the database, and with it every grant the roles held
    server = sa.create_engine(postgres_url)
    with server.begin() as conn:
        for service in database_roles.SERVICES:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{prefix}{service}"'))
    server.dispose()


@pytest.fixture
def role_urls(settings) -> dict[str, str]:
    return prepare_databases(settings, report=lambda _line: None)


def run_as(url: str, statement: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def refused(url: str, statement: str) -> bool:
    try:
        run_as(url, statement)
    except ProgrammingError as error:
        assert error.orig.sqlstate == INSUFFICIENT_PRIVILEGE, error
        return True
    return False


NOW = "now()"
TRANSITION = (
    "INSERT INTO authz_grant_transitions (grant_id, to_status, actor, at, event_id) "
    f"VALUES ('g-1', 'ACTIVE', 'operator:alice', {NOW}, '{{event}}')"
)
# (service, statement, allowed): what each role must be able to do, and neighbours' tables it must not touch.
CASES = [
    (
        "registry",
        "INSERT INTO registry_schemas (schema_type, schema_text, fingerprint) VALUES ('AVRO', '{}', 'f1')",
        True,
    ),
    ("registry", "SELECT count(*) FROM catalog_datasets", False),
    ("catalog", "UPDATE catalog_datasets SET title = title", True),
    ("catalog", "DELETE FROM catalog_datasets WHERE false", True),
    ("catalog", "SELECT count(*) FROM metering_ledger", False),
    ("catalog", "SELECT count(*) FROM authz_grants", False),
    ("authorization", TRANSITION.format(event="e-authz"), True),
    ("authorization", "DELETE FROM authz_outbox WHERE sent_at < now()", True),
    ("authorization", "SELECT count(*) FROM metering_ledger", False),
    ("authorization", "SELECT count(*) FROM gateway_api_keys", False),
    ("metering", "INSERT INTO metering_periods (period) VALUES ('2026-01')", True),
    ("metering", "SELECT count(*) FROM metering_statement_lines", True),
    ("metering", "SELECT count(*) FROM authz_grants", False),
    ("metering", "SELECT count(*) FROM catalog_datasets", False),
    ("metering", "SELECT count(*) FROM gateway_principals", False),
    ("gateway", TRANSITION.format(event="e-gateway"), True),
    ("gateway", "UPDATE catalog_datasets SET title = title", True),
    ("gateway", "UPDATE authz_outbox_lease SET holder = NULL WHERE holder IS NULL", True),
    ("gateway", "SELECT count(*) FROM metering_ledger", True),
    ("gateway", "INSERT INTO metering_periods (period) VALUES ('2026-02')", False),
    ("gateway", "UPDATE metering_ledger SET records = records", False),
    ("gateway", "DELETE FROM authz_outbox WHERE false", False),
    ("gateway", "DELETE FROM catalog_datasets WHERE false", False),
    ("gateway", "SELECT count(*) FROM metering_quota_notices", False),
    ("gateway", "SELECT count(*) FROM registry_schemas", False),
    ("gateway", "SELECT count(*) FROM audit_entries", True),
    ("gateway", "SELECT count(*) FROM audit_checkpoints", True),
    ("gateway", "UPDATE audit_entries SET tenant = tenant", False),
    ("gateway", "DELETE FROM audit_checkpoints WHERE false", False),
    # Fail closed: whoever widens access reads the audit log's liveness mark; only the audit worker writes it.
    ("gateway", "SELECT count(*) FROM audit_liveness", True),
    ("authorization", "SELECT count(*) FROM audit_liveness", True),
    ("gateway", "UPDATE audit_liveness SET size = size", False),
    ("authorization", "UPDATE audit_liveness SET size = size", False),
    ("audit", "INSERT INTO audit_liveness (id, appended_at, size) VALUES (1, now(), 0)", True),
]


def test_each_service_connects_as_its_own_role(settings, role_urls):
    assert set(role_urls) == set(database_roles.SERVICES)
    for service, url in role_urls.items():
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert (
                conn.execute(sa.text("SELECT current_user")).scalar_one()
                == f"{settings.database_role_prefix}{service}"
            )
        engine.dispose()


def test_each_role_does_its_work_and_is_refused_other_services_tables(role_urls):
    wrong = [
        (service, statement, "refused" if allowed else "allowed")
        for service, statement, allowed in CASES
        if refused(role_urls[service], statement) == allowed
    ]
    assert not wrong, wrong


def test_the_gateway_serves_principals_usage_and_billing_under_its_role(role_urls):
    engine = sa.create_engine(role_urls["gateway"])
    try:
        store = PrincipalStore(engine)
        principal = store.create_principal("tenant", f"acme-{uuid.uuid4().hex[:6]}")
        assert store.issue_key(principal.principal_id).key
        now = datetime.now(UTC)
        assert list_windows(engine, "DAY", now.replace(year=now.year - 1), now) == []
        assert list_statements(engine, "2026-01") == []
        assert asset_report(engine, "2026-01").rows == []
    finally:
        engine.dispose()


def test_the_gateway_reads_the_log_the_audit_service_wrote_under_their_roles(role_urls):
    """What /v1/audit serves, read on the gateway's role from rows the audit role appended and signed."""
    audit, gateway = sa.create_engine(role_urls["audit"]), sa.create_engine(role_urls["gateway"])
    signer = Signer(Ed25519PrivateKey.generate(), "roles.test/audit")
    moment = datetime.now(UTC)
    try:
        AuditStore(audit).append(
            [
                Entry(
                    "operator:alice",
                    "grant.granted",
                    "grant:g-1",
                    None,
                    "s@1",
                    moment,
                    {"tenant": "tenant:acme"},
                ),
                Entry(
                    "operator:alice",
                    "grant.granted",
                    "grant:g-2",
                    None,
                    "s@2",
                    moment,
                    {"tenant": "tenant:x"},
                ),
            ]
        )
        assert AuditStore(audit).checkpoint(signer) is not None
        page = list_entries(gateway, EntryFilter(tenant="tenant:acme", since=moment - timedelta(seconds=1)))
        assert [logged.seq for logged in page.entries] == [0]
        proof = inclusion_json(inclusion_proof(gateway, 1, tenant="tenant:x"))
        assert "entry 1 is in the audit log of size 2" in verify_answer(proof, signer.public_key)
        auditor = PrincipalStore(gateway).create_principal("auditor", f"carol-{uuid.uuid4().hex[:6]}")
        assert auditor.kind.value == "auditor"
    finally:
        audit.dispose()
        gateway.dispose()


RECORD_SCHEMA = {
    "type": "record",
    "name": "Trip",
    "namespace": "roles.test.v1",
    "fields": [
        {"name": "record_id", "type": "string"},
        {"name": "plate", "type": "string"},
        {"name": "district", "type": "string"},
    ],
}


@dataclasses.dataclass
class CommandSide:
    """The catalog and the authorization service as the gateway hosts them, on the gateway's role."""

    settings: Settings
    publisher: EventPublisher
    engine: sa.Engine
    catalog: CatalogService
    authorization: AuthorizationService

    def submit(self) -> str:
        dataset = self.catalog.register("provider:transport", registration(), actor="provider:transport")
        start = datetime.now(UTC)
        spec = RequestSpec(
            dataset.dataset_id, "routing", ("district", "plate"), start, start + timedelta(days=30)
        )
        return self.authorization.submit_request("tenant:acme", spec, "tenant:acme").request_id


@pytest.fixture
def command_side(settings, role_urls, kafka_bootstrap, tmp_path) -> Iterator[CommandSide]:
    """Real broker, and the registry serving on its own role."""
    gateway = sa.create_engine(role_urls["gateway"])
    with (
        ServerThread(create_registry_app(role_urls["registry"], guard=static_guard)) as registry_server,
        isolated_namespace(
            dataclasses.replace(settings, registry_url=registry_server.url), tmp_path
        ) as isolated,
    ):
        publisher = EventPublisher(isolated)
        registry = RegistryClient.for_settings(isolated)
        catalog = CatalogService(gateway, publisher, registry, isolated)
        authorization = AuthorizationService(gateway, publisher, catalog, load_policy(), isolated)
        try:
            yield CommandSide(isolated, publisher, gateway, catalog, authorization)
        finally:
            publisher.close()
            registry.close()
            gateway.dispose()


def test_the_gateway_runs_the_catalogs_and_authorizations_command_side_under_its_role(command_side):
    """Register a dataset, request it, approve, suspend, resume and revoke the grant, every event published
    from the outbox: all as the gateway's role."""
    authorization = command_side.authorization
    request_id = command_side.submit()
    assert authorization.decide(request_id).status == RequestStatus.PENDING_REVIEW  # the worker's step
    grant = authorization.approve(request_id, "operator:alice", Narrowing())
    authorization.suspend(grant.grant_id, "operator:alice", "checking the purpose")
    authorization.resume(grant.grant_id, "operator:alice")
    revoked = authorization.revoke(grant.grant_id, "operator:alice", "purpose ended")
    authorization.relay.publish_all()

    assert revoked.version == 4 and revoked.status.value == "REVOKED"
    assert (
        outbox.pending_count(command_side.engine) == 0
    )  # the gateway took the lease, marked its events sent


def test_the_authorization_worker_decides_under_its_own_role(command_side, role_urls):
    """The worker learns the dataset from pdo.catalog (its own projection, caught up on the miss), never
    from the catalog's table, which its role may not read."""
    request_id = command_side.submit()
    engine = sa.create_engine(role_urls["authorization"])
    codec = AvroCodec(RegistryClient.for_settings(command_side.settings))
    try:
        # As pdo.authorization.app.build_runtime wires it, on the worker's own role.
        datasets = ProjectedDatasets(engine, codec.registry, CatalogCatchUp(command_side.settings, codec))
        worker = AuthorizationService(
            engine, command_side.publisher, datasets, load_policy(), command_side.settings
        )
        assert worker.decide(request_id).status == RequestStatus.PENDING_REVIEW
        with engine.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(sa.text("SELECT count(*) FROM catalog_datasets"))
    finally:
        codec.registry.close()
        engine.dispose()


def registration() -> DatasetRegistration:
    return DatasetRegistration(
        dataset_id=f"roles-{uuid.uuid4().hex[:8]}",
        owner_department="Transport Bureau",
        title="Trips",
        domain=Domain.TRANSPORT,
        classification=Classification.GENERAL,
        openness=Openness.CONDITIONAL,
        record_schema=json.dumps(RECORD_SCHEMA),
        sensitive_fields=(SensitiveField("plate", MaskingRule.KEYED_HASH),),
        price_plan=PricePlan(PriceKind.PER_THOUSAND_RECORDS, Decimal("1.5")),
    )


def test_metering_records_usage_under_its_own_role(role_urls):
    from pdo.metering.ledger import Ledger
    from pdo.metering.testing import usage_fact

    engine = sa.create_engine(role_urls["metering"])
    try:
        result = Ledger(engine).record([usage_fact("d-roles-1", "g-unknown", datetime.now(UTC))])
    finally:
        engine.dispose()
    assert len(result.new_delivery_ids) == 1


def test_a_service_checks_the_schema_is_current_under_its_role(role_urls):
    from pdo.core import db

    db.upgrade(role_urls["catalog"])  # at the newest revision: only reads alembic_version
    assert db.current_revision(role_urls["catalog"]) is not None


def test_applying_twice_changes_nothing_and_matches_the_declaration(settings, role_urls):
    [first] = database_roles.declared_and_granted(settings)
    assert first.differences() == []

    assert database_roles.apply(settings) == role_urls
    [second] = database_roles.declared_and_granted(settings)
    assert second.granted == first.granted
    assert not refused(role_urls["metering"], "SELECT count(*) FROM metering_ledger")  # same password


def test_a_table_declared_later_is_granted_and_an_undeclared_grant_taken_away(settings, role_urls):
    admin = sa.create_engine(settings.database_url)
    role = database_roles.role_name(settings, "catalog")
    with admin.begin() as conn:
        conn.execute(sa.text("CREATE TABLE catalog_extra (id serial PRIMARY KEY, note text)"))
        conn.execute(sa.text(f'GRANT SELECT ON metering_ledger TO "{role}"'))  # by hand, not declared
    own = {**database_roles.privileges("catalog"), "catalog_extra": db_roles.READ_WRITE}
    try:
        db_roles.apply_roles(
            admin, [db_roles.RolePlan(role, database_roles.password(settings, "catalog"), own)]
        )
    finally:
        admin.dispose()

    assert not refused(
        role_urls["catalog"], "INSERT INTO catalog_extra (note) VALUES ('new')"
    )  # + its sequence
    assert refused(role_urls["catalog"], "SELECT count(*) FROM metering_ledger")


def test_roles_are_refused_for_a_table_the_database_lacks(settings):
    admin = sa.create_engine(settings.database_url)
    plan = db_roles.RolePlan(
        f"{settings.database_role_prefix}catalog", "pw-unused", {"catalog_missing": db_roles.READ}
    )
    try:
        with pytest.raises(Exception, match="catalog_missing") as raised:
            db_roles.apply_roles(admin, [plan])
    finally:
        admin.dispose()
    assert "pdo db upgrade" in raised.value.hint


def test_the_cli_applies_and_lists_the_roles_without_printing_a_password(settings, monkeypatch, capsys):
    for variable, value in settings.environment().items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("PDO_METERING_DATABASE_PASSWORD", "metering-password-from-the-deployment")

    assert main(["db", "upgrade"]) == 0
    assert main(["db", "roles", "apply"]) == 0
    applied = capsys.readouterr().out
    assert main(["db", "roles", "list"]) == 0
    listed = capsys.readouterr().out

    assert "PDO_METERING_DATABASE_PASSWORD" in applied and "PDO_CATALOG_DATABASE_URL" in applied
    assert f"{settings.database_role_prefix}gateway" in listed and "metering_ledger" in listed
    secrets = [database_roles.password(settings, service) for service in database_roles.SERVICES]
    assert not [s for s in secrets if s in applied + listed]
    metering = sa.create_engine(
        db_roles.role_url(
            settings.database_url,
            database_roles.role_name(settings, "metering"),
            "metering-password-from-the-deployment",
        )
    )
    with metering.connect() as conn:  # the password the deployment set is the one in force
        assert conn.execute(sa.text("SELECT count(*) FROM metering_windows")).scalar_one() == 0
    metering.dispose()
