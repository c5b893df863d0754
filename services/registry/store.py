"""The registry's storage rules over SQLAlchemy Core (sync): what a registration, lookup or delete does.

Every change runs in one transaction, so a failure leaves nothing half-written. Several registry workers
(or threads) may share the database: a registration that loses a race — two writers picking the same
next version of a subject, or inserting the same new schema — hits a unique constraint, rolls back and
starts over from a fresh read (see `_write`), so versions are never duplicated and ids stay global.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import avro.schema
import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from pdo.core.compatibility import CompatibilityLevel, incompatibilities
from pdo.registry import errors
from pdo.registry.schemas import ParsedSchema, parse_avro
from pdo.registry.tables import GLOBAL_SUBJECT, config, schemas, subject_versions

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_LEVEL = CompatibilityLevel.BACKWARD
WRITE_ATTEMPTS = 10
# PostgreSQL serialization failure and deadlock: both mean "try the transaction again".
_RETRY_PGCODES = {"40001", "40P01"}


@dataclass(frozen=True)
class SubjectVersion:
    subject: str
    version: int
    schema_id: int
    schema_type: str
    schema_text: str
    deleted: bool


@dataclass(frozen=True)
class Registration:
    schema_id: int
    version: int
    created: bool  # False when the subject already held this schema (idempotent repeat)


@functools.lru_cache(maxsize=2048)
def _parse_stored(text: str) -> avro.schema.Schema:
    return parse_avro(text)


def _retryable(error: DBAPIError) -> bool:
    if isinstance(error, IntegrityError):
        return True
    if getattr(error.orig, "sqlstate", None) in _RETRY_PGCODES:
        return True
    # SQLite: another connection holds the write lock past the busy timeout, or our read snapshot is stale.
    return isinstance(error, OperationalError) and any(
        word in str(error.orig).lower() for word in ("locked", "busy")
    )


class RegistryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- plumbing ---------------------------------------------------------------------------------------

    def _write(self, work: Callable[[Connection], T]) -> T:
        """Run `work` in a transaction, starting over when it loses a race with another writer."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self.engine.begin() as connection:
                    return work(connection)
            except DBAPIError as error:
                if attempt == WRITE_ATTEMPTS or not _retryable(error):
                    raise
                log.debug("registry write attempt %d lost a race (%s); retrying", attempt, error.orig)
                time.sleep(random.uniform(0, 0.005 * attempt))
        raise AssertionError("unreachable")

    def _read(self, work: Callable[[Connection], T]) -> T:
        with self.engine.connect() as connection:
            return work(connection)

    @staticmethod
    def _rows(connection: Connection, subject: str) -> list[SubjectVersion]:
        """Every version of `subject`, soft-deleted ones included, oldest first."""
        query = (
            sa.select(
                subject_versions.c.subject,
                subject_versions.c.version,
                subject_versions.c.schema_id,
                schemas.c.schema_type,
                schemas.c.schema_text,
                subject_versions.c.deleted,
            )
            .join(schemas, schemas.c.id == subject_versions.c.schema_id)
            .where(subject_versions.c.subject == subject)
            .order_by(subject_versions.c.version)
        )
        return [SubjectVersion(*row) for row in connection.execute(query)]

    @staticmethod
    def _level(connection: Connection, subject: str | None, default_to_global: bool = True):
        """The level in force for `subject` (None: the global one); None if unset and not defaulting."""
        wanted = [GLOBAL_SUBJECT] if subject is None else [subject, GLOBAL_SUBJECT]
        rows = dict(
            connection.execute(
                sa.select(config.c.subject, config.c.compatibility_level).where(config.c.subject.in_(wanted))
            ).all()
        )
        if subject is not None and subject in rows:
            return CompatibilityLevel(rows[subject])
        if subject is not None and not default_to_global:
            return None
        return CompatibilityLevel(rows.get(GLOBAL_SUBJECT, DEFAULT_LEVEL.value))

    # -- subjects and versions --------------------------------------------------------------------------

    def register(self, subject: str, parsed: ParsedSchema) -> Registration:
        def work(connection: Connection) -> Registration:
            rows = self._rows(connection, subject)
            live = [row for row in rows if not row.deleted]
            for row in live:
                if row.schema_type == parsed.schema_type and row.schema_text == parsed.text:
                    return Registration(row.schema_id, row.version, created=False)
            level = self._level(connection, subject)
            problems = _check(parsed, [row.schema_text for row in live], level)
            if problems:
                raise errors.incompatible_schema(subject, problems)
            schema_id = connection.execute(
                sa.select(schemas.c.id).where(schemas.c.fingerprint == parsed.fingerprint)
            ).scalar()
            if schema_id is None:
                result = connection.execute(
                    sa.insert(schemas).values(
                        schema_type=parsed.schema_type,
                        schema_text=parsed.text,
                        fingerprint=parsed.fingerprint,
                    )
                )
                schema_id = result.inserted_primary_key[0]  # type: ignore[index]  # None only for executemany
            version = max((row.version for row in rows), default=0) + 1
            connection.execute(
                sa.insert(subject_versions).values(
                    subject=subject, version=version, schema_id=schema_id, deleted=False
                )
            )
            return Registration(schema_id, version, created=True)

        return self._write(work)

    def lookup(self, subject: str, parsed: ParsedSchema, include_deleted: bool) -> SubjectVersion:
        def work(connection: Connection) -> SubjectVersion:
            rows = [row for row in self._rows(connection, subject) if include_deleted or not row.deleted]
            if not rows:
                raise errors.subject_not_found(subject)
            for row in reversed(rows):
                if row.schema_type == parsed.schema_type and row.schema_text == parsed.text:
                    return row
            raise errors.schema_not_found(f"Schema not found under subject '{subject}'")

        return self._read(work)

    def subjects(self, include_deleted: bool, deleted_only: bool, prefix: str | None) -> list[str]:
        def work(connection: Connection) -> list[str]:
            query = sa.select(
                subject_versions.c.subject,
                sa.func.max(sa.case((subject_versions.c.deleted, 0), else_=1)).label("has_live"),
            ).group_by(subject_versions.c.subject)
            found = []
            for subject, has_live in connection.execute(query):
                if prefix and not subject.startswith(prefix):
                    continue
                live = bool(has_live)
                if (deleted_only and not live) or (not deleted_only and (live or include_deleted)):
                    found.append(subject)
            return sorted(found)

        return self._read(work)

    def versions(self, subject: str, include_deleted: bool, deleted_only: bool) -> list[int]:
        def work(connection: Connection) -> list[int]:
            rows = self._rows(connection, subject)
            if not rows or (not include_deleted and not deleted_only and all(row.deleted for row in rows)):
                raise errors.subject_not_found(subject)
            if deleted_only:
                return [row.version for row in rows if row.deleted]
            return [row.version for row in rows if include_deleted or not row.deleted]

        return self._read(work)

    def version(self, subject: str, version: int | None, include_deleted: bool) -> SubjectVersion:
        """One version of `subject`; `version` None means the latest."""
        return self._read(
            lambda connection: _find_version(
                self._rows(connection, subject), subject, version, include_deleted
            )
        )

    def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        def work(connection: Connection) -> list[int]:
            rows = self._rows(connection, subject)
            if not rows:
                raise errors.subject_not_found(subject)
            live = [row.version for row in rows if not row.deleted]
            if permanent:
                if live:
                    raise errors.subject_not_soft_deleted(subject)
                connection.execute(sa.delete(subject_versions).where(subject_versions.c.subject == subject))
                _drop_orphans(connection, {row.schema_id for row in rows})
                return [row.version for row in rows]
            if not live:
                raise errors.subject_soft_deleted(subject)
            connection.execute(
                sa.update(subject_versions)
                .where(subject_versions.c.subject == subject, subject_versions.c.deleted.is_(False))
                .values(deleted=True)
            )
            # As Confluent does: deleting a subject also drops its own compatibility level.
            connection.execute(sa.delete(config).where(config.c.subject == subject))
            return live

        return self._write(work)

    def delete_version(self, subject: str, version: int | None, permanent: bool) -> int:
        def work(connection: Connection) -> int:
            rows = self._rows(connection, subject)
            # "latest" is the newest live version (the newest of all for a permanent delete); a numbered
            # version is found even when soft-deleted, so the answer can say it already was.
            if version is None:
                row = _find_version(rows, subject, None, include_deleted=permanent)
            else:
                _find_version(rows, subject, None, include_deleted=True)  # 40401 for an unknown subject
                row = _find_version(rows, subject, version, include_deleted=True)
            if permanent:
                if not row.deleted:
                    raise errors.version_not_soft_deleted(subject, row.version)
                connection.execute(
                    sa.delete(subject_versions).where(
                        subject_versions.c.subject == subject, subject_versions.c.version == row.version
                    )
                )
                _drop_orphans(connection, {row.schema_id})
            else:
                if row.deleted:
                    raise errors.version_soft_deleted(subject, row.version)
                connection.execute(
                    sa.update(subject_versions)
                    .where(subject_versions.c.subject == subject, subject_versions.c.version == row.version)
                    .values(deleted=True)
                )
            return row.version

        return self._write(work)

    # -- schemas by id ----------------------------------------------------------------------------------

    def schema(self, schema_id: int) -> tuple[str, str]:
        """(schema type, schema text) of a global id."""

        def work(connection: Connection) -> tuple[str, str]:
            row = connection.execute(
                sa.select(schemas.c.schema_type, schemas.c.schema_text).where(schemas.c.id == schema_id)
            ).first()
            if row is None:
                raise errors.schema_not_found(f"Schema {schema_id} not found")
            return row[0], row[1]

        return self._read(work)

    def schema_usages(self, schema_id: int, include_deleted: bool) -> list[tuple[str, int]]:
        """(subject, version) pairs registered with a global id."""

        def work(connection: Connection) -> list[tuple[str, int]]:
            exists = connection.execute(sa.select(schemas.c.id).where(schemas.c.id == schema_id)).first()
            if exists is None:
                raise errors.schema_not_found(f"Schema {schema_id} not found")
            query = (
                sa.select(subject_versions.c.subject, subject_versions.c.version)
                .where(subject_versions.c.schema_id == schema_id)
                .order_by(subject_versions.c.subject, subject_versions.c.version)
            )
            if not include_deleted:
                query = query.where(subject_versions.c.deleted.is_(False))
            return [(subject, version) for subject, version in connection.execute(query)]

        return self._read(work)

    # -- compatibility ----------------------------------------------------------------------------------

    def get_level(self, subject: str | None, default_to_global: bool) -> CompatibilityLevel:
        level = self._read(lambda connection: self._level(connection, subject, default_to_global))
        if level is None:
            raise errors.subject_config_not_found(subject or "")
        return level

    def set_level(self, subject: str | None, level: CompatibilityLevel) -> None:
        key = GLOBAL_SUBJECT if subject is None else subject

        def work(connection: Connection) -> None:
            updated = connection.execute(
                sa.update(config)
                .where(config.c.subject == key)
                .values(compatibility_level=level.value, updated_at=sa.func.now())
            )
            if updated.rowcount == 0:
                connection.execute(sa.insert(config).values(subject=key, compatibility_level=level.value))

        self._write(work)

    def delete_level(self, subject: str | None) -> CompatibilityLevel:
        """Drop a subject's own level (or reset the global one); returns the level that was set."""
        key = GLOBAL_SUBJECT if subject is None else subject

        def work(connection: Connection) -> CompatibilityLevel:
            current = connection.execute(
                sa.select(config.c.compatibility_level).where(config.c.subject == key)
            ).scalar()
            if current is None:
                if subject is None:
                    return DEFAULT_LEVEL
                raise errors.subject_config_not_found(subject)
            connection.execute(sa.delete(config).where(config.c.subject == key))
            return CompatibilityLevel(current)

        return self._write(work)

    def check(self, subject: str, parsed: ParsedSchema, version: int | None | str) -> list[str]:
        """Why `parsed` may not be registered under `subject`, judged against one version (None: latest)
        or, with version "all", against every live version as the subject's level says."""

        def work(connection: Connection) -> list[str]:
            rows = self._rows(connection, subject)
            live = [row for row in rows if not row.deleted]
            level = self._level(connection, subject)
            if version == "all":
                compared = live
            elif version is None:
                compared = live[-1:]  # no version yet: anything is compatible
            else:
                # An int here: the routes pass a version number, None or "all".
                compared = [_find_version(rows, subject, version, include_deleted=False)]  # type: ignore[arg-type]
            return _check(parsed, [row.schema_text for row in compared], level)

        return self._read(work)


def _find_version(
    rows: list[SubjectVersion], subject: str, version: int | None, include_deleted: bool
) -> SubjectVersion:
    visible = [row for row in rows if include_deleted or not row.deleted]
    if not visible:
        raise errors.subject_not_found(subject)
    if version is None:
        return visible[-1]
    for row in visible:
        if row.version == version:
            return row
    raise errors.version_not_found(subject, version)


def _check(parsed: ParsedSchema, existing_texts: list[str], level: CompatibilityLevel) -> list[str]:
    if level is CompatibilityLevel.NONE or not existing_texts:
        return []
    # Non-transitive levels look at the latest version only: parse just that one.
    existing = [_parse_stored(text) for text in (existing_texts if level.transitive else existing_texts[-1:])]
    try:
        return incompatibilities(parsed.avro, existing, level)
    except RecursionError:
        raise errors.invalid_schema("schema is nested too deeply to check compatibility") from None


def _drop_orphans(connection: Connection, schema_ids: set[int]) -> None:
    """Remove schemas no subject version uses any more (ids are never handed out again)."""
    if not schema_ids:
        return
    still_used = sa.select(subject_versions.c.schema_id).where(subject_versions.c.schema_id.in_(schema_ids))
    connection.execute(
        sa.delete(schemas).where(schemas.c.id.in_(schema_ids), schemas.c.id.not_in(still_used))
    )
