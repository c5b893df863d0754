"""The operator console's files and GET /v1/dead-letters, over HTTP with a fake dead-letter source.

The real topic is read in tests/integration/test_gateway_deadletters.py; the page itself is driven in a
real browser in tests/integration/test_console_browser.py.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import ServerThread
from gateway_support import gateway_database
from kafka.errors import KafkaTimeoutError

from pdo.core.codec import CodecError
from pdo.core.config import Settings
from pdo.core.deadletters import SourceMessage, StoredDeadLetter, dead_letter_event
from pdo.core.registry_client import RegistryError
from pdo.gateway.app import create_app
from pdo.gateway.routes_console import ASSETS

START = datetime(2026, 3, 1, tzinfo=UTC)


def stored(
    offset: int, minutes: int, reason: str = "UNDECODABLE", value: bytes = b"\x07 bad"
) -> StoredDeadLetter:
    message = SourceMessage("pdo.feed.x", 1, 100 + offset, b"k", value, (("pdo-replay-count", b"2"),))
    event = dead_letter_event(message, "sharing", reason, f"{reason.lower()} <b>{offset}</b>")
    event["failed_at"] = START + timedelta(minutes=minutes)
    return StoredDeadLetter("pdo.dead-letters", 0, offset, event)


@dataclasses.dataclass
class FakeDeadLetters:
    """Returns `letters` (at most `limit`, as the topic reader does per partition), or raises `failure`."""

    letters: list[StoredDeadLetter]
    failure: Exception | None = None
    limits: list[int] = dataclasses.field(default_factory=list)

    def __call__(self, limit: int) -> list[StoredDeadLetter]:
        self.limits.append(limit)
        if self.failure is not None:
            raise self.failure
        return self.letters[-limit:]


@dataclasses.dataclass
class Gateway:
    http: httpx.Client
    source: FakeDeadLetters
    keys: dict[str, str]

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[Gateway]:
    engine, keys = gateway_database(
        tmp_path_factory.mktemp("console"),
        (("provider", "transport"), ("tenant", "acme"), ("operator", "alice")),
    )
    # Offsets in topic order; failure times deliberately out of order.
    source = FakeDeadLetters([stored(0, 5), stored(1, 1, "UNKNOWN_SCHEMA", b""), stored(2, 9)])
    app = create_app(Settings.from_env(), None, None, engine, dead_letters=source)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Gateway(http, source, keys)
    engine.dispose()


@pytest.fixture(autouse=True)
def healthy_source(gateway) -> None:
    gateway.source.failure = None
    gateway.source.limits.clear()


def refused(response: httpx.Response, status: int, kind: str, fragment: str = "") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == kind and fragment in body["message"], body
    return body


# -- the console's files -------------------------------------------------------------------------------


def test_console_page_is_served_with_a_strict_policy(gateway):
    page = gateway.http.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy and "unsafe" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset in (
        "/console/console.js",
        "/console/console.css",
        "/console/vendor/uPlot.iife.min.js",
        "/console/vendor/uPlot.min.css",
    ):
        assert asset in page.text
        served = gateway.http.get(asset)
        assert served.status_code == 200 and served.content, asset
    assert gateway.http.get("/console/console.js").headers["content-type"].startswith("text/javascript")
    assert gateway.http.get("/").json()["console"] == "/console"


@pytest.mark.parametrize(
    "path",
    [
        "/console/secrets.txt",
        "/console/..%2Fapp.py",
        "/console/%2e%2e%2fpyproject.toml",
        "/console/vendor/VERSION",
        "/console/vendor/%2e%2e/%2e%2e/app.py",
    ],
)
def test_console_serves_only_its_own_files(gateway, path):
    refused(gateway.http.get(path), 404, "not_found")


def test_console_never_parses_text_as_markup():
    """No API text may reach an HTML parser: the script builds nodes and text only."""
    from importlib import resources

    folder = resources.files("pdo.gateway").joinpath("console")
    script = folder.joinpath("console.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
    page = folder.joinpath("index.html").read_text()
    assert not re.search(r"<script>|\son[a-z]+=|<style>|\sstyle=", page), "inline code defeats the policy"
    shipped = {
        f"{path.name}/{item.name}" if path.is_dir() else path.name
        for path in folder.iterdir()
        for item in (path.iterdir() if path.is_dir() else [path])
    }
    # The vendored library's licence and version note ship with it but are not served.
    assert shipped - set(ASSETS) == {"vendor/VERSION", "vendor/uPlot.LICENSE"}
    assert set(ASSETS) <= shipped


# -- GET /v1/dead-letters ------------------------------------------------------------------------------


def test_operator_reads_dead_letters_newest_first_without_their_bytes(gateway):
    response = gateway.http.get("/v1/dead-letters", headers=gateway.as_("alice"))
    assert response.status_code == 200, response.text
    letters = response.json()
    assert [letter["position"] for letter in letters] == [
        "pdo.dead-letters[0]@2",
        "pdo.dead-letters[0]@0",
        "pdo.dead-letters[0]@1",
    ]
    first = letters[0]
    assert first == {
        "position": "pdo.dead-letters[0]@2",
        "failed_at": "2026-03-01T00:09:00Z",
        "service": "sharing",
        "reason_code": "UNDECODABLE",
        "reason": "undecodable <b>2</b>",
        "source_topic": "pdo.feed.x",
        "source_partition": 1,
        "source_offset": 102,
        "original_size_bytes": 5,
        "replay_count": 2,
    }
    assert letters[2]["original_size_bytes"] == 0
    assert gateway.source.limits == [50]


def test_limit_bounds_what_is_read_and_returned(gateway):
    response = gateway.http.get("/v1/dead-letters", params={"limit": 2}, headers=gateway.as_("alice"))
    assert [letter["source_offset"] for letter in response.json()] == [102, 101]
    assert gateway.source.limits == [2]
    assert len(gateway.http.get("/v1/dead-letters?limit=500", headers=gateway.as_("alice")).json()) == 3


@pytest.mark.parametrize(
    "limit", ["0", "-1", "501", "abc", "1e3", "2.5", "", "10" * 40, "50; DROP TABLE x", "\x00", "５"]
)
def test_hostile_limits_are_refused(gateway, limit):
    response = gateway.http.get("/v1/dead-letters", params={"limit": limit}, headers=gateway.as_("alice"))
    body = refused(response, 422, "invalid_input", "query.limit")
    assert body["details"][0]["field"] == "query.limit"
    assert gateway.source.limits == []


def test_repeated_limit_is_refused_or_one_value_wins(gateway):
    response = gateway.http.get("/v1/dead-letters?limit=1&limit=999999", headers=gateway.as_("alice"))
    assert response.status_code in (200, 422), response.text
    assert all(limit <= 500 for limit in gateway.source.limits)


@pytest.mark.parametrize("who, status, kind", [("acme", 403, "forbidden"), ("transport", 403, "forbidden")])
def test_only_operators_read_dead_letters(gateway, who, status, kind):
    refused(gateway.http.get("/v1/dead-letters", headers=gateway.as_(who)), status, kind, "only operators")
    assert gateway.source.limits == []


def test_no_key_is_401(gateway):
    refused(gateway.http.get("/v1/dead-letters"), 401, "unauthenticated")


@pytest.mark.parametrize(
    "failure",
    [
        KafkaTimeoutError("Unable to bootstrap"),
        TimeoutError("could not read to its end"),
        RegistryError("registry down"),
        CodecError("bad"),
    ],
)
def test_an_unreadable_topic_is_503_saying_why(gateway, failure):
    gateway.source.failure = failure
    body = refused(
        gateway.http.get("/v1/dead-letters", headers=gateway.as_("alice")),
        503,
        "unavailable",
        "could not read the dead-letter topic",
    )
    assert "broker" in body["hint"]


def test_no_broker_is_503_from_the_real_reader_and_leaves_no_thread_behind():
    """kafka-python leaves a failed bootstrap's IO thread running unless pdo closes it. In a child process,
    because kafka-python also drops that attempt's sockets unclosed (ResourceWarnings when collected)."""
    script = """
import dataclasses, threading
from pdo.core.config import Settings
from pdo.core.errors import Unavailable
from pdo.gateway.routes_deadletters import topic_reader
settings = dataclasses.replace(Settings.from_env(), kafka_bootstrap="127.0.0.1:1", kafka_timeout_s=1)
read = topic_reader(settings, lambda: None)
for _ in range(2):
    try:
        read(5)
    except Unavailable as error:
        print(error.message)
print("threads:", sorted(t.name for t in threading.enumerate()))
"""
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["cannot reach the Kafka broker at 127.0.0.1:1 within 1 s as user 'admin'"] * 2, (
        done.stdout
    )
    assert lines[2] == "threads: ['MainThread']"
