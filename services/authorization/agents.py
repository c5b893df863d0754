"""What the authorization worker does with each message and each clock tick, independent of faust.

Handlers are blocking (SQL, the broker's acks): the faust agents in app.py run them in a thread, through
`pdo.core.retry.retrying`. The failure policy is the core's (pdo.core.retry): a message the handler cannot
apply because a backing service does not answer (the database, the broker, the registry) raises, and the
agent retries it, backing off, until it is applied: a valid event is never dead-lettered for an outage. A
message that is itself at fault (it does not decode, it is of the wrong kind, it names a grant that does
not exist, a bug meets it) goes to the dead-letter topic at once with its reason and source position, and
the partition goes on.

Catalog events also feed the worker's own view of the datasets (datasets.py) before anything acts on them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter

from pdo.authorization import outbox, records
from pdo.authorization.datasets import ProjectedDatasets
from pdo.authorization.lifecycle import IllegalTransition
from pdo.authorization.service import QUOTA_ACTOR, AuthorizationService
from pdo.catalog.public import (
    InvalidCatalogEvent,
    Position,
    dataset_in_event,
)
from pdo.core.codec import AvroCodec, CodecError, Decoded
from pdo.core.deadletters import DEAD_LETTER, SourceMessage, dead_letter_event
from pdo.core.errors import NotFound, PdoError, Unavailable
from pdo.core.events import EventPublisher, utc_now
from pdo.core.names import Event
from pdo.core.registry_client import RegistryError
from pdo.core.retry import is_transient
from pdo.core.topics import TopicId
from pdo.core.vocabulary import GrantStatus, SuspensionCause

log = logging.getLogger(__name__)

SERVICE = "authorization"
# A request still SUBMITTED this long after its last change is decided by the clock's sweep.
STALE_SUBMISSION = timedelta(seconds=30)

DEAD_LETTERS = Counter(
    "pdo_authorization_dead_letters_total",
    "Messages the authorization worker could not process, sent to the dead-letter topic",
    ["reason_code"],
)
DECISIONS = Counter("pdo_authorization_decisions_total", "Requests decided by the worker", ["status", "rule"])
GRANT_TRANSITIONS = Counter(
    "pdo_authorization_clock_transitions_total", "Grants expired or resumed by the clock", ["to_status"]
)
CATALOG_ENFORCEMENTS = Counter(
    "pdo_authorization_catalog_enforcements_total",
    "Grants suspended or re-masked because the catalog changed their dataset",
    ["to_status"],
)
OUTBOX_PUBLISHED = Counter(
    "pdo_authorization_outbox_published_total", "Outbox events the worker's relay published"
)


@dataclass
class TickReport:
    expired: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    decided: list[str] = field(default_factory=list)


PRIVACY_ACTOR = "system:aggregation"
UNREADABLE_QUOTA_REASON = (
    "a quota notice for this grant could not be read; suspended as if the quota was reached (fail closed)"
)
UNREADABLE_CATALOG_REASON = "a catalog change to this dataset could not be read; suspended until an operator has checked it (fail closed)"
CATALOG_ACTOR = "system:catalog"
FAILED_CLOSED = Counter(
    "pdo_authorization_failed_closed_total",
    "Unreadable control events the worker answered by suspending what they name, by topic",
    ["topic"],
)


class _Refused(Exception):
    """A message that is well-formed Avro but cannot be acted on; carries the dead-letter reason."""

    def __init__(self, reason_code: str, reason: str) -> None:
        super().__init__(reason)
        self.reason_code = reason_code
        self.reason = reason


class AuthorizationHandlers:
    """The worker's handlers. `datasets` is the worker's view of the catalog, fed by `on_catalog`; None
    where the service reads datasets elsewhere (an in-memory catalog in tests)."""

    def __init__(
        self,
        service: AuthorizationService,
        publisher: EventPublisher,
        codec: AvroCodec,
        datasets: ProjectedDatasets | None = None,
    ) -> None:
        self.service = service
        self.publisher = publisher
        self.codec = codec
        self.datasets = datasets

    # ------------------------------------------------------------------------------------------ messages

    def on_request(self, message: SourceMessage) -> None:
        """pdo.requests: decide each submitted request by policy; referrals to review and withdrawals were
        applied when made (they are on the topic for the record and for rebuilding), so they are skipped."""
        self._handle(
            message,
            {
                records.SUBMITTED: self._decide_submitted,
                records.REFERRED: _nothing,
                records.WITHDRAWN: _nothing,
            },
        )

    def on_catalog(self, message: SourceMessage) -> None:
        """pdo.catalog: project the event into the worker's view of the datasets, then put the grants on an
        updated dataset under its new terms (suspend what the policy now denies, re-mask fields newly
        sensitive). Registrations have no grants yet; retirements are the catalog's business."""
        position = Position(message.topic, message.partition, message.offset)

        def project(schema_name: str) -> Callable[[Mapping[str, Any]], None]:
            def apply(value: Mapping[str, Any]) -> None:
                if self.datasets is not None:
                    self.datasets.apply(schema_name, dict(value), position)
                if schema_name == Event.DATASET_UPDATED:
                    self._enforce_dataset_terms(value)

            return apply

        self._handle(
            message,
            {
                name: project(name)
                for name in (Event.DATASET_REGISTERED, Event.DATASET_UPDATED, Event.DATASET_RETIRED)
            },
            unreadable=self._suspend_dataset_grants,
        )

    def publish_outbox(self) -> int:
        """Publish what the outbox holds (changes whose prompt publish failed: the broker was down)."""
        published = self.service.relay.publish_all()
        OUTBOX_PUBLISHED.inc(published)
        return published

    def on_quota_exceeded(self, message: SourceMessage) -> None:
        """pdo.quota-exceeded: suspend the grant that reached today's quota."""
        self._handle(
            message,
            {
                records.QUOTA_EXCEEDED: self._suspend_for_quota,
                Event.PRIVACY_BUDGET_EXHAUSTED: self._suspend_for_privacy_budget,
            },
            unreadable=self._suspend_grant,
        )

    def _decide_submitted(self, value: Mapping[str, Any]) -> None:
        self.service.record_submitted(dict(value))
        decided = self.service.decide(value["request_id"])
        DECISIONS.labels(decided.status.value, decided.decided_by_rule or "none").inc()

    def _enforce_dataset_terms(self, value: Mapping[str, Any]) -> None:
        dataset = None
        if value.get("dataset") is not None:
            dataset = dataset_in_event(Event.DATASET_UPDATED, dict(value), self.codec.registry)
        if dataset is None:  # an event written before snapshots: the view says what the terms are
            dataset = self.service.datasets.get(value["dataset_id"])
        for grant in self.service.enforce_dataset_terms(dataset):
            CATALOG_ENFORCEMENTS.labels(grant.status.value).inc()

    def _suspend_for_quota(self, value: Mapping[str, Any]) -> None:
        try:
            self.service.suspend_for_quota(
                value["grant_id"], value["day"], value["quota_records"], value["used_records"]
            )
        except NotFound:
            raise _Refused("INVALID_EVENT", f"quota exceeded for unknown grant {value['grant_id']}") from None

    def _suspend_for_privacy_budget(self, value: Mapping[str, Any]) -> None:
        """The aggregation service found the tenant's privacy budget exhausted: the grant is suspended until an
        operator resumes it (the next month's budget, or a larger one)."""
        reason = (
            f"privacy budget of epsilon {value['epsilon_budget']:g} for {value['dataset_id']} in "
            f"{value['period']} is spent ({value['epsilon_spent']:g}); no more aggregates are released"
        )
        try:
            self.service.suspend(value["grant_id"], PRIVACY_ACTOR, reason)
        except NotFound:
            raise _Refused(
                "INVALID_EVENT", f"privacy budget exhausted for unknown grant {value['grant_id']}"
            ) from None
        except IllegalTransition:
            return  # suspended or ended already: a repeated notice changes nothing

    # -- fail closed: a control event nobody can read stops what it might have stopped

    def _suspend_grant(self, grant_id: str) -> None:
        """An unreadable quota notice is read as the worst it could say: the grant (its key) reached its quota."""
        with contextlib.suppress(NotFound, IllegalTransition):  # none, or not active: nothing to stop
            self.service.suspend(
                grant_id, QUOTA_ACTOR, UNREADABLE_QUOTA_REASON, SuspensionCause.QUOTA_EXCEEDED
            )
        FAILED_CLOSED.labels("quota-exceeded").inc()

    def _suspend_dataset_grants(self, dataset_id: str) -> None:
        """An unreadable catalog change may have closed the dataset (its key): its live grants stop until
        an operator has looked."""
        for grant in self.service.list_grants(dataset_id=dataset_id, status=GrantStatus.ACTIVE.value):
            try:
                self.service.suspend(
                    grant.grant_id, CATALOG_ACTOR, UNREADABLE_CATALOG_REASON, SuspensionCause.DATASET_CHANGED
                )
            except IllegalTransition:
                continue  # changed meanwhile: it is not active any more
        FAILED_CLOSED.labels("catalog").inc()

    def _handle(
        self,
        message: SourceMessage,
        actions: Mapping[str, Callable[[Mapping[str, Any]], None]],
        unreadable: Callable[[str], None] | None = None,
    ) -> None:
        """Apply one message; dead-letter it at once if it is at fault. Raises only transient errors: the
        agent retries the message (every step is idempotent) until the backing service answers."""
        try:
            decoded = self._decode_or_fail_closed(message, unreadable)
            action = actions.get(decoded.schema_name)
            if action is None:
                raise _Refused("INVALID_EVENT", f"{decoded.schema_name} is not expected on {message.topic}")
            action(decoded.value)
        except _Refused as refusal:
            self._dead_letter(message, refusal.reason_code, refusal.reason)
        except InvalidCatalogEvent as error:
            self._dead_letter(message, error.reason_code, str(error))
        except Exception as error:
            if is_transient(error):
                raise
            if isinstance(error, PdoError):  # the event names what is not there, or asks what is not allowed
                self._dead_letter(message, "INVALID_EVENT", str(error))
                return
            log.exception("%s: could not process", message.position)  # a bug: keep the message for a person
            self._dead_letter(message, "OTHER", f"{type(error).__name__}: {error}")

    def _decode_or_fail_closed(
        self, message: SourceMessage, unreadable: Callable[[str], None] | None
    ) -> Decoded:
        """The decoded event; for one nobody can read, first `unreadable(key)` (the fail-closed step), then
        the refusal that dead-letters it."""
        try:
            return self._decode(message)
        except _Refused:
            if unreadable is not None and message.key:
                unreadable(message.key.decode(errors="replace"))
            raise

    def _decode(self, message: SourceMessage) -> Decoded:
        try:
            return self.codec.decode(message.value)
        except CodecError as error:
            raise _Refused(error.reason_code, str(error)) from None
        except RegistryError as error:
            raise Unavailable(error.message, hint=error.hint) from None

    def _dead_letter(self, message: SourceMessage, reason_code: str, reason: str) -> None:
        """Write the dead letter; a dead-letter topic that does not answer raises (transient: retried)."""
        value = dead_letter_event(message, SERVICE, reason_code, reason)
        try:
            self.publisher.publish(TopicId.DEAD_LETTERS, DEAD_LETTER, value)
        except Exception as error:
            if is_transient(error):
                raise
            # The letter itself cannot be written (a bug): the log is all that is left, the partition goes on.
            log.exception("%s: could not dead-letter (%s: %s)", message.position, reason_code, reason)
            return
        DEAD_LETTERS.labels(reason_code).inc()
        log.warning("%s dead-lettered: %s: %s", message.position, reason_code, reason)

    # ------------------------------------------------------------------------------------------ clock

    def tick(self, now: datetime | None = None) -> TickReport:
        """Expire grants past valid-until, resume grants whose quota day is over, decide stale requests, and
        prune outbox rows the broker acknowledged long ago."""
        now = now or utc_now()
        report = TickReport()
        for name, step in (
            ("expire", lambda: self._note(report.expired, self.service.expire_due(now), "EXPIRED")),
            (
                "resume",
                lambda: self._note(report.resumed, self.service.resume_quota_suspended(now), "ACTIVE"),
            ),
            ("prune outbox", lambda: outbox.prune_sent(self.service.engine, now)),
            (
                "sweep",
                lambda: report.decided.extend(
                    r.request_id for r in self.service.decide_stale(STALE_SUBMISSION)
                ),
            ),
        ):
            try:
                step()
            except Exception as error:  # a failed step is retried at the next tick; the others still run
                if is_transient(error):  # a backing service does not answer, or the audit log (fail closed)
                    log.warning("clock step %s waits: %s: %s", name, type(error).__name__, error)
                else:
                    log.exception("clock step %s failed", name)
        return report

    @staticmethod
    def _note(into: list[str], grants: Iterable[Any], status: str) -> None:
        for grant in grants:
            GRANT_TRANSITIONS.labels(status).inc()
            into.append(grant.grant_id)


def _nothing(_value: Mapping[str, Any]) -> None:
    return None
