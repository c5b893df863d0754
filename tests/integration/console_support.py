"""A gateway over an isolated platform (sharing_support's namespace, registry and database), with an
operator, a provider, a tenant and an auditor holding keys, for the dead-letter API and console browser
tests; Debian's Chromium driven by Playwright (its own browser builds are never used nor downloaded).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerThread, _unavailable

from pdo.core import db
from pdo.core.config import PROJECT_ROOT, Settings
from pdo.core.deadletters import DEAD_LETTER, SourceMessage, dead_letter_event
from pdo.core.events import EventPublisher
from pdo.core.topics import TopicId
from pdo.gateway.app import create_app
from pdo.gateway.principals import PrincipalStore

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 20_000


@pytest.fixture
def browser() -> Iterator:
    if not CHROMIUM.exists():
        _unavailable(f"Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()


def register_air_quality(gateway) -> str:
    """The README's example dataset, registered by the provider."""
    dataset = json.loads((PROJECT_ROOT / "deploy" / "examples" / "air-quality.dataset.json").read_text())
    registered = gateway.http.post("/v1/datasets", json=dataset, headers=gateway.as_("provider"))
    assert registered.status_code == 201, registered.text
    return dataset["dataset_id"]


ROLES = {"provider": "air-bureau", "tenant": "acme", "operator": "alice", "auditor": "carol"}


@dataclasses.dataclass
class Gateway:
    url: str
    http: httpx.Client
    keys: dict[str, str]
    app: Any

    def as_(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@pytest.fixture
def gateway(settings: Settings, platform: dict[str, Any]) -> Iterator[Gateway]:
    engine = db.make_engine(settings.database_url)
    store = PrincipalStore(engine)
    keys = {
        role: store.issue_key(store.create_principal(role, name).principal_id).key
        for role, name in ROLES.items()
    }
    app = create_app(settings, platform["catalog"], platform["service"], engine)
    try:
        with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
            yield Gateway(server.url, http, keys, app)
    finally:
        engine.dispose()


def publish_dead_letters(
    settings: Settings, reasons: list[str], source_topic: str = "pdo.feed.example"
) -> None:
    """One DeadLetter per reason, from consecutive offsets of `source_topic`, in this order."""
    publisher = EventPublisher(settings)
    try:
        for offset, reason in enumerate(reasons):
            message = SourceMessage(source_topic, 0, offset, b"key", b"\x07" * (offset + 1))
            event = dead_letter_event(message, "sharing", "UNDECODABLE", reason)
            publisher.publish(TopicId.DEAD_LETTERS, DEAD_LETTER, event)
    finally:
        publisher.close()
