"""Who may call the schema registry, and what they may do: HTTP Basic with pdo's Kafka principals.

Guarantee: no request but `/metrics` is answered without a valid user and password. Credentials are the
ones Kafka knows (SASL/SCRAM users): the registry verifies a password by logging in to the broker with it
(`KafkaLogin`), so the broker's SCRAM store is the one place credentials live, and a user removed there is
refused here too once its cached check expires (PDO_REGISTRY_AUTH_CACHE_S). Roles:

* `admin` and `operator.*`: everything, including compatibility settings and deletes;
* `service.*`: read everything and register schemas; set a subject's compatibility only to FULL_TRANSITIVE
  (the catalog does, for a new feed: it can only make the registry refuse more); no deletes, no global config;
* anyone else (tenants, providers): read only the subjects of topics its Kafka ACLs let it read or write
  (`KafkaAclAccess`); schemas by id only when a subject it may read holds them; nothing it may change.

Subjects name their topic: `<topic>-<record full name>` (TopicRecordNameStrategy) or `<topic>-value|key`;
Avro names never hold '-', so the topic is everything before the last '-'.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError as AioKafkaError
from aiokafka.errors import SaslAuthenticationFailed
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourceType,
)
from kafka.errors import KafkaError, NoError
from prometheus_client import CollectorRegistry, Counter

from pdo.core import access
from pdo.core.compatibility import CompatibilityLevel
from pdo.core.config import Settings
from pdo.core.errors import PdoError
from pdo.core.kafka import SASL_MECHANISM, admin_client, ssl_context
from pdo.registry.errors import RegistryError

REALM = 'Basic realm="pdo-registry", charset="UTF-8"'
ACL_CACHE_S = 5.0
READ_OPERATIONS = {"READ", "WRITE", "ALL"}  # a producer needs the schema of the topic it writes


class Role(StrEnum):
    OPERATOR = "operator"
    SERVICE = "service"
    PARTY = "party"


@dataclass(frozen=True)
class Caller:
    username: str
    role: Role


def role_of(username: str) -> Role:
    if username == "admin" or username.startswith("operator."):
        return Role.OPERATOR
    if username.startswith(access.SERVICE_PREFIX):
        return Role.SERVICE
    return Role.PARTY


def topic_of_subject(subject: str) -> str:
    return subject.rsplit("-", 1)[0]


class Authenticator(Protocol):
    def __call__(self, username: str, password: str) -> bool: ...


class TopicAccess(Protocol):
    def __call__(self, username: str, topic: str) -> bool: ...


# ---------------------------------------------------------------------------------------------- errors


def unauthenticated(message: str) -> RegistryError:
    return RegistryError(
        401,
        40101,
        f"{message}: send HTTP Basic credentials (Confluent clients: basic.auth.user.info=<user>:<password>), "
        "the same Kafka user and password the platform issued you",
    )


def forbidden(caller: Caller, what: str) -> RegistryError:
    return RegistryError(403, 40301, f"user {caller.username!r} may not {what}")


# ---------------------------------------------------------------------------------------------- checks


class CachedAuthenticator:
    """Remembers successful checks for `ttl_s`, keyed by user and a keyed digest of the password (never the
    password itself); failures are not remembered, so a corrected password works at once."""

    def __init__(
        self, check: Authenticator, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.check = check
        self.ttl_s = ttl_s
        self.clock = clock
        self._pepper = secrets.token_bytes(32)
        self._valid: dict[tuple[str, bytes], float] = {}
        self._lock = threading.Lock()

    def __call__(self, username: str, password: str) -> bool:
        key = (username, hmac.new(self._pepper, password.encode(), hashlib.sha256).digest())
        now = self.clock()
        with self._lock:
            if self._valid.get(key, 0.0) > now:
                return True
        if not self.check(username, password):
            return False
        with self._lock:
            self._valid[key] = now + self.ttl_s
        return True


class KafkaLogin:
    """Checks a password by logging in to the broker with it (SASL/SCRAM), on a connection of its own.

    aiokafka's connection reports a refused login as SaslAuthenticationFailed within the broker's
    authentication delay; a broker that does not answer is a 503, never a refusal.
    """

    def __init__(self, settings: Settings, connect: Callable[..., Awaitable] = create_conn) -> None:
        self.settings = settings
        self.connect = connect  # aiokafka's handshake; a stand-in in unit tests
        host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
        self.address = (host, int(port))

    def __call__(self, username: str, password: str) -> bool:
        return asyncio.run(self._login(username, password))

    async def _login(self, username: str, password: str) -> bool:
        try:
            connection = await self.connect(
                *self.address,
                security_protocol=self.settings.kafka_security_protocol,
                ssl_context=ssl_context(self.settings),
                sasl_mechanism=SASL_MECHANISM,
                sasl_plain_username=username,
                sasl_plain_password=password,
                request_timeout_ms=min(self.settings.kafka_timeout_s, 5) * 1000,
            )
        except SaslAuthenticationFailed:
            return False
        except (TimeoutError, OSError, AioKafkaError) as error:
            raise RegistryError(
                503, 50301, f"cannot check credentials now, Kafka does not answer: {error}"
            ) from None
        connection.close()
        return True


class KafkaAclAccess:
    """May `username` read `topic`? Asked of the broker's ACLs, cached `ttl_s` per user so a party's
    listing of many subjects costs one ACL query; a change of ACLs thus reaches the registry within `ttl_s`.

    `list_acls` gives a user's TOPIC ACLs (`broker_acls` in production; a stand-in in unit tests).
    """

    def __init__(
        self,
        list_acls: Callable[[str], list[ACL]],
        ttl_s: float = ACL_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.list_acls = list_acls
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: dict[str, tuple[float, list[ACL]]] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings: Settings) -> KafkaAclAccess:
        return cls(lambda username: broker_acls(settings, username))

    def __call__(self, username: str, topic: str) -> bool:
        return may_read(self._acls(username), topic)

    def _acls(self, username: str) -> list[ACL]:
        now = self.clock()
        with self._lock:
            cached = self._cache.get(username)
            if cached and cached[0] > now:
                return cached[1]
        acls = self.list_acls(username)
        with self._lock:
            self._cache[username] = (now + self.ttl_s, acls)
        return acls


def broker_acls(settings: Settings, username: str) -> list[ACL]:
    """The TOPIC ACLs the broker holds for `username`; a 503 when it cannot say (never an empty list)."""
    try:
        with admin_client(settings) as admin:
            acls, error = admin.describe_acls(
                access.acl_filter(access.kafka_principal(username), ResourceType.TOPIC)
            )
    except (PdoError, KafkaError) as failure:
        raise RegistryError(503, 50302, f"cannot read the caller's Kafka ACLs now: {failure}") from None
    if error is not NoError:
        raise RegistryError(503, 50302, f"the broker would not list ACLs: {error}")
    return acls


def _covers(acl: ACL, topic: str) -> bool:
    pattern = acl.resource_pattern
    kind = ACLResourcePatternType(pattern.pattern_type)
    return (
        ACLOperation(acl.operation).name in READ_OPERATIONS
        and ResourceType(pattern.resource_type) is ResourceType.TOPIC
        and (
            # Kafka's wildcard is the LITERAL name '*' only: a PREFIXED '*' matches names starting with '*'.
            (kind is ACLResourcePatternType.LITERAL and pattern.resource_name in ("*", topic))
            or (kind is ACLResourcePatternType.PREFIXED and topic.startswith(pattern.resource_name))
        )
    )


def may_read(acls: list[ACL], topic: str) -> bool:
    """An ALLOW for READ, WRITE or ALL covers `topic` (literally, by prefix, or `*`) and no such DENY does."""
    covering = [acl for acl in acls if _covers(acl, topic)]
    allowed = any(acl.permission_type == ACLPermissionType.ALLOW for acl in covering)
    return allowed and not any(acl.permission_type == ACLPermissionType.DENY for acl in covering)


# ---------------------------------------------------------------------------------------------- the guard


class Guard:
    """Authenticates each request and answers what its caller may do; counts refusals by reason."""

    def __init__(
        self, authenticate: Authenticator, topic_access: TopicAccess, metrics: CollectorRegistry
    ) -> None:
        self.authenticate = authenticate
        self.topic_access = topic_access
        self.refusals = Counter(
            "pdo_registry_refusals",
            "Requests the schema registry refused, by reason (unauthenticated, forbidden)",
            ["reason"],
            registry=metrics,
        )

    @classmethod
    def for_settings(cls, settings: Settings, metrics: CollectorRegistry) -> Guard:
        """Credentials checked by logging in to Kafka; parties' reach read from the broker's ACLs."""
        return cls(
            CachedAuthenticator(KafkaLogin(settings), settings.registry_auth_cache_s),
            KafkaAclAccess.for_settings(settings),
            metrics,
        )

    def caller(self, authorization: str | None) -> Caller:
        username, password = self._basic(authorization)
        if not self.authenticate(username, password):
            self.refusals.labels("unauthenticated").inc()
            raise unauthenticated(f"user {username[:100]!r} and this password are not known")
        return Caller(username, role_of(username))

    def _basic(self, authorization: str | None) -> tuple[str, str]:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic" or not encoded:
            self.refusals.labels("unauthenticated").inc()
            raise unauthenticated("no credentials")
        try:
            username, separator, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            username, separator, password = "", "", ""
        if not separator or not username:
            self.refusals.labels("unauthenticated").inc()
            raise unauthenticated("malformed Basic credentials")
        return username, password

    def require_operator(self, caller: Caller, what: str) -> None:
        if caller.role is not Role.OPERATOR:
            self.refusals.labels("forbidden").inc()
            raise forbidden(caller, what)

    def require_writer(self, caller: Caller, what: str) -> None:
        if caller.role is Role.PARTY:
            self.refusals.labels("forbidden").inc()
            raise forbidden(caller, what)

    def require_subject_level(self, caller: Caller, level: CompatibilityLevel) -> None:
        """Operators set any level; services only the strictest, FULL_TRANSITIVE."""
        if caller.role is Role.OPERATOR or (
            caller.role is Role.SERVICE and level is CompatibilityLevel.FULL_TRANSITIVE
        ):
            return
        self.refusals.labels("forbidden").inc()
        raise forbidden(caller, f"set a subject's compatibility to {level.value}")

    def may_read(self, caller: Caller, subject: str) -> bool:
        return caller.role is not Role.PARTY or self.topic_access(caller.username, topic_of_subject(subject))

    def require_read(self, caller: Caller, subject: str) -> None:
        if not self.may_read(caller, subject):
            self.refusals.labels("forbidden").inc()
            raise forbidden(caller, f"read subject {subject[:200]!r}")
