"""Aggregate-only grants in the authorization service: a request of kind AGGREGATE carries its aggregate spec
into the grant, its events and its rows; the policy decides on the kind (aggregates of IMPORTANT, conditional
data are approved where rows wait for review); a spec that would publish a raw value is refused; and the
sharing worker's grant book never delivers rows under an AGGREGATE grant."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from pdo.authorization import records
from pdo.authorization.public import AuthorizationService, RequestSpec, RequestStatus, load_policy
from pdo.authorization.testing import Clock, RecordingPublisher, sample_catalog, traffic_dataset
from pdo.core import db
from pdo.core.config import Settings
from pdo.core.errors import InvalidInput
from pdo.core.names import Event
from pdo.core.vocabulary import (
    AggregateFunction,
    AggregateSpec,
    Classification,
    GrantKind,
    Openness,
    grant_kind_from_avro,
)
from pdo.sharing.grants import GrantBook

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TENANT = "tenant:acme-logistics"
SPEED = AggregateSpec(
    window_seconds=300,
    group_by=("district",),
    numeric_fields=("speed_kmh",),
    functions=(AggregateFunction.COUNT, AggregateFunction.MEAN, AggregateFunction.MAX),
)


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def service(tmp_path, publisher):
    url = f"sqlite:///{tmp_path / 'pdo.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    catalog = sample_catalog()
    catalog.add(
        traffic_dataset(
            "important-traffic", classification=Classification.IMPORTANT, openness=Openness.CONDITIONAL
        )
    )
    yield AuthorizationService(
        engine, publisher, catalog, load_policy(), Settings.from_env(), clock=Clock(START)
    )
    engine.dispose()


def aggregate_spec(dataset_id="important-traffic", **changes) -> RequestSpec:
    base = RequestSpec(
        dataset_id=dataset_id,
        purpose="congestion statistics per district",
        fields=("district", "speed_kmh"),
        valid_from=START,
        valid_until=START + timedelta(days=30),
        kind=GrantKind.AGGREGATE,
        aggregate=SPEED,
    )
    return replace(base, **changes)


def test_aggregates_of_important_data_are_approved_where_rows_wait_for_review(service, publisher):
    rows = service.submit_request(
        TENANT, replace(aggregate_spec(), kind=GrantKind.ROWS, aggregate=None), TENANT
    )
    assert service.decide(rows.request_id).status == RequestStatus.PENDING_REVIEW

    request = service.submit_request(TENANT, aggregate_spec(), TENANT)
    decided = service.decide(request.request_id)
    assert (decided.status, decided.decided_by_rule) == (RequestStatus.APPROVED, "auto-approve-aggregates")
    grant = service.get_grant(decided.grant_id)
    assert (grant.kind, grant.aggregate) == (GrantKind.AGGREGATE, SPEED)
    # The kind and the spec travel in the request's and the grant's events and come back from SQL.
    submitted = [e for e in publisher.of(records.SUBMITTED) if e["request_id"] == request.request_id][0]
    assert submitted["kind"] == "AGGREGATE" and submitted["aggregate"]["functions"] == [
        "COUNT",
        "MEAN",
        "MAX",
    ]
    (granted,) = publisher.of(records.GRANTED)
    assert granted["kind"] == "AGGREGATE" and granted["aggregate"]["window_seconds"] == 300
    assert records.grant_from_granted(granted).aggregate == SPEED
    assert service.get_request(request.request_id).aggregate == SPEED


def test_a_private_count_carries_its_epsilon_into_the_grant(service, publisher):
    private = replace(SPEED, functions=(AggregateFunction.COUNT,), epsilon=0.5)
    grant_id = service.decide(
        service.submit_request(TENANT, aggregate_spec(aggregate=private), TENANT).request_id
    ).grant_id
    assert service.get_grant(grant_id).aggregate.epsilon == 0.5
    (granted,) = publisher.of(records.GRANTED)
    assert granted["aggregate"]["epsilon"] == 0.5


def test_core_data_is_denied_to_aggregates_too(service):
    request = service.submit_request(TENANT, aggregate_spec("core-traffic"), TENANT)
    assert service.decide(request.request_id).decided_by_rule == "deny-core-data"


def test_a_suspension_snapshot_keeps_the_kind(service, publisher):
    grant_id = service.decide(service.submit_request(TENANT, aggregate_spec(), TENANT).request_id).grant_id
    service.suspend(grant_id, "operator:alice", "checking the purpose")
    (suspended,) = publisher.of(records.SUSPENDED)
    assert suspended["grant"]["kind"] == "AGGREGATE" and suspended["grant"]["aggregate"]["group_by"] == [
        "district"
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"aggregate": None}, "needs an aggregate spec"),
        ({"kind": GrantKind.ROWS}, "aggregate spec is given for a ROWS request"),
        ({"aggregate": replace(SPEED, group_by=("plate_number",))}, "does not ask for"),
        (
            {
                "fields": ("plate_number", "speed_kmh"),
                "aggregate": replace(SPEED, group_by=("plate_number",)),
            },
            "cannot group by the sensitive field(s) plate_number",
        ),
        ({"aggregate": replace(SPEED, numeric_fields=("district",))}, "not numbers: district"),
        ({"aggregate": replace(SPEED, window_seconds=0)}, "window_seconds must be"),
        ({"aggregate": replace(SPEED, functions=())}, "functions must name each aggregate once"),
        (
            {"aggregate": replace(SPEED, numeric_fields=(), functions=(AggregateFunction.SUM,))},
            "SUM need numeric_fields",
        ),
        ({"aggregate": replace(SPEED, epsilon=0.5)}, "differential privacy covers counts only"),
        (
            {"aggregate": replace(SPEED, functions=(AggregateFunction.COUNT,), epsilon=0.0)},
            "epsilon must be above 0",
        ),
    ],
)
def test_an_aggregate_that_would_publish_a_raw_value_or_cannot_be_computed_is_refused(
    service, changes, message
):
    with pytest.raises(InvalidInput) as refused:
        service.submit_request(TENANT, aggregate_spec(**changes), TENANT)
    assert message in refused.value.message


def test_an_unknown_kind_reads_as_aggregate_and_an_old_event_as_rows():
    assert grant_kind_from_avro(None) is GrantKind.ROWS
    assert grant_kind_from_avro("MODEL") is GrantKind.AGGREGATE


def test_sharing_delivers_no_row_under_an_aggregate_grant(service, publisher):
    rows_grant = service.decide(
        service.submit_request(
            TENANT, replace(aggregate_spec("open-traffic"), kind=GrantKind.ROWS, aggregate=None), TENANT
        ).request_id
    ).grant_id
    aggregate_grant = service.decide(
        service.submit_request(TENANT, aggregate_spec("open-traffic"), TENANT).request_id
    ).grant_id
    book = GrantBook()
    for event in publisher.events:
        if event.schema_name.startswith("pdo.authorizations"):
            book.apply(event.schema_name, event.value)
    service.suspend(aggregate_grant, "operator:alice", "a look")
    service.resume(aggregate_grant, "operator:alice")
    for event in publisher.of(Event.AUTHORIZATION_RESUMED):
        assert book.apply(Event.AUTHORIZATION_RESUMED, event) is None
    assert [g.grant_id for g in book.active_for("open-traffic", START + timedelta(hours=1))] == [rows_grant]
