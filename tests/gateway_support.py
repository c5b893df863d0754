"""For the gateway's tests: a migrated database with principals holding API keys."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import Engine

from pdo.audit.checkpoints import generate_private_key_pem
from pdo.core import db
from pdo.gateway.principals import PrincipalStore

EVERYONE = (
    ("provider", "transport"),
    ("provider", "health"),
    ("tenant", "acme"),
    ("tenant", "globex"),
    ("operator", "alice"),
)


def gateway_database(
    folder: Path, parties: tuple[tuple[str, str], ...] = EVERYONE
) -> tuple[Engine, dict[str, str]]:
    """A fresh migrated SQLite database in `folder` with the principals `(kind, name)`; name -> API key."""
    url = f"sqlite:///{folder / 'pdo.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    store = PrincipalStore(engine)
    return engine, {
        name: store.issue_key(store.create_principal(kind, name).principal_id).key for kind, name in parties
    }


def audit_signing_key(folder: Path) -> Path:
    """A fresh audit signing key (PEM) in `folder`, for a gateway that serves /v1/audit/public-key."""
    path = folder / "audit-signing-key.pem"
    path.write_text(generate_private_key_pem())
    return path


class QuietFeed:
    """Feed offsets without a broker: a feed that took no record (the measure itself: test_billing_listing)."""

    def partitions_for_topic(self, topic):
        return {0}

    def end_offsets(self, partitions):
        return dict.fromkeys(partitions, 12)

    def offsets_for_times(self, timestamps):
        return dict.fromkeys(timestamps)


@contextlib.contextmanager
def quiet_feeds() -> Iterator[QuietFeed]:
    yield QuietFeed()
