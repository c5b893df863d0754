"""PostgreSQL login roles holding exactly the privileges declared for them, and nothing else.

`apply_roles` creates or updates each role of a plan, takes away every privilege it holds on the schema's
tables and sequences and every role membership, then grants what the plan declares (and USAGE on the
sequences of tables it may insert into), all in one transaction: a running service never sees a moment
without its privileges, and applying the same plan twice leaves the same grants. A role may read
`alembic_version` besides, so a service that checks the schema is current at start (`pdo.core.db.upgrade`
at the newest revision only reads) can do so under its own role.

Passwords reach the server only as SCRAM-SHA-256 verifiers computed here by libpq, so no statement (nor a
server log of one) carries a password. SQLite has no roles: callers skip it (`supports_roles`).
This module knows no service; the declaration of who owns which table lives above it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from pdo.core.errors import PdoError

READ = frozenset({"SELECT"})
READ_WRITE = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
MIGRATION_TABLE = "alembic_version"
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# What libpq's PQencryptPasswordConn returns: safe inside a quoted literal as it is.
SCRAM_VERIFIER = re.compile(r"^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$")
Grants = dict[str, frozenset[str]]  # table -> privileges


@dataclass(frozen=True)
class RolePlan:
    """One login role and the privileges it gets on tables of the current schema (all others are taken)."""

    role: str
    password: str = field(repr=False)
    tables: Mapping[str, frozenset[str]]

    def __post_init__(self) -> None:
        if not ROLE_NAME.match(self.role):
            raise PdoError(
                f"{self.role!r} cannot name a database role",
                hint="role names are 1-63 lower-case letters, digits and underscores, not starting with a digit",
            )
        unknown = {p for privileges in self.tables.values() for p in privileges} - READ_WRITE
        if unknown:
            raise PdoError(
                f"role {self.role}: unknown privileges {sorted(unknown)}; use {sorted(READ_WRITE)}"
            )
        if not self.password:
            raise PdoError(f"role {self.role} has no password")

    def grants(self) -> Grants:
        return role_grants(self.tables)


def role_grants(tables: Mapping[str, frozenset[str]]) -> Grants:
    """What a role planned on `tables` holds once applied: those, and reading the migration revision."""
    return {**{t: frozenset(p) for t, p in tables.items() if p}, MIGRATION_TABLE: READ}


def supports_roles(url: str) -> bool:
    """Roles and grants exist only on PostgreSQL; SQLite is one file with no users."""
    return make_url(url).get_backend_name() == "postgresql"


def role_url(url: str, role: str, password: str) -> str:
    """`url` (the admin's) logging in as `role` instead: same server and database."""
    return make_url(url).set(username=role, password=password).render_as_string(hide_password=False)


def apply_roles(engine: Engine, plans: Iterable[RolePlan]) -> None:
    """Create or update each role and grant it exactly its plan on the current schema (one transaction)."""
    plans = list(plans)
    try:
        with engine.begin() as conn:
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
            _refuse_missing_tables(conn, schema, plans)
            for plan in plans:
                _apply(conn, schema, plan)
    except SQLAlchemyError as error:
        raise PdoError(
            f"cannot apply the database roles: {getattr(error, 'orig', None) or error}",
            hint="run it as the database's owner with CREATEROLE (the URL in PDO_DATABASE_URL), after "
            "`pdo db upgrade`",
        ) from None


def granted(engine: Engine, roles: Iterable[str]) -> dict[str, Grants]:
    """{role: {table: privileges}} as the database grants them on tables of the current schema."""
    roles = list(roles)
    found: dict[str, dict[str, set[str]]] = {role: {} for role in roles}
    query = sa.text(
        "SELECT r.rolname, c.relname, a.privilege_type "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
        "AND r.rolname = ANY(:roles)"
    )
    with engine.connect() as conn:
        for role, table, privilege in conn.execute(query, {"roles": roles}):
            found[role].setdefault(table, set()).add(privilege)
    return {role: {t: frozenset(p) for t, p in tables.items()} for role, tables in found.items()}


def differences(declared: Mapping[str, Grants], actual: Mapping[str, Grants]) -> list[str]:
    """Each way the database's grants differ from the declaration, in words; [] when they agree."""
    lines = []
    for role in sorted(declared):
        held = actual.get(role, {})
        for table in sorted(set(declared[role]) | set(held)):
            missing = declared[role].get(table, frozenset()) - held.get(table, frozenset())
            extra = held.get(table, frozenset()) - declared[role].get(table, frozenset())
            if missing:
                lines.append(f"{role} lacks {', '.join(sorted(missing))} on {table}")
            if extra:
                lines.append(f"{role} holds {', '.join(sorted(extra))} on {table}, which is not declared")
    return lines


def _refuse_missing_tables(conn: Connection, schema: str, plans: list[RolePlan]) -> None:
    present = set(sa.inspect(conn).get_table_names(schema=schema))
    missing = sorted({table for plan in plans for table in plan.grants()} - present)
    if missing:
        raise PdoError(
            f"the database lacks tables the roles are declared on: {', '.join(missing)}",
            hint="migrate it first (`pdo db upgrade`), then apply the roles again",
        )


def _apply(conn: Connection, schema: str, plan: RolePlan) -> None:
    quote = conn.dialect.identifier_preparer.quote
    role, where = quote(plan.role), quote(schema)
    database = quote(conn.execute(sa.text("SELECT current_database()")).scalar_one())
    _create_or_update(conn, plan)
    _leave_other_roles(conn, plan.role)
    for statement in (
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {where} FROM {role}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {where} FROM {role}",
        f"GRANT CONNECT ON DATABASE {database} TO {role}",
        f"GRANT USAGE ON SCHEMA {where} TO {role}",
    ):
        conn.exec_driver_sql(statement)
    for table, privileges in sorted(plan.grants().items()):
        conn.exec_driver_sql(f"GRANT {', '.join(sorted(privileges))} ON {where}.{quote(table)} TO {role}")
        if "INSERT" in privileges:  # a serial or identity column draws from its sequence
            for sequence in _sequences_of(conn, schema, table):
                conn.exec_driver_sql(f"GRANT USAGE ON SEQUENCE {sequence} TO {role}")


def _create_or_update(conn: Connection, plan: RolePlan) -> None:
    existing = conn.execute(
        sa.text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = :role"), {"role": plan.role}
    ).first()
    if existing is not None and existing[0]:
        raise PdoError(
            f"the database role {plan.role} exists and bypasses privileges (superuser or BYPASSRLS)",
            hint="pdo will not hand it to a service: choose another PDO_DATABASE_ROLE_PREFIX",
        )
    verifier = _scram_verifier(conn, plan)
    verb = "ALTER" if existing is not None else "CREATE"
    quoted = conn.dialect.identifier_preparer.quote(plan.role)
    # NOINHERIT: a membership someone grants later does not widen what the service may do.
    conn.exec_driver_sql(f"{verb} ROLE {quoted} WITH LOGIN NOINHERIT PASSWORD '{verifier}'")


def _scram_verifier(conn: Connection, plan: RolePlan) -> str:
    driver = conn.connection.driver_connection
    if driver is None:  # a pooled connection always has its psycopg connection; guard for the type checker
        raise PdoError(f"no PostgreSQL connection to make the verifier of role {plan.role} with")
    pgconn = driver.pgconn
    verifier: str = pgconn.encrypt_password(
        plan.password.encode(), plan.role.encode(), b"scram-sha-256"
    ).decode()
    if not SCRAM_VERIFIER.match(verifier):  # never put an unexpected text into a statement
        raise PdoError(f"libpq returned no SCRAM verifier for role {plan.role}")
    return verifier


def _leave_other_roles(conn: Connection, role: str) -> None:
    quote = conn.dialect.identifier_preparer.quote
    groups = conn.execute(
        sa.text(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
            "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = :role"
        ),
        {"role": role},
    ).scalars()
    for group in list(groups):
        conn.exec_driver_sql(f"REVOKE {quote(group)} FROM {quote(role)}")


def _sequences_of(conn: Connection, schema: str, table: str) -> list[str]:
    """The sequences behind `table`'s serial and identity columns, schema-qualified and quoted."""
    return list(
        conn.execute(
            sa.text(
                "SELECT format('%I.%I', sn.nspname, s.relname) FROM pg_depend d "
                "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
                "JOIN pg_namespace sn ON sn.oid = s.relnamespace "
                "JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace "
                "WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass "
                "AND d.deptype IN ('a', 'i') AND tn.nspname = :schema AND t.relname = :table"
            ),
            {"schema": schema, "table": table},
        ).scalars()
    )
