"""Kafka credentials of tenants and providers: issued by the platform, shown once, rotatable, revocable.

Guarantee: a tenant's credentials read only its own topics (`pdo.tenant.<tenant>.` prefix) with consumer groups
of the same prefix; a provider's write only the feeds of the datasets it owns (granted when a dataset is
registered, withdrawn when it is retired). The password is 256 random bits, handed out once and never stored
by pdo: the broker keeps only its salted SCRAM verifier, so issuing again is rotation (the old password stops
working at once) and revoking removes the user and every ACL it had. The schema registry checks the same
credentials, so a revoked tenant's registry access ends with it.

Every issue (rotation) and revocation is recorded on pdo.access, with the ACLs that go with it, BEFORE the
broker changes (pdo.core.access_log): when the event cannot be published the change is refused (Unavailable,
HTTP 503) and the broker is left as it was. The trade-off: an entry may exist for a change the broker then
refused; the entry records the act as ordered, and the failure is a second event. The password is never in
an event.

Depends on the gateway's Kafka principal holding cluster ALTER (declared in topics/principals/services.yaml)
and producing pdo.access (topics/access.yaml).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pdo.core import access
from pdo.core.access_log import AccessLog, Act
from pdo.core.config import Settings
from pdo.core.errors import Forbidden
from pdo.core.events import OnDemandPublisher, event_head
from pdo.core.kafka import SASL_MECHANISM, admin_client
from pdo.core.names import Event
from pdo.core.outbox import Publisher


@dataclass(frozen=True)
class IssuedKafkaCredentials:
    """What a party needs to connect; `password` is shown to it once."""

    principal_id: str
    username: str
    password: str
    bootstrap_servers: str
    security_protocol: str
    sasl_mechanism: str
    registry_url: str
    topic_prefix: str | None  # a tenant's topics and consumer groups start with it
    feeds: tuple[str, ...]  # the feeds a provider may write

    def client_properties(self) -> str:
        """librdkafka / kcat / Java client properties, ready to paste into a file."""
        lines = [
            f"bootstrap.servers={self.bootstrap_servers}",
            f"security.protocol={self.security_protocol}",
            f"sasl.mechanisms={self.sasl_mechanism}",
            f"sasl.username={self.username}",
            f"sasl.password={self.password}",
        ]
        if self.topic_prefix:
            lines += [f"group.id={self.topic_prefix}my-app", "isolation.level=read_committed"]
        lines.append(f"schema.registry.basic.auth.user.info={self.username}:{self.password}")
        return "\n".join(lines) + "\n"


class KafkaUsers(Protocol):
    """Where users and ACLs live: the broker (BrokerUsers), or a stand-in in unit tests."""

    def set_user(self, user: str, password: str, grants: set[access.Grant]) -> None: ...

    def remove_user(self, user: str) -> int: ...


class BrokerUsers:
    """SCRAM users and ACLs on the broker, as this process's Kafka principal (the gateway's)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def set_user(self, user: str, password: str, grants: set[access.Grant]) -> None:
        with admin_client(self.settings) as admin:
            access.set_password(admin, user, password)
            access.grant(admin, grants)

    def remove_user(self, user: str) -> int:
        with admin_client(self.settings) as admin:
            access.delete_user(admin, user)
            return len(access.revoke_principal(admin, user))


class KafkaCredentialIssuer:
    """Issues (or rotates) and revokes a party's Kafka user and its ACLs. Blocking: call from a thread."""

    def __init__(
        self,
        settings: Settings,
        datasets_of: Callable[[str], list[str]],
        users: KafkaUsers | None = None,
        events: Publisher | None = None,
    ) -> None:
        self.settings = settings
        self.datasets_of = datasets_of  # provider id -> ids of its datasets that are not retired
        self.users = users or BrokerUsers(settings)
        # Where the acts are recorded before they take effect: pdo.access, as this process's Kafka principal.
        self.access_log = AccessLog(events or OnDemandPublisher(settings))

    def issue(
        self, principal_id: str, actor: str | None = None, reason: str | None = None
    ) -> IssuedKafkaCredentials:
        """New credentials (the old password stops working); `actor` is who asked, the party by default."""
        user = self._user(principal_id)
        password = secrets.token_urlsafe(32)
        feeds: tuple[str, ...] = ()
        prefix = None
        if principal_id.startswith("tenant:"):
            grants = access.tenant_acls(principal_id, self.settings)
            prefix = access.tenant_prefix(principal_id, self.settings)
        else:
            datasets = self.datasets_of(principal_id)
            grants = set().union(*(access.provider_acls(principal_id, d, self.settings) for d in datasets))
            feeds = tuple(sorted({g.resource_name for g in grants}))
        event = {
            **event_head(actor or principal_id),
            "principal_id": principal_id,
            "username": user,
            "acls": sorted(grant.line() for grant in grants),
            "reason": reason,
        }
        with self.access_log.ordered(Event.KAFKA_CREDENTIALS_ISSUED, event, _act("issued", principal_id)):
            self.users.set_user(user, password, grants)
        return IssuedKafkaCredentials(
            principal_id=principal_id,
            username=user,
            password=password,
            bootstrap_servers=self.settings.kafka_bootstrap,
            security_protocol=self.settings.kafka_security_protocol,
            sasl_mechanism=SASL_MECHANISM,
            registry_url=self.settings.registry_url,
            topic_prefix=prefix,
            feeds=feeds,
        )

    def revoke(self, principal_id: str, actor: str | None = None, reason: str | None = None) -> int:
        """Remove the party's Kafka user and all its ACLs; how many ACLs went. `actor`: the party by default."""
        user = self._user(principal_id)
        event = {
            **event_head(actor or principal_id),
            "principal_id": principal_id,
            "username": user,
            "reason": reason,
        }
        with self.access_log.ordered(Event.KAFKA_CREDENTIALS_REVOKED, event, _act("revoked", principal_id)):
            return self.users.remove_user(user)

    @staticmethod
    def _user(principal_id: str) -> str:
        kind = principal_id.partition(":")[0]
        if kind not in access.PARTY_KINDS:
            raise Forbidden(
                f"{principal_id} is an {kind}: only tenants and providers get Kafka credentials",
                hint="operators work through the HTTP API and the pdo command",
            )
        return access.party_user(principal_id)


def _act(verb: str, principal_id: str) -> Act:
    tenant = principal_id if principal_id.startswith("tenant:") else None
    return Act(f"kafka_credentials.{verb}", f"principal:{principal_id}", tenant)


class InMemoryUsers:
    """KafkaUsers kept in a dict: for tests and for a gateway run without a broker."""

    def __init__(self) -> None:
        self.users: dict[str, tuple[str, set[access.Grant]]] = {}

    def set_user(self, user: str, password: str, grants: set[access.Grant]) -> None:
        self.users[user] = (password, set(grants))

    def remove_user(self, user: str) -> int:
        return len(self.users.pop(user, ("", set()))[1])
