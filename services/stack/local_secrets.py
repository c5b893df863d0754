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


def secrets_folder(settings: Settings) -> Path:
    return settings.run_dir / "secrets"


def local_secrets(settings: Settings) -> dict[str, str]:
    """{variable: value} for each secret setting still at its default, from its file (created if new)."""
    chosen = {}
    for setting in fields(settings):
        if setting.metadata.get("secret") and getattr(settings, setting.name) == setting.metadata["default"]:
            path = secrets_folder(settings) / setting.metadata["env"].lower().removeprefix("pdo_")
            chosen[setting.metadata["env"]] = _read_or_create(path)
    return chosen


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
