"""Access acts on the broker are recorded before they take effect: fail closed (issue #13).

**Guarantee.** `AccessLog.ordered` publishes the act's event to pdo.access and waits for the broker's
acknowledgement BEFORE the caller changes anything (a Kafka user, an ACL, a topic, a replayed record). If the
event cannot be published, the change is refused (Unavailable: the HTTP API answers 503, the CLI exits
non-zero with the reason) and nothing changes. So no broker change that must be audited takes effect
without its entry.

**The trade-off.** The event is written first, so an entry may exist for a change the broker then refused
(or only partly made): the entry records the act *as ordered*. When the change fails, a second event
(AccessChangeFailed, naming the first by its event id) records that it did not take effect — best effort,
since the broker that refused the change may refuse the event too; the first entry alone then still says
what was ordered, and the operator sees the failure.

SQL changes (principals, API keys, periods) do not come here: they commit with their event through an outbox
(pdo.core.outbox).
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pdo.core.errors import PdoError, Unavailable
from pdo.core.events import event_head
from pdo.core.names import Event
from pdo.core.outbox import Publisher
from pdo.core.topics import TopicId

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Act:
    """What an act is about, as the audit log names it: for the failure event, should the change fail."""

    action: str  # e.g. "kafka_credentials.issued"
    subject: str  # e.g. "principal:tenant:acme"
    tenant_id: str | None = None


class AccessLog:
    """Records access acts on pdo.access through `publisher` (an EventPublisher: it waits for the ack)."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def record(self, schema_name: Event, value: dict[str, Any]) -> None:
        """Publish one act and wait for the broker; Unavailable (nothing may change) when it cannot."""
        try:
            self.publisher.publish(TopicId.ACCESS, schema_name, value)
        except PdoError as error:
            raise Unavailable(
                f"the audit log could not record this change, so nothing was changed: {error.message}",
                hint="check that the broker and the schema registry are up and that this principal may "
                "write pdo.access (`pdo acls apply`), then retry",
            ) from None

    @contextmanager
    def ordered(self, schema_name: Event, value: dict[str, Any], act: Act) -> Iterator[None]:
        """Record the act, then run the block that makes the change; a block that fails is recorded as a
        second event (best effort) and its error goes on."""
        self.record(schema_name, value)
        try:
            yield
        except Exception as error:
            self._failed(value, act, error)
            raise

    def _failed(self, ordered: dict[str, Any], act: Act, error: Exception) -> None:
        failure = {
            **event_head(ordered["actor"]),
            "ordered_event_id": ordered["event_id"],
            "action": act.action,
            "subject": act.subject,
            "tenant_id": act.tenant_id,
            "error": f"{type(error).__name__}: {error}"[:500],
        }
        try:
            self.publisher.publish(TopicId.ACCESS, Event.ACCESS_CHANGE_FAILED, failure)
        except Exception as unrecorded:  # the first entry stands; the caller reports the failure itself
            log.warning("could not record that %s failed (%s)", act.action, unrecorded)


def operator_actor(by: str | None = None) -> str:
    """The actor of an operator's command: `by` when given, else operator:<login name>."""
    return by or f"operator:{_login()}"


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in this environment (e.g. a container without USER)
        return "cli"
