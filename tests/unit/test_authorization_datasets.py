"""The authorization worker's own view of the catalog, and the ordering rule: a view that is behind is caught
up to the end of pdo.catalog before a dataset counts as unknown."""

from __future__ import annotations

from dataclasses import replace

import pytest
from test_authorization_service import START, TENANT, spec

from pdo.authorization import records
from pdo.authorization.agents import AuthorizationHandlers
from pdo.authorization.datasets import ProjectedDatasets
from pdo.authorization.models import RequestStatus
from pdo.authorization.policy import load_policy
from pdo.authorization.service import AuthorizationService
from pdo.authorization.testing import (
    TRAFFIC_FLOW_SCHEMA,
    Clock,
    InMemoryCatalog,
    RecordingPublisher,
    traffic_dataset,
)
from pdo.catalog import mapping
from pdo.catalog.projection import Position
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.deadletters import SourceMessage
from pdo.core.errors import NotFound
from pdo.core.names import Event

CATALOG = "pdo.catalog"


class SchemaById:
    """The registry's schema-by-id lookup: every id is TrafficFlow."""

    def schema_by_id(self, _schema_id: int) -> str:
        return TRAFFIC_FLOW_SCHEMA


class BehindCatalog:
    """pdo.catalog as a list of events; the view has read none of them until it is asked to catch up."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []
        self.catch_ups = 0

    def publish(self, schema_name: str, value: dict) -> None:
        self.events.append((schema_name, value))

    def __call__(self, view: ProjectedDatasets) -> None:
        self.catch_ups += 1
        start = view.progress(CATALOG).get(0, 0)
        for offset, (schema_name, value) in enumerate(self.events[start:], start):
            view.apply(schema_name, value, Position(CATALOG, 0, offset))


def registered(dataset) -> dict:
    return mapping.registered_event(records.head("e-reg", START, dataset.provider_id), dataset)


@pytest.fixture
def engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'pdo.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def topic() -> BehindCatalog:
    return BehindCatalog()


@pytest.fixture
def view(engine, topic) -> ProjectedDatasets:
    return ProjectedDatasets(engine, SchemaById(), topic)


def test_a_dataset_the_view_has_not_read_yet_is_found_after_catching_up(view, topic):
    topic.publish(Event.DATASET_REGISTERED, registered(traffic_dataset("late-traffic")))
    assert view.held("late-traffic") is None  # the view is behind the topic
    assert view.get("late-traffic").dataset_id == "late-traffic"
    assert topic.catch_ups == 1
    assert view.progress(CATALOG) == {0: 1}


def test_the_view_keeps_a_derived_datasets_lineage(view, topic):
    derived = replace(traffic_dataset("traffic-index"), derived_from=("open-traffic",))
    topic.publish(Event.DATASET_REGISTERED, registered(derived))
    assert view.get("traffic-index").derived_from == ("open-traffic",)


def test_a_dataset_is_unknown_only_after_the_view_caught_up(view, topic):
    with pytest.raises(NotFound):
        view.get("never-registered")
    assert topic.catch_ups == 1


def test_a_dataset_the_view_holds_needs_no_catching_up(view, topic):
    topic.publish(Event.DATASET_REGISTERED, registered(traffic_dataset("open-traffic")))
    view.catch_up()
    view.get("open-traffic")
    assert topic.catch_ups == 1


def test_an_older_event_read_again_does_not_roll_the_view_back(view):
    dataset = traffic_dataset("open-traffic")
    newer = replace(dataset, version=2, title="Traffic v2")
    head = records.head("e-upd", START, dataset.provider_id)
    assert view.apply(
        Event.DATASET_UPDATED, mapping.updated_event(head, dataset, newer), Position(CATALOG, 0, 5)
    )
    assert not view.apply(Event.DATASET_REGISTERED, registered(dataset), Position(CATALOG, 0, 2))
    assert view.held("open-traffic").title == "Traffic v2"
    assert view.progress(CATALOG) == {0: 6}  # progress moves only forward


def test_a_retirement_without_snapshot_retires_what_the_view_holds(view):
    view.apply(Event.DATASET_REGISTERED, registered(traffic_dataset("open-traffic")), None)
    old_style = {**records.head("e-ret", START, "provider:x"), "dataset_id": "open-traffic", "reason": "x"}
    assert view.apply(Event.DATASET_RETIRED, {**old_style, "dataset": None}, None)
    assert view.held("open-traffic").retired


def worker_service(engine, datasets, publisher) -> AuthorizationService:
    return AuthorizationService(
        engine, publisher, datasets, load_policy(), Settings.from_env(), clock=Clock(START)
    )


def test_the_worker_decides_a_request_for_a_dataset_its_projection_has_not_seen_yet(engine, view, topic):
    """The registration is on pdo.catalog but not yet in the worker's projection when the request comes."""
    publisher = RecordingPublisher()
    service = worker_service(engine, view, publisher)
    topic.publish(Event.DATASET_REGISTERED, registered(traffic_dataset("open-traffic")))
    decided = service.decide(service.submit_request(TENANT, spec(), TENANT).request_id)
    assert decided.status == RequestStatus.APPROVED
    assert topic.catch_ups == 1


def test_a_request_for_a_dataset_still_unknown_after_catching_up_is_denied(engine, tmp_path, view, topic):
    """The gateway accepted the request (its catalog knew the dataset); pdo.catalog never carried it."""
    gateway_db = f"sqlite:///{tmp_path / 'gateway.db'}"
    db.upgrade(gateway_db)
    gateway_engine = db.make_engine(gateway_db)
    gateway_catalog = InMemoryCatalog(traffic_dataset("nowhere"))
    gateway = worker_service(gateway_engine, gateway_catalog, RecordingPublisher())
    gateway.submit_request(TENANT, spec(dataset_id="nowhere"), TENANT)
    (submitted,) = gateway.publisher.of(records.SUBMITTED)
    gateway_engine.dispose()
    service = worker_service(engine, view, RecordingPublisher())
    service.record_submitted(submitted)
    decided = service.decide(submitted["request_id"])
    assert (decided.status, decided.decided_by_rule) == (RequestStatus.DENIED, "dataset-unavailable")
    assert topic.catch_ups == 1


def test_the_catalog_agent_feeds_the_projection_in_stream_order(engine, view):
    class Codec:
        registry = SchemaById()

        def decode(self, data):
            from pdo.core.codec import Decoded

            return Decoded(1, Event.DATASET_REGISTERED, registered(traffic_dataset(data.decode())))

    publisher = RecordingPublisher()
    handlers = AuthorizationHandlers(worker_service(engine, view, publisher), publisher, Codec(), view)
    handlers.on_catalog(SourceMessage(CATALOG, 0, 3, b"fed-traffic", b"fed-traffic", ()))
    assert view.held("fed-traffic").dataset_id == "fed-traffic"
    assert view.progress(CATALOG) == {0: 4}
