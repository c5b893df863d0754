"""The catalog's faust app: consumer group "catalog", one agent projecting pdo.catalog into SQL.

app = create_app(Settings.from_env())
streams.run_worker(app)            # what `pdo catalog worker` does, after a rebuild
"""

from __future__ import annotations

import faust
from sqlalchemy import Engine

from pdo.catalog.agents import CatalogProjector, attach_agents
from pdo.core import db, streams
from pdo.core.codec import AvroCodec
from pdo.core.config import Settings
from pdo.core.events import EventPublisher
from pdo.core.registry_client import RegistryClient

APP_ID = "catalog"


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    projector: CatalogProjector | None = None,
    app_id: str = APP_ID,
) -> faust.App:
    """The faust app with its agent; the projector (and its engine, codec) built from settings if not given.

    `app_id` is the consumer group: another one only to run beside another deployment (e.g. tests).
    """
    app = streams.make_app(app_id, settings)
    if projector is None:
        codec = AvroCodec(RegistryClient.for_settings(settings))
        projector = CatalogProjector(
            engine or db.make_engine(settings.database_url),
            codec,
            dead_letters=lambda: EventPublisher(settings, codec),
        )
    app.catalog_projector = projector  # type: ignore[attr-defined]  # faust apps take extra attributes
    attach_agents(app, settings, projector)
    return app
