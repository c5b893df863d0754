# ruff: noqa: F811 - test parameters name the fixtures imported from the support modules
"""Metering's projection on the real broker: the ordering rule (a usage fact whose grant event is on
pdo.authorizations but not yet in metering's projection is billed after the worker's catch-up, not set aside),
and a `pdo metering worker` filling its grants and datasets from the authorization and catalog events."""

from __future__ import annotations

import time
import uuid

import pytest
import sqlalchemy as sa
from metering_support import pdo_workers  # noqa: F401
from sharing_support import ACME, db_url, grant, platform, register_dataset, settings  # noqa: F401

from pdo.authorization.testing import register_traffic_dataset
from pdo.core import db
from pdo.core.events import utc_now
from pdo.core.months import period_of
from pdo.metering import public
from pdo.metering import tables as t
from pdo.metering.app import build_runtime
from pdo.metering.ledger import UNKNOWN_GRANT
from pdo.metering.projection import known_grants
from pdo.metering.testing import usage_fact

pytestmark = pytest.mark.integration

WAIT_S = 90


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_fact_whose_grant_event_the_projection_has_not_applied_is_billed(settings, platform) -> None:
    dataset_id = register_dataset(platform["catalog"])
    grant_id = grant(platform["service"], ACME, dataset_id, ("record_id",))
    runtime = build_runtime(settings)  # no agent runs: the projection is behind pdo.authorizations
    try:
        now = utc_now()
        fact = usage_fact("d-" + uuid.uuid4().hex, grant_id, now, tenant_id=ACME, dataset_id=dataset_id)
        ghost = usage_fact(
            "d-" + uuid.uuid4().hex, "g-never-granted", now, tenant_id=ACME, dataset_id=dataset_id
        )
        assert known_grants(runtime.engine, {grant_id}) == set()

        assert runtime.handler.know_grants([fact, ghost]) is True
        result = runtime.handler.record([fact, ghost])

        billed = {usage.grant_id: usage.billing_period for usage in result.billed}
        assert billed == {grant_id: period_of(now)}
        [set_aside] = result.set_aside
        assert set_aside.grant_id == "g-never-granted"
        assert set_aside.set_aside_reason.startswith(f"{UNKNOWN_GRANT}: ")
    finally:
        runtime.close()


def test_the_worker_projects_grants_and_datasets_from_their_events(settings, platform, pdo_workers) -> None:
    dataset_id = register_dataset(platform["catalog"])
    product_id = register_traffic_dataset(platform["catalog"], derived_from=(dataset_id,))
    grant_id = grant(platform["service"], ACME, dataset_id, ("record_id",))
    worker = pdo_workers("metering", "worker", "--group", f"metering-{uuid.uuid4().hex[:8]}")
    engine = db.make_engine(settings.database_url)
    try:
        deadline = time.monotonic() + WAIT_S
        names: dict[str, tuple[str, str]] = {}
        projected = {dataset_id, product_id}
        while time.monotonic() < deadline and not (
            projected <= set(names) and known_grants(engine, {grant_id})
        ):
            assert worker.poll() is None, f"the metering worker exited with {worker.returncode}"
            time.sleep(0.2)
            with engine.connect() as conn:
                names = public.dataset_names(conn)
        with engine.connect() as conn:
            row = conn.execute(sa.select(t.grants).where(t.grants.c.grant_id == grant_id)).one()
            lineage = public.dataset_lineage(conn)
        assert (row.tenant_id, row.dataset_id, row.version) == (ACME, dataset_id, 1)
        assert names[dataset_id][1].startswith("provider:")
        # the lineage billing attributes revenue by, from the catalog's event
        assert lineage.get(product_id) == (dataset_id,) and dataset_id not in lineage
    finally:
        engine.dispose()
