"""Stand-ins for tests of the authorization service and its callers (the gateway): no broker, no catalog.

`RecordingPublisher` encodes every event with its real Avro schema (so a value that would not fit the
topic fails here too) and keeps it; `InMemoryCatalog` answers `get` like CatalogService does.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro

from pdo.authorization.policy import Policy, load_policy
from pdo.authorization.service import AuthorizationService
from pdo.catalog.public import Dataset, DatasetRegistration
from pdo.core import db, schemas, topics
from pdo.core.config import Settings
from pdo.core.errors import NotFound, Unavailable
from pdo.core.topics import TopicId
from pdo.core.vocabulary import (
    Classification,
    Domain,
    MaskingRule,
    Openness,
    PriceKind,
    PricePlan,
    SensitiveField,
)

TRAFFIC_FLOW_SCHEMA = (schemas.schemas_root() / "datasets" / "TrafficFlow.avsc").read_text(encoding="utf-8")


@dataclass(frozen=True)
class PublishedEvent:
    topic: TopicId
    schema_name: str
    value: dict[str, Any]
    key: str


class RecordingPublisher:
    """An EventPublisher that keeps events in a list; `fail_next` makes the next publish Unavailable, `down`
    every publish until it is set back to False."""

    def __init__(self) -> None:
        self.events: list[PublishedEvent] = []
        self.fail_next = False
        self.down = False
        self._parsed: dict[str, Any] = {}

    def publish(
        self, topic: TopicId, schema_name: str, value: dict[str, Any], key: str | None = None, **_params: str
    ) -> tuple[str, int, int]:
        spec = topics.spec(topic)
        if schema_name not in spec.values:
            raise ValueError(f"{schema_name} is not declared on {spec.name}")
        if self.fail_next or self.down:
            self.fail_next = False
            raise Unavailable(f"could not write to {spec.name}: broker down (test)")
        fastavro.schemaless_writer(io.BytesIO(), self._schema(schema_name), value)
        self.events.append(
            PublishedEvent(topic, schema_name, value, str(value[spec.key] if key is None else key))
        )
        return spec.name, 0, len(self.events) - 1

    def of(self, schema_name: str) -> list[dict[str, Any]]:
        return [event.value for event in self.events if event.schema_name == schema_name]

    def decoded(self) -> list[tuple[str, dict[str, Any]]]:
        """(schema name, value) of every event as a consumer would read it: through Avro and back."""
        out: list[tuple[str, Any]] = []
        for event in self.events:
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, self._schema(event.schema_name), event.value)
            buffer.seek(0)
            out.append(
                (event.schema_name, fastavro.schemaless_reader(buffer, self._schema(event.schema_name), None))
            )
        return out

    def close(self) -> None:
        pass

    def _schema(self, schema_name: str) -> Any:
        if schema_name not in self._parsed:
            self._parsed[schema_name] = fastavro.parse_schema(json.loads(str(schemas.get(schema_name))))
        return self._parsed[schema_name]


def approved_grant(service: AuthorizationService, request_id: str, operator: str = "operator:alice") -> str:
    """The grant of a SUBMITTED request: the policy decides first (as the worker would), and an operator
    approves it if the policy sent it to review; AssertionError when the policy denies it."""
    decided = service.decide(request_id)
    if decided.status.value == "PENDING_REVIEW":
        return service.approve(request_id, operator).grant_id
    assert decided.grant_id is not None, (
        f"request {request_id} was {decided.status}: {decided.decision_reason}"
    )
    return decided.grant_id


class InMemoryCatalog:
    def __init__(self, *datasets: Dataset) -> None:
        self.datasets = {dataset.dataset_id: dataset for dataset in datasets}

    def add(self, dataset: Dataset) -> Dataset:
        self.datasets[dataset.dataset_id] = dataset
        return dataset

    def get(self, dataset_id: str) -> Dataset:
        try:
            return self.datasets[dataset_id]
        except KeyError:
            raise NotFound(f"no dataset {dataset_id!r} in the catalog") from None


def traffic_dataset(
    dataset_id: str = "traffic-flow",
    classification: Classification = Classification.GENERAL,
    openness: Openness = Openness.OPEN,
    price: PricePlan | None = None,
    **changes: Any,
) -> Dataset:
    """The TrafficFlow dataset: plate_number and driver_phone sensitive, priced per thousand records."""
    dataset = Dataset(
        dataset_id=dataset_id,
        provider_id="provider:transport-bureau",
        owner_department="Transport Bureau",
        title="Traffic flow at checkpoints",
        domain=Domain.TRANSPORT,
        classification=classification,
        openness=openness,
        schema_subject=f"pdo.feed.{dataset_id}-pdo.datasets.v1.TrafficFlow",
        schema_id=1,
        record_schema=TRAFFIC_FLOW_SCHEMA,
        price_plan=price or PricePlan(PriceKind.PER_THOUSAND_RECORDS, Decimal("2.50")),
        sensitive_fields=(
            SensitiveField("plate_number", MaskingRule.KEEP_FIRST_LAST),
            SensitiveField("driver_phone", MaskingRule.MASK_MIDDLE_DIGITS),
        ),
    )
    return replace(dataset, **changes)


def register_traffic_dataset(catalog: Any, title: str = "Traffic flow", **changes: Any) -> str:
    """Register a fresh TrafficFlow dataset (as traffic_dataset describes it, with `changes`) through a
    CatalogService; its id."""
    template = traffic_dataset(dataset_id=f"traffic-{uuid.uuid4().hex[:8]}", **changes)
    catalog.register(
        template.provider_id,
        DatasetRegistration(
            dataset_id=template.dataset_id,
            owner_department=template.owner_department,
            title=title,
            domain=template.domain,
            classification=template.classification,
            openness=template.openness,
            record_schema=template.record_schema,
            sensitive_fields=template.sensitive_fields,
            price_plan=template.price_plan,
            derived_from=template.derived_from,
        ),
        template.provider_id,
    )
    return template.dataset_id


def sample_catalog() -> InMemoryCatalog:
    """One TrafficFlow dataset for each policy path: open, conditional, not open, core, retired."""
    return InMemoryCatalog(
        traffic_dataset("open-traffic"),
        traffic_dataset("conditional-traffic", openness=Openness.CONDITIONAL),
        traffic_dataset("closed-traffic", openness=Openness.NOT_OPEN),
        traffic_dataset("core-traffic", classification=Classification.CORE),
        traffic_dataset("old-traffic", retired=True),
    )


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Harness:
    service: AuthorizationService
    publisher: RecordingPublisher
    catalog: InMemoryCatalog
    clock: Clock
    engine: Any


@contextmanager
def sqlite_harness(folder: Path, start: datetime, policy: Policy | None = None) -> Iterator[Harness]:
    """The service on a migrated SQLite database in `folder`, with the sample catalog and a hand clock."""
    url = f"sqlite:///{folder / 'pdo.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    publisher, catalog, clock = RecordingPublisher(), sample_catalog(), Clock(start)
    # RecordingPublisher stands in for EventPublisher (it records instead of sending): not a subclass.
    service = AuthorizationService(
        engine,
        publisher,  # type: ignore[arg-type]
        catalog,
        policy or load_policy(),
        Settings.from_env(),
        clock,
    )
    try:
        yield Harness(service, publisher, catalog, clock, engine)
    finally:
        engine.dispose()


def isolated_home(folder: Path, tag: str) -> Path:
    """A PDO_HOME whose topics are the project's with `pdo.` renamed `pdo.<tag>.`, sharing its schemas and
    deploy/ (the broker's jars, Prometheus rules).

    Tests on the shared broker publish and consume there, so they never read another run's events (whose
    schema ids belong to another registry) and a fresh consumer group starts from an empty topic.
    """
    project = schemas.schemas_root().parent
    home = folder / "home"
    (home / "topics").mkdir(parents=True)
    for shared in ("schemas", "deploy"):
        (home / shared).symlink_to(project / shared, target_is_directory=True)
    (home / "topics" / "principals").symlink_to(project / "topics" / "principals", target_is_directory=True)
    (home / "topics" / "internal").symlink_to(project / "topics" / "internal", target_is_directory=True)
    for source in sorted((project / "topics").glob("*.yaml")):
        text = source.read_text(encoding="utf-8")
        (home / "topics" / source.name).write_text(
            text.replace("name: pdo.", f"name: pdo.{tag}."), encoding="utf-8"
        )
    return home


def create_topics(settings: Settings) -> list[str]:
    """Create the home's non-templated topics on the broker (idempotent); their names."""
    from pdo.core.kafka import admin_client

    specs = [spec for spec in topics.declared(settings).values() if not spec.templated]
    with admin_client(settings) as admin:
        topics.apply(admin, specs)
    return [spec.name for spec in specs]


def delete_topics(settings: Settings, names: list[str]) -> None:
    from pdo.core.kafka import admin_client

    with admin_client(settings) as admin:
        admin.delete_topics(names)
