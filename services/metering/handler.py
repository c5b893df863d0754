"""What the metering worker does with a batch of usage facts and on its timer, independent of faust.

Every method blocks (SQL, the registry, the broker's acks) and runs in a thread. A batch goes through steps
the worker retries one by one, so a retry never repeats a step that succeeded:

1. `decode`: each message becomes its `UsageFact` (its deliveries: a RecordsDeliveredBatch lists many, a
   RecordsDelivered one), or a refusal (UNDECODABLE, UNKNOWN_SCHEMA, SCHEMA_MISMATCH also for any other
   event, INVALID_EVENT for a fact the ledger cannot hold, refusing the whole message); a registry
   that does not answer raises, and the batch is retried;
2. `dead_letter`: refusals go to the dead-letter topic with their reason and original bytes;
3. `know_grants`: when the batch names a grant metering's projection does not hold, the projection is caught
   up to the current end of pdo.authorizations first (pdo.metering.projection: the ordering rule), so the
   ledger sets a fact aside as UNKNOWN_GRANT only when its grant is unknown on the topic too; a broker that
   does not answer raises, and the step is retried (a fact is never set aside for want of a catch-up);
4. `record`: one ledger transaction (pdo.metering.ledger), retried on any failure, never skipped;
5. `announce`: QuotaExceeded for grants that reached their quota in this batch; a failure leaves the notice
   pending in SQL and the timer publishes it later.

The timer (`publish_due`) publishes UsageRecorded for closed windows and any pending quota notices; the
digest timer (`digest_deliveries`) claims the deliveries not in a digest yet and publishes every digest the
broker has not acknowledged (pdo.metering.digests).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from prometheus_client import Counter, Gauge, Histogram

from pdo.core.codec import AvroCodec, CodecError, SchemaMismatchError
from pdo.core.deadletters import DEAD_LETTER, SourceMessage, dead_letter_event
from pdo.core.events import EventPublisher, utc_now
from pdo.core.names import Event
from pdo.core.topics import TopicId
from pdo.metering import digests, usage
from pdo.metering.ledger import BatchResult, InvalidFact, Ledger, QuotaNotice, QuotaUsage, UsageFact
from pdo.metering.projection import known_grants

log = logging.getLogger(__name__)

SERVICE = "metering"
RECORDS_DELIVERED = Event.RECORDS_DELIVERED  # one delivery per fact (sharing before its transactions)
RECORDS_DELIVERED_BATCH = Event.RECORDS_DELIVERED_BATCH  # a transaction's deliveries under one grant
USAGE_RECORDED = Event.USAGE_RECORDED
QUOTA_EXCEEDED = Event.QUOTA_EXCEEDED
DELIVERIES_DIGESTED = Event.DELIVERIES_DIGESTED
# A window is published this long after it closed, so facts still on their way are in it.
WINDOW_GRACE = timedelta(seconds=10)
PUBLISH_LIMIT = 500  # windows per timer tick; the rest follow at the next tick

FACTS = Counter(
    "pdo_metering_facts_total",
    "Usage facts the metering worker read, by outcome (recorded, duplicate, set_aside, dead_letter)",
    ["outcome"],
)
RECORDS = Counter(
    "pdo_metering_records_total", "Delivered records newly in the usage ledger", ["tenant", "dataset"]
)
BYTES = Counter(
    "pdo_metering_bytes_total", "Delivered bytes newly in the usage ledger", ["tenant", "dataset"]
)
QUOTA_USED = Gauge(
    "pdo_metering_quota_used_ratio",
    "Today's records / daily quota, highest over the tenant's grants with a quota on the dataset",
    ["tenant", "dataset"],
)
QUOTA_EXCEEDED_TOTAL = Counter(
    "pdo_metering_quota_exceeded_total",
    "Grants that reached their daily quota (once per grant and day)",
    ["tenant", "dataset"],
)
LEDGER_WRITE = Histogram(
    "pdo_metering_ledger_write_seconds",
    "Duration of one ledger transaction (a batch of usage facts)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


@dataclass(frozen=True)
class Refusal:
    message: SourceMessage
    reason_code: str
    reason: str


@dataclass
class DecodedBatch:
    facts: list[UsageFact] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


class MeteringHandler:
    def __init__(
        self,
        ledger: Ledger,
        publisher: EventPublisher,
        codec: AvroCodec,
        catch_up: Callable[[], object],
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.ledger = ledger
        self.publisher = publisher
        self.codec = codec
        self.catch_up = catch_up  # brings the grants projection to the end of pdo.authorizations
        self.clock = clock
        # (tenant, dataset) -> grant -> (day, used / quota): the gauge shows the highest of today's.
        self._quota_ratios: dict[tuple[str, str], dict[str, tuple[date, float]]] = {}

    # ------------------------------------------------------------------------------------------ batch steps

    def decode(self, messages: Sequence[SourceMessage]) -> DecodedBatch:
        """Facts and refusals; a registry that does not answer raises (retry the batch)."""
        batch = DecodedBatch()
        for message in messages:
            try:
                decoded = self.codec.decode(message.value)
                if decoded.schema_name == RECORDS_DELIVERED_BATCH:
                    batch.facts.append(UsageFact.from_batch_event(decoded.value))
                elif decoded.schema_name == RECORDS_DELIVERED:
                    batch.facts.append(UsageFact.from_event(decoded.value))
                else:
                    raise SchemaMismatchError(
                        f"written as {decoded.schema_name} (schema id {decoded.schema_id}); "
                        f"usage facts are {RECORDS_DELIVERED_BATCH} or {RECORDS_DELIVERED}"
                    )
            except CodecError as error:
                batch.refused.append(Refusal(message, error.reason_code, str(error)))
            except InvalidFact as error:
                batch.refused.append(Refusal(message, "INVALID_EVENT", str(error)))
        return batch

    def dead_letter(self, refused: Sequence[Refusal]) -> None:
        """Publish each refusal to the dead-letter topic and wait for the acks; Unavailable to retry."""
        for refusal in refused:
            letter = dead_letter_event(refusal.message, SERVICE, refusal.reason_code, refusal.reason)
            self.publisher.publish(TopicId.DEAD_LETTERS, DEAD_LETTER, letter)
            log.warning(
                "%s dead-lettered: %s: %s", refusal.message.position, refusal.reason_code, refusal.reason
            )
        FACTS.labels("dead_letter").inc(len(refused))

    def know_grants(self, facts: Sequence[UsageFact]) -> bool:
        """Catch the grants projection up when a fact names a grant it lacks; whether it did."""
        named = {fact.grant_id for fact in facts}
        if named <= known_grants(self.ledger.engine, named):
            return False
        self.catch_up()
        return True

    def record(self, facts: Sequence[UsageFact]) -> BatchResult:
        started = time.perf_counter()
        result = self.ledger.record(facts)
        LEDGER_WRITE.observe(time.perf_counter() - started)
        self._count(result)
        return result

    def announce(self, notices: Sequence[QuotaNotice]) -> int:
        """Publish QuotaExceeded for each notice and mark it; one that fails stays pending for the timer."""
        published = 0
        for notice in notices:
            try:
                self.publisher.publish(
                    TopicId.QUOTA_EXCEEDED, QUOTA_EXCEEDED, usage.quota_exceeded_event(notice)
                )
                usage.mark_notice_published(self.ledger.engine, notice, self.clock())
            except Exception as error:  # the notice is in SQL: the timer publishes it later
                log.warning(
                    "QuotaExceeded for %s on %s stays pending: %s", notice.grant_id, notice.day, error
                )
                continue
            log.info(
                "grant %s reached its quota of %d on %s", notice.grant_id, notice.quota_records, notice.day
            )
            published += 1
        return published

    # ------------------------------------------------------------------------------------------ timer

    def publish_due(self, now: datetime | None = None) -> tuple[int, int]:
        """UsageRecorded for windows closed by now - grace (each version once), then pending quota notices."""
        windows = usage.closed_unpublished(
            self.ledger.engine, now or self.clock(), WINDOW_GRACE, PUBLISH_LIMIT
        )
        for window in windows:
            self.publisher.publish(TopicId.USAGE, USAGE_RECORDED, usage.usage_recorded_event(window))
            usage.mark_window_published(self.ledger.engine, window)
        notices = self.announce(usage.pending_notices(self.ledger.engine))
        return len(windows), notices

    def digest_deliveries(self, now: datetime | None = None) -> tuple[int, int]:
        """Claim new digests, then publish the unacknowledged ones, oldest first; (made, published)."""
        made = digests.claim_due(self.ledger.engine, now or self.clock())
        pending = digests.unpublished(self.ledger.engine, PUBLISH_LIMIT)
        for digest in pending:
            self.publisher.publish(
                TopicId.DELIVERY_DIGESTS, DELIVERIES_DIGESTED, digests.deliveries_digested_event(digest)
            )
            digests.mark_published(self.ledger.engine, digest, self.clock())
        return len(made), len(pending)

    # ------------------------------------------------------------------------------------------ metrics

    def _count(self, result: BatchResult) -> None:
        FACTS.labels("recorded").inc(sum(len(new.delivery_ids) for new in result.billed))
        FACTS.labels("set_aside").inc(sum(len(new.delivery_ids) for new in result.set_aside))
        FACTS.labels("duplicate").inc(result.duplicates)
        sums: dict[tuple[str, str], list[int]] = {}
        for new in result.new:
            total = sums.setdefault((new.tenant_id, new.dataset_id), [0, 0])
            total[0] += new.records
            total[1] += new.bytes
        for (tenant, dataset), (records, size) in sums.items():
            RECORDS.labels(tenant, dataset).inc(records)
            BYTES.labels(tenant, dataset).inc(size)
        for notice in result.notices:
            QUOTA_EXCEEDED_TOTAL.labels(notice.tenant_id, notice.dataset_id).inc()
        self._show_quota_usage(result.quota_usage)

    def _show_quota_usage(self, quota_usage: Sequence[QuotaUsage]) -> None:
        today = self.clock().date()
        for item in quota_usage:
            ratios = self._quota_ratios.setdefault((item.tenant_id, item.dataset_id), {})
            ratios[item.grant_id] = (item.day, item.used_records / item.quota_records)
        for (tenant, dataset), ratios in self._quota_ratios.items():
            todays = [ratio for day, ratio in ratios.values() if day == today]
            QUOTA_USED.labels(tenant, dataset).set(max(todays, default=0.0))
