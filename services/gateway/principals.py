"""Principals and their API keys: who is calling, proven by a key stored only as a salted hash.

A key reads `pdo_<key_id>_<secret>`. The key id is a public prefix that finds the row; the secret is 256
random bits, shown once when the key is issued and never stored or logged. What is stored is
PBKDF2-HMAC-SHA256 of the whole key with a per-key random salt; checking compares digests in constant time.

Every change — a principal created, disabled or enabled, a key issued or revoked — commits together with its
access event in the gateway's outbox (pdo.gateway.outbox): no change without its audit entry, no entry for a
change that rolled back. The event names the key by its public id only, never the key, its hash or its salt.
"""

from __future__ import annotations

import builtins  # PrincipalStore.list hides the builtin in the class's annotations
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from pdo.core.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from pdo.core.events import event_head
from pdo.core.ids import check_id
from pdo.core.names import Event
from pdo.core.topics import TopicId
from pdo.gateway.outbox import OUTBOX
from pdo.gateway.tables import api_keys, principals

KEY_PREFIX = "pdo"
# The secret is 256 random bits, so stretching is defence in depth, not what keeps it unguessable;
# about 5 ms per check on this machine. Each row records its own count, so raising it later is safe.
KDF_ITERATIONS = 10_000
KDF = f"pbkdf2-sha256:{KDF_ITERATIONS}"
KEY_PATTERN = re.compile(r"pdo_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
MAX_DISPLAY_NAME = 200
# The actor of a change made without naming one (tests, tools that seed a store).
SYSTEM_ACTOR = "system:gateway"


class PrincipalKind(StrEnum):
    """The role a principal plays; it decides which routes it may call."""

    PROVIDER = "provider"
    TENANT = "tenant"
    OPERATOR = "operator"
    # Reads the audit log (/v1/audit/...) and nothing else; changes nothing anywhere (pdo.gateway.auth).
    AUDITOR = "auditor"


@dataclass(frozen=True)
class Principal:
    principal_id: str
    kind: PrincipalKind
    display_name: str
    is_government: bool = False
    disabled: bool = False


@dataclass(frozen=True)
class IssuedKey:
    """A new key: `key` is the plaintext, to hand to its holder once; only `key_id` is kept in clear."""

    key_id: str
    principal_id: str
    key: str


@dataclass(frozen=True)
class KeyInfo:
    key_id: str
    principal_id: str
    created_at: datetime
    revoked_at: datetime | None


def principal_id(kind: PrincipalKind | str, name: str) -> str:
    """`kind:name` after checking both; the name follows the id rule of `pdo.core.ids`."""
    try:
        kind = PrincipalKind(kind)
    except ValueError:
        raise InvalidInput(
            f"unknown principal kind {str(kind)[:40]!r}", hint="use one of: " + ", ".join(PrincipalKind)
        ) from None
    check_id("principal name", name)
    return f"{kind}:{name}"


def _hash(key: str, salt: bytes, kdf: str = KDF) -> str:
    """The stored digest of `key` under `kdf` ("pbkdf2-sha256:<iterations>")."""
    name, _, iterations = kdf.partition(":")
    if name != "pbkdf2-sha256" or not iterations.isdigit():
        raise ValueError(f"unknown key derivation {kdf!r}")
    return hashlib.pbkdf2_hmac("sha256", key.encode(), salt, int(iterations)).hex()


def _now() -> datetime:
    return datetime.now(UTC)


def _principal(row) -> Principal:
    return Principal(
        principal_id=row.principal_id,
        kind=PrincipalKind(row.kind),
        display_name=row.display_name,
        is_government=bool(row.is_government),
        disabled=bool(row.disabled),
    )


def _stage(connection: Connection, schema_name: Event, actor: str, reason: str | None, **fields: Any) -> None:
    event = {**event_head(actor), **fields, "reason": reason}
    OUTBOX.stage(connection, TopicId.ACCESS, schema_name, event, actor)


class PrincipalStore:
    """Principals and API keys in the gateway's tables (see migration 0004), each change with its event.

    `after_commit` runs after each change committed (the gateway publishes its outbox there)."""

    def __init__(self, engine: Engine, after_commit: Callable[[], None] = lambda: None) -> None:
        self.engine = engine
        self.after_commit = after_commit

    # -- principals --

    def create_principal(
        self,
        kind: PrincipalKind | str,
        name: str,
        display_name: str | None = None,
        is_government: bool = False,
        actor: str = SYSTEM_ACTOR,
        reason: str | None = None,
    ) -> Principal:
        """A new principal `kind:name`; Conflict when that id exists already."""
        new_id = principal_id(kind, name)
        kind = PrincipalKind(kind)
        if is_government and kind is not PrincipalKind.TENANT:
            raise InvalidInput("only a tenant can be a government department", hint="drop --government")
        display_name = (display_name or name).strip()
        if not display_name or len(display_name) > MAX_DISPLAY_NAME or not display_name.isprintable():
            raise InvalidInput(f"a display name has 1 to {MAX_DISPLAY_NAME} printable characters")
        row = {
            "principal_id": new_id,
            "kind": kind.value,
            "display_name": display_name,
            "is_government": is_government,
            "disabled": False,
            "created_at": _now(),
        }
        try:
            with self.engine.begin() as connection:
                connection.execute(principals.insert().values(**row))
                _stage(
                    connection,
                    Event.PRINCIPAL_CREATED,
                    actor,
                    reason,
                    principal_id=new_id,
                    kind=kind.value,
                    display_name=display_name,
                    is_government=is_government,
                )
        except IntegrityError:
            raise Conflict(
                f"principal {new_id} exists already", hint="issue it another key instead"
            ) from None
        self.after_commit()
        return Principal(new_id, kind, display_name, is_government)

    def get(self, principal_id: str) -> Principal:
        with self.engine.connect() as connection:
            row = connection.execute(
                principals.select().where(principals.c.principal_id == principal_id)
            ).first()
        if row is None:
            raise NotFound(f"no principal {principal_id[:140]!r}", hint="`pdo principals add` creates one")
        return _principal(row)

    def list(self, kind: PrincipalKind | None = None) -> list[Principal]:
        query = principals.select().order_by(principals.c.principal_id)
        if kind is not None:
            query = query.where(principals.c.kind == PrincipalKind(kind).value)
        with self.engine.connect() as connection:
            return [_principal(row) for row in connection.execute(query)]

    def set_disabled(
        self, principal_id: str, disabled: bool, actor: str = SYSTEM_ACTOR, reason: str | None = None
    ) -> Principal:
        """Disable (or enable again) a principal: a disabled principal's keys stop working at once.
        Harmless (and no event) when it is so already."""
        with self.engine.begin() as connection:
            changed = connection.execute(
                principals.update()
                .where(principals.c.principal_id == principal_id, principals.c.disabled != disabled)
                .values(disabled=disabled)
            ).rowcount
            if changed:
                schema_name = Event.PRINCIPAL_DISABLED if disabled else Event.PRINCIPAL_ENABLED
                _stage(connection, schema_name, actor, reason, principal_id=principal_id)
        if changed:
            self.after_commit()
        return self.get(principal_id)  # NotFound for a principal pdo does not know

    # -- keys --

    def issue_key(self, principal_id: str, actor: str = SYSTEM_ACTOR, reason: str | None = None) -> IssuedKey:
        """A new key for the principal; the plaintext is in the answer and nowhere else."""
        self.get(principal_id)
        key_id = secrets.token_hex(8)
        key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        salt = secrets.token_bytes(16)
        with self.engine.begin() as connection:
            connection.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    principal_id=principal_id,
                    kdf=KDF,
                    salt=salt.hex(),
                    hash=_hash(key, salt),
                    created_at=_now(),
                    revoked_at=None,
                )
            )
            _stage(connection, Event.API_KEY_ISSUED, actor, reason, principal_id=principal_id, key_id=key_id)
        self.after_commit()
        return IssuedKey(key_id, principal_id, key)

    def authenticate(self, key: str | None) -> Principal:
        """The principal holding `key`; Unauthenticated for a missing, malformed, unknown or revoked key."""
        if not key:
            raise Unauthenticated(
                "no API key", hint="send it as 'Authorization: Bearer <key>' or in the X-API-Key header"
            )
        match = KEY_PATTERN.fullmatch(key)
        if match is None:
            raise Unauthenticated("that is not a pdo API key", hint="a key reads pdo_<key id>_<secret>")
        query = (
            sa.select(api_keys.c.kdf, api_keys.c.salt, api_keys.c.hash, api_keys.c.revoked_at, principals)
            .join(principals, principals.c.principal_id == api_keys.c.principal_id)
            .where(api_keys.c.key_id == match.group(1))
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None or not hmac.compare_digest(_hash(key, bytes.fromhex(row.salt), row.kdf), row.hash):
            raise Unauthenticated("unknown API key", hint="ask an operator for a key")
        if row.revoked_at is not None:
            raise Unauthenticated("this API key was revoked", hint="ask an operator for a new key")
        if row.disabled:
            raise Unauthenticated(f"principal {row.principal_id} is disabled", hint="ask an operator")
        return _principal(row)

    def revoke_key(self, key_id: str, actor: str = SYSTEM_ACTOR, reason: str | None = None) -> KeyInfo:
        """Revoke a key by its public id; harmless (and no event) when it was revoked already."""
        with self.engine.begin() as connection:
            revoked = connection.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=_now())
            ).rowcount
            if revoked:
                holder = connection.execute(
                    sa.select(api_keys.c.principal_id).where(api_keys.c.key_id == key_id)
                ).scalar_one()
                _stage(connection, Event.API_KEY_REVOKED, actor, reason, principal_id=holder, key_id=key_id)
        if revoked:
            self.after_commit()
        found = self._keys(api_keys.c.key_id == key_id)
        if not found:
            raise NotFound(f"no API key {key_id[:40]!r}", hint="`pdo principals keys --id ...` lists them")
        return found[0]

    def keys(self, principal_id: str) -> builtins.list[KeyInfo]:
        """The principal's keys, newest first, without any secret."""
        return self._keys(api_keys.c.principal_id == principal_id)

    def _keys(self, where) -> builtins.list[KeyInfo]:
        query = (
            sa.select(
                api_keys.c.key_id, api_keys.c.principal_id, api_keys.c.created_at, api_keys.c.revoked_at
            )
            .where(where)
            .order_by(api_keys.c.created_at.desc())
        )
        with self.engine.connect() as connection:
            return [KeyInfo(*row) for row in connection.execute(query)]
