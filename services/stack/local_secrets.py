"""Secrets of the local stack: generated once into PDO_RUN_DIR/secrets/ (mode 0600) and handed to the
services `pdo up` and `pdo demo` start, so a developer's platform never runs on a key published with pdo,
and needs no manual step. A secret the user set in the environment is used as given instead.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import fields
from pathlib import Path

from pdo.core.config import Settings

SECRET_BYTES = 48
# The secrets the stack makes up when the user set none. Only secrets that nothing outside the stack has to
# know: a made-up Kafka password, say, would not match the broker's.
GENERATED = ("masking_key", "metrics_token")
# Secrets the local Prometheus reads from a file (its `credentials_file`), so their file holds the value in
# force even when the user set it.
READ_FROM_FILE = ("metrics_token",)


def secrets_folder(settings: Settings) -> Path:
    return settings.run_dir / "secrets"


def secret_file(settings: Settings, name: str) -> Path:
    return secrets_folder(settings) / name


def local_secrets(settings: Settings) -> dict[str, str]:
    """{variable: value} for each GENERATED secret still at its default, from its file (created if new)."""
    chosen = {}
    for setting in fields(settings):
        if setting.name not in GENERATED:
            continue
        path = secret_file(settings, setting.name)
        value = getattr(settings, setting.name)
        if value == setting.metadata["default"]:
            chosen[setting.metadata["env"]] = _read_or_create(path)
        elif setting.name in READ_FROM_FILE:
            _write_private(path, value)
    return chosen


def _write_private(path: Path, value: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(value + "\n")
    os.chmod(path, 0o600)


def _read_or_create(path: Path) -> str:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        # O_EXCL: when two stacks start at once, one creates the file and both read the same value.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)  # an older copy made readable by others is narrowed again
    else:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(SECRET_BYTES) + "\n")
    return path.read_text().strip()
