"""Who owns which table: the one declaration each service's PostgreSQL role is made from.

A service owns the tables of its `tables` module's metadata: it reads and writes them, and no other
service's role may touch them, except where the other declares it (a `BORROWED` beside its tables). The
gateway does (`pdo.gateway.tables.BORROWED`): it is the command side of the catalog and the authorization
service, and it reads the metering tables it serves over HTTP. The authorization worker reads the audit
log's liveness mark before approving (fail closed), and so does the gateway. The billing code runs with metering's role. Sharing keeps
no table and has no role. `apply` turns this into one login role per service (pdo.core.db_roles) on each
PostgreSQL database that holds its tables; SQLite has no roles and is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa

from pdo.aggregation import tables as aggregation_tables
from pdo.audit import tables as audit_tables
from pdo.authorization import tables as authorization_tables
from pdo.billing import tables as billing_tables
from pdo.catalog import tables as catalog_tables
from pdo.core import db, db_roles
from pdo.core.config import Settings, ensure_local_secret, local_secret_path
from pdo.core.errors import PdoError
from pdo.gateway import tables as gateway_tables
from pdo.metering import tables as metering_tables
from pdo.publishing import tables as publishing_tables
from pdo.registry import tables as registry_tables

OWNED: Mapping[str, tuple[sa.MetaData, ...]] = {
    "registry": (registry_tables.metadata,),
    "catalog": (catalog_tables.metadata,),
    "authorization": (authorization_tables.metadata,),
    # Billing is a package of its own but runs with metering's role: closing a period locks the ledger.
    "metering": (metering_tables.metadata, billing_tables.metadata),
    "audit": (audit_tables.metadata,),
    # Publishing runs in the gateway's process (HTTP ingest): its record_id claims are the gateway's to write.
    "gateway": (gateway_tables.metadata, publishing_tables.metadata),
    "aggregation": (aggregation_tables.metadata,),
}
BORROWED: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "gateway": gateway_tables.BORROWED,
    "authorization": authorization_tables.BORROWED,
}
SERVICES = tuple(OWNED)


def owned_tables(service: str) -> list[str]:
    return sorted(name for metadata in OWNED[service] for name in metadata.tables)


def owners() -> dict[str, list[str]]:
    """{table: [services declaring it theirs]}: exactly one each when the declaration is sound."""
    found: dict[str, list[str]] = {}
    for service in SERVICES:
        for table in owned_tables(service):
            found.setdefault(table, []).append(service)
    return found


def privileges(service: str) -> db_roles.Grants:
    """{table: privileges} of a service's role: its own tables in full, and what it borrows."""
    own = {table: db_roles.READ_WRITE for table in owned_tables(service)}
    return {**own, **{table: frozenset(p) for table, p in BORROWED.get(service, {}).items()}}


def role_name(settings: Settings, service: str) -> str:
    return f"{settings.database_role_prefix}{service}"


def password_variable(service: str) -> str:
    return f"PDO_{service.upper()}_DATABASE_PASSWORD"


def password(settings: Settings, service: str) -> str:
    """PDO_<SERVICE>_DATABASE_PASSWORD when the deployment sets it, else the local stack's secret
    <run_dir>/secrets/database-<role> (made on first use)."""
    configured = os.environ.get(password_variable(service), "")
    return configured or ensure_local_secret(settings.run_dir, _secret_name(settings, service))


def password_source(settings: Settings, service: str) -> str:
    """Where a service's password comes from, in words (never the password)."""
    if os.environ.get(password_variable(service)):
        return password_variable(service)
    return str(local_secret_path(settings.run_dir, _secret_name(settings, service)))


def _secret_name(settings: Settings, service: str) -> str:
    # Named by role, not service: platforms with different role prefixes keep different passwords.
    return f"database-{role_name(settings, service)}"


def homes(settings: Settings) -> dict[str, list[str]]:
    """{admin URL: services whose tables live there}: the registry keeps its own store."""
    found: dict[str, list[str]] = {}
    for service in SERVICES:
        url = settings.registry_database_url if service == "registry" else settings.database_url
        found.setdefault(url, []).append(service)
    return found


def plan(settings: Settings, service: str) -> db_roles.RolePlan:
    return db_roles.RolePlan(role_name(settings, service), password(settings, service), privileges(service))


def apply(settings: Settings) -> dict[str, str]:
    """Create or update every service's role where its tables are on PostgreSQL (migrate first); {service:
    URL it connects with as its role}. Empty when every store is SQLite."""
    urls = {}
    for admin_url, services in homes(settings).items():
        if not db_roles.supports_roles(admin_url):
            continue
        plans = {service: plan(settings, service) for service in services}
        engine = db.make_engine(admin_url)
        try:
            db_roles.apply_roles(engine, plans.values())
        finally:
            engine.dispose()
        for service, one in plans.items():
            urls[service] = db_roles.role_url(admin_url, one.role, one.password)
    return urls


@dataclass(frozen=True)
class StoreGrants:
    """One PostgreSQL store: where it is (no password), and per role what is declared and what is granted."""

    where: str
    declared: dict[str, db_roles.Grants]
    granted: dict[str, db_roles.Grants]

    def differences(self) -> list[str]:
        return db_roles.differences(self.declared, self.granted)


def declared_and_granted(settings: Settings) -> list[StoreGrants]:
    """For each PostgreSQL store, the declared grants of the roles at home there and what it grants them."""
    found = []
    for admin_url, services in homes(settings).items():
        if not db_roles.supports_roles(admin_url):
            continue
        declared = {role_name(settings, s): db_roles.role_grants(privileges(s)) for s in services}
        engine = db.make_engine(admin_url)
        try:
            granted = db_roles.granted(engine, declared)
        except sa.exc.SQLAlchemyError as error:
            raise PdoError(
                f"cannot read the database's grants: {getattr(error, 'orig', None) or error}",
                hint="check PDO_DATABASE_URL (`pdo config`) and that the server is up",
            ) from None
        finally:
            engine.dispose()
        where = sa.engine.make_url(admin_url).render_as_string(hide_password=True)
        found.append(StoreGrants(where, declared, granted))
    return found
