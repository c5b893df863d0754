"""The catalog's stream worker: faust app "catalog", one agent projecting pdo.catalog into the catalog's table.

The same shape as every stream worker:

    runtime = build_runtime(settings)           # what the process holds: engine, codec, projector
    app = create_app(settings, runtime)         # the faust app with its agent (agents.py)
    streams.run_worker(app)                     # what `pdo catalog worker` does, after a rebuild
    runtime.close()

Failures follow the core's one policy (pdo.core.retry): outages are retried forever, a bad event is
dead-lettered at once (agents.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import faust
from sqlalchemy import Engine

from pdo.catalog.agents import CatalogProjector, attach_agents
from pdo.core import db, streams
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.events import EventPublisher
from pdo.core.registry_client import RegistryClient

APP_ID = "catalog"


@dataclass
class Runtime:
    """What one worker process holds; close() releases the dead-letter producer, the registry and the pool."""

    settings: Settings
    engine: Engine
    codec: AvroCodec
    projector: CatalogProjector

    def close(self) -> None:
        self.projector.close()
        self.codec.registry.close()
        self.engine.dispose()


def build_runtime(settings: Settings) -> Runtime:
    engine = db.make_engine(settings.service_database_url("catalog"))
    codec = AvroCodec(RegistryClient.for_settings(settings))
    # A factory: the producer connects only when the first dead letter is written.
    projector = CatalogProjector(engine, codec, dead_letters=lambda: EventPublisher(settings, codec))
    return Runtime(settings, engine, codec, projector)


def create_app(settings: Settings, runtime: Runtime | None = None, app_id: str = APP_ID) -> faust.App:
    """The faust app with its agent; the runtime built from settings if not given (then it lives as long as
    the process). `app_id` is the consumer group: another one only to run beside another deployment (tests).
    """
    runtime = runtime or build_runtime(settings)
    app = streams.make_app(app_id, settings)
    attach_agents(app, settings, runtime.projector)
    return app
