"""POST /v1/datasets/{dataset_id}/records: a provider publishes a batch of records to its dataset's feed.

For government systems without a Kafka client. Each record is checked against the dataset's registered
schema as the Python publisher checks it (pdo.publishing): those that fit are sent and acknowledged by
the broker before the answer; those that do not are listed by index and reason. 200 when at least one
record was accepted; 422 when none was (the same body, inside the gateway's refusal shape).

Every record is counted in pdo_gateway_ingested_records_total{dataset, outcome}. The dataset label is
bounded: only datasets in the catalog get this far (an unknown id is a 404 before any count).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, Field

from pdo.catalog.public import Dataset
from pdo.core.errors import Forbidden
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


def ingested_records_counter(registry: CollectorRegistry) -> Counter:
    return Counter(
        "pdo_gateway_ingested_records",
        "Records offered to the HTTP ingest, by dataset and outcome (accepted or rejected)",
        ["dataset", "outcome"],
        registry=registry,
    )


@router.post(
    "/{dataset_id}/records",
    summary="Publish records to a dataset you provide",
    responses={422: {"description": "the batch is malformed, too large, or none of its records fit"}},
)
def publish_records(
    request: Request, provider: Provider, dataset_id: DatasetId, body: RecordsIn
) -> IngestOut:
    dataset = owned_dataset(request, provider, dataset_id)
    publisher = request.app.state.feeds.for_dataset(dataset)
    report = publisher.publish_json(body.records)
    count(request, dataset_id, report)
    answer = IngestOut(
        accepted=report.accepted,
        rejected=[RejectedRecord(index=r.index, reason=printable(r.reason)) for r in report.rejected],
    )
    if report.accepted == 0:
        # FastAPI sends a Response as it is; the annotation documents the 200 body.
        return refuse_all(request, answer)  # type: ignore[return-value]
    return answer


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


def refuse_all(request: Request, answer: IngestOut) -> JSONResponse:
    """422 in the gateway's refusal shape, carrying every record's reason; counted like any refusal."""
    request.app.state.metrics.refusals.labels(route=route_of(request), reason="invalid_input").inc()
    first = answer.rejected[0].reason
    body = {
        "error": "invalid_input",
        "message": f"none of the {len(answer.rejected)} records fits the dataset's schema; the first: {first}",
        "hint": "fix the records listed in `rejected` and send them again",
        **answer.model_dump(),
    }
    return JSONResponse(body, status_code=422)
