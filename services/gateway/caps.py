"""Caps on what one caller can make the gateway do, so one tenant cannot starve the others.

* **Rate**: each principal has a token bucket (PDO_GATEWAY_RATE_PER_S on average, PDO_GATEWAY_RATE_BURST
  at once), taken when its key is checked; past it, 429 with Retry-After until a token is back. Requests
  whose key fails spend from a bucket of their client address instead, so guessing keys is throttled.
* **Open streams**: at most PDO_GATEWAY_MAX_STREAMS record streams per gateway process and
  PDO_GATEWAY_MAX_STREAMS_PER_TENANT per tenant; a slot is held from the stream's start to its end.
* **Grants per tenant and dataset**: a request is refused when the tenant already holds
  PDO_MAX_GRANTS_PER_TENANT_DATASET live grants (active or suspended) and undecided requests on the
  dataset together: every grant multiplies the work sharing does for each record of the dataset.

Every refusal is TooManyRequests (429, `{"error": "too_many_requests", "message", "hint"}`) and is counted
in pdo_gateway_limited_total{limit}. Rate and stream counts live in this process: behind a load balancer
with N gateways the effective caps are N times these.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from pdo.authorization.public import RequestStatus
from pdo.core.config import Settings
from pdo.core.errors import TooManyRequests
from pdo.core.vocabulary import GrantStatus

# Stream slots free up when a stream ends; nothing predicts when, so this is a polite guess.
STREAM_RETRY_AFTER_S = 30
LIVE_GRANTS = (GrantStatus.ACTIVE, GrantStatus.SUSPENDED)
UNDECIDED = (RequestStatus.SUBMITTED, RequestStatus.PENDING_REVIEW)


class RateLimiter:
    """Token buckets by key; `take` spends one token or says how many seconds until one is back."""

    def __init__(self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.capacity = max(burst, 1)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when counted)
        self._lock = threading.Lock()  # auth dependencies run in the threadpool

    def take(self, key: str) -> int | None:
        """None when a token was spent; else whole seconds (at least 1) until the next token."""
        if self.per_second <= 0:
            return None
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.per_second)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return None
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((1 - tokens) / self.per_second))


@dataclass
class StreamSlot:
    """One open stream's place; release() is safe to call more than once (the stream's end and its
    response's cleanup both call it)."""

    slots: StreamSlots
    tenant_id: str
    released: bool = False

    def release(self) -> None:
        self.slots._release(self)


@dataclass
class StreamSlots:
    total: int
    per_tenant: int
    open_by_tenant: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def acquire(self, tenant_id: str) -> StreamSlot | None:
        """A slot, or None with nothing taken when either cap is reached (`refusal` says which)."""
        with self._lock:
            if sum(self.open_by_tenant.values()) >= self.total:
                return None
            if self.open_by_tenant.get(tenant_id, 0) >= self.per_tenant:
                return None
            self.open_by_tenant[tenant_id] = self.open_by_tenant.get(tenant_id, 0) + 1
            return StreamSlot(self, tenant_id)

    def refusal(self, tenant_id: str) -> tuple[str, TooManyRequests]:
        """(metric label, error) for a refused acquire."""
        if self.open_by_tenant.get(tenant_id, 0) >= self.per_tenant:
            return "streams_per_tenant", TooManyRequests(
                f"you have {self.per_tenant} streams open already, the most one tenant may hold",
                hint="close one of your streams (one stream per dataset is enough), then retry",
                retry_after_s=STREAM_RETRY_AFTER_S,
            )
        return "streams", TooManyRequests(
            f"the gateway serves {self.total} streams already, the most it serves at once",
            hint="retry later, or read your topic with a Kafka client",
            retry_after_s=STREAM_RETRY_AFTER_S,
        )

    def _release(self, slot: StreamSlot) -> None:
        with self._lock:
            if slot.released:
                return
            slot.released = True
            left = self.open_by_tenant[slot.tenant_id] - 1
            if left:
                self.open_by_tenant[slot.tenant_id] = left
            else:
                del self.open_by_tenant[slot.tenant_id]


class Caps:
    """The gateway's caps, built from Settings, counting each refusal in `limited{limit}`."""

    def __init__(self, settings: Settings, limited: Counter) -> None:
        self.settings = settings
        self.limited = limited
        self.rate = RateLimiter(settings.gateway_rate_per_s, settings.gateway_rate_burst)
        self.streams = StreamSlots(settings.gateway_max_streams, settings.gateway_max_streams_per_tenant)

    def refuse(self, limit: str, error: TooManyRequests) -> TooManyRequests:
        self.limited.labels(limit=limit).inc()
        return error

    def spend_request(self, caller: str) -> None:
        """Spend one request of `caller` (a principal id, or "address <ip>" for a failed key)."""
        wait = self.rate.take(caller)
        if wait is not None:
            raise self.refuse(
                "rate",
                TooManyRequests(
                    f"{caller} sent more than {self.settings.gateway_rate_per_s} requests per second "
                    f"(bursts up to {self.settings.gateway_rate_burst})",
                    hint=f"slow down: retry after {wait} s (Retry-After), and space out polling",
                    retry_after_s=wait,
                ),
            )

    def open_stream(self, tenant_id: str) -> StreamSlot:
        slot = self.streams.acquire(tenant_id)
        if slot is None:
            raise self.refuse(*self.streams.refusal(tenant_id))
        return slot

    def check_grants(self, authorization: Any, tenant_id: str, dataset_id: str) -> None:
        """Refuse a new request when the tenant's live grants and undecided requests on the dataset reach
        the cap. A check, not a lock: two requests sent at the same instant may both pass."""
        cap = self.settings.max_grants_per_tenant_dataset
        live = sum(
            len(authorization.list_grants(tenant_id=tenant_id, dataset_id=dataset_id, status=status))
            for status in LIVE_GRANTS
        )
        undecided = sum(
            1
            for status in UNDECIDED
            for item in authorization.list_requests(tenant_id=tenant_id, status=status)
            if item.dataset_id == dataset_id
        )
        if live + undecided >= cap:
            raise self.refuse(
                "grants_per_tenant_dataset",
                TooManyRequests(
                    f"you hold {live} live grant(s) and {undecided} undecided request(s) on dataset "
                    f"{dataset_id!r}; at most {cap} together are allowed",
                    hint="withdraw an undecided request, or ask an operator to revoke a grant you no longer "
                    "use; one grant can carry every field and row you need",
                ),
            )
