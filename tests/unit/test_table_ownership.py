"""The ownership declaration (pdo.stack.database_roles) is sound: every table, in any service's metadata or
made by a migration, has exactly one owner; what the gateway borrows is another service's table; and the
local stack hands each service its own role's URL (and nothing new on SQLite). PostgreSQL itself:
tests/integration/test_database_roles_on_postgres.py."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil

import pytest
import sqlalchemy as sa

import pdo
from pdo.cli.main import main
from pdo.core import db, db_roles
from pdo.core.config import ConfigError, Settings
from pdo.core.errors import PdoError
from pdo.stack import database_roles
from pdo.stack.platform import Platform


def every_tables_module() -> dict[str, sa.MetaData]:
    """{module: metadata} of every `pdo.<package>.tables` there is, declared or not."""
    found = {}
    for package in pkgutil.iter_modules(pdo.__path__):
        name = f"pdo.{package.name}.tables"
        if importlib.util.find_spec(name) is not None:
            found[name] = importlib.import_module(name).metadata
    return found


def test_every_table_of_every_tables_module_has_exactly_one_owner():
    owners = database_roles.owners()
    modules = every_tables_module()
    assert len(modules) >= 5
    for module, metadata in modules.items():
        for table in metadata.tables:
            assert len(owners.get(table, [])) == 1, f"{table} ({module}) is owned by {owners.get(table, [])}"


def test_every_table_the_migrations_make_has_exactly_one_owner(tmp_path):
    url = f"sqlite:///{tmp_path / 'pdo.db'}"
    db.upgrade(url)
    engine = db.make_engine(url)
    made = set(sa.inspect(engine).get_table_names()) - {db_roles.MIGRATION_TABLE}
    engine.dispose()
    owners = database_roles.owners()
    assert made and not {table: owners.get(table) for table in made if len(owners.get(table, [])) != 1}
    assert set(owners) == made  # no service declares a table the migrations do not make


def test_what_a_service_borrows_is_another_services_table_and_never_more_than_it_may():
    owners = database_roles.owners()
    for service, borrowed in database_roles.BORROWED.items():
        for table, privileges in borrowed.items():
            assert owners.get(table, [service])[0] != service, (
                f"{service} borrows {table}, which is not another's"
            )
            assert set(privileges) <= db_roles.READ_WRITE


def test_the_audit_logs_liveness_mark_is_read_by_whoever_widens_access_and_written_by_audit_alone():
    for service in ("gateway", "authorization"):
        assert database_roles.privileges(service)["audit_liveness"] == db_roles.READ
    assert database_roles.privileges("audit")["audit_liveness"] == db_roles.READ_WRITE


def test_the_gateway_writes_the_command_sides_tables_and_only_reads_metering():
    gateway = database_roles.privileges("gateway")
    assert "INSERT" in gateway["catalog_datasets"] and "UPDATE" in gateway["authz_grants"]
    assert {p for t, p in gateway.items() if t.startswith("metering_")} == {db_roles.READ}
    assert all("DELETE" not in p for t, p in gateway.items() if not t.startswith("gateway_"))


def test_services_are_granted_no_other_services_table():
    for service in ("registry", "catalog", "metering"):
        assert set(database_roles.privileges(service)) == set(database_roles.owned_tables(service))
    authorization = database_roles.privileges("authorization")
    assert set(authorization) == {*database_roles.owned_tables("authorization"), "audit_liveness"}
    assert "sharing" not in database_roles.SERVICES  # sharing keeps no table


def test_a_role_plan_refuses_a_name_it_cannot_quote_or_an_unknown_privilege():
    with pytest.raises(PdoError, match="cannot name a database role"):
        db_roles.RolePlan('pdo"; DROP TABLE x; --', "pw", {})
    with pytest.raises(PdoError, match="unknown privileges"):
        db_roles.RolePlan("pdo_catalog", "pw", {"catalog_datasets": frozenset({"TRUNCATE"})})


def test_a_role_url_keeps_server_and_database_and_names_the_role():
    url = db_roles.role_url("postgresql+psycopg://owner:secret@db.example:5432/pdo", "pdo_catalog", "p@ss/w")
    parsed = sa.engine.make_url(url)
    assert (parsed.username, parsed.password, parsed.host, parsed.database) == (
        "pdo_catalog",
        "p@ss/w",
        "db.example",
        "pdo",
    )


OWNER_URL = "postgresql+psycopg://owner:owner-secret@127.0.0.1/pdo"


@pytest.fixture
def settings(tmp_path) -> Settings:
    """One PostgreSQL database for every store, as the owner (the registry's store in it too)."""
    return dataclasses.replace(
        Settings(), database_url=OWNER_URL, registry_database_url=OWNER_URL, run_dir=tmp_path / "run"
    )


def test_a_service_connects_with_its_own_url_else_the_shared_one(settings):
    own = dataclasses.replace(
        settings, catalog_database_url="postgresql+psycopg://pdo_catalog:x@127.0.0.1/pdo"
    )
    assert own.service_database_url("catalog") == own.catalog_database_url
    assert own.service_database_url("metering") == settings.database_url
    assert own.service_database_url("registry") == settings.registry_database_url


def test_pdo_config_hides_the_password_of_every_database_url(settings, monkeypatch):
    monkeypatch.setenv("PDO_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PDO_GATEWAY_DATABASE_URL", "postgresql+psycopg://pdo_gateway:gw-secret@127.0.0.1/pdo")
    shown = dict((variable, value) for variable, value, _ in Settings.from_env().describe())
    assert shown["PDO_DATABASE_URL"] == "postgresql+psycopg://owner:***@127.0.0.1/pdo"
    assert "gw-secret" not in shown["PDO_GATEWAY_DATABASE_URL"]


def test_a_role_prefix_that_cannot_name_a_role_is_refused(monkeypatch):
    monkeypatch.setenv("PDO_DATABASE_ROLE_PREFIX", "Pdo-")
    with pytest.raises(ConfigError, match="PDO_DATABASE_ROLE_PREFIX"):
        Settings.from_env()


def test_the_stack_hands_each_service_its_role_and_never_the_owners_password(settings):
    platform = Platform(settings, report=lambda _line: None)
    platform.database_urls = {
        "catalog": "postgresql+psycopg://pdo_catalog:c-secret@127.0.0.1/pdo",
        "registry": "postgresql+psycopg://pdo_registry:r-secret@127.0.0.1/pdo",
    }
    catalog, registry = platform._environment("catalog"), platform._environment("registry")
    assert (
        catalog["PDO_CATALOG_DATABASE_URL"]
        == catalog["PDO_DATABASE_URL"]
        == platform.database_urls["catalog"]
    )
    assert (
        registry["PDO_REGISTRY_DATABASE_URL"]
        == registry["PDO_DATABASE_URL"]
        == platform.database_urls["registry"]
    )
    assert "owner-secret" not in " ".join(catalog.values()) + " ".join(registry.values())
    assert "r-secret" not in " ".join(catalog.values())  # nor another service's role


def test_on_sqlite_the_stack_passes_the_one_url_as_before(settings):
    on_sqlite = dataclasses.replace(
        settings, database_url="sqlite:///pdo.db", registry_database_url="sqlite:///r.db"
    )
    platform = Platform(on_sqlite, report=lambda _line: None)
    assert database_roles.apply(on_sqlite) == {}
    assert platform._environment("metering")["PDO_DATABASE_URL"] == "sqlite:///pdo.db"
    assert platform._environment("metering")["PDO_METERING_DATABASE_URL"] == ""


def test_pdo_db_roles_on_sqlite_says_there_is_nothing_to_do(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PDO_DATABASE_URL", f"sqlite:///{tmp_path / 'pdo.db'}")
    monkeypatch.setenv("PDO_REGISTRY_DATABASE_URL", f"sqlite:///{tmp_path / 'registry.db'}")
    assert main(["db", "roles", "apply"]) == 0
    assert main(["db", "roles", "list"]) == 0
    assert capsys.readouterr().out.count("SQLite has no roles") == 2


def test_a_services_password_comes_from_the_deployment_or_a_private_local_secret(settings, monkeypatch):
    monkeypatch.delenv("PDO_CATALOG_DATABASE_PASSWORD", raising=False)
    generated = database_roles.password(settings, "catalog")
    assert len(generated) >= 32 and database_roles.password(settings, "catalog") == generated
    assert database_roles.password_source(settings, "catalog").endswith("secrets/database-pdo_catalog")
    monkeypatch.setenv("PDO_CATALOG_DATABASE_PASSWORD", "from-the-deployment")
    assert database_roles.password(settings, "catalog") == "from-the-deployment"
    assert database_roles.password_source(settings, "catalog") == "PDO_CATALOG_DATABASE_PASSWORD"
