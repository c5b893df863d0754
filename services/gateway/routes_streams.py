"""GET /v1/streams/{dataset_id}: a tenant reads its own delivered records over server-sent events.

For tenants without Kafka access. The stream is the tenant's topic of that dataset, named from the
authenticated principal (`pdo.core.topics.tenant_topic`), never from anything the caller sends, so a key
reaches only its own streams. A tenant without a grant (in any state) on the dataset gets 404, as does one
whose topic does not exist yet; operators and providers get 403.

Revoked means revoked here too: records are served only while the tenant holds an ACTIVE grant on the
dataset inside its validity window. After a revocation, suspension or expiry the retained records are not
served (403, naming the grant's state), and an open stream re-checks the grant before every batch it sends
and at every heartbeat: it ends with `event: error` (`access_ended`) instead of sending on. When the grant's
state cannot be read, the stream ends too (fail closed).

Caps (pdo.gateway.caps): a tenant holds at most PDO_GATEWAY_MAX_STREAMS_PER_TENANT streams and a gateway
serves at most PDO_GATEWAY_MAX_STREAMS (429 with Retry-After beyond); a stream lasts at most
PDO_GATEWAY_MAX_STREAM_S and then ends with `event: end` (`max_duration`), to be resumed with its last id.

Each record is one SSE event:

    event: record
    id: 0-17.2-4
    data: {"record_id": "…", …, "pdo_provenance": {…}}

`data` is the decoded record as JSON: timestamps and dates in ISO 8601, decimals as strings, bytes in
base64. `id` lists, for every partition delivered from so far (sorted), the offset of the last record sent
on it: `<partition>-<offset>` joined with `.` (a one-partition position reads `0-17`). A client that
reconnects with that id as `Last-Event-ID` resumes just after each listed offset; partitions the id does not
list start where `from` says (earliest by default). A record that does not decode is skipped with an
`event: error` naming its position and reason, never its bytes, and its id advances past it. A comment line
(`: heartbeat`) goes out every 15 s without records, keeping proxies from closing the connection.

The consumer is aiokafka without a consumer group (every partition assigned, nothing committed), closed
when the stream ends or the client goes away. Decoding (the registry is asked once per schema id) runs in
a thread, one hop per batch, so the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import re
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Annotated, Any, Literal

import anyio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.background import BackgroundTask

from pdo.authorization.public import Grant
from pdo.core.codec import AvroCodec, CodecError
from pdo.core.config import Settings
from pdo.core.errors import Forbidden, InvalidInput, NotFound, Unavailable
from pdo.core.kafka import aiokafka_connection
from pdo.core.registry_client import RegistryClient, RegistryError
from pdo.core.topics import tenant_topic
from pdo.core.vocabulary import GrantStatus
from pdo.gateway.auth import Tenant
from pdo.gateway.caps import Caps, StreamSlot
from pdo.gateway.deps import DatasetId, authorization
from pdo.gateway.models import ERROR_RESPONSES

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
POLL_S = 1.0  # longest wait for records before checking the client, the heartbeat and the idle timeout
MAX_BATCH = 500
MAX_LAST_EVENT_ID = 1024  # characters; far more than any topic's partitions need
MAX_OFFSET = 2**63 - 1
RETRY_MS = 3000
POSITION = re.compile(r"(0|[1-9][0-9]{0,8})-(0|[1-9][0-9]{0,18})")

router = APIRouter(prefix="/v1/streams", responses=ERROR_RESPONSES, tags=["streams"])


# ------------------------------------------------------------------------------------------- plumbing


@dataclass(frozen=True)
class StreamMetrics:
    records: Counter
    skipped: Counter
    open_streams: Gauge


def stream_metrics(registry: CollectorRegistry) -> StreamMetrics:
    """The streaming metrics; the dataset label is bounded: only datasets the caller holds a grant on."""
    return StreamMetrics(
        records=Counter(
            "pdo_gateway_stream_records",
            "Records sent to tenants over the HTTP stream endpoint, by dataset",
            ["dataset"],
            registry=registry,
        ),
        skipped=Counter(
            "pdo_gateway_stream_skipped_records",
            "Records on a tenant stream that did not decode and were skipped with an error event, by dataset",
            ["dataset"],
            registry=registry,
        ),
        open_streams=Gauge(
            "pdo_gateway_open_streams", "HTTP streams open to tenants right now", registry=registry
        ),
    )


class StreamHub:
    """What the stream endpoint needs from outside: Kafka consumers and a codec (made on first use)."""

    def __init__(self, settings: Settings, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.settings = settings
        self.heartbeat_s = heartbeat_s
        self._registry: RegistryClient | None = None
        self._codec: AvroCodec | None = None
        self._lock = threading.Lock()

    @property
    def codec(self) -> AvroCodec:
        with self._lock:
            if self._codec is None:
                self._registry = RegistryClient.for_settings(self.settings)
                self._codec = AvroCodec(self._registry)
            return self._codec

    def topic(self, tenant_id: str, dataset_id: str) -> str:
        return tenant_topic(tenant_id, dataset_id, self.settings)

    def consumer(self) -> AIOKafkaConsumer:
        timeout_ms = self.settings.kafka_timeout_s * 1000
        return AIOKafkaConsumer(
            **aiokafka_connection(self.settings),
            group_id=None,
            enable_auto_commit=False,
            # A resume position whose records retention has removed reads on from the oldest kept.
            auto_offset_reset="earliest",
            # Sharing writes in transactions: a killed worker's aborted batch is not a delivery.
            isolation_level="read_committed",
            client_id=f"pdo-gateway-stream-{uuid.uuid4().hex[:8]}",
            request_timeout_ms=max(timeout_ms, 5000),
        )

    def close(self) -> None:
        with self._lock:
            if self._registry is not None:
                self._registry.close()
            self._registry = self._codec = None


# ------------------------------------------------------------------------------------ SSE and resume ids


def jsonable(value: Any) -> Any:
    """`value` with datetimes as ISO 8601, Decimals as strings, bytes as base64, non-finite floats as text."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def record_json(value: Any) -> str:
    """One line of JSON (no newline can appear: strings are escaped), as SSE `data` needs."""
    return json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def sse_event(event: str, data: str, event_id: str | None = None) -> str:
    """One SSE event; `data` spanning lines becomes several `data:` lines, as the format requires."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return "\n".join(lines) + "\n\n"


def sse_comment(text: str) -> str:
    return "".join(f": {line}\n" for line in text.split("\n")) + "\n"


def format_event_id(positions: dict[int, int]) -> str:
    """{0: 17, 2: 4} -> '0-17.2-4': the last offset sent on each partition, by partition."""
    return ".".join(f"{partition}-{offset}" for partition, offset in sorted(positions.items()))


def parse_last_event_id(raw: str | None) -> dict[int, int]:
    """The positions in a Last-Event-ID header ({} when absent or empty); InvalidInput saying what is wrong."""
    if raw is None or not raw.strip():
        return {}
    text = raw.strip()
    hint = "send back an id exactly as the stream gave it, e.g. '0-17.2-4', or no Last-Event-ID to start anew"
    if len(text) > MAX_LAST_EVENT_ID:
        raise InvalidInput(
            f"Last-Event-ID is {len(text)} characters long; at most {MAX_LAST_EVENT_ID} are accepted",
            hint=hint,
        )
    positions: dict[int, int] = {}
    for index, part in enumerate(text.split(".")):
        match = POSITION.fullmatch(part)
        if match is None:
            shown = part[:40].encode("ascii", "backslashreplace").decode("ascii")
            raise InvalidInput(
                f"Last-Event-ID part {index + 1} ({shown!r}) is not '<partition>-<offset>' in decimal digits "
                "without leading zeros",
                hint=hint,
            )
        partition, offset = int(match.group(1)), int(match.group(2))
        if offset > MAX_OFFSET:
            raise InvalidInput(f"Last-Event-ID offset {offset} is beyond any Kafka offset", hint=hint)
        if partition in positions:
            raise InvalidInput(f"Last-Event-ID names partition {partition} twice", hint=hint)
        positions[partition] = offset
    return positions


def check_positions(positions: dict[int, int], ends: dict[int, int]) -> None:
    """Every resumed partition exists and its offset was ever written (`ends`: partition -> end offset)."""
    hint = "send back an id this stream gave, or no Last-Event-ID to start anew"
    for partition, offset in sorted(positions.items()):
        if partition not in ends:
            raise InvalidInput(
                f"Last-Event-ID names partition {partition}, but the stream has partitions 0-{max(ends)}"
                if ends
                else f"Last-Event-ID names partition {partition} of an empty stream",
                hint=hint,
            )
        if offset >= ends[partition]:
            raise InvalidInput(
                f"Last-Event-ID offset {offset} on partition {partition} was never written: the partition "
                f"ends before offset {ends[partition]}",
                hint=hint,
            )


# ---------------------------------------------------------------------------------------------- access


def live_grant(grants: Iterable[Grant], now: datetime) -> Grant | None:
    """The grant that lets its tenant read now: ACTIVE and inside its validity window; else None."""
    return next(
        (g for g in grants if g.status is GrantStatus.ACTIVE and g.valid_from <= now < g.valid_until), None
    )


def access_ended(grants: list[Grant], dataset_id: str, now: datetime) -> Forbidden:
    """Why a tenant holding only grants that are not live may not read: its newest grant's state."""
    newest = max(grants, key=lambda g: g.updated_at)
    if newest.status is not GrantStatus.ACTIVE:
        state = newest.status.value.lower()
    elif now < newest.valid_from:
        state = f"not valid before {newest.valid_from.isoformat()}"
    else:
        state = f"expired at {newest.valid_until.isoformat()}"
    return Forbidden(
        f"your grant {newest.grant_id} on dataset {dataset_id!r} is {state}: records are served only under "
        "an active grant, never after a revocation, suspension or expiry",
        hint="see GET /v1/grants/" + newest.grant_id + "; request access again (POST /v1/requests) if you "
        "still need the data",
    )


def now_utc() -> datetime:
    return datetime.now(UTC)


# -------------------------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class Outcome:
    partition: int
    offset: int
    value: dict[str, Any] | None  # None: did not decode
    reason: str = ""


def decode_all(codec: AvroCodec, messages: Iterable[Any]) -> list[Outcome]:
    """Blocking (the registry on a new schema id): run in a thread. RegistryError is left to the caller."""
    outcomes = []
    for message in messages:
        try:
            decoded = codec.decode(message.value)
        except CodecError as error:
            outcomes.append(Outcome(message.partition, message.offset, None, error.reason_code))
            continue
        outcomes.append(Outcome(message.partition, message.offset, decoded.value))
    return outcomes


# ---------------------------------------------------------------------------------------------- route


@router.get(
    "/{dataset_id}",
    summary="Your delivered records of a dataset, as server-sent events",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": (
                "`text/event-stream`: `event: record` per record (`id` = resume position, `data` = the record "
                "as JSON), `event: error` for a skipped record, `: heartbeat` comments every 15 s"
            ),
            "content": {"text/event-stream": {}},
        },
        404: {"description": "you hold no grant on this dataset, or its stream does not exist yet"},
    },
)
async def stream_records(
    request: Request,
    tenant: Tenant,
    dataset_id: DatasetId,
    start: Annotated[
        Literal["earliest", "latest"],
        Query(alias="from", description="where partitions not named in Last-Event-ID start"),
    ] = "earliest",
    limit: Annotated[
        int | None, Query(ge=1, le=1_000_000, description="end the stream after this many records")
    ] = None,
    idle_timeout_s: Annotated[
        float | None, Query(gt=0, le=86_400, description="end the stream after this long without records")
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="resume after the position an event's id gave"),
    ] = None,
) -> StreamingResponse:
    resume = parse_last_event_id(last_event_id)
    grants = await run_in_threadpool(
        authorization(request).list_grants, tenant_id=tenant.principal_id, dataset_id=dataset_id
    )
    missing = NotFound(
        f"you have no stream of dataset {dataset_id!r}",
        hint="request access (POST /v1/requests); your grants are at GET /v1/grants",
    )
    if not grants:
        raise missing
    if live_grant(grants, now_utc()) is None:
        raise access_ended(grants, dataset_id, now_utc())
    caps: Caps = request.app.state.caps
    slot = caps.open_stream(tenant.principal_id)
    try:
        return await _open_stream(
            request, tenant.principal_id, dataset_id, start, limit, idle_timeout_s, resume, slot
        )
    except BaseException:
        slot.release()
        raise


async def _open_stream(
    request: Request,
    tenant_id: str,
    dataset_id: str,
    start: str,
    limit: int | None,
    idle_timeout_s: float | None,
    resume: dict[int, int],
    slot: StreamSlot,
) -> StreamingResponse:
    hub: StreamHub = request.app.state.streams
    topic = hub.topic(tenant_id, dataset_id)
    consumer = hub.consumer()
    try:
        await consumer.start()
    except KafkaError as error:
        await _stop(consumer)
        raise Unavailable(
            "the stream cannot be read now: the Kafka broker does not answer", hint="retry later"
        ) from error
    try:
        partitions = await _partitions(consumer, topic)
        if not partitions:
            raise NotFound(
                f"your stream of dataset {dataset_id!r} does not exist yet",
                hint="it is created when your grant becomes active",
            )
        assigned = [TopicPartition(topic, partition) for partition in partitions]
        consumer.assign(assigned)
        if resume:
            ends = await consumer.end_offsets(assigned)
            check_positions(resume, {tp.partition: end for tp, end in ends.items()})
        for tp in assigned:
            if tp.partition in resume:
                consumer.seek(tp, resume[tp.partition] + 1)
        fresh = [tp for tp in assigned if tp.partition not in resume]
        if fresh:
            if start == "latest":
                await consumer.seek_to_end(*fresh)
            else:
                await consumer.seek_to_beginning(*fresh)
    except BaseException as error:
        await _stop(consumer)
        if isinstance(error, KafkaError):
            raise Unavailable(
                "the stream cannot be read now: the Kafka broker failed", hint="retry later"
            ) from error
        raise

    async def access_problem() -> dict | None:
        return await _access_problem(request, tenant_id, dataset_id)

    ending = Ending(access_problem, request.app.state.caps, request.app.state.settings.gateway_max_stream_s)
    body = _events(request, hub, consumer, dataset_id, resume, limit, idle_timeout_s, ending, slot)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    # Closes the consumer and frees the slot should the body never start (its own `finally` does otherwise).
    closing = BackgroundTask(_close, consumer, slot)
    return StreamingResponse(body, media_type="text/event-stream", headers=headers, background=closing)


@dataclass(frozen=True)
class Ending:
    """What ends an open stream besides the client: the grant no longer live, or its maximum duration."""

    access_problem: Callable[[], Awaitable[dict | None]]
    caps: Caps
    max_duration_s: float


async def _access_problem(request: Request, tenant_id: str, dataset_id: str) -> dict | None:
    """None while the tenant may still read the dataset; else the error event that ends its stream."""
    try:
        grants = await run_in_threadpool(
            authorization(request).list_grants, tenant_id=tenant_id, dataset_id=dataset_id
        )
    except Exception:
        log.warning("could not re-check the grant of a stream of %s; ending it", dataset_id, exc_info=True)
        return {
            "error": "unavailable",
            "message": "your grant's state cannot be read now, so the stream ends",
            "hint": "reconnect later with the last id",
        }
    if live_grant(grants, now_utc()) is not None:
        return None
    ended = access_ended(grants, dataset_id, now_utc()) if grants else None
    return {
        "error": "access_ended",
        "message": ended.message if ended else f"you no longer hold a grant on dataset {dataset_id!r}",
        "hint": ended.hint if ended else "request access again (POST /v1/requests)",
    }


async def _close(consumer: AIOKafkaConsumer, slot: StreamSlot) -> None:
    slot.release()
    await _stop(consumer)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The topic's partitions, or [] when it does not exist; asks for all metadata, so nothing is auto-created."""
    cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001 — the public call keeps only names
    return sorted(cluster.partitions_for_topic(topic) or ())


async def _stop(consumer: AIOKafkaConsumer) -> None:
    with anyio.CancelScope(shield=True):
        try:
            await consumer.stop()
        except Exception:
            log.warning("closing a stream's Kafka consumer failed", exc_info=True)


async def _events(
    request: Request,
    hub: StreamHub,
    consumer: AIOKafkaConsumer,
    dataset_id: str,
    positions: dict[int, int],
    limit: int | None,
    idle_timeout_s: float | None,
    ending: Ending,
    slot: StreamSlot,
) -> AsyncIterator[str]:
    metrics: StreamMetrics = request.app.state.stream_metrics
    records, skipped = metrics.records.labels(dataset=dataset_id), metrics.skipped.labels(dataset=dataset_id)
    positions = dict(positions)
    loop = asyncio.get_running_loop()
    sent = 0
    opened = last_record = last_output = loop.time()
    metrics.open_streams.inc()
    try:
        yield f"retry: {RETRY_MS}\n" + sse_comment(f"your stream of dataset {dataset_id}")
        while limit is None or sent < limit:
            now = loop.time()
            if now - opened >= ending.max_duration_s:
                ending.caps.limited.labels(limit="stream_duration").inc()
                resume_id = format_event_id(positions) or None
                yield sse_event("end", record_json(_max_duration(ending.max_duration_s)), resume_id)
                break
            wait = min(
                POLL_S,
                max(hub.heartbeat_s - (now - last_output), 0.0),
                ending.max_duration_s - (now - opened),
            )
            if idle_timeout_s is not None:
                left = idle_timeout_s - (now - last_record)
                if left <= 0:
                    break
                wait = min(wait, left)
            batch = await consumer.getmany(
                timeout_ms=max(int(wait * 1000), 1),
                max_records=min(MAX_BATCH, limit - sent) if limit is not None else MAX_BATCH,
            )
            messages = [message for tp in sorted(batch, key=lambda tp: tp.partition) for message in batch[tp]]
            if messages or loop.time() - last_output >= hub.heartbeat_s:
                problem = await ending.access_problem()
                if problem is not None:
                    # Fail closed: nothing of this batch goes out once the grant is not live.
                    yield sse_event("error", record_json(problem))
                    break
            if messages:
                try:
                    outcomes = await anyio.to_thread.run_sync(decode_all, hub.codec, messages)
                except RegistryError:
                    log.warning("the schema registry did not answer while streaming %s", dataset_id)
                    unavailable = {"error": "unavailable", "message": "the schema registry does not answer"}
                    yield sse_event("error", record_json({**unavailable, "hint": "reconnect later"}))
                    break
                chunks = []
                for outcome in outcomes:
                    positions[outcome.partition] = outcome.offset
                    event_id = format_event_id(positions)
                    if outcome.value is None:
                        skipped.inc()
                        problem = {
                            "error": "undecodable_record",
                            "reason": outcome.reason,
                            "partition": outcome.partition,
                            "offset": outcome.offset,
                            "message": "this record does not decode and was skipped; an operator can tell why",
                        }
                        chunks.append(sse_event("error", record_json(problem), event_id))
                        continue
                    chunks.append(sse_event("record", record_json(outcome.value), event_id))
                    records.inc()
                    sent += 1
                    if limit is not None and sent >= limit:
                        break
                yield "".join(chunks)
                last_record = last_output = loop.time()
            elif loop.time() - last_output >= hub.heartbeat_s:
                yield sse_comment("heartbeat")
                last_output = loop.time()
            if await request.is_disconnected():
                break
    finally:
        metrics.open_streams.dec()
        await _close(consumer, slot)


def _max_duration(max_duration_s: float) -> dict:
    return {
        "reason": "max_duration",
        "message": f"a stream lasts at most {max_duration_s:g} s (PDO_GATEWAY_MAX_STREAM_S)",
        "hint": "reconnect with this event's id as Last-Event-ID to read on from here",
    }
