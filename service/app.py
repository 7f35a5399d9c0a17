"""`create_app(settings)`: wires the service's resources as aiohttp cleanup contexts.

Each resource is a cleanup context added in dependency order, so cleanup runs in reverse order and
runs even when a later start-up step failed (STYLE lesson 1).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from service.health import Readiness, health_routes
from service.settings import Settings

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
READINESS: web.AppKey[Readiness] = web.AppKey("readiness", Readiness)

log = structlog.get_logger(__name__)


def create_app(settings: Settings) -> web.Application:
    """The aiohttp application with every resource the settings ask for."""
    app = web.Application(client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[READINESS] = Readiness()
    app.add_routes(health_routes(app[READINESS]))
    app.cleanup_ctx.append(_announce)
    return app


async def _announce(app: web.Application) -> AsyncIterator[None]:
    log.info("service.started", config=app[SETTINGS].effective())
    yield
    log.info("service.stopped")
