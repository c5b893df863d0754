"""The sharing worker's view of the catalog, built from pdo.catalog events, and the ordering rule: a view
that is behind is caught up before a feed record's dataset counts as unknown."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from test_sharing_agents import (
    DATASET,
    PUBLISHED,
    MemoryRegistry,
    book,  # noqa: F401  (fixture)
    codec,  # noqa: F401  (fixture)
    encoded_record,
    feed_message,
    traffic_record,
)

from pdo.authorization import records
from pdo.authorization.testing import traffic_dataset
from pdo.catalog import mapping
from pdo.core.config import Settings
from pdo.core.names import Event
from pdo.sharing.agents import FeedHandler
from pdo.sharing.datasets import DatasetView, know_datasets

HEAD = records.head("e-catalog", PUBLISHED, "provider:transport-bureau")


def registry_with(dataset) -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.by_id[dataset.schema_id] = dataset.record_schema
    return registry


def test_the_view_keeps_each_datasets_latest_state():
    dataset = traffic_dataset(DATASET)
    registry, view = registry_with(dataset), DatasetView()
    newer = replace(dataset, version=2, title="v2")
    assert view.apply(Event.DATASET_REGISTERED, mapping.registered_event(HEAD, dataset), registry)
    assert view.apply(Event.DATASET_UPDATED, mapping.updated_event(HEAD, dataset, newer), registry)
    assert not view.apply(
        Event.DATASET_REGISTERED, mapping.registered_event(HEAD, dataset), registry
    )  # read again
    assert view.get(DATASET).title == "v2"
    assert view.apply(
        Event.DATASET_RETIRED, {**HEAD, "dataset_id": DATASET, "reason": "gone", "dataset": None}, registry
    )
    assert view.get(DATASET).retired


def test_an_undecodable_catalog_message_is_passed_over(codec):  # noqa: F811
    view = DatasetView()
    assert not view.apply_message(codec, b"\x07 not avro", "pdo.catalog[0]@3")
    assert len(view) == 0


class BehindTopic:
    """pdo.catalog holds the dataset's registration; the view has not read it until caught up."""

    def __init__(self, view: DatasetView, dataset, registry: MemoryRegistry) -> None:
        self.view, self.dataset, self.registry = view, dataset, registry
        self.catch_ups = 0

    async def catch_up(self) -> None:
        self.catch_ups += 1
        self.view.apply(Event.DATASET_REGISTERED, mapping.registered_event(HEAD, self.dataset), self.registry)


def test_a_record_whose_dataset_the_view_has_not_read_yet_is_delivered_after_catching_up(codec, book):  # noqa: F811
    view = DatasetView()
    dataset = traffic_dataset(DATASET)
    topic = BehindTopic(view, dataset, registry_with(dataset))
    handler = FeedHandler(Settings.from_env(), codec, view.get, book, b"k")
    message = feed_message(encoded_record(codec, traffic_record()))
    asyncio.run(know_datasets(view, [DATASET], topic.catch_up))
    prepared = handler.handle(message, PUBLISHED)
    assert topic.catch_ups == 1
    assert prepared.dead_letter_reason is None and prepared.delivered


def test_a_dataset_still_missing_after_catching_up_is_unknown(codec, book):  # noqa: F811
    view = DatasetView()
    dataset = traffic_dataset("another-dataset")
    topic = BehindTopic(view, dataset, registry_with(dataset))
    handler = FeedHandler(Settings.from_env(), codec, view.get, book, b"k")
    asyncio.run(know_datasets(view, [DATASET], topic.catch_up))
    prepared = handler.handle(feed_message(encoded_record(codec, traffic_record())), PUBLISHED)
    assert topic.catch_ups == 1
    assert prepared.dead_letter_reason == "UNKNOWN_DATASET"


def test_datasets_the_view_holds_need_no_catching_up():
    view = DatasetView()
    dataset = traffic_dataset(DATASET)
    topic = BehindTopic(view, dataset, registry_with(dataset))
    asyncio.run(topic.catch_up())
    asyncio.run(know_datasets(view, [DATASET, None], topic.catch_up))  # None: a topic that is not a feed
    assert topic.catch_ups == 1
