"""GET /v1/dead-letters on the real broker: the newest dead letters of an isolated namespace, newest
first, bounded by `limit`. (A broker that does not answer: tests/unit/test_gateway_console.py.)
"""

# ruff: noqa: F811  (pytest fixtures imported from the support modules are parameters here)
from __future__ import annotations

import pytest
from console_support import gateway, publish_dead_letters  # noqa: F401  (fixtures)
from sharing_support import db_url, platform, settings  # noqa: F401  (fixtures)

from pdo.core import topics
from pdo.core.topics import TopicId

pytestmark = pytest.mark.integration


def test_newest_dead_letters_first_and_limited(settings, gateway):
    operator = gateway.as_("operator")
    assert gateway.http.get("/v1/dead-letters", headers=operator).json() == []
    publish_dead_letters(settings, [f"reason {n}" for n in range(5)])

    everything = gateway.http.get("/v1/dead-letters", headers=operator)
    assert everything.status_code == 200, everything.text
    assert [letter["reason"] for letter in everything.json()] == [f"reason {n}" for n in (4, 3, 2, 1, 0)]
    newest = everything.json()[0]
    dead_letters = topics.name(TopicId.DEAD_LETTERS, settings)
    assert newest["position"] == f"{dead_letters}[0]@4"
    assert (newest["source_topic"], newest["source_offset"]) == ("pdo.feed.example", 4)
    assert newest["original_size_bytes"] == 5 and "original_value" not in newest

    two = gateway.http.get("/v1/dead-letters", params={"limit": 2}, headers=operator).json()
    assert [letter["reason"] for letter in two] == ["reason 4", "reason 3"]
    tenant = gateway.http.get("/v1/dead-letters", headers=gateway.as_("tenant"))
    assert tenant.status_code == 403 and tenant.json()["error"] == "forbidden"
