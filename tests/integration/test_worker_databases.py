"""Each stream worker connects with its own database URL (PDO_<SERVICE>_DATABASE_URL, on PostgreSQL its own
role), never the owner's when its own is set; sharing keeps no table and opens no database. Building a worker
connects its event publisher, so this needs the broker."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from pdo.audit.checkpoints import generate_private_key_pem
from pdo.core.config import Settings


@pytest.mark.parametrize("service", ["catalog", "authorization", "metering", "audit"])
def test_a_worker_connects_with_its_own_database_url(service, tmp_path, monkeypatch, kafka_bootstrap):
    own = f"sqlite:///{tmp_path / service}.db"
    monkeypatch.setenv(f"PDO_{service.upper()}_DATABASE_URL", own)
    monkeypatch.setenv("PDO_DATABASE_URL", f"sqlite:///{tmp_path / 'owner.db'}")
    key = tmp_path / "audit-signing-key.pem"
    key.write_text(generate_private_key_pem())
    monkeypatch.setenv("PDO_AUDIT_SIGNING_KEY_FILE", str(key))  # the audit worker signs checkpoints
    runtime = importlib.import_module(f"pdo.{service}.app").build_runtime(Settings.from_env())
    try:
        assert str(runtime.engine.url) == own
    finally:
        runtime.close()


def test_the_sharing_worker_holds_no_database():
    from pdo.sharing.app import Runtime

    assert not any("engine" in field.name for field in dataclasses.fields(Runtime))
