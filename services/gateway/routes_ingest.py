"""POST /v1/datasets/{dataset_id}/records: a provider publishes a batch of records to its dataset's feed.

For government systems without a Kafka client. Each record is checked against the dataset's registered
schema as the Python publisher checks it (pdo.publishing): those that fit are sent and acknowledged by
the broker before the answer; those that do not are listed by index and reason. 200 when at least one
record was accepted; 422 when none was (the same body, inside the gateway's refusal shape).

A record whose record_id was sent to the feed within PDO_RECORD_ID_WINDOW_S is not written again: it is
listed in `duplicates` (pdo.publishing.record_ids). A call may carry an `Idempotency-Key`: the first complete
answer is kept and a retry with the same key and body gets it back, writing nothing (pdo.gateway.idempotency).

Every record is counted in pdo_gateway_ingested_records_total{dataset, outcome}. The dataset label is
bounded: only datasets in the catalog get this far (an unknown id is a 404 before any count).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, Field

from pdo.catalog.public import Dataset
from pdo.core.errors import Forbidden
from pdo.gateway import idempotency
from pdo.gateway.auth import Provider
from pdo.gateway.deps import DatasetId, catalog
from pdo.gateway.errors import printable, route_of
from pdo.gateway.models import ERROR_RESPONSES, Body
from pdo.gateway.principals import Principal
from pdo.publishing.public import PublishReport

MAX_BATCH = 1000

router = APIRouter(prefix="/v1/datasets", responses=ERROR_RESPONSES, tags=["publishing"])


class RecordsIn(Body):
    records: Annotated[
        list[Any],
        Field(
            min_length=1,
            max_length=MAX_BATCH,
            description=(
                "records as JSON objects of the dataset's schema: timestamps as ISO 8601 text with an "
                "offset (or epoch milliseconds), dates as YYYY-MM-DD, decimals as text, bytes as base64"
            ),
        ),
    ]


class RejectedRecord(BaseModel):
    index: int = Field(description="position of the record in `records`, from 0")
    reason: str = Field(
        description="the field and what was wrong, e.g. \"pm25: expected double, got 'high'\""
    )


class IngestOut(BaseModel):
    accepted: int = Field(description="records written to the feed and acknowledged by the broker")
    rejected: list[RejectedRecord] = Field(description="records not written, each with its reason")
    duplicates: list[int] = Field(
        default_factory=list,
        description="positions of records not written again: their record_id reached the feed within "
        "PDO_RECORD_ID_WINDOW_S (a retry of records already published)",
    )


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        description="any unique string up to 255 characters (e.g. a UUID) naming this request: a retry with "
        "the same key and body gets the first complete answer back and writes nothing again",
    ),
]


def ingested_records_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "pdo_gateway_ingested_records",
        "Records offered to the HTTP ingest, by dataset and outcome (accepted, rejected or duplicate)",
        ["dataset", "outcome"],
        registry=registry,
    )


@router.post(
    "/{dataset_id}/records",
    summary="Publish records to a dataset you provide",
    response_model=IngestOut,
    responses={
        409: {"description": "a call with the same Idempotency-Key, or sending the same records, is running"},
        422: {
            "description": "the batch is malformed, too large, none of its records fit, or the "
            "Idempotency-Key was used for another request"
        },
    },
)
def publish_records(
    request: Request,
    provider: Provider,
    dataset_id: DatasetId,
    body: RecordsIn,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    dataset = owned_dataset(request, provider, dataset_id)
    if idempotency_key is None:
        answer = publish(request, dataset, body)
        return JSONResponse(answer.body, answer.status_code)
    return publish_once(request, provider, dataset, body, idempotency.checked_key(idempotency_key))


def publish_once(
    request: Request, provider: Principal, dataset: Dataset, body: RecordsIn, key: str
) -> JSONResponse:
    """`publish` at most once per key: the kept answer when a call with it completed (see idempotency)."""
    store: idempotency.IdempotencyStore = request.app.state.idempotency
    principal_id = provider.principal_id
    kept = store.claim(principal_id, key, idempotency.fingerprint(request.url.path, body.model_dump()))
    if kept is not None:
        return JSONResponse(kept.body, kept.status_code, headers={"Idempotent-Replayed": "true"})
    try:
        answer = publish(request, dataset, body)
        store.complete(principal_id, key, answer)
    except BaseException:
        # The call did not complete (or its answer could not be kept): its retry must run, never be
        # swallowed; records that reached the feed come back to it as duplicates (their record_id).
        store.release(principal_id, key)
        raise
    return JSONResponse(answer.body, answer.status_code)


def publish(request: Request, dataset: Dataset, body: RecordsIn) -> idempotency.Answer:
    """Send the records: 200 with the report, or 422 when every record was refused."""
    publisher = request.app.state.feeds.for_dataset(dataset)
    report = publisher.publish_json(body.records)
    count(request, dataset.dataset_id, report)
    answer = IngestOut(
        accepted=report.accepted,
        rejected=[RejectedRecord(index=r.index, reason=printable(r.reason)) for r in report.rejected],
        duplicates=report.duplicates,
    )
    if report.accepted == 0 and not report.duplicates:
        return refuse_all(request, answer)
    return idempotency.Answer(200, answer.model_dump())


def owned_dataset(request: Request, provider: Principal, dataset_id: str) -> Dataset:
    """The dataset, if this provider registered it (404 unknown, 403 another's; the catalog's rule)."""
    dataset = catalog(request).get(dataset_id)
    if dataset.provider_id != provider.principal_id:
        raise Forbidden(
            f"dataset {dataset_id!r} belongs to another provider; only its owner may publish to it"
        )
    return dataset


def count(request: Request, dataset_id: str, report: PublishReport) -> None:
    counter: Counter = request.app.state.ingested_records
    if report.accepted:
        counter.labels(dataset=dataset_id, outcome="accepted").inc(report.accepted)
    if report.rejected:
        counter.labels(dataset=dataset_id, outcome="rejected").inc(len(report.rejected))
    if report.duplicates:
        counter.labels(dataset=dataset_id, outcome="duplicate").inc(len(report.duplicates))


def refuse_all(request: Request, answer: IngestOut) -> idempotency.Answer:
    """422 in the gateway's refusal shape, carrying every record's reason; counted like any refusal."""
    request.app.state.metrics.refusals.labels(route=route_of(request), reason="invalid_input").inc()
    first = answer.rejected[0].reason
    body = {
        "error": "invalid_input",
        "message": f"none of the {len(answer.rejected)} records fits the dataset's schema; the first: {first}",
        "hint": "fix the records listed in `rejected` and send them again",
        **answer.model_dump(),
    }
    return idempotency.Answer(422, body)
