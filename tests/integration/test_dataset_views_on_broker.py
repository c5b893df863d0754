"""The ordering rule on the real broker: a service's view of the datasets, fed from pdo.catalog, is caught up
to the topic's end before a dataset counts as unknown — the authorization worker's table (read with its own
consumer) and the sharing worker's in-memory view (through its follower's fence)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from conftest import isolated_namespace

from pdo.authorization.datasets import CatalogCatchUp, ProjectedDatasets
from pdo.authorization.models import RequestSpec, RequestStatus
from pdo.authorization.policy import load_policy
from pdo.authorization.service import AuthorizationService
from pdo.authorization.testing import register_traffic_dataset
from pdo.catalog.service import CatalogService
from pdo.core import db, topics
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.errors import NotFound
from pdo.core.events import EventPublisher, utc_now
from pdo.core.registry_client import RegistryClient
from pdo.core.topics import TopicId
from pdo.sharing.app import ControlFollower
from pdo.sharing.datasets import DatasetView, know_datasets
from pdo.sharing.grants import GrantBook

pytestmark = pytest.mark.integration

TENANT = "tenant:acme-logistics"
WAIT_S = 60


@pytest.fixture
def settings(kafka_bootstrap, registry_url, database_url, tmp_path) -> Iterator[Settings]:
    base = dataclasses.replace(Settings.from_env(), registry_url=registry_url, database_url=database_url)
    with isolated_namespace(base, tmp_path) as configured:
        db.upgrade(configured.database_url)
        yield configured


@pytest.fixture
def catalog(settings) -> Iterator[CatalogService]:
    """The catalog's command side, as the gateway hosts it: it writes its table and publishes pdo.catalog."""
    engine = db.make_engine(settings.database_url)
    publisher = EventPublisher(settings)
    yield CatalogService(engine, publisher, publisher.codec.registry, settings)
    publisher.close()
    engine.dispose()


@pytest.fixture
def codec(settings) -> Iterator[AvroCodec]:
    codec = AvroCodec(RegistryClient.for_settings(settings))
    yield codec
    codec.registry.close()


def request_for(dataset_id: str) -> RequestSpec:
    start = utc_now()
    return RequestSpec(
        dataset_id=dataset_id,
        purpose="congestion forecasting",
        fields=("district", "speed_kmh"),
        valid_from=start,
        valid_until=start + timedelta(days=30),
        expected_daily_records=1000,
    )


def test_the_authorization_view_catches_up_with_pdo_catalog_before_a_dataset_is_unknown(
    settings, catalog, codec
):
    engine = db.make_engine(settings.database_url)
    try:
        view = ProjectedDatasets(engine, codec.registry, CatalogCatchUp(settings, codec))
        first = register_traffic_dataset(catalog)
        assert view.held(first) is None  # on pdo.catalog, not yet in the view: it is behind
        assert view.get(first).dataset_id == first
        progress = view.progress(topics.name(TopicId.CATALOG, settings))
        assert sum(progress.values()) == 1  # one event read, and remembered

        # The gateway (its lookup: the catalog's table) accepts a request for a dataset registered just now;
        # the worker (its lookup: its view, behind again) decides it as approved, not "dataset-unavailable".
        second = register_traffic_dataset(catalog)
        gateway = AuthorizationService(engine, catalog.publisher, catalog, load_policy(), settings)
        worker = AuthorizationService(engine, catalog.publisher, view, load_policy(), settings)
        request = gateway.submit_request(TENANT, request_for(second), TENANT)
        assert view.held(second) is None
        assert worker.decide(request.request_id).status == RequestStatus.APPROVED
        assert sum(view.progress(topics.name(TopicId.CATALOG, settings)).values()) == 2

        with pytest.raises(NotFound):
            view.get("never-registered")
    finally:
        engine.dispose()


class GatedView(DatasetView):
    """A view whose follower cannot apply anything until the gate opens: a view that is behind."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def apply_message(self, codec, value, where):
        self.gate.wait(WAIT_S)  # in the follower's thread; bounded, so a failing test cannot hang
        return super().apply_message(codec, value, where)


def test_the_sharing_view_is_caught_up_by_the_fence_before_a_dataset_is_unknown(settings, catalog, codec):
    view = GatedView()
    follower = ControlFollower(settings, codec, GrantBook(), view, lambda _grants: None, lambda *_: None)

    async def scenario() -> tuple[str, bool]:
        following = asyncio.create_task(follower.run())
        try:
            dataset_id = await asyncio.to_thread(register_traffic_dataset, catalog)
            behind = dataset_id not in view

            async def catch_up() -> None:
                view.gate.set()  # the follower may apply from now on; the fence waits until it has
                await follower.catalog_fence()

            await asyncio.wait_for(know_datasets(view, [dataset_id], catch_up), WAIT_S)
            return dataset_id, behind
        finally:
            view.gate.set()
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)

    dataset_id, behind = asyncio.run(scenario())
    assert behind
    assert view.get(dataset_id).dataset_id == dataset_id
