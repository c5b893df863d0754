"""A running platform for metrics tests: the registry, stream workers of one's choosing (each in a consumer
group of its own) and the gateway as `pdo ...` processes on an isolated namespace, databases and free ports;
and the real Prometheus server scraping them, configured as `pdo up` configures it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from conftest import admin_credentials, free_port, require_program, scrape_headers

from pdo.authorization.testing import create_topics, isolated_home
from pdo.core import db
from pdo.core.config import PROJECT_ROOT, Settings
from pdo.core.kafka import admin_client
from pdo.stack.local_secrets import local_secrets
from pdo.stack.platform import prometheus_config

WAIT_S = 90


@dataclasses.dataclass
class RunningPlatform:
    settings: Settings
    tag: str
    processes: dict[str, subprocess.Popen]
    metrics_urls: dict[str, str]

    def group(self, service: str) -> str:
        return f"{service}-{self.tag}"

    def metrics(self, service: str) -> str:
        # The scrape token Prometheus sends: the gateway needs it, the others ignore it.
        return httpx.get(self.metrics_urls[service], headers=scrape_headers(self.settings), timeout=5).text

    def alive(self) -> None:
        for name, process in self.processes.items():
            assert process.poll() is None, f"{name} exited with {process.returncode}"


def environment(settings: Settings) -> dict[str, str]:
    """The process environment that makes a `pdo` command see exactly `settings`."""
    return {
        **os.environ,
        **{f.metadata["env"]: str(getattr(settings, f.name)) for f in dataclasses.fields(settings)},
    }


def wait_for(
    what: str, check: Callable[[], object], platform: RunningPlatform | None = None, wait_s: float = WAIT_S
) -> object:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if platform:
            platform.alive()
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {wait_s} s")


@contextmanager
def running_platform(folder: Path, workers: tuple[str, ...], **overrides: Any) -> Iterator[RunningPlatform]:
    """Registry, the stream `workers` and the gateway, on topics, databases and free ports of their own (in
    `folder`); the workers' metrics ports come from their settings; `overrides` replace settings."""
    tag = f"t-{uuid.uuid4().hex[:10]}"
    registry_port = free_port()
    settings = dataclasses.replace(
        Settings.from_env(),
        home=isolated_home(folder, tag),
        run_dir=folder / "run",
        database_url=f"sqlite:///{folder / 'pdo.db'}",
        registry_database_url=f"sqlite:///{folder / 'registry.db'}",
        registry_port=registry_port,
        registry_url=f"http://127.0.0.1:{registry_port}",
        gateway_port=free_port(),
        **{f"{name}_metrics_port": free_port() for name in workers},
        **overrides,
    )
    create_topics(settings)
    db.upgrade(settings.database_url)
    db.upgrade(settings.registry_database_url)
    gateway = f"http://127.0.0.1:{settings.gateway_port}"
    commands = {
        "registry": (("registry", "serve"), f"{settings.registry_url}/subjects"),
        **{
            name: ((name, "worker", "--group", f"{name}-{tag}"), None)
            for name in workers  # ready when their metrics answer
        },
        "gateway": (("gateway", "serve"), f"{gateway}/healthz"),
    }
    running = RunningPlatform(
        settings,
        tag,
        processes={},
        metrics_urls={
            "registry": f"{settings.registry_url}/metrics",
            **{name: f"http://127.0.0.1:{settings.metrics_port(name)}/metrics" for name in workers},
            "gateway": f"{gateway}/metrics",
        },
    )
    logs: dict[str, Path] = {}
    try:
        for name, (command, ready_url) in commands.items():
            logs[name] = folder / f"{name}.log"
            with logs[name].open("wb") as log:
                running.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "pdo.cli.main", *command],
                    env=environment(settings),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            url = ready_url or running.metrics_urls[name]
            wait_for(
                f"answer from {name}",
                lambda url=url: httpx.get(url, auth=admin_credentials(), timeout=2).status_code == 200,
                running,
            )
        yield running
    finally:
        for process in running.processes.values():
            process.terminate()
        for name, process in running.processes.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            print(f"--- {name}\n{logs[name].read_text(errors='replace')[-3000:]}")  # shown on failure
        with admin_client(settings) as admin:
            admin.delete_topics([name for name in admin.list_topics() if name.startswith(f"pdo.{tag}.")])


def samples(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples of `name` whose labels include `labels`."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + ("{" if labels else "")) and all(label in line for label in wanted)
    ]


@dataclasses.dataclass
class Prometheus:
    """A running Prometheus server's HTTP API."""

    api: str
    server: subprocess.Popen
    log: Path

    def get(self, path: str, **params: Any) -> Any:
        """The `data` of a successful answer, or None while the server is starting (503)."""
        assert self.server.poll() is None, self.log.read_text()[-3000:]
        response = httpx.get(f"{self.api}{path}", params=params, timeout=10)
        if response.status_code == 503:
            return None
        answer = response.json()
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.get("/query", query=expr)
        return data["result"] if data else []


@contextmanager
def prometheus_scraping(platform: RunningPlatform, folder: Path) -> Iterator[Prometheus]:
    """The real Prometheus server (Debian's) scraping `platform` every second, with the project's rules."""
    program = require_program("prometheus", "prometheus")
    local_secrets(platform.settings)  # as `pdo up` does: the gateway's scrape token in its file
    config = prometheus_config(platform.settings, scrape_interval="1s")
    # The test's home has only topics and schemas: point at the project's own alert rules.
    config["rule_files"] = [str(PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml")]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    api = f"http://127.0.0.1:{free_port()}/api/v1"
    log = folder / "prometheus.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [
                program,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={api.split('/')[2]}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=output,
        )
    try:
        yield Prometheus(api, server, log)
    finally:
        server.terminate()
        server.wait(timeout=30)
