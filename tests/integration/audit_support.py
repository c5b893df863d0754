"""The audit worker as a process, for integration tests: start and stop `pdo audit-worker` in consumer groups
of their own, read what it logged, wait for entries."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable

import sqlalchemy as sa

from pdo.audit.checkpoints import generate_private_key_pem
from pdo.audit.tables import entries as audit_entries
from pdo.core.config import Settings

WAIT_S = 90


def signing_key(folder):
    key = folder / "audit-signing-key.pem"
    key.write_text(generate_private_key_pem())
    return key


class Worker:
    """`pdo audit-worker` processes in consumer groups of their own, on this test's topics and database."""

    def __init__(self, settings: Settings, folder) -> None:
        self.settings, self.folder = settings, folder
        self.process: subprocess.Popen | None = None
        self.logs: list = []

    def start(self, group: str) -> None:
        log = self.folder / f"{group}.log"
        self.logs.append(log)
        command = [
            sys.executable,
            "-m",
            "pdo.cli.main",
            "audit-worker",
            "--group",
            group,
            "--metrics-port",
            "0",
        ]
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                command, env=self.settings.environment(), stdout=output, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def logged(engine) -> list[sa.Row]:
    query = sa.select(
        audit_entries.c.seq, audit_entries.c.action, audit_entries.c.subject, audit_entries.c.source
    )
    with engine.connect() as connection:
        return list(connection.execute(query.order_by(audit_entries.c.seq)))


def wait_for(what: str, check: Callable[[], object], worker: Worker) -> object:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert worker.process is not None and worker.process.poll() is None, (
            f"the worker exited waiting for {what}"
        )
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"no {what} within {WAIT_S} s")
