"""Secrets of the local stack: generated once into PDO_RUN_DIR/secrets/ (mode 0600) and handed to the
services `pdo up` and `pdo demo` start, so a developer's platform never runs on a key published with pdo,
and needs no manual step. A secret the user set in the environment is used as given instead.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from pdo.audit.public import ensure_local_signing_key, write_local_public_key
from pdo.core.config import Settings, ensure_local_secret, local_secret_path, local_secrets_dir, write_private

# The secrets the stack makes up when the user set none. Only secrets that nothing outside the stack has to
# know: a made-up Kafka password, say, would not match the broker's.
GENERATED = ("masking_key", "metrics_token")
# Secrets the local Prometheus reads from a file (its `credentials_file`), so their file holds the value in
# force even when the user set it.
READ_FROM_FILE = ("metrics_token",)
SIGNING_KEY_VARIABLE = Settings.variable("audit_signing_key_file")
# The only service that signs audit checkpoints; the others never get the private key's path.
SIGNING_SERVICE = "audit"


def secrets_folder(settings: Settings) -> Path:
    return local_secrets_dir(settings.run_dir)


def secret_file(settings: Settings, name: str) -> Path:
    return local_secret_path(settings.run_dir, name)


def local_secrets(settings: Settings) -> dict[str, str]:
    """{variable: value} for each GENERATED secret still at its default, from its file (created if new)."""
    chosen = {}
    for setting in fields(settings):
        if setting.name not in GENERATED:
            continue
        value = getattr(settings, setting.name)
        if value == setting.metadata["default"]:
            chosen[setting.metadata["env"]] = ensure_local_secret(settings.run_dir, setting.name)
        elif setting.name in READ_FROM_FILE:
            write_private(secret_file(settings, setting.name), value + "\n")
    return {**chosen, **audit_keys(settings)}


def audit_keys(settings: Settings) -> dict[str, str]:
    """The audit key files: a key pair, not a random string. The stack makes the private key's file when none
    is set, and writes its public half, which is all the services other than the audit worker are given."""
    chosen = {}
    signing_key = settings.audit_signing_key_file
    if not signing_key:
        signing_key = chosen[SIGNING_KEY_VARIABLE] = str(ensure_local_signing_key(settings.run_dir))
    if not settings.audit_public_key_file:
        public_key = write_local_public_key(settings.run_dir, Path(signing_key))
        chosen[Settings.variable("audit_public_key_file")] = str(public_key)
    return chosen
