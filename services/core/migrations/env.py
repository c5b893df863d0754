"""Alembic environment: runs migrations on the connection pdo hands over (see pdo.core.db.upgrade)."""

from alembic import context
from sqlalchemy import Connection

from pdo.core.db import make_engine
from pdo.core.errors import PdoError


def run_migrations() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    # Invoked by the `alembic` command line rather than by pdo: open our own connection.
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise PdoError(
            "the Alembic configuration sets no sqlalchemy.url",
            hint="run `pdo db upgrade`, which migrates PDO_DATABASE_URL",
        )
    engine = make_engine(url)
    with engine.begin() as own_connection:
        _run_on(own_connection)
    engine.dispose()


def _run_on(connection: Connection) -> None:
    # SQLite cannot ALTER most things in place; batch mode rebuilds tables so one migration serves both.
    context.configure(connection=connection, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
