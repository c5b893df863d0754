"""`pdo db upgrade|current`: run the database migrations against PDO_DATABASE_URL."""

from pdo.core import db
from pdo.core.config import Settings


def register(subparsers) -> None:
    parser = subparsers.add_parser("db", help="database migrations")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("upgrade", help="create or upgrade every table to the newest migration").set_defaults(
        func=upgrade
    )
    actions.add_parser("current", help="print the database's migration revision").set_defaults(func=current)


def upgrade(_args) -> int:
    url = Settings.from_env().database_url
    db.upgrade(url)
    print(f"database at revision {db.current_revision(url)}")
    return 0


def current(_args) -> int:
    print(db.current_revision(Settings.from_env().database_url) or "empty (run `pdo db upgrade`)")
    return 0
