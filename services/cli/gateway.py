"""`pdo gateway serve` runs the HTTP API; `pdo principals ...` manages who may call it and their keys.

A key is printed once, when it is issued, and never again: pdo keeps only its salted hash. Every change is
recorded for the audit log with who made it (`--by`, by default operator:<your login>) and why (`--reason`):
principal and key changes commit with their event, which the gateway's relay publishes; Kafka credential
changes are refused when their event cannot be published.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack

from pdo.cli.arguments import add_actor_options
from pdo.core import db
from pdo.core.access_log import operator_actor
from pdo.core.config import Settings
from pdo.core.errors import PdoError

# PrincipalKind's values, spelt out: the CLI does not import the gateway before a command runs.
KINDS = ["provider", "tenant", "operator", "auditor"]


def register(subparsers) -> None:
    """Adds both `gateway` and `principals` (main.py lists this module once)."""
    register_gateway(subparsers)
    register_principals(subparsers)


def register_gateway(subparsers) -> None:
    parser = subparsers.add_parser("gateway", help="the HTTP API for providers, tenants and operators")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser(
        "serve", help="migrate the database, then serve the API until interrupted"
    ).set_defaults(func=serve)


def register_principals(subparsers) -> None:
    parser = subparsers.add_parser(
        "principals", help="providers, tenants, operators and auditors, and their API keys"
    )
    actions = parser.add_subparsers(dest="action", required=True)

    add = actions.add_parser("add", help="create a principal and print its first API key (shown once)")
    add.add_argument(
        "--kind",
        required=True,
        choices=KINDS,
        help="provider, tenant, operator, or auditor (reads the audit log under /v1/audit and nothing else)",
    )
    add.add_argument("--id", required=True, dest="name", help="name, e.g. acme (the id becomes tenant:acme)")
    add.add_argument("--name", dest="display_name", help="display name (default: the id's name)")
    add.add_argument(
        "--government", action="store_true", help="a government department as tenant (free sharing)"
    )
    add.set_defaults(func=add_principal)
    add_actor_options(add)

    key = actions.add_parser("key", help="issue another API key for a principal (shown once)")
    key.add_argument("--id", required=True, dest="principal_id", help="principal id, e.g. tenant:acme")
    key.set_defaults(func=issue_key)
    add_actor_options(key)

    revoke = actions.add_parser("revoke", help="revoke an API key by its key id (the part after pdo_)")
    revoke.add_argument("--key-id", required=True)
    revoke.set_defaults(func=revoke_key)
    add_actor_options(revoke)

    kafka = actions.add_parser(
        "kafka-credentials",
        help="issue (or rotate) a tenant's or provider's Kafka credentials and print them once; --revoke removes them",
    )
    kafka.add_argument("--id", required=True, dest="principal_id", help="tenant:<name> or provider:<name>")
    kafka.add_argument("--revoke", action="store_true", help="remove the Kafka user and every ACL it had")
    kafka.set_defaults(func=kafka_credentials)
    add_actor_options(kafka)

    disable = actions.add_parser(
        "disable", help="disable a principal: its API keys stop working, its Kafka user and ACLs are removed"
    )
    disable.add_argument("--id", required=True, dest="principal_id")
    disable.set_defaults(func=disable_principal)
    add_actor_options(disable)

    listing = actions.add_parser("list", help="list principals and their keys (never the secrets)")
    listing.add_argument("--kind", choices=KINDS)
    listing.set_defaults(func=list_principals)


# -- principals ----------------------------------------------------------------------------------------


def _store(settings: Settings):
    """The principals over the gateway's tables. Each change commits with its event; the gateway's relay
    publishes it (so these commands work, as before, while no broker runs)."""
    from pdo.gateway.principals import PrincipalStore

    db.upgrade(settings.database_url)
    return PrincipalStore(db.make_engine(settings.database_url))


def _print_key(principal_id: str, key: str) -> None:
    print(f"API key for {principal_id} (shown once; pdo keeps only a hash):", file=sys.stderr)
    print(key)


def add_principal(args) -> int:
    store = _store(Settings.from_env())
    try:
        actor = operator_actor(args.by)
        principal = store.create_principal(
            args.kind, args.name, args.display_name, args.government, actor=actor, reason=args.act_reason
        )
        issued = store.issue_key(principal.principal_id, actor=actor, reason=args.act_reason)
        _print_key(principal.principal_id, issued.key)
    finally:
        store.engine.dispose()
    return 0


def issue_key(args) -> int:
    store = _store(Settings.from_env())
    try:
        issued = store.issue_key(args.principal_id, actor=operator_actor(args.by), reason=args.act_reason)
        _print_key(args.principal_id, issued.key)
    finally:
        store.engine.dispose()
    return 0


def revoke_key(args) -> int:
    store = _store(Settings.from_env())
    try:
        info = store.revoke_key(args.key_id, actor=operator_actor(args.by), reason=args.act_reason)
    finally:
        store.engine.dispose()
    print(f"key {info.key_id} of {info.principal_id} revoked at {info.revoked_at:%Y-%m-%d %H:%M:%S}")
    return 0


def _issuer(settings: Settings, store):
    from pdo.catalog.public import list_datasets
    from pdo.gateway.kafka_credentials import KafkaCredentialIssuer

    return KafkaCredentialIssuer(
        settings, lambda provider_id: [d.dataset_id for d in list_datasets(store.engine, provider_id)]
    )


def kafka_credentials(args) -> int:
    settings = Settings.from_env()
    store = _store(settings)
    try:
        store.get(args.principal_id)  # a principal pdo knows, or NotFound
        issuer = _issuer(settings, store)
        actor = operator_actor(args.by)
        if args.revoke:
            removed = issuer.revoke(args.principal_id, actor=actor, reason=args.act_reason)
            print(f"Kafka credentials of {args.principal_id} revoked ({removed} ACLs removed)")
            return 0
        issued = issuer.issue(args.principal_id, actor=actor, reason=args.act_reason)
    finally:
        store.engine.dispose()
    print(
        f"Kafka credentials for {args.principal_id} (shown once; issuing again rotates them), "
        "as client properties:",
        file=sys.stderr,
    )
    print(issued.client_properties(), end="")
    return 0


def disable_principal(args) -> int:
    settings = Settings.from_env()
    store = _store(settings)
    try:
        actor = operator_actor(args.by)
        principal = store.set_disabled(args.principal_id, True, actor=actor, reason=args.act_reason)
        removed = 0
        if principal.kind.value in ("tenant", "provider"):
            removed = _issuer(settings, store).revoke(args.principal_id, actor=actor, reason=args.act_reason)
    finally:
        store.engine.dispose()
    print(f"{args.principal_id} disabled: its API keys no longer work; {removed} Kafka ACLs removed")
    return 0


def list_principals(args) -> int:
    store = _store(Settings.from_env())
    try:
        for principal in store.list(args.kind):
            flags = [
                flag
                for flag, on in (("government", principal.is_government), ("disabled", principal.disabled))
                if on
            ]
            print(f"{principal.principal_id}\t{principal.display_name}\t{','.join(flags) or '-'}")
            for key in store.keys(principal.principal_id):
                state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
                print(f"  key {key.key_id}\tcreated {key.created_at:%Y-%m-%d}\t{state}")
    finally:
        store.engine.dispose()
    return 0


# -- serving -------------------------------------------------------------------------------------------


def serve(_args) -> int:
    serve_gateway(Settings.from_env())
    return 0


def serve_gateway(settings: Settings) -> None:
    """Migrate, wire the services to Kafka, the registry and SQL, then serve the API in the foreground."""
    import uvicorn

    from pdo.authorization.public import AuthorizationService, load_policy
    from pdo.catalog.public import CatalogService
    from pdo.core.events import EventPublisher
    from pdo.core.registry_client import RegistryClient
    from pdo.gateway.app import create_app
    from pdo.gateway.outbox import RELAY_INTERVAL_S

    db.upgrade(settings.database_url)
    host, port = (settings.gateway_host, settings.gateway_port)
    with ExitStack() as resources:
        engine = db.make_engine(settings.service_database_url("gateway"))
        resources.callback(engine.dispose)
        publisher = EventPublisher(settings)
        resources.callback(publisher.close)
        registry = RegistryClient.for_settings(settings)
        resources.callback(registry.close)
        catalog = CatalogService(engine, publisher, registry, settings)
        authorization = AuthorizationService(engine, publisher, catalog, load_policy(), settings)
        app = create_app(
            settings,
            catalog,
            authorization,
            engine,
            access_events=publisher,
            relay_interval_s=RELAY_INTERVAL_S,
        )
        print(f"gateway serving at http://{host}:{port} (API docs at /docs, operator console at /console)")
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
        try:
            server.run()
        except SystemExit:  # uvicorn exits this way when it cannot bind the port or start the app
            server.started = False
        if not server.started:
            raise PdoError(
                f"the gateway could not listen on {host}:{port}",
                hint="is the port taken? set PDO_GATEWAY_PORT to another one",
            )
