"""`create_app(settings)`: wires the service's resources as aiohttp cleanup contexts.

Each resource is a cleanup context added in dependency order — store, subscription index, HTTP
session and dispatcher, consumer — so cleanup runs in reverse order (stop consuming first, then
drain deliveries, then close the session and the store) and runs even when a later start-up step
failed (STYLE lesson 1). Handlers reach the resources through the typed keys of `service.keys`.
Data flows one way: ingest → store → dispatch → store; the API talks to the store and, for
`/test`, to dispatch.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web

from service.api.setup import setup_api
from service.dispatch import USER_AGENT, Dispatcher
from service.egress import make_connector
from service.health import Readiness, health_routes
from service.ingest import Ingest
from service.keys import ON_CHANGE, READINESS, SETTINGS, STORE, TESTER
from service.matching import SubscriptionIndex
from service.metrics import Metrics
from service.settings import Settings
from service.store import open_store
from service.supervise import Fatal

log = structlog.get_logger(__name__)

METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
INDEX: web.AppKey[SubscriptionIndex] = web.AppKey("index", SubscriptionIndex)
DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher", Dispatcher)
INGEST: web.AppKey[Ingest] = web.AppKey("ingest", Ingest)
FATAL: web.AppKey[Fatal] = web.AppKey("fatal", Fatal)


@dataclass(frozen=True, slots=True)
class Roles:
    """Which parts run in this process (`serve --no-api`, `serve --no-consumer`). Every
    process dispatches: deliveries are shared through the store's leases."""

    api: bool = True
    consumer: bool = True


def create_app(settings: Settings, roles: Roles | None = None) -> web.Application:
    """The aiohttp application with every resource the settings ask for."""
    roles = roles or Roles()
    app = web.Application(client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[READINESS] = Readiness()
    app[METRICS] = Metrics()
    app[FATAL] = Fatal()
    app.add_routes([*health_routes(app[READINESS]), app[METRICS].route()])
    app.cleanup_ctx.append(_announce)
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(_index)
    app.cleanup_ctx.append(_dispatcher)
    if roles.consumer:
        app.cleanup_ctx.append(_ingest)
    if roles.api:
        setup_api(app)
    return app


def instance_id() -> str:
    """Who holds a lease: unique per process, readable in the database."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


async def _announce(app: web.Application) -> AsyncIterator[None]:
    log.info("service.starting", config=app[SETTINGS].effective())
    yield
    log.info("service.stopped")


async def _store(app: web.Application) -> AsyncIterator[None]:
    store = await open_store(app[SETTINGS])
    app[STORE] = store
    app[READINESS].register("store", store.ping)
    try:
        yield
    finally:
        app[READINESS].unregister("store")
        await store.close()


async def _index(app: web.Application) -> AsyncIterator[None]:
    index = SubscriptionIndex(app[STORE], app[SETTINGS].index_refresh)
    async with index.running():
        app[INDEX] = index
        app[ON_CHANGE] = index.on_change
        yield


async def _dispatcher(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    connector = make_connector(
        allow_private=settings.allow_private_targets, limit=settings.max_connections
    )
    session = aiohttp.ClientSession(
        connector=connector,
        # Never carry one customer's cookies to the next request, nor pick up proxies.
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
        # Response bodies are only sampled into the attempt log: never ask for compression.
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
    )
    try:
        dispatcher = Dispatcher(
            settings=settings,
            store=app[STORE],
            index=app[INDEX],
            session=session,
            metrics=app[METRICS],
            owner=instance_id(),
            fatal=app[FATAL],
        )
        async with dispatcher.running():
            app[DISPATCHER] = dispatcher
            app[TESTER] = dispatcher
            yield
    finally:
        await session.close()


async def _ingest(app: web.Application) -> AsyncIterator[None]:
    ingest = Ingest(
        settings=app[SETTINGS],
        store=app[STORE],
        index=app[INDEX],
        dispatcher=app[DISPATCHER],
        metrics=app[METRICS],
        fatal=app[FATAL],
    )
    ingest.register(app[READINESS])
    async with ingest.running():
        app[INGEST] = ingest
        yield
    app[READINESS].unregister("consumer")
