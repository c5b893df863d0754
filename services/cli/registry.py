"""`pdo registry serve`: run the schema registry (Confluent's REST API) on PDO_REGISTRY_HOST:PORT."""

from pdo.core import db
from pdo.core.config import Settings
from pdo.core.errors import PdoError


def register(subparsers) -> None:
    parser = subparsers.add_parser("registry", help="the schema registry (Confluent Schema Registry API)")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser(
        "serve", help="migrate the database, then serve the registry until interrupted"
    ).set_defaults(func=serve)


def serve(_args) -> int:
    serve_registry(Settings.from_env())
    return 0


def serve_registry(settings: Settings) -> None:
    """Migrate, then serve the registry in the foreground until interrupted."""
    import uvicorn

    from pdo.registry.app import create_app

    db.upgrade(settings.registry_database_url)
    url = f"http://{settings.registry_host}:{settings.registry_port}"
    revision = db.current_revision(settings.registry_database_url)
    print(f"schema registry serving at {url} (database at revision {revision})")
    config = uvicorn.Config(
        create_app(settings.service_database_url("registry"), settings=settings),
        host=settings.registry_host,
        port=settings.registry_port,
        log_level="info",
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:  # uvicorn exits this way when it cannot bind the port or start the app
        server.started = False
    if not server.started:
        raise PdoError(
            f"the registry could not listen on {settings.registry_host}:{settings.registry_port}",
            hint="is the port taken? set PDO_REGISTRY_PORT (and PDO_REGISTRY_URL for clients) to another one",
        )
