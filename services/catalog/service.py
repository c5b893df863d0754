"""The catalog service: providers register, update and retire datasets; each change is a row and an event.

Every change runs the same way: check everything that can be checked without side effects (so a refusal
leaves nothing behind), then do the idempotent outside steps (register the record schema, create the
feed topic), then write the row and publish the event in one database transaction: the event is
published before the commit, and a failed publish rolls the row back. Should the commit itself fail
after a publish, the catalog topic is the source of truth and the projection (pdo.catalog.projection)
writes the row from the event.

Only the provider that registered a dataset may change it; anyone else gets Forbidden (the catalog is
public, so hiding which datasets exist would protect nothing).
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from avro.schema import RecordSchema
from kafka.errors import KafkaError
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from pdo.catalog import mapping, validation
from pdo.catalog.models import Dataset, DatasetChanges, DatasetRegistration
from pdo.catalog.tables import datasets
from pdo.core import access, schemas, topics
from pdo.core.compatibility import CompatibilityLevel
from pdo.core.config import Settings
from pdo.core.errors import Conflict, Forbidden, InvalidInput, NotFound, PdoError, Unavailable
from pdo.core.events import EventPublisher, event_head
from pdo.core.ids import PRODUCT_PREFIX, PRODUCTS_PROVIDER, is_product_id
from pdo.core.kafka import admin_client
from pdo.core.names import Event
from pdo.core.registry_client import RegistryClient, RegistryError, subject_for
from pdo.core.topics import TopicId, feed_topic
from pdo.core.vocabulary import Classification, Domain, Openness

log = logging.getLogger(__name__)

REGISTERED = Event.DATASET_REGISTERED
UPDATED = Event.DATASET_UPDATED
RETIRED = Event.DATASET_RETIRED
# New readers read old records and old readers read new ones, against every earlier version: tenants'
# consumers and the sharing service keep working whatever version a provider publishes with.
FEED_COMPATIBILITY = CompatibilityLevel.FULL_TRANSITIVE
INCOMPATIBLE = 409
MAX_REASON = 1000
# Listing fields (pdo.catalog.listing), free text with their limits.
LISTING_TEXTS = {"asset_registration_number": 128, "terms": validation.MAX_DESCRIPTION}
MAX_SOURCES = 16  # datasets a derived one may name as its sources


# ---------------------------------------------------------------- reading (no publisher needed)


def get_dataset(engine: Engine, dataset_id: str) -> Dataset:
    """The dataset as the catalog holds it now; NotFound if it was never registered."""
    with _database(engine) as connection:
        row = _select_row(connection, dataset_id)
    if row is None:
        raise NotFound(f"no dataset {dataset_id!r} in the catalog")
    return mapping.dataset_from_row(row)


def list_datasets(
    engine: Engine, provider_id: str | None = None, include_retired: bool = False
) -> list[Dataset]:
    """Datasets in id order, optionally of one provider; retired ones only when asked for."""
    query = sa.select(datasets).order_by(datasets.c.dataset_id)
    if provider_id is not None:
        query = query.where(datasets.c.provider_id == provider_id)
    if not include_retired:
        query = query.where(datasets.c.retired == sa.false())
    with _database(engine) as connection:
        return [mapping.dataset_from_row(row) for row in connection.execute(query)]


# ---------------------------------------------------------------- the service


class CatalogService:
    """Register, update, retire and read datasets. Thread-safe: share one per process."""

    def __init__(
        self, engine: Engine, publisher: EventPublisher, registry: RegistryClient, settings: Settings
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.registry = registry
        self.settings = settings

    # -- reading

    def get(self, dataset_id: str) -> Dataset:
        return get_dataset(self.engine, dataset_id)

    def list(self, provider_id: str | None = None, include_retired: bool = False) -> builtins.list[Dataset]:
        return list_datasets(self.engine, provider_id, include_retired)

    # -- changing

    def register(self, provider_id: str, dataset: DatasetRegistration, actor: str) -> Dataset:
        """Add a dataset owned by `provider_id`: its schema registered, its feed topic created, an event."""
        draft = self._checked_registration(provider_id, dataset)
        _require_product_rule(draft)
        if self._exists(draft.dataset_id):
            raise Conflict(f"dataset {draft.dataset_id!r} is already in the catalog")
        self._require_sources(draft)
        self._require_full_transitive(draft.schema_subject)
        schema_id = self._register_schema(draft.schema_subject, draft.record_schema)
        self._open_feed(draft.dataset_id, provider_id)
        registered = dataclasses.replace(draft, schema_id=schema_id)
        head = event_head(actor)
        event = self._prepare(REGISTERED, mapping.registered_event(head, registered))
        with self._transaction() as connection:
            self._insert(connection, registered, head)
            self._publish(connection, REGISTERED, event)
        log.info("registered dataset %s for %s", registered.dataset_id, registered.provider_id)
        return registered

    def update(self, provider_id: str, dataset_id: str, changes: DatasetChanges, actor: str) -> Dataset:
        """Apply `changes` (None fields stay as they are); version + 1. No effective change: no event."""
        current = self._owned(provider_id, dataset_id)
        if current.retired:
            raise Conflict(f"dataset {dataset_id!r} is retired and can no longer be changed")
        changed = self._checked_changes(current, changes)
        if changed == current:
            return current
        if changed.record_schema != current.record_schema:
            changed = dataclasses.replace(
                changed, schema_id=self._register_schema(changed.schema_subject, changed.record_schema)
            )
        updated = dataclasses.replace(changed, version=current.version + 1)
        head = event_head(actor)
        event = self._prepare(UPDATED, mapping.updated_event(head, current, updated))
        with self._transaction() as connection:
            self._replace(connection, current, updated, head)
            self._publish(connection, UPDATED, event)
        return updated

    def retire(self, provider_id: str, dataset_id: str, reason: str, actor: str) -> Dataset:
        """Mark the dataset retired, for good: no more publishing to it, no more deliveries from it."""
        reason = validation.check_text("reason", reason, MAX_REASON)
        current = self._owned(provider_id, dataset_id)
        if current.retired:
            raise Conflict(f"dataset {dataset_id!r} is already retired")
        retired = dataclasses.replace(current, retired=True)
        head = event_head(actor)
        event = self._prepare(RETIRED, mapping.retired_event(head, retired, reason))
        with self._transaction() as connection:
            self._replace(connection, current, retired, head, retired_reason=reason)
            self._publish(connection, RETIRED, event)
        self._close_feed(dataset_id, current.provider_id)
        return retired

    # -- checks

    def _checked_registration(self, provider_id: str, dataset: DatasetRegistration) -> Dataset:
        """The dataset as it will be registered (schema id still 0), or InvalidInput."""
        provider_id = validation.check_text("provider_id", provider_id, 255)
        dataset_id = validation.check_dataset_id(dataset.dataset_id)
        record = validation.parse_record_schema(dataset.record_schema)
        return Dataset(
            dataset_id=dataset_id,
            provider_id=provider_id,
            owner_department=validation.check_text(
                "owner_department", dataset.owner_department, validation.MAX_DEPARTMENT
            ),
            title=validation.check_text("title", dataset.title, validation.MAX_TITLE),
            description=validation.check_text(
                "description", dataset.description, validation.MAX_DESCRIPTION, required=False
            ),
            domain=validation.check_enum(Domain, "domain", dataset.domain),
            classification=validation.check_enum(Classification, "classification", dataset.classification),
            openness=validation.check_enum(Openness, "openness", dataset.openness),
            schema_subject=subject_for(feed_topic(dataset_id, self.settings), record.fullname),
            schema_id=0,
            record_schema=validation.normalize_schema_text(dataset.record_schema),
            sensitive_fields=validation.check_sensitive_fields(record, dataset.sensitive_fields),
            price_plan=validation.check_price_plan(dataset.price_plan),
            asset_registration_number=_listing_text(
                "asset_registration_number", dataset.asset_registration_number
            ),
            terms=_listing_text("terms", dataset.terms),
            derived_from=_checked_sources(dataset_id, dataset.derived_from),
        )

    def _require_sources(self, draft: Dataset) -> None:
        """Lineage names only datasets in the catalog and not retired, or InvalidInput."""
        for source in draft.derived_from:
            with _database(self.engine) as connection:
                row = _select_row(connection, source)
            if row is None or row.retired:
                state = "is not in the catalog" if row is None else "is retired"
                raise InvalidInput(
                    f"dataset {draft.dataset_id!r} derives from {source!r}, which {state}",
                    hint="name in derived_from only registered datasets that are not retired",
                )

    def _checked_changes(self, current: Dataset, changes: DatasetChanges) -> Dataset:
        """`current` with `changes` applied and checked (version unchanged), or InvalidInput."""
        updates: dict[str, Any] = {}
        texts = {
            "owner_department": validation.MAX_DEPARTMENT,
            "title": validation.MAX_TITLE,
            "description": validation.MAX_DESCRIPTION,
        }
        for name, limit in texts.items():
            if getattr(changes, name) is not None:
                updates[name] = validation.check_text(name, getattr(changes, name), limit)
        for name, kind in (("domain", Domain), ("classification", Classification), ("openness", Openness)):
            if getattr(changes, name) is not None:
                updates[name] = validation.check_enum(kind, name, getattr(changes, name))
        if changes.price_plan is not None:
            updates["price_plan"] = validation.check_price_plan(changes.price_plan)
        for name in LISTING_TEXTS:
            if getattr(changes, name) is not None:
                updates[name] = _listing_text(name, getattr(changes, name))
        record = self._changed_record(current, changes.record_schema)
        if changes.record_schema is not None:
            updates["record_schema"] = validation.normalize_schema_text(changes.record_schema)
        given = changes.sensitive_fields if changes.sensitive_fields is not None else current.sensitive_fields
        updates["sensitive_fields"] = validation.check_sensitive_fields(record, given)
        return dataclasses.replace(current, **updates)

    @staticmethod
    def _changed_record(current: Dataset, new_schema: str | None) -> RecordSchema:
        """The record schema after the change; a new one must keep the record's full name."""
        # `is None`, not falsiness: an empty text is a new schema to refuse, not "unchanged".
        record = validation.parse_record_schema(current.record_schema if new_schema is None else new_schema)
        if new_schema is not None:
            old_name = validation.parse_record_schema(current.record_schema).fullname
            if record.fullname != old_name:
                raise InvalidInput(
                    f"the new record schema is named {record.fullname}, the dataset's is {old_name}",
                    hint="keep the record's name and namespace: the feed's schema subject is tied to them",
                )
        return record

    def _owned(self, provider_id: str, dataset_id: str) -> Dataset:
        dataset = self.get(dataset_id)
        if dataset.provider_id != provider_id:
            raise Forbidden(
                f"dataset {dataset_id!r} belongs to another provider; only its owner may change it"
            )
        return dataset

    def _exists(self, dataset_id: str) -> bool:
        with _database(self.engine) as connection:
            return _select_row(connection, dataset_id) is not None

    # -- outside steps: registry and broker (idempotent, so a retry after a failure is safe)

    def _require_full_transitive(self, subject: str) -> None:
        try:
            self.registry.set_compatibility(subject, FEED_COMPATIBILITY.value)
        except RegistryError as error:
            raise Unavailable(
                f"the schema registry refused to set {subject}'s compatibility: {error.message}",
                hint=error.hint,
            ) from None

    def _register_schema(self, subject: str, schema_text: str) -> int:
        try:
            return self.registry.register(subject, schema_text)
        except RegistryError as error:
            code = getattr(error, "error_code", None)
            if code == INCOMPATIBLE:
                raise Conflict(
                    f"the record schema is not compatible with the dataset's earlier versions "
                    f"({FEED_COMPATIBILITY.value}): {error.message}",
                    hint="add fields with defaults, or remove only fields that have defaults",
                ) from None
            if code is not None and 42200 <= code < 42300:
                raise InvalidInput(
                    f"the schema registry refused the record schema: {error.message}"
                ) from None
            raise Unavailable(error.message, hint=error.hint) from None

    def _open_feed(self, dataset_id: str, provider_id: str) -> None:
        """Create the dataset's feed topic and let its provider's Kafka credentials write to it (only it; a
        product's feed no party writes: the aggregation service computes it)."""
        spec = topics.spec(TopicId.FEED, self.settings).render(dataset_id=dataset_id)
        with self._kafka_admin(f"could not create the feed topic {spec.name}") as admin:
            report = topics.apply(admin, [spec])
            if provider_id != PRODUCTS_PROVIDER:
                access.grant(admin, access.provider_acls(provider_id, dataset_id, self.settings))
        for line in report.drift:
            log.warning("feed topic differs from topics/feed.yaml: %s", line)

    def _close_feed(self, dataset_id: str, provider_id: str) -> None:
        """A retired dataset's feed takes no more records from its provider's Kafka client."""
        if provider_id == PRODUCTS_PROVIDER:
            return
        with self._kafka_admin(f"could not withdraw the write access to the feed of {dataset_id}") as admin:
            access.revoke(admin, access.provider_acls(provider_id, dataset_id, self.settings))

    @contextmanager
    def _kafka_admin(self, what: str) -> Iterator[Any]:
        try:
            with admin_client(self.settings) as admin:
                yield admin
        except KafkaError as error:
            raise Unavailable(f"{what}: {error}") from None
        except PdoError as error:
            raise Unavailable(f"{what}: {error.message}", hint=error.hint) from None

    # -- the transaction: row and event together

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A database transaction; it commits only if the block (which publishes the event) succeeds."""
        try:
            with self.engine.begin() as connection:
                yield connection
        except OperationalError as error:
            raise Unavailable(f"the catalog database did not answer: {error.orig}") from None

    def _prepare(self, schema_name: str, event: dict[str, Any]) -> dict[str, Any]:
        """Encode the event once before the transaction, so publishing inside it needs no registry call.

        The codec registers an event schema on its first use; with the default single SQLite database
        the registry would wait for the write lock our open transaction holds, and time out.
        """
        codec = getattr(self.publisher, "codec", None)
        if codec is None:
            return event  # a stand-in publisher (tests) has no codec to warm
        topic = topics.name(TopicId.CATALOG, self.settings)
        try:
            codec.encode(topic, schemas.get(schema_name), event)
        except RegistryError as error:
            raise Unavailable(error.message, hint=error.hint) from None
        return event

    def _publish(self, connection: Connection, schema_name: str, event: dict[str, Any]) -> None:
        _topic, partition, offset = self.publisher.publish(TopicId.CATALOG, schema_name, event)
        connection.execute(
            sa.update(datasets)
            .where(datasets.c.dataset_id == event["dataset_id"])
            .values(last_event_partition=partition, last_event_offset=offset)
        )

    @staticmethod
    def _insert(connection: Connection, dataset: Dataset, head: dict[str, Any]) -> None:
        try:
            connection.execute(sa.insert(datasets).values(**mapping.dataset_to_row(dataset), **_stamp(head)))
        except IntegrityError:
            # Another worker registered the same id between our check and our insert.
            raise Conflict(f"dataset {dataset.dataset_id!r} is already in the catalog") from None

    @staticmethod
    def _replace(
        connection: Connection, before: Dataset, after: Dataset, head: dict[str, Any], **extra: Any
    ) -> None:
        # Only if nobody changed the row since we read it: two workers never both build on one version.
        result = connection.execute(
            sa.update(datasets)
            .where(
                datasets.c.dataset_id == before.dataset_id,
                datasets.c.version == before.version,
                datasets.c.retired == sa.false(),
            )
            .values(**mapping.dataset_to_row(after), **_stamp(head), **extra)
        )
        if result.rowcount != 1:
            raise Conflict(f"dataset {before.dataset_id!r} was changed at the same time; read it and retry")


def _stamp(head: dict[str, Any]) -> dict[str, Any]:
    """The columns recording which event the row reflects (its position is filled in once published)."""
    return {
        "updated_at": head["occurred_at"],
        "last_event_id": head["event_id"],
        "last_event_partition": None,
        "last_event_offset": None,
    }


def _select_row(connection: Connection, dataset_id: str) -> Any:
    return connection.execute(sa.select(datasets).where(datasets.c.dataset_id == dataset_id)).first()


@contextmanager
def _database(engine: Engine) -> Iterator[Connection]:
    try:
        with engine.connect() as connection:
            yield connection
    except OperationalError as error:
        raise Unavailable(f"the catalog database did not answer: {error.orig}") from None


def _require_product_rule(draft: Dataset) -> None:
    """Product ids (`product-…`) are the products' own: no provider registers one, and a product is nothing else."""
    if is_product_id(draft.dataset_id) and draft.provider_id != PRODUCTS_PROVIDER:
        raise InvalidInput(
            f"dataset ids starting with {PRODUCT_PREFIX!r} are reserved for derived data products",
            hint="choose another id; products are declared in products/ and registered by `pdo products apply`",
        )
    if draft.provider_id == PRODUCTS_PROVIDER and not is_product_id(draft.dataset_id):
        raise InvalidInput(
            f"a derived data product's id starts with {PRODUCT_PREFIX!r}, not {draft.dataset_id!r}"
        )


def _checked_sources(dataset_id: str, sources: tuple[str, ...]) -> tuple[str, ...]:
    """The source dataset ids, each once, in id order; not the dataset itself, at most MAX_SOURCES."""
    checked = tuple(sorted({validation.check_dataset_id(source) for source in sources}))
    if dataset_id in checked:
        raise InvalidInput(
            f"dataset {dataset_id!r} cannot derive from itself", hint="remove it from derived_from"
        )
    if len(checked) > MAX_SOURCES:
        raise InvalidInput(
            f"dataset {dataset_id!r} names {len(checked)} sources in derived_from",
            hint=f"name at most {MAX_SOURCES}",
        )
    return checked


def _listing_text(name: str, value: str | None) -> str | None:
    return validation.check_text(name, value, LISTING_TEXTS[name], required=False)
