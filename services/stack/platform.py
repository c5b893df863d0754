"""The local platform's service processes: start them in order, watch them, stop them together."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml

from pdo.core import access, db
from pdo.core.access_log import AccessLog, operator_actor
from pdo.core.apply_report import ApplyReport
from pdo.core.config import Settings
from pdo.core.errors import PdoError
from pdo.core.events import OnDemandPublisher
from pdo.stack import broker, database_roles
from pdo.stack.declarations import Audit, apply_acls, apply_topics, record_bootstrap
from pdo.stack.local_secrets import SIGNING_KEY_VARIABLE, SIGNING_SERVICE, local_secrets, secret_file


@dataclass(frozen=True)
class ServiceProcess:
    """One pdo service as the CLI runs it, where its metrics are, and how to tell it is ready."""

    name: str
    command: tuple[str, ...]
    metrics_url: Callable[[Settings], str | None]
    # A worker is ready when its metrics answer (it serves them before anything else); None: no check.
    ready_url: Callable[[Settings], str | None] | None = None

    def ready(self, settings: Settings) -> str | None:
        return (self.ready_url or self.metrics_url)(settings)


def worker(name: str, command: tuple[str, ...] | None = None) -> ServiceProcess:
    """A stream worker: `pdo <name> worker` (or `command`), metrics on PDO_<NAME>_METRICS_PORT (none when 0)."""

    def metrics_url(s: Settings) -> str | None:
        port = s.metrics_port(name)
        return f"http://{s.metrics_host}:{port}/metrics" if port else None

    return ServiceProcess(name, command or (name, "worker"), metrics_url)


def gateway_url(s: Settings) -> str:
    return f"http://{s.gateway_host}:{s.gateway_port}"


# In start order: the registry first, since every other service registers or resolves schemas there.
# The HTTP services serve /metrics on their own HTTP port.
SERVICES = (
    ServiceProcess(
        "registry",
        ("registry", "serve"),
        # Everything but /metrics needs credentials: the registry is ready when its metrics answer.
        metrics_url=lambda s: f"{s.registry_url}/metrics",
    ),
    worker("catalog"),
    worker("authorization"),
    worker("sharing"),
    worker("metering"),
    worker("aggregation"),
    # `pdo audit` is the audit log's own command group (export, verify, ...): its worker stands apart.
    worker("audit", ("audit-worker",)),
    ServiceProcess(
        "gateway",
        ("gateway", "serve"),
        metrics_url=lambda s: f"{gateway_url(s)}/metrics",
        ready_url=lambda s: f"{gateway_url(s)}/healthz",
    ),
)


def prometheus_config(settings: Settings, scrape_interval: str = "15s") -> dict:
    """A Prometheus configuration scraping every service of the platform where `settings` put it, with
    pdo's alert rules (deploy/prometheus/alerts.yml); deploy/prometheus/prometheus.yml is its compose twin.
    The gateway's /metrics (per-tenant usage) answers only to the scrape token, read from its private file."""
    jobs = []
    for service in SERVICES:
        url = service.metrics_url(settings)
        if url:
            where = urlsplit(url)
            job: dict[str, object] = {
                "job_name": service.name,
                "metrics_path": where.path,
                "static_configs": [{"targets": [where.netloc]}],
            }
            if service.name == "gateway":
                job["authorization"] = {
                    "type": "Bearer",
                    "credentials_file": str(secret_file(settings, "metrics_token")),
                }
            jobs.append(job)
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(settings.home / "deploy" / "prometheus" / "alerts.yml")],
        "scrape_configs": jobs,
    }


def write_prometheus_config(settings: Settings) -> Path:
    """PDO_RUN_DIR/prometheus.yml for a local Prometheus (`prometheus --config.file=...`)."""
    path = settings.run_dir / "prometheus.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(prometheus_config(settings), sort_keys=False))
    return path


class Platform:
    """Runs SERVICES as child processes with logs under PDO_RUN_DIR/logs."""

    def __init__(self, settings: Settings, report: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.report = report
        self.logs = settings.run_dir / "logs"
        self.running: dict[str, subprocess.Popen] = {}
        # The generated secrets go to the services only, never into this process's environment or a log.
        self.service_environment = {**settings.environment(), **local_secrets(settings)}
        # {service: URL as its own database role} once `prepare_databases` made them (PostgreSQL only).
        self.database_urls: dict[str, str] = {}

    def start(self, ready_timeout_s: float = 60) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for service in SERVICES:
            self.running[service.name] = self._spawn(service)
            ready_url = service.ready(self.settings)
            if ready_url:
                self._wait_ready(service, ready_url, ready_timeout_s)
            metrics = service.metrics_url(self.settings) or "off"
            self.report(f"  started {service.name:<14} log {self._log_path(service.name)}  metrics {metrics}")

    def watch(self, poll_s: float = 1.0) -> None:
        """Block until a service exits by itself (an error: say which, with its log) or we are interrupted."""
        while True:
            self.check()
            time.sleep(poll_s)

    def check(self) -> None:
        """Raise, saying which and with its log, if a service has exited by itself."""
        for name, process in self.running.items():
            if process.poll() is not None:
                raise PdoError(
                    f"the {name} service stopped (exit {process.returncode}); last lines of its log:\n"
                    + self._log_tail(name),
                    hint=f"see {self._log_path(name)}",
                )

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
            env=self._environment(service.name),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # A session of its own: a terminal's Ctrl-C reaches only the supervisor (`pdo up`, `pdo demo`),
            # which stops the services in order with SIGTERM once it is done with them (the demo still
            # needs them for its final summary).
            start_new_session=True,
        )

    def _environment(self, name: str) -> dict[str, str]:
        """These settings, with the service's own Kafka principal (it can do only what topics/ grants it) and,
        on PostgreSQL, its own database role: every database URL it reads names that role, so the service
        never holds the owner's password (at start it only reads the migration revision)."""
        return {
            **self.service_environment,
            "PDO_KAFKA_USERNAME": access.service_user(name),
            "PDO_KAFKA_PASSWORD": access.service_password(self.settings, name),
            **self._database_environment(name),
            **self._signing_key_environment(name),
        }

    def _signing_key_environment(self, name: str) -> dict[str, str]:
        return {} if name == SIGNING_SERVICE else {SIGNING_KEY_VARIABLE: ""}

    def _database_environment(self, name: str) -> dict[str, str]:
        if not self.database_urls:  # SQLite: one file, no roles
            return {}
        # Only its own: every other database URL names the owner or another role, with the password.
        others = dict.fromkeys(Settings.database_url_variables(), "")
        url = self.database_urls.get(name)
        if url is None:  # a service that keeps no table (sharing) gets no database URL at all
            return others
        return {
            **others,
            Settings.variable("database_url"): url,
            Settings.variable(f"{name}_database_url"): url,
        }

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


def prepare_databases(settings: Settings, report: Callable[[str], None] = print) -> dict[str, str]:
    """Migrate the stores as their owner, then, where they are PostgreSQL, give every service its role
    (pdo.stack.database_roles); {service: its URL as that role}, empty on SQLite (nothing changes there)."""
    for url in dict.fromkeys((settings.database_url, settings.registry_database_url)):
        db.upgrade(url)
    report(f"database at revision {db.current_revision(settings.database_url)}")
    urls = database_roles.apply(settings)
    if urls:
        roles = ", ".join(database_roles.role_name(settings, service) for service in urls)
        report(f"database roles applied: {roles} (each service connects as its own)")
    return urls


def record_bootstrap_acts(
    settings: Settings,
    created: ApplyReport[str],
    applied: ApplyReport[access.Grant],
    report: Callable[[str], None],
) -> None:
    """Record on pdo.access what the bootstrap applied before the registry ran (pdo.stack.declarations)."""
    events = OnDemandPublisher(settings)
    users = [access.service_user(name) for name in access.services(settings)]
    reason = "the local platform's bootstrap; applied before the schema registry ran, recorded once it did"
    audit = Audit(AccessLog(events), operator_actor(), "pdo up", reason)
    try:
        record_bootstrap(audit, created, applied, users)
    finally:
        events.close()
    report("topics, ACLs and service users applied: recorded for the audit log")


@contextmanager
def local_platform(settings: Settings, report: Callable[[str], None] = print) -> Iterator[Platform]:
    """The broker (started unless running), the declared topics, the database, and every service, running;
    on exit every service stops, and the broker too if it was started here (leave someone else's alone)."""
    already_running = broker.status(settings).running
    broker.start(settings)
    platform = Platform(settings, report)
    try:
        created = apply_topics(settings, report)
        applied = apply_acls(settings, users=True, report=report)
        platform.database_urls = prepare_databases(settings, report)
        # Before the services start: once the gateway answers, everything about the setup has been told.
        prometheus = write_prometheus_config(settings)
        report(
            f"  Prometheus for it: prometheus --config.file={prometheus} "
            f"--storage.tsdb.path={settings.run_dir / 'prometheus'}"
        )
        platform.start()
        record_bootstrap_acts(settings, created, applied, report)
        yield platform
    finally:
        platform.stop()
        if not already_running:
            broker.stop(settings)
