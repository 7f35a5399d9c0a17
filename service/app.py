"""`create_app(settings)` wires the service's resources as aiohttp cleanup contexts, and `serve`
runs it until a signal or a crashed background task.

Each resource is a cleanup context added in dependency order — tracing, store, subscription index,
housekeeping, HTTP session and dispatcher, consumer — so cleanup runs in reverse order (stop
consuming first, then drain deliveries, then close the session and the store) and runs even when
a later start-up step failed. Handlers reach the resources through the typed keys
of `service.appkeys`. Data flows one way: ingest → store → delivery → store; the API talks to the
store and, for `/test`, to delivery.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import signal
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import structlog
from aiohttp import web

from service.api.setup import setup_api
from service.appkeys import (
    DISPATCHER,
    FATAL,
    FEED_WAITS,
    INDEX,
    INGEST,
    METRICS,
    ON_CHANGE,
    READINESS,
    SETTINGS,
    STORE,
    TESTER,
    TRACING,
)
from service.certwatch import CertificateWatch
from service.console import console_routes
from service.delivery.attempt import READ_TIMEOUT, USER_AGENT, Sender
from service.delivery.dispatcher import Dispatcher
from service.delivery.housekeeping import Housekeeping
from service.delivery.tls import TlsSessions, trust
from service.delivery.tokens import Tokens
from service.egress import make_connector
from service.errors import StoreInUse
from service.feedwaits import FeedWaits
from service.health import Readiness, health_routes
from service.ingest import Ingest
from service.matching import SubscriptionIndex
from service.metrics import Metrics
from service.settings import Settings
from service.store import Lease, Undecryptable, open_store, sqlite_path
from service.store.sqlite import Ownership
from service.supervise import Fatal
from service.tracing import open_tracing

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Roles:
    """Which parts run in this process (`serve --no-api`, `serve --no-consumer`). Every
    process dispatches: deliveries are shared through the store's leases."""

    api: bool = True
    consumer: bool = True
    # Off only where deliveries are arranged by hand (tests of the API over a store that
    # nothing else may change); `serve` always dispatches.
    dispatch: bool = True


def create_app(settings: Settings, roles: Roles | None = None) -> web.Application:
    """The aiohttp application with every resource the settings ask for."""
    roles = roles or Roles()
    app = web.Application(client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[READINESS] = Readiness()
    app[METRICS] = Metrics()
    app[FATAL] = Fatal()
    app[FEED_WAITS] = FeedWaits()
    app.add_routes([*health_routes(app[READINESS]), app[METRICS].route()])
    app.cleanup_ctx.append(_announce)
    app.cleanup_ctx.append(_tracing)
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(_index)
    app.cleanup_ctx.append(_housekeeping)
    if roles.dispatch:
        app.cleanup_ctx.append(_dispatcher)
    if roles.consumer and roles.dispatch:
        app.cleanup_ctx.append(_ingest)
    if roles.api:
        setup_api(app)
        # The browser's client of that API: static files, no key needed to load them.
        app.add_routes(console_routes())
    return app


async def serve(settings: Settings, roles: Roles) -> int:
    """Runs the app until SIGTERM or SIGINT (exit 0) or until a background task crashes (exit
    1, so that the orchestrator restarts the process); cleanup drains either way."""
    app = create_app(settings, roles)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before start-up, so a SIGTERM during it still ends in an orderly cleanup.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    fatal = app[FATAL]
    try:
        await runner.setup()
        site = web.TCPSite(runner, settings.http_host, settings.http_port)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise OSError(
                exc.errno,
                f"port {settings.http_port} on {settings.http_host} is taken; "
                "set WEBHOOKS_HTTP_PORT to a free one",
            ) from exc
        log.info("http.listening", host=settings.http_host, port=settings.http_port)
        _settle_garbage_collector()
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(fatal.event.wait())
        await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        failed.cancel()
        log.info("service.stopping", reason=fatal.reason or "signal")
    except (OSError, StoreInUse, Undecryptable) as exc:
        # Undecryptable: no configured key opens the store's own keys (`open_store`).
        log.error("service.start_failed", error=str(exc))
        return 1
    finally:
        await runner.cleanup()
    return 1 if fatal.reason else 0


# Young-generation collections every 10,000 net allocations rather than 700: an attempt or a
# batch allocates thousands of short-lived objects (futures, dicts, records) that reference
# counting frees anyway, so the default traversed the young heap several times per delivery.
GC_THRESHOLDS = (10_000, 50, 100)


def _settle_garbage_collector() -> None:
    """Once started: what start-up made (modules, settings, the index) is frozen out of every
    later collection, and collections run less often (GC_THRESHOLDS); what it was measured to
    save: docs/decisions/0004-gc-thresholds.md."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def instance_id() -> str:
    """Who holds a lease: unique per process, readable in the database."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


async def _announce(app: web.Application) -> AsyncIterator[None]:
    log.info("service.starting", config=app[SETTINGS].effective())
    yield
    log.info("service.stopped")


async def _tracing(app: web.Application) -> AsyncIterator[None]:
    """Spans (optional, `WEBHOOKS_OTLP_ENDPOINT`): closed last, so the final spans are flushed."""
    tracing = open_tracing(app[SETTINGS])
    app[TRACING] = tracing
    try:
        yield
    finally:
        tracing.close()


async def _store(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    owner = None
    if not settings.is_postgres:
        # One process serves an embedded store, so whatever is leased in it belongs to a
        # process that is gone (a crash, a kill): taken back at once rather than after a lease.
        owner = Ownership(sqlite_path(settings.database_url))
        owner.acquire()
    try:
        store = await open_store(settings)
        try:
            if owner is not None and (taken := await store.take_back_leases()):
                log.info("store.leases_taken_back", deliveries=taken)
            app[STORE] = store
            app[READINESS].register("store", store.ping)
            yield
        finally:
            app[READINESS].unregister("store")
            await store.close()
    finally:
        if owner is not None:
            owner.release()


async def _index(app: web.Application) -> AsyncIterator[None]:
    index = SubscriptionIndex(app[STORE], app[SETTINGS].index_refresh)
    certificates = CertificateWatch(index.authenticated, lambda: index.revision)
    app[METRICS].client_certificates_expiring.set_function(certificates.count)
    # The active ones from what the index holds; housekeeping counts the deactivated ones.
    app[METRICS].subscriptions.labels("active").set_function(index.active_count)
    app[READINESS].describe("clientCertificates", certificates.report)
    try:
        async with index.running():
            app[INDEX] = index
            app[ON_CHANGE] = index.on_change
            yield
    finally:
        app[READINESS].undescribe("clientCertificates")


async def _housekeeping(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    housekeeping = Housekeeping(
        app[STORE],
        app[METRICS],
        settings.retention,
        settings.payload_retention,
        feed_behind=settings.feed_behind,
        audit_retention=settings.audit_retention,
    )
    # Shown, never a check: a value no configured key opens makes only its own delivery wait
    # (and its log show no payload), while every replica reads the same store, so failing
    # readiness for it would take all of them out of service at once, with the API an operator
    # needs to look into it. The census's gauge and its alert call someone instead.
    app[READINESS].describe("sealed", housekeeping.sealed_report)
    try:
        async with housekeeping.running(app[FATAL]):
            yield
    finally:
        app[READINESS].undescribe("sealed")


def _delivery_session(connector: aiohttp.BaseConnector) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=connector,
        # Never carry one customer's cookies to the next request, nor pick up proxies.
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
        # Response bodies are only sampled into the attempt log: never ask for compression.
        auto_decompress=False,
        skip_auto_headers=("Accept-Encoding",),
    )


async def _dispatcher(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    allow_private = settings.allow_private_targets
    # No limit in aiohttp's pool: a request waiting there would spend its delivery timeout
    # unsent. The dispatcher's `ConnectionBudget` caps the attempts in flight at
    # WEBHOOKS_MAX_CONNECTIONS instead, before an attempt starts, and shares them fairly among
    # the lanes; `/test` sends (one per API call) come on top.
    shared_trust = trust(settings.tls_ca_file)
    connector = make_connector(allow_private=allow_private, limit=0, ssl_context=shared_trust)
    session = _delivery_session(connector)

    def own_pool(context: ssl.SSLContext) -> aiohttp.ClientSession:
        """A subscription's own pool (mTLS, its own CAs): guarded as the shared one."""
        return _delivery_session(
            make_connector(allow_private=allow_private, limit=0, ssl_context=context)
        )

    # A replaced pool stays open while an attempt begun on it may still be reading.
    grace = 2 * settings.delivery_timeout + READ_TIMEOUT + 1.0
    pools = TlsSessions(own_pool, ca_file=settings.tls_ca_file, grace=grace)
    try:
        sender = Sender(
            session,
            header_formats=settings.signature_headers,
            timeout=settings.delivery_timeout,
            connect_timeout=settings.delivery_connect_timeout,
            allow_private=allow_private,
            tracing=app[TRACING],
            tokens=Tokens(
                session,
                timeout=settings.delivery_timeout,
                allow_private=allow_private,
                metrics=app[METRICS],
            ),
            tls=pools,
        )
        dispatcher = Dispatcher(
            settings=settings,
            store=app[STORE],
            index=app[INDEX],
            sender=sender,
            metrics=app[METRICS],
            owner=instance_id(),
            fatal=app[FATAL],
        )
        async with pools.running(app[FATAL]), dispatcher.running():
            app[DISPATCHER] = dispatcher
            app[TESTER] = dispatcher
            yield
    finally:
        await session.close()


async def _ingest(app: web.Application) -> AsyncIterator[None]:
    dispatcher = app[DISPATCHER]
    ingest = Ingest(
        settings=app[SETTINGS],
        store=app[STORE],
        index=app[INDEX],
        submit=dispatcher.submit,
        lease=Lease(dispatcher.owner, dispatcher.lease_ms),
        metrics=app[METRICS],
        fatal=app[FATAL],
        tracing=app[TRACING],
        wake=dispatcher.wake,
        fed=app[FEED_WAITS].notify,
    )
    ingest.register(app[READINESS])
    async with ingest.running():
        app[INGEST] = ingest
        yield
    app[READINESS].unregister("consumer")
