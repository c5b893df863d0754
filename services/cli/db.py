"""`pdo db upgrade|current`: run the database migrations against PDO_DATABASE_URL.
`pdo db roles apply|list`: each service's PostgreSQL role with privileges only on its own tables (and what
another service's declaration lends it); passwords are never printed.
"""

from pdo.core import db
from pdo.core.config import Settings


def register(subparsers) -> None:
    parser = subparsers.add_parser("db", help="database migrations and the services' database roles")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("upgrade", help="create or upgrade every table to the newest migration").set_defaults(
        func=upgrade
    )
    actions.add_parser("current", help="print the database's migration revision").set_defaults(func=current)
    roles = actions.add_parser("roles", help="one PostgreSQL role per service, privileges on its own tables")
    steps = roles.add_subparsers(dest="step", required=True)
    steps.add_parser(
        "apply",
        help="create or update every service's role and grant exactly its declared privileges (idempotent)",
    ).set_defaults(func=apply_roles)
    steps.add_parser(
        "list",
        help="each role's tables and privileges as granted; exit 1 when they differ from the declaration",
    ).set_defaults(func=list_roles)


def upgrade(_args) -> int:
    url = Settings.from_env().database_url
    db.upgrade(url)
    print(f"database at revision {db.current_revision(url)}")
    return 0


def current(_args) -> int:
    print(db.current_revision(Settings.from_env().database_url) or "empty (run `pdo db upgrade`)")
    return 0


NO_POSTGRES = "no store is on PostgreSQL (SQLite has no roles): nothing to do"


def apply_roles(_args) -> int:
    from pdo.stack import database_roles

    settings = Settings.from_env()
    urls = database_roles.apply(settings)
    if not urls:
        print(NO_POSTGRES)
        return 0
    for service in urls:
        role = database_roles.role_name(settings, service)
        tables = len(database_roles.privileges(service))
        print(
            f"{service:<14} role {role} on {tables} table(s); connect it with "
            f"{settings.variable(f'{service}_database_url')} (password from "
            f"{database_roles.password_source(settings, service)})"
        )
    return 0


def list_roles(_args) -> int:
    from pdo.stack import database_roles

    stores = database_roles.declared_and_granted(Settings.from_env())
    if not stores:
        print(NO_POSTGRES)
        return 0
    for store in stores:
        print(store.where)
        for role in store.declared:
            print(f"  {role}")
            held = store.granted.get(role, {})
            for table, privileges in sorted(held.items()):
                print(f"    {table:<28} {', '.join(sorted(privileges))}")
            if not held:
                print("    (no privileges: run `pdo db roles apply`)")
    drift = [line for store in stores for line in store.differences()]
    for line in drift:
        print(f"differs from the declaration: {line}")
    return 1 if drift else 0
