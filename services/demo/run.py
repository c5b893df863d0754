"""The demo's story, told through the platform's front doors: the HTTP API for providers, tenants and the
operator, and the tenant topics read with a plain Kafka consumer as a tenant would.

1. `prepare`: principals and their API keys (the same store `pdo principals add` writes), datasets
   registered by their providers, the demo's derived data product applied by the operator, every request of `sample.REQUESTS` submitted, decided by the policy or by
   the operator (approve, or deny where the sample says so), until each approved grant is ACTIVE;
2. `publish`: providers post records to their datasets at the chosen rate (HTTP ingest, in batches);
3. `revoke`: the operator revokes the grant the sample marks, while records keep flowing;
4. `TenantStreams` reads every tenant topic of the demo's grants and counts, per grant, the distinct source
   records received (provenance: source partition and offset, so a redelivered record counts once) and
   keeps the latest record to show what masking did; for the aggregate grant, its aggregates topic (made
   by the aggregation worker when it publishes the first window, so read from then on): the windows
   delivered, the groups published (by aggregate id, so a repeat counts once) and the groups suppressed;
5. the summary (summary.py): who received how many records, what was masked, what metering counted, and
   this month's charges as statements would price them now; at the end, the audit log verified against its
   signed checkpoints, with its size and latest checkpoint.

Guarantee: every call the demo makes is one step (`Demo.attempt`); a step that fails (the platform refuses
it, e.g. 409 because something else retired a dataset, or does not answer while a service restarts) is
reported in one line — which step, which call, the status and the platform's message — and the story goes
on with the next step. Only issuing the cast's API keys (straight into the database, before any call) is
not a step: without keys there is no story to tell.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import httpx
from kafka import TopicPartition
from kafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from pdo.audit.checkpoints import Signer
from pdo.audit.store import AuditStore
from pdo.audit.verify import Verdict, verify_log
from pdo.billing.reconcile import reconcile
from pdo.billing.report import report_lines
from pdo.billing.statements import Statement, compute_statements
from pdo.core import kafka, topics
from pdo.core.access_log import operator_actor
from pdo.core.codec import AvroCodec, CodecError
from pdo.core.config import Settings
from pdo.core.db import make_engine
from pdo.core.errors import Conflict, PdoError
from pdo.core.months import period_of
from pdo.core.provenance import PROVENANCE_FIELD
from pdo.core.registry_client import RegistryClient
from pdo.core.topics import TopicId, tenant_topic, tenant_topic_part
from pdo.demo import sample
from pdo.demo.records import GENERATORS
from pdo.gateway.principals import PrincipalStore
from pdo.products.registration import apply_folder

DECISION_TIMEOUT_S = 60
POLL_S = 0.5
T = TypeVar("T")
# What a step of the demo can fail with: the platform's answers (CallFailed), a wait that ran out, and the
# summary's own reads of the ledger (SQL) and of the tenant topics (Kafka).
STEP_FAILURES = (PdoError, SQLAlchemyError, KafkaError)


class CallFailed(PdoError):
    """A call the platform refused (`status`) or did not answer (`status` None), with the platform's message."""

    def __init__(self, method: str, path: str, status: int | None, detail: str) -> None:
        answer = f"answered {status}" if status is not None else "got no answer"
        super().__init__(f"{method} {path} {answer}: {detail}")
        self.status = status


class Api:
    """One principal's calls to the HTTP API; an error answer, or none, becomes a CallFailed."""

    def __init__(self, base_url: str, key: str, transport: httpx.BaseTransport | None = None) -> None:
        self.client = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30, transport=transport
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise CallFailed(method, path, None, f"{type(error).__name__}: {error}") from None
        if response.status_code >= 400:
            raise CallFailed(method, path, response.status_code, _message(response))
        return response.json() if response.content else None

    def close(self) -> None:
        self.client.close()


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("message") or body.get("detail") or body) if isinstance(body, dict) else str(body)


def one_line(error: Exception) -> str:
    """What went wrong, on one line: a PdoError's message and hint, another error's first line."""
    text = f"{error.message} ({error.hint})" if isinstance(error, PdoError) and error.hint else str(error)
    if not isinstance(error, PdoError):
        text = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return " ".join(text.split())


@dataclass
class GrantView:
    """What the demo knows about one of its grants, and what the tenant received under it."""

    request: sample.RequestSample
    grant_id: str
    status: str = "ACTIVE"
    received: set[tuple[int, int]] = field(default_factory=set)  # (source partition, source offset)
    latest: dict[str, Any] | None = None
    last_published: datetime | None = None  # the newest publication time among the received records
    revoked_at: datetime | None = None  # when the operator's revocation was acknowledged
    windows: dict[datetime, int] = field(default_factory=dict)  # aggregate grants: start -> groups suppressed
    groups: set[str] = field(default_factory=set)  # aggregate grants: the aggregate ids published

    def topic(self, settings: Settings) -> str:
        """The tenant topic this grant delivers to: its rows' or, for an aggregate grant, its aggregates'."""
        tenant, dataset = self.request.tenant.principal_id, self.request.dataset_id
        if self.request.aggregate is None:
            return tenant_topic(tenant, dataset, settings)
        return topics.name(
            TopicId.TENANT_AGGREGATES, settings, tenant_id=tenant_topic_part(tenant), dataset_id=dataset
        )


class TenantStreams:
    """Reads the demo's tenant topics from the beginning in a thread, counting per grant what arrived."""

    def __init__(self, settings: Settings, grants: dict[str, GrantView]) -> None:
        self.settings = settings
        self.grants = grants
        self.codec = AvroCodec(RegistryClient.for_settings(settings))
        self.undecodable = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-tenant-streams", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.codec.registry.close()

    def _run(self) -> None:
        consumer = kafka.consumer(self.settings, enable_auto_commit=False)
        waiting = sorted({view.topic(self.settings) for view in self.grants.values()})
        assigned: list[TopicPartition] = []
        try:
            while not self._stop.is_set():
                if waiting:  # an aggregates topic appears with its first window
                    waiting = self._assign_found(consumer, waiting, assigned)
                for messages in consumer.poll(timeout_ms=500).values():
                    for message in messages:
                        self._count(message.value)
        finally:
            consumer.close()

    def _assign_found(self, consumer: Any, waiting: list[str], assigned: list[TopicPartition]) -> list[str]:
        """Add the partitions of the waiting topics that exist now, read from their beginning; the topics
        still missing."""
        found = {topic: sorted(consumer.partitions_for_topic(topic) or ()) for topic in waiting}
        new = [TopicPartition(topic, number) for topic, numbers in found.items() for number in numbers]
        if new:
            assigned.extend(new)
            consumer.assign(assigned)  # kept partitions keep their positions
            consumer.seek_to_beginning(*new)
        return [topic for topic, numbers in found.items() if not numbers]

    def _count(self, value: bytes) -> None:
        try:
            record = self.codec.decode(value).value
        except CodecError:
            self.undecodable += 1
            return
        if "aggregate_id" in record:
            self._count_aggregate(record)
            return
        provenance = record[PROVENANCE_FIELD]
        view = self.grants.get(provenance["grant_id"])
        if view is None:
            return  # an earlier demo run's grant on the same topic
        # Only this thread writes; the summary reads sizes and the latest record, which the GIL keeps whole.
        view.received.add((provenance["source_partition"], provenance["source_offset"]))
        view.latest = record
        published = provenance["published_at"]
        view.last_published = max(published, view.last_published or published)

    def _count_aggregate(self, record: dict[str, Any]) -> None:
        view = self.grants.get(record["grant_id"])
        if view is None:
            return  # an earlier demo run's grant on the same topic
        view.windows[record["window_start"]] = record["suppressed_groups"]
        view.groups.add(record["aggregate_id"])


class Demo:
    """The demo's actors and their grants; see the module docstring for the story."""

    def __init__(
        self,
        settings: Settings,
        report: Callable[[str], None] = print,
        seed: int = 7,
        transport: httpx.BaseTransport | None = None,  # the HTTP API's; a test's mock answers in its place
    ) -> None:
        self.settings = settings
        self.report = report
        self.transport = transport
        self.rng = random.Random(seed)
        self.base_url = f"http://{settings.gateway_host}:{settings.gateway_port}"
        self.apis: dict[str, Api] = {}
        self.operator_key = ""
        self.grants: dict[str, GrantView] = {}
        self.denied: list[sample.RequestSample] = []
        self.published: dict[str, int] = {item.dataset_id: 0 for item in sample.DATASETS}
        self.streams: TenantStreams | None = None
        self.engine = make_engine(settings.database_url)  # principals, this month's charges, reconciliation
        self._numbers = 0
        self.failures = 0  # failed steps, repeats included
        self._failing: dict[str, tuple[str, int]] = {}  # step -> (why it failed last, failures in a row)

    # -- one step at a time

    def attempt(self, step: str, action: Callable[[], T]) -> T | None:
        """Run one step of the story: its result, or None when it failed, reported in one line.

        A step that keeps failing the same way (a dataset retired for good, a service down) is reported
        once, not every second, and once more when it works again."""
        try:
            result = action()
        except STEP_FAILURES as error:
            self._failed(step, one_line(error))
            return None
        _, in_a_row = self._failing.pop(step, ("", 0))
        if in_a_row:
            self.report(f"  {step}: works again after {in_a_row} failed attempt(s)")
        return result

    def _failed(self, step: str, why: str) -> None:
        self.failures += 1
        last, in_a_row = self._failing.get(step, ("", 0))
        self._failing[step] = (why, in_a_row + 1)
        if why != last:
            self.report(f"  ! {step} failed: {why}; the demo carries on")

    # -- setting the scene

    def prepare(self) -> None:
        self._issue_keys()
        for dataset in sample.DATASETS:
            self.attempt(f"register {dataset.dataset_id}", partial(self._register, dataset))
        self.attempt("declare the derived data products", self._declare_products)
        for request in sample.REQUESTS:
            self.attempt(
                f"{request.tenant.name} requests {request.what}",
                partial(self._request, request),
            )
        self.streams = TenantStreams(self.settings, self.grants)
        self.streams.start()

    def _issue_keys(self) -> None:
        # Their events wait in the gateway's outbox; the demo's gateway publishes them to pdo.access.
        store = PrincipalStore(self.engine)
        actor, reason = operator_actor(), "pdo demo: the sample parties"
        for party in (*sample.PROVIDERS, *sample.TENANTS, sample.OPERATOR):
            with suppress(Conflict):  # an earlier demo run made it: a new key is enough
                store.create_principal(
                    party.kind, party.name, party.display_name, party.government, actor=actor, reason=reason
                )
            key = store.issue_key(party.principal_id, actor=actor, reason=reason).key
            self.apis[party.principal_id] = Api(self.base_url, key, self.transport)
            if party is sample.OPERATOR:
                self.operator_key = key  # printed for the console: a local demo's key, shown once
        self.report(
            f"  {len(sample.PROVIDERS)} providers, {len(sample.TENANTS)} tenants and an operator, each with an API key"
        )

    def _api(self, party: sample.Party) -> Api:
        return self.apis[party.principal_id]

    def _register(self, dataset: sample.DatasetSample) -> None:
        try:
            self._api(dataset.provider).call(
                "POST", "/v1/datasets", json=dataset.registration(self.settings.home)
            )
            self.report(f"  {dataset.provider.principal_id} registered {dataset.dataset_id}")
        except CallFailed as error:
            if error.status != 409:
                raise
            self.report(f"  {dataset.dataset_id} is registered already (an earlier demo run)")

    def _declare_products(self) -> None:
        """`pdo products apply --dir` the demo's products folder, as the operator (no HTTP API declares one)."""
        result = apply_folder(self.settings, sample.PRODUCTS_DIR, sample.OPERATOR.principal_id)
        for line in result.lines():
            self.report(f"  {sample.OPERATOR.principal_id} {line} (a derived data product)")

    def _request(self, request: sample.RequestSample) -> None:
        tenant = self._api(request.tenant)
        now = datetime.now(UTC)
        body = {
            "dataset_id": request.dataset_id,
            "purpose": request.purpose,
            "fields": list(request.fields),
            "row_filter": request.row_filter,
            "valid_from": (now - timedelta(minutes=1)).isoformat(),
            "valid_until": (now + timedelta(days=365)).isoformat(),
            "expected_daily_records": request.expected_daily_records,
            "kind": request.kind,
            "aggregate": request.aggregate,
        }
        submitted = tenant.call("POST", "/v1/requests", json={k: v for k, v in body.items() if v is not None})
        decided = self._wait(
            f"a decision on {request.tenant.name}'s request for {request.dataset_id}",
            lambda: _undecided_or(tenant.call("GET", f"/v1/requests/{submitted['request_id']}"), "SUBMITTED"),
        )
        how = f"by rule {decided['decided_by_rule']}" if decided.get("decided_by_rule") else ""
        if decided["status"] == "PENDING_REVIEW":
            decided = self._review(request, submitted["request_id"])
            how = f"by {sample.OPERATOR.principal_id}"
        self.report(f"  {request.tenant.name:<15} {request.what:<20} {decided['status']:<9} {how}")
        if decided["status"] == "APPROVED":
            self._wait_active(decided["grant_id"], request)
        else:
            self.denied.append(request)

    def _review(self, request: sample.RequestSample, request_id: str) -> dict[str, Any]:
        operator = self._api(sample.OPERATOR)
        if request.operator_denies:
            return operator.call(
                "POST",
                f"/v1/requests/{request_id}/deny",
                json={"reason": "identity numbers are not needed for this purpose"},
            )
        operator.call("POST", f"/v1/requests/{request_id}/approve", json={})
        return operator.call("GET", f"/v1/requests/{request_id}")

    def _wait_active(self, grant_id: str, request: sample.RequestSample) -> None:
        tenant = self._api(request.tenant)
        self._wait(
            f"grant {grant_id} to be ACTIVE",
            # Published: sharing follows the grant's event, and records must come after it to be delivered.
            lambda: _active_and_published(tenant.call("GET", f"/v1/grants/{grant_id}")),
        )
        self.grants[grant_id] = GrantView(request, grant_id)

    def _wait(self, what: str, check: Callable[[], Any]) -> Any:
        """Poll `check` until it finds something; a poll the platform fails to answer (5xx, no answer: a
        service restarting) is polled again, until the deadline."""
        deadline = time.monotonic() + DECISION_TIMEOUT_S
        unanswered = ""
        while time.monotonic() < deadline:
            try:
                found = check()
            except CallFailed as error:
                if error.status is not None and error.status < 500:
                    raise
                found, unanswered = None, f"; the last poll: {error.message}"
            if found:
                return found
            time.sleep(POLL_S)
        raise PdoError(
            f"waited {DECISION_TIMEOUT_S} s for {what}{unanswered}",
            hint=f"see the services' logs in {self.settings.run_dir / 'logs'}",
        )

    # -- the flow

    def publish(self, records_per_dataset: int) -> None:
        """One batch per dataset, posted by its provider; a refused batch is reported and not counted."""
        now = datetime.now(UTC)
        for dataset in sample.DATASETS:
            generate = GENERATORS[dataset.dataset_id]
            batch = []
            for _ in range(records_per_dataset):
                self._numbers += 1
                batch.append(generate(self.rng, self._numbers, now))
            self.attempt(
                f"publish to {dataset.dataset_id}",
                partial(self._post, dataset, batch),
            )

    def _post(self, dataset: sample.DatasetSample, batch: list[dict[str, Any]]) -> None:
        self._api(dataset.provider).call(
            "POST", f"/v1/datasets/{dataset.dataset_id}/records", json={"records": batch}
        )
        self.published[dataset.dataset_id] += len(batch)

    def revoke(self) -> GrantView | None:
        """Revoke the grant the sample marks; returns it (None when there is none to revoke, or the revocation
        failed: reported, and the grant's status as the platform sees it shows in the next summary)."""
        for view in self.grants.values():
            if view.request.revoked_later and view.status == "ACTIVE":
                step = f"revoke the grant of {view.request.tenant.name} on {view.request.dataset_id}"
                return self.attempt(step, partial(self._revoke, view))
        return None

    def _revoke(self, view: GrantView) -> GrantView:
        self._api(sample.OPERATOR).call(
            "POST", f"/v1/grants/{view.grant_id}/revoke", json={"reason": "the congestion study ended"}
        )
        view.status = "REVOKED"
        view.revoked_at = datetime.now(UTC)
        self.report(
            f"  operator revoked {view.grant_id} ({view.request.tenant.name}, {view.request.dataset_id})"
        )
        return view

    def metered(self) -> dict[str, int]:
        """Records metering counted per grant today (the operator's view of GET /v1/usage, DAY windows)."""
        usage = self._api(sample.OPERATOR).call("GET", "/v1/usage", params={"window": "DAY"})["usage"]
        counted: dict[str, int] = {}
        for window in usage:
            counted[window["grant_id"]] = counted.get(window["grant_id"], 0) + window["records"]
        return counted

    def charges(self) -> list[Statement]:
        """This month's statements as they would be if it closed now (priced from the ledger, not issued)."""
        with self.engine.connect() as connection:
            return compute_statements(connection, period_of(datetime.now(UTC)))

    def reconciliation(self) -> list[str]:
        """`pdo billing reconcile` of this month: the tenant topics against the ledger and the statements.
        After prepare(): the tenant streams' codec decodes the topics."""
        assert self.streams is not None
        return report_lines(
            reconcile(self.settings, self.engine, period_of(datetime.now(UTC)), self.streams.codec)
        )

    def audit(self) -> Verdict:
        """`pdo audit verify`: the audit log against its signed checkpoints, as an auditor would check it."""
        store = AuditStore(self.engine)
        public_key = Signer.from_settings(self.settings).public_key
        return verify_log(store.entries(), store.checkpoints(), public_key)

    def refresh_statuses(self) -> None:
        """Each grant's status as the platform sees it now (the last known one where it does not answer)."""
        for view in self.grants.values():
            self.attempt(f"read grant {view.grant_id}", partial(self._refresh_status, view))

    def _refresh_status(self, view: GrantView) -> None:
        view.status = self._api(view.request.tenant).call("GET", f"/v1/grants/{view.grant_id}")["status"]

    def close(self) -> None:
        if self.streams:
            self.streams.stop()
        for api in self.apis.values():
            api.close()
        self.engine.dispose()


def _undecided_or(found: dict[str, Any], undecided: str) -> dict[str, Any] | None:
    return None if found["status"] == undecided else found


def _active_and_published(grant: dict[str, Any]) -> bool:
    return grant["status"] == "ACTIVE" and grant.get("published", True)
