"""Settings read from the environment: the one documented list of pdo's configuration variables.

Secrets (`secret=True`) are never printed, and `Settings.secret` refuses a published placeholder or a short
value unless the process runs with PDO_ENVIRONMENT=development: a deployment cannot run on a key anyone
who reads this repository knows.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import TypeVar, overload

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pdo.core.errors import PdoError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
logger = logging.getLogger(__name__)
T = TypeVar("T")


class ConfigError(PdoError):
    """A setting has a value pdo cannot use; the message names the variable and what it expects."""


def _path(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def _whole_number(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{raw!r} is not a whole number") from None


def _positive_seconds(raw: str) -> int:
    seconds = _whole_number(raw)
    if seconds < 1:
        raise ConfigError(f"{raw!r} is not a number of seconds of at least 1")
    return seconds


def _seconds_or_off(raw: str) -> int:
    seconds = _whole_number(raw)
    if seconds < 0:
        raise ConfigError(f"{raw!r} is not a number of seconds (0 turns it off)")
    return seconds


def _positive_number(raw: str) -> float:
    try:
        number = float(raw)
    except ValueError:
        raise ConfigError(f"{raw!r} is not a number") from None
    if not 0 < number < float("inf"):
        raise ConfigError(f"{raw!r} is not a number above 0")
    return number


def _at_least_one(raw: str) -> int:
    number = _whole_number(raw)
    if number < 1:
        raise ConfigError(f"{raw!r} is not a whole number of at least 1")
    return number


SECURITY_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def _security_protocol(raw: str) -> str:
    if raw not in SECURITY_PROTOCOLS:
        raise ConfigError(f"{raw!r} is not one of {', '.join(SECURITY_PROTOCOLS)} (pdo always authenticates)")
    return raw


def local_secrets_dir(run_dir: Path) -> Path:
    """The folder (mode 0700) of the local stack's generated secrets."""
    return run_dir / "secrets"


def local_secret_path(run_dir: Path, name: str) -> Path:
    """Where the local stack keeps a generated secret (mode 0600), e.g. `kafka-admin`."""
    return local_secrets_dir(run_dir) / name


def write_private(path: Path, text: str) -> None:
    """Write `text` to a file only its owner may read (0600), in a folder only its owner may enter."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.chmod(path, 0o600)


def ensure_local_secret(run_dir: Path, name: str) -> str:
    """The local stack's secret `name`, made once (256 random bits, URL-safe) in a file only its owner reads."""
    path = local_secret_path(run_dir, name)
    if path.exists():
        path.chmod(0o600)  # a copy someone made readable by others is narrowed again
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    secret = secrets.token_urlsafe(32)
    # O_EXCL: two commands starting at once cannot both write (the loser reads the winner's secret).
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another command made it a moment ago: use theirs
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as file:
        file.write(secret + "\n")
    return secret


@dataclass(frozen=True)
class InRunDir:
    """A default that names a place in PDO_RUN_DIR (`{run_dir}` in the template): moving the run dir moves
    it too, so two local platforms with different run dirs never share a store."""

    template: str

    def resolve(self, run_dir: Path) -> str:
        return self.template.format(run_dir=run_dir)

    def __str__(self) -> str:
        return self.template.format(run_dir="<PDO_RUN_DIR>")


@overload
def _setting(env: str, default: str | InRunDir, doc: str, *, secret: bool = False) -> str: ...


@overload
def _setting(env: str, default: T, doc: str, parse: Callable[[str], T], secret: bool = False) -> T: ...


def _setting(
    env: str, default: object, doc: str, parse: Callable[[str], object] = str, secret: bool = False
) -> object:
    """A field read from `env` when Settings is built (never at import), `default` when unset or empty
    (an InRunDir default is resolved against the run dir once Settings has it).

    A secret's value is never printed: `describe` shows only whether it is still the default. The overloads
    make the field's declared type the type of its default and of what `parse` returns.
    """

    def read() -> object:
        raw = os.environ.get(env, "")
        if raw == "":
            return default
        try:
            return parse(raw)
        except ConfigError as error:
            raise ConfigError(f"{env}: {error}; the default is {default}") from None

    return field(
        default_factory=read,
        repr=not secret,
        metadata={"env": env, "doc": doc, "secret": secret, "default": default},
    )


DATABASE_URL_SUFFIX = "_DATABASE_URL"


def _service_database_url(service: str) -> str:
    """PDO_<SERVICE>_DATABASE_URL: where one service connects, as its own role on PostgreSQL."""
    return _setting(
        f"PDO_{service.upper()}{DATABASE_URL_SUFFIX}",
        "",
        f"SQLAlchemy URL the {service} service connects with (its own role on PostgreSQL, see `pdo db roles`); "
        "unset: PDO_DATABASE_URL",
    )


def _role_prefix(raw: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,40}", raw):
        raise ConfigError(
            f"{raw!r} is not 1-41 lower-case letters, digits or underscores (not first a digit)"
        )
    return raw


PRODUCTION = "production"
DEVELOPMENT = "development"
DEVELOPMENT_MASKING_KEY = "pdo-development-masking-key"
# Values shipped in this repository (defaults, docker-compose.yml placeholders): public, so never a secret.
KNOWN_PLACEHOLDERS = frozenset({DEVELOPMENT_MASKING_KEY, "change-me-to-a-long-random-secret", "change-me"})
MIN_SECRET_BYTES = 32
MAKE_A_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"


# Topic declarations give replication per profile (topics/README.md); PDO_REPLICATION_PROFILE picks one.
REPLICATION_PROFILES = (PRODUCTION, "local")


def _replication_profile(raw: str) -> str:
    if raw not in REPLICATION_PROFILES:
        raise ConfigError(f"{raw!r} is not one of {', '.join(REPLICATION_PROFILES)}")
    return raw


def _environment(raw: str) -> str:
    if raw not in (PRODUCTION, DEVELOPMENT):
        raise ConfigError(f"{raw!r} is neither {PRODUCTION!r} nor {DEVELOPMENT!r}")
    return raw


def weak_secret_reason(value: str) -> str | None:
    """Why `value` cannot serve as a secret outside development, or None when it can."""
    if value in KNOWN_PLACEHOLDERS or value.lower().startswith("change-me"):
        return "is a placeholder published with pdo"
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"is {len(value.encode())} bytes long; at least {MIN_SECRET_BYTES} are needed"
    return None


@dataclass(frozen=True)
class Settings:
    """Every variable pdo reads, with its default. `pdo config` prints the values in force."""

    home: Path = _setting(
        "PDO_HOME", PROJECT_ROOT, "project folder holding schemas/, topics/ and deploy/", _path
    )
    run_dir: Path = _setting(
        "PDO_RUN_DIR",
        PROJECT_ROOT / "run",
        "where the local stack keeps data, logs, pid files, generated secrets and (unless their URLs are set) "
        "its SQLite stores",
        _path,
    )
    kafka_bootstrap: str = _setting(
        "PDO_KAFKA_BOOTSTRAP", "127.0.0.1:9092", "Kafka bootstrap servers, host:port[,host:port]"
    )
    kafka_username: str = _setting(
        "PDO_KAFKA_USERNAME",
        "admin",
        "SASL/SCRAM user this process authenticates as, to Kafka and to the schema registry "
        "(`service.<name>` for a service, `tenant.<name>` for a tenant)",
    )
    kafka_password: str = _setting(
        "PDO_KAFKA_PASSWORD",
        "",
        "password of PDO_KAFKA_USERNAME; unset, the local stack's generated secret "
        "<PDO_RUN_DIR>/secrets/kafka-<user> is used (`pdo broker start` and `pdo up` write them)",
        secret=True,
    )
    kafka_security_protocol: str = _setting(
        "PDO_KAFKA_SECURITY_PROTOCOL",
        "SASL_PLAINTEXT",
        "SASL_PLAINTEXT, or SASL_SSL for TLS to the broker (then PDO_KAFKA_SSL_CAFILE)",
        _security_protocol,
    )
    kafka_ssl_cafile: str = _setting(
        "PDO_KAFKA_SSL_CAFILE", "", "PEM file of the CA that signed the broker's certificate (SASL_SSL)"
    )
    kafka_port: int = _setting(
        "PDO_KAFKA_PORT", 9092, "client port of the local broker `pdo broker start` runs", _whole_number
    )
    kafka_controller_port: int = _setting(
        "PDO_KAFKA_CONTROLLER_PORT", 9093, "KRaft controller port of the local broker", _whole_number
    )
    kafka_tls_port: int = _setting(
        "PDO_KAFKA_TLS_PORT",
        0,
        "SASL_SSL client port of the local broker (0: none); needs PDO_KAFKA_TLS_CERTFILE and _KEYFILE",
        _whole_number,
    )
    kafka_tls_certfile: str = _setting(
        "PDO_KAFKA_TLS_CERTFILE", "", "PEM certificate chain of the local broker's TLS listener"
    )
    kafka_tls_keyfile: str = _setting(
        "PDO_KAFKA_TLS_KEYFILE", "", "PEM private key (unencrypted) of the local broker's TLS listener"
    )
    kafka_heap: str = _setting("PDO_KAFKA_HEAP", "512m", "maximum Java heap of the local broker (-Xmx)")
    kafka_node_heap: str = _setting(
        "PDO_KAFKA_NODE_HEAP",
        "384m",
        "maximum Java heap of each node of a local cluster (`pdo broker start --nodes 3`)",
    )
    replication_profile: str = _setting(
        "PDO_REPLICATION_PROFILE",
        PRODUCTION,
        "which replication of the topic declarations applies: production (e.g. 3 replicas, 2 in sync) or "
        "local (1 / 1); never more replicas than the cluster has brokers",
        _replication_profile,
    )
    kafka_start_timeout_s: int = _setting(
        "PDO_KAFKA_START_TIMEOUT_S",
        120,
        "seconds `pdo broker start` waits for the broker to answer before giving up",
        _whole_number,
    )
    kafka_timeout_s: int = _setting(
        "PDO_KAFKA_TIMEOUT_S", 10, "seconds a client command waits for the broker", _whole_number
    )
    registry_url: str = _setting(
        "PDO_REGISTRY_URL", "http://127.0.0.1:8081", "schema registry the codec and clients use"
    )
    registry_host: str = _setting("PDO_REGISTRY_HOST", "127.0.0.1", "address `pdo registry serve` listens on")
    registry_database_url: str = _setting(
        "PDO_REGISTRY_DATABASE_URL",
        InRunDir("sqlite:///{run_dir}/registry.db"),
        "the schema registry's own store (kept apart so a service's open SQLite write never blocks it)",
    )
    registry_auth_cache_s: int = _setting(
        "PDO_REGISTRY_AUTH_CACHE_S",
        30,
        "seconds the registry trusts a checked password before asking Kafka again (a removed user's limit)",
        _whole_number,
    )
    registry_port: int = _setting(
        "PDO_REGISTRY_PORT", 8081, "port `pdo registry serve` listens on", _whole_number
    )
    gateway_host: str = _setting("PDO_GATEWAY_HOST", "127.0.0.1", "address `pdo gateway serve` listens on")
    gateway_port: int = _setting(
        "PDO_GATEWAY_PORT", 8080, "port of the HTTP API for providers, tenants and operators", _whole_number
    )
    gateway_max_body_bytes: int = _setting(
        "PDO_GATEWAY_MAX_BODY_BYTES",
        1048576,
        "largest request body the gateway accepts (413 beyond)",
        _whole_number,
    )
    gateway_rate_per_s: int = _setting(
        "PDO_GATEWAY_RATE_PER_S",
        20,
        "API requests per second one principal may make on average (429 beyond; 0: no limit)",
        _whole_number,
    )
    gateway_rate_burst: int = _setting(
        "PDO_GATEWAY_RATE_BURST",
        100,
        "API requests one principal may make at once above its average rate",
        _whole_number,
    )
    gateway_max_streams: int = _setting(
        "PDO_GATEWAY_MAX_STREAMS",
        100,
        "HTTP record streams (GET /v1/streams/...) one gateway process serves at once, all tenants together",
        _whole_number,
    )
    gateway_max_streams_per_tenant: int = _setting(
        "PDO_GATEWAY_MAX_STREAMS_PER_TENANT",
        4,
        "HTTP record streams one tenant may hold open at once on one gateway process",
        _whole_number,
    )
    gateway_max_stream_s: int = _setting(
        "PDO_GATEWAY_MAX_STREAM_S",
        3600,
        "seconds an HTTP record stream lasts at most; it then ends with `event: end` (resume with Last-Event-ID)",
        _whole_number,
    )
    max_grants_per_tenant_dataset: int = _setting(
        "PDO_MAX_GRANTS_PER_TENANT_DATASET",
        5,
        "live grants (active or suspended) plus undecided requests one tenant may hold on one dataset",
        _whole_number,
    )
    metrics_host: str = _setting(
        "PDO_METRICS_HOST",
        "127.0.0.1",
        "address the stream workers serve Prometheus metrics on (0.0.0.0 in containers)",
    )
    catalog_metrics_port: int = _setting(
        "PDO_CATALOG_METRICS_PORT",
        9401,
        "Prometheus metrics port of `pdo catalog worker` (0: none)",
        _whole_number,
    )
    authorization_metrics_port: int = _setting(
        "PDO_AUTHORIZATION_METRICS_PORT",
        9402,
        "Prometheus metrics port of `pdo authorization worker` (0: none)",
        _whole_number,
    )
    sharing_metrics_port: int = _setting(
        "PDO_SHARING_METRICS_PORT",
        9403,
        "Prometheus metrics port of `pdo sharing worker` (0: none)",
        _whole_number,
    )
    metering_metrics_port: int = _setting(
        "PDO_METERING_METRICS_PORT",
        9404,
        "Prometheus metrics port of `pdo metering worker` (0: none)",
        _whole_number,
    )
    metering_digest_interval_s: int = _setting(
        "PDO_METERING_DIGEST_INTERVAL_S",
        60,
        "seconds between the metering leader's delivery digests: each claims every grant's deliveries not in "
        "a digest yet (one digest per grant and billing period) and publishes DeliveriesDigested",
        _positive_seconds,
    )
    audit_metrics_port: int = _setting(
        "PDO_AUDIT_METRICS_PORT",
        9405,
        "Prometheus metrics port of `pdo audit worker` (0: none)",
        _whole_number,
    )
    audit_checkpoint_interval_s: int = _setting(
        "PDO_AUDIT_CHECKPOINT_INTERVAL_S",
        60,
        "seconds between the audit worker's signed checkpoints of the audit log (one only when it grew)",
        _positive_seconds,
    )
    audit_fail_closed_after_s: int = _setting(
        "PDO_AUDIT_FAIL_CLOSED_AFTER_S",
        60,
        "seconds the audit log may go without a successful append before new grants, approvals and "
        "resumptions are refused (revocations still go through); 0: never refuse",
        _seconds_or_off,
    )
    policy_file: Path = _setting(
        "PDO_POLICY_FILE",
        PROJECT_ROOT / "services" / "authorization" / "policy.yaml",
        "the authorization policy: rules that approve, deny or send requests to review",
        _path,
    )
    deployment: str = _setting(
        "PDO_ENVIRONMENT",
        PRODUCTION,
        "production, or development: only development accepts the built-in development secrets (with a warning)",
        _environment,
    )
    masking_key: str = _setting(
        "PDO_MASKING_KEY",
        DEVELOPMENT_MASKING_KEY,
        f"master key of KEYED_HASH pseudonyms, at least {MIN_SECRET_BYTES} bytes, the same for every sharing "
        "worker; `pdo up` generates one in PDO_RUN_DIR/secrets/",
        secret=True,
    )
    metrics_token: str = _setting(
        "PDO_METRICS_TOKEN",
        "",
        "bearer token Prometheus presents to scrape the gateway's /metrics (operators' API keys work too); "
        f"at least {MIN_SECRET_BYTES} bytes; `pdo up` generates one in PDO_RUN_DIR/secrets/",
        secret=True,
    )
    audit_signing_key_file: str = _setting(
        "PDO_AUDIT_SIGNING_KEY_FILE",
        "",
        "Ed25519 private key (PEM, mode 0600) that signs the audit log's checkpoints; the file is a secret, "
        "this is only its path. Unset: refused outside development; `pdo up` makes one in PDO_RUN_DIR/secrets/",
    )
    audit_public_key_file: str = _setting(
        "PDO_AUDIT_PUBLIC_KEY_FILE",
        "",
        "Ed25519 public key (PEM, from `pdo audit public-key`) the gateway serves at /v1/audit/public-key. "
        "Unset: the public half of PDO_AUDIT_SIGNING_KEY_FILE",
    )
    audit_origin: str = _setting(
        "PDO_AUDIT_ORIGIN",
        "pdo.local/audit",
        "the audit log's name, the first line of every signed checkpoint (e.g. audit.example.org/pdo)",
    )
    database_url: str = _setting(
        "PDO_DATABASE_URL",
        InRunDir("sqlite:///{run_dir}/pdo.db"),
        "SQLAlchemy URL of the system of record (SQLite in PDO_RUN_DIR by default; postgresql+psycopg://… in "
        "production); "
        "migrations run with it, so on PostgreSQL it names the database's owner",
    )
    catalog_database_url: str = _service_database_url("catalog")
    authorization_database_url: str = _service_database_url("authorization")
    metering_database_url: str = _service_database_url("metering")
    audit_database_url: str = _service_database_url("audit")
    gateway_database_url: str = _service_database_url("gateway")
    database_role_prefix: str = _setting(
        "PDO_DATABASE_ROLE_PREFIX",
        "pdo_",
        "prefix of the services' PostgreSQL roles (`pdo_catalog`, ...); roles are per server, so two "
        "platforms sharing one PostgreSQL server need different prefixes",
        _role_prefix,
    )
    billing_gauges_interval_s: int = _setting(
        "PDO_BILLING_GAUGES_INTERVAL_S",
        300,
        "seconds between the metering leader's exports of billing's gauges (this period's charges so far and "
        "the reconciliation drift, which scans the tenant topics of this month and the last)",
        _positive_seconds,
    )
    aggregation_metrics_port: int = _setting(
        "PDO_AGGREGATION_METRICS_PORT",
        9406,
        "Prometheus metrics port of `pdo aggregation worker` (0: none)",
        _whole_number,
    )
    aggregation_database_url: str = _service_database_url("aggregation")
    aggregation_allowed_lateness_s: int = _setting(
        "PDO_AGGREGATION_ALLOWED_LATENESS_S",
        60,
        "seconds of event time an aggregate window stays open after its end for late records; a record "
        "for a window already closed goes to the dead-letter topic with its reason",
        _seconds_or_off,
    )
    aggregation_min_group_size: int = _setting(
        "PDO_AGGREGATION_MIN_GROUP_SIZE",
        10,
        "the operator's floor k of aggregate grants: a group of fewer records is never published; a dataset "
        "may ask for more (its schema's `pdo.min_group_size`), the larger wins",
        _at_least_one,
    )
    aggregation_epsilon_per_month: float = _setting(
        "PDO_AGGREGATION_EPSILON_PER_MONTH",
        10.0,
        "differential-privacy budget (epsilon) of one tenant for one dataset per UTC month: each window of a "
        "private aggregate grant spends its epsilon; a window it cannot pay for is not published and the grant "
        "is suspended",
        _positive_number,
    )
    idempotency_retention_s: int = _setting(
        "PDO_IDEMPOTENCY_RETENTION_S",
        86400,
        "seconds the gateway keeps the answer to a call made with an Idempotency-Key: a retry with the same "
        "key and body within it gets that answer and writes nothing again (expired keys are pruned)",
        _positive_seconds,
    )
    record_id_window_s: int = _setting(
        "PDO_RECORD_ID_WINDOW_S",
        86400,
        "seconds a record_id sent to a dataset's feed through pdo's publishers (HTTP ingest, `pdo publish`) is "
        "remembered: the same record_id sent again within it is reported as a duplicate and not written again",
        _positive_seconds,
    )
    event_time_max_past_s: int = _setting(
        "PDO_EVENT_TIME_MAX_PAST_S",
        3653 * 86400,
        "how far in the past a record's event time (see pdo.publishing.event_time) may lie; an older "
        "record is refused at publish, naming the field and the bounds",
        _positive_seconds,
    )
    event_time_max_future_s: int = _setting(
        "PDO_EVENT_TIME_MAX_FUTURE_S",
        86400,
        "how far in the future a record's event time may lie (clock skew, forecasts); a later record is "
        "refused at publish, naming the field and the bounds",
        _positive_seconds,
    )

    def __post_init__(self) -> None:
        for setting in fields(self):
            value = getattr(self, setting.name)
            if isinstance(value, InRunDir):
                # Frozen: this is the one place a value is filled in, while the instance is being built.
                object.__setattr__(self, setting.name, value.resolve(self.run_dir))

    @property
    def development(self) -> bool:
        return self.deployment == DEVELOPMENT

    def secret(self, name: str) -> str:
        """The secret setting `name`, refused (ConfigError naming its variable) when it is a published
        placeholder or too short, unless PDO_ENVIRONMENT=development, which accepts it with a warning."""
        setting = next(f for f in fields(self) if f.name == name)
        value: str = getattr(self, name)  # every secret setting is a string
        env = setting.metadata["env"]
        reason = weak_secret_reason(value)
        if reason is None:
            return value
        if self.development:
            logger.warning("%s %s: accepted only because PDO_ENVIRONMENT=development", env, reason)
            return value
        raise ConfigError(
            f"{env} {reason}, so it is refused (this is not a development environment)",
            hint=f"set {env} to a random value of at least {MIN_SECRET_BYTES} bytes, e.g. from "
            f"`{MAKE_A_SECRET}`, the same for every worker; or, on a developer's machine only, "
            f"set PDO_ENVIRONMENT={DEVELOPMENT}",
        )

    @classmethod
    def variable(cls, name: str) -> str:
        """The environment variable of the setting `name`, e.g. "database_url" -> "PDO_DATABASE_URL"."""
        env: str = next(f.metadata["env"] for f in fields(cls) if f.name == name)
        return env

    @classmethod
    def database_url_variables(cls) -> list[str]:
        """PDO_DATABASE_URL, PDO_REGISTRY_DATABASE_URL and every PDO_<SERVICE>_DATABASE_URL."""
        return [f.metadata["env"] for f in fields(cls) if f.metadata["env"].endswith(DATABASE_URL_SUFFIX)]

    def service_database_url(self, service: str) -> str:
        """The URL a service connects with: PDO_<SERVICE>_DATABASE_URL (the registry's own store for the
        registry), else PDO_DATABASE_URL, so single-URL and SQLite setups connect as before."""
        own: str = getattr(self, f"{service}_database_url", "")
        return own or self.database_url

    def metrics_port(self, service: str) -> int:
        """The metrics port of a stream worker by its service name ("catalog", "sharing", ...)."""
        port: int = getattr(self, f"{service}_metrics_port")
        return port

    @classmethod
    def from_env(cls) -> Settings:
        """Read the environment now, so tests and commands see what is set when they run."""
        return cls()

    def environment(self) -> dict[str, str]:
        """This process's environment with every PDO_* variable set to these settings: for a child process
        (a worker, a command) that must run with exactly them, e.g. a test's namespace and database."""
        return {**os.environ, **{f.metadata["env"]: str(getattr(self, f.name)) for f in fields(self)}}

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, value in force, meaning) for each setting, in declaration order."""
        return [(f.metadata["env"], self._shown(f), f.metadata["doc"]) for f in fields(self)]

    def _shown(self, setting: Field[object]) -> str:
        value = getattr(self, setting.name)
        if setting.metadata["env"].endswith(DATABASE_URL_SUFFIX) and value:  # a URL may carry a password
            try:
                return make_url(value).render_as_string(hide_password=True)
            except ArgumentError:  # not a URL SQLAlchemy reads: it may still hold a password
                return "(not a database URL; hidden)"
        if not setting.metadata["secret"]:
            return str(value)
        if not value:
            return "(not set)"
        return (
            "(the development default: change it)"
            if value == setting.metadata["default"]
            else "(set, hidden)"
        )
