"""The local platform's service processes: start them in order, watch them, stop them together."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from pdo.core.config import Settings
from pdo.core.errors import PdoError


@dataclass(frozen=True)
class ServiceProcess:
    """One pdo service as the CLI runs it, and how to tell it is ready."""

    name: str
    command: tuple[str, ...]
    ready_url: Callable[[Settings], str] | None = None


# In start order: the registry first, since every other service registers or resolves schemas there.
SERVICES = (
    ServiceProcess("registry", ("registry", "serve"), lambda s: f"{s.registry_url}/subjects"),
    ServiceProcess("catalog", ("catalog", "worker")),
    ServiceProcess("authorization", ("authorization", "worker")),
    ServiceProcess("sharing", ("sharing", "worker")),
    ServiceProcess("metering", ("metering", "worker")),
    ServiceProcess(
        "gateway", ("gateway", "serve"), lambda s: f"http://{s.gateway_host}:{s.gateway_port}/healthz"
    ),
)


class Platform:
    """Runs SERVICES as child processes with logs under PDO_RUN_DIR/logs."""

    def __init__(self, settings: Settings, report: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.report = report
        self.logs = settings.run_dir / "logs"
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, ready_timeout_s: float = 60) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for service in SERVICES:
            self.running[service.name] = self._spawn(service)
            if service.ready_url:
                self._wait_ready(service, service.ready_url(self.settings), ready_timeout_s)
            self.report(f"  started {service.name:<14} log {self._log_path(service.name)}")

    def watch(self, poll_s: float = 1.0) -> None:
        """Block until a service exits by itself (an error: say which, with its log) or we are interrupted."""
        while True:
            for name, process in self.running.items():
                if process.poll() is not None:
                    raise PdoError(
                        f"the {name} service stopped (exit {process.returncode}); last lines of its log:\n"
                        + self._log_tail(name),
                        hint=f"see {self._log_path(name)}",
                    )
            time.sleep(poll_s)

    def stop(self, timeout_s: float = 30) -> None:
        # Reverse order: front doors first, the registry last, so nothing loses its schemas mid-request.
        for name in reversed(list(self.running)):
            process = self.running.pop(name)
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            self.report(f"  stopped {name}")

    def _spawn(self, service: ServiceProcess) -> subprocess.Popen:
        log = self._log_path(service.name).open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "pdo.cli.main", *service.command],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def _wait_ready(self, service: ServiceProcess, url: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.running[service.name].poll() is not None:
                break
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise PdoError(
            f"the {service.name} service did not answer {url}; last lines of its log:\n"
            + self._log_tail(service.name),
            hint=f"see {self._log_path(service.name)}",
        )

    def _log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _log_tail(self, name: str, lines: int = 15) -> str:
        text = self._log_path(name).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])
