"""The local stack's secrets: generated once, private to their owner, handed to the services it starts; and a
sharing worker refuses to start on a published key outside development."""

from __future__ import annotations

import dataclasses
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pdo.audit.checkpoints import generate_private_key_pem, load_private_key, public_key_pem
from pdo.core.config import DEVELOPMENT_MASKING_KEY, MIN_SECRET_BYTES, ConfigError, Settings
from pdo.sharing.app import masking_key
from pdo.stack.local_secrets import local_secrets, secrets_folder
from pdo.stack.platform import Platform


@pytest.fixture
def unset(monkeypatch, tmp_path) -> Settings:
    """Settings as a fresh checkout has them: no secret set, run folder in tmp_path."""
    for variable in (
        "PDO_MASKING_KEY",
        "PDO_METRICS_TOKEN",
        "PDO_ENVIRONMENT",
        "PDO_AUDIT_SIGNING_KEY_FILE",
        "PDO_AUDIT_PUBLIC_KEY_FILE",
    ):
        monkeypatch.delenv(variable, raising=False)
    return dataclasses.replace(Settings.from_env(), run_dir=tmp_path / "run")


def test_the_stack_generates_a_strong_private_key_once(unset):
    first = local_secrets(unset)["PDO_MASKING_KEY"]
    path = secrets_folder(unset) / "masking_key"

    assert len(first.encode()) >= MIN_SECRET_BYTES and first != DEVELOPMENT_MASKING_KEY
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert local_secrets(unset)["PDO_MASKING_KEY"] == first  # stable: pseudonyms survive a restart
    # What it generates passes the production rule.
    strong = dataclasses.replace(unset, masking_key=first)
    assert masking_key(strong) == first.encode()


def test_a_key_file_made_readable_by_others_is_narrowed_again(unset):
    local_secrets(unset)
    path = secrets_folder(unset) / "masking_key"
    path.chmod(0o644)
    local_secrets(unset)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_key_the_user_set_is_used_as_given_and_never_written(unset):
    chosen = dataclasses.replace(unset, masking_key="k" * 40)
    assert "PDO_MASKING_KEY" not in local_secrets(chosen)
    assert not (secrets_folder(chosen) / "masking_key").exists()


def test_the_scrape_token_prometheus_reads_is_the_one_in_force(unset):
    generated = local_secrets(unset)["PDO_METRICS_TOKEN"]
    path = secrets_folder(unset) / "metrics_token"
    assert path.read_text().strip() == generated and len(generated) >= MIN_SECRET_BYTES

    chosen = dataclasses.replace(unset, metrics_token="t" * 40)
    assert "PDO_METRICS_TOKEN" not in local_secrets(chosen)
    assert path.read_text().strip() == "t" * 40  # Prometheus' credentials_file follows the user's token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_only_secrets_the_stack_alone_uses_are_made_up(unset):
    """A made-up broker or database password would match nothing: only these are generated (the audit
    signing key is a key pair whose private half only the stack holds, with its public half beside it)."""
    assert set(local_secrets(unset)) == {
        "PDO_MASKING_KEY",
        "PDO_METRICS_TOKEN",
        "PDO_AUDIT_SIGNING_KEY_FILE",
        "PDO_AUDIT_PUBLIC_KEY_FILE",
    }


def test_the_audit_signing_key_is_made_once_private_and_not_when_the_operator_set_one(unset, tmp_path):
    path = local_secrets(unset)["PDO_AUDIT_SIGNING_KEY_FILE"]
    first = Path(path).read_text()
    assert Path(path).parent == secrets_folder(unset) and first.startswith("-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert Path(local_secrets(unset)["PDO_AUDIT_SIGNING_KEY_FILE"]).read_text() == first  # stable signer

    operator_key = tmp_path / "operator.pem"
    operator_key.write_text(generate_private_key_pem())
    chosen = dataclasses.replace(unset, audit_signing_key_file=str(operator_key))
    assert "PDO_AUDIT_SIGNING_KEY_FILE" not in local_secrets(chosen)


def test_only_the_audit_worker_is_given_the_signing_key_the_others_its_public_half(unset):
    platform = Platform(unset, report=lambda _line: None)
    private_key = load_private_key(Path(platform.service_environment["PDO_AUDIT_SIGNING_KEY_FILE"]))
    public_file = Path(platform.service_environment["PDO_AUDIT_PUBLIC_KEY_FILE"])

    assert platform._environment("audit")["PDO_AUDIT_SIGNING_KEY_FILE"] == str(
        secrets_folder(unset) / "audit-signing-key.pem"
    )
    for service in ("gateway", "authorization", "metering", "sharing", "catalog"):
        environment = platform._environment(service)
        assert environment["PDO_AUDIT_SIGNING_KEY_FILE"] == ""
        assert environment["PDO_AUDIT_PUBLIC_KEY_FILE"] == str(public_file)
    assert public_file.read_text() == public_key_pem(private_key.public_key())
    assert "PRIVATE" not in public_file.read_text()


def test_the_public_half_follows_the_operators_own_signing_key(unset, tmp_path):
    operator_key = tmp_path / "operator.pem"
    operator_key.write_text(generate_private_key_pem())
    chosen = dataclasses.replace(unset, audit_signing_key_file=str(operator_key))

    public_file = Path(local_secrets(chosen)["PDO_AUDIT_PUBLIC_KEY_FILE"])

    assert public_file.read_text() == public_key_pem(load_private_key(operator_key).public_key())


def test_the_services_the_stack_starts_get_the_generated_key(unset):
    platform = Platform(unset, report=lambda _line: None)
    assert platform.service_environment["PDO_MASKING_KEY"] == local_secrets(unset)["PDO_MASKING_KEY"]


def test_the_sharing_worker_refuses_the_development_key_outside_development(unset):
    with pytest.raises(ConfigError, match="PDO_MASKING_KEY"):
        masking_key(unset)


def test_pdo_sharing_worker_exits_with_the_reason_before_it_serves(unset, tmp_path):
    environment = {
        **unset.environment(),
        "PDO_DATABASE_URL": f"sqlite:///{tmp_path / 'pdo.db'}",
        "PDO_MASKING_KEY": "change-me-to-a-long-random-secret",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pdo.cli.main", "sharing", "worker"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "PDO_MASKING_KEY is a placeholder" in done.stderr and "token_urlsafe" in done.stderr
    assert "change-me-to-a-long-random-secret" not in done.stderr + done.stdout
