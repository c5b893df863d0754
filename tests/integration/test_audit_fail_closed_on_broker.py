"""Fail closed on the real broker and PostgreSQL: with the audit worker (`pdo audit-worker`, a process) gone
for longer than PDO_AUDIT_FAIL_CLOSED_AFTER_S, an operator's approval through the gateway's HTTP API answers
503 and changes nothing (the request stays pending, no grant, no outbox row), while a revocation goes through;
once the worker is back the approval goes through, and the revocation made meanwhile is in the audit log."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

# The audit worker's test's fixtures, here on this module's settings (PostgreSQL, the short limit).
from audit_support import signing_key
from conftest import ServerThread, fresh_postgres_database
from test_audit_worker_on_broker import engine, publisher, worker  # noqa: F401

from pdo.audit.public import appendability
from pdo.audit.tables import entries as audit_entries
from pdo.authorization import tables as authz
from pdo.authorization.public import AuthorizationService, RequestSpec, RequestStatus, load_policy
from pdo.authorization.testing import create_topics, delete_topics, isolated_home, register_traffic_dataset
from pdo.catalog.public import CatalogService
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.events import utc_now
from pdo.core.vocabulary import Openness
from pdo.gateway.app import create_app
from pdo.gateway.principals import PrincipalStore

pytestmark = pytest.mark.integration

LIMIT_S = 3
WAIT_S = 90
TENANT = "tenant:acme"


@pytest.fixture
def settings(kafka_bootstrap, registry_url, postgres_url, tmp_path) -> Iterator[Settings]:
    database = fresh_postgres_database(postgres_url)
    tag = f"t-{uuid.uuid4().hex[:10]}"
    configured = dataclasses.replace(
        Settings.from_env(),
        registry_url=registry_url,
        database_url=next(database),
        home=isolated_home(tmp_path, tag),
        run_dir=tmp_path / "run",
        audit_signing_key_file=str(signing_key(tmp_path)),
        audit_fail_closed_after_s=LIMIT_S,
    )
    names = create_topics(configured)
    db.upgrade(configured.database_url)
    yield configured
    delete_topics(configured, names)
    next(database, None)


def until(what: str, check: Callable[[], object]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S} s"
        time.sleep(0.25)


def appendable(database: sa.Engine) -> bool:
    return appendability(database, LIMIT_S).appendable


def grants_and_outbox(database: sa.Engine) -> tuple[int, int]:
    with database.connect() as connection:
        return (
            connection.execute(sa.select(sa.func.count()).select_from(authz.grants)).scalar_one(),
            connection.execute(sa.select(sa.func.count()).select_from(authz.outbox)).scalar_one(),
        )


def logged(database: sa.Engine, action: str, subject: str) -> bool:
    query = sa.select(audit_entries.c.seq).where(
        audit_entries.c.action == action, audit_entries.c.subject == subject
    )
    with database.connect() as connection:
        return connection.execute(query).first() is not None


def test_approvals_wait_for_the_audit_log_and_revocations_do_not(settings, engine, publisher, worker):  # noqa: F811
    group = f"audit-{uuid.uuid4().hex[:8]}"
    worker.start(group)
    catalog = CatalogService(engine, publisher, publisher.codec.registry, settings)
    service = AuthorizationService(engine, publisher, catalog, load_policy(), settings)
    principals = PrincipalStore(engine)
    operator_key = principals.issue_key(principals.create_principal("operator", "alice").principal_id).key
    operator = {"Authorization": f"Bearer {operator_key}"}

    def request(dataset_id: str) -> str:
        start = utc_now()
        spec = RequestSpec(
            dataset_id, "congestion forecasting", ("district", "speed_kmh"), start, start + timedelta(days=30)
        )
        submitted = service.submit_request(TENANT, spec, TENANT).request_id
        service.decide(submitted)  # the worker's step: the open dataset's is approved, the other referred
        return submitted

    until("liveness mark of the running audit worker", lambda: appendable(engine))
    grant_id = service.get_request(request(register_traffic_dataset(catalog))).grant_id
    pending = request(register_traffic_dataset(catalog, openness=Openness.CONDITIONAL))
    assert grant_id is not None
    assert service.get_request(pending).status == RequestStatus.PENDING_REVIEW

    worker.stop()  # the audit log takes no entries any more
    until("staleness of the audit log", lambda: not appendable(engine))
    before = grants_and_outbox(engine)
    app = create_app(settings, catalog, service, engine, dead_letters=lambda limit: [])
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        refused = http.post(f"/v1/requests/{pending}/approve", json={}, headers=operator)
        after_refusal = grants_and_outbox(engine)
        revoked = http.post(f"/v1/grants/{grant_id}/revoke", json={"reason": "cut off"}, headers=operator)

        worker.start(group)  # the audit log is back
        until("liveness mark of the restarted audit worker", lambda: appendable(engine))
        approved = http.post(f"/v1/requests/{pending}/approve", json={}, headers=operator)

    assert refused.status_code == 503, refused.text
    assert "the audit log has not been appendable for" in refused.json()["message"]
    assert after_refusal == before
    assert revoked.status_code == 200 and revoked.json()["status"] == "REVOKED", revoked.text
    assert approved.status_code == 201 and approved.json()["status"] == "ACTIVE", approved.text
    # The revocation made while the log was down is recorded from the topic once the worker is back.
    until("revocation in the audit log", lambda: logged(engine, "grant.revoked", f"grant:{grant_id}"))
