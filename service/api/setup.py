"""Puts the management API on the app: routes, auth and problem middlewares, `/openapi.json`."""

from __future__ import annotations

import traceback

import orjson
import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from service.api.audit import AUDIT_PATH, AuditApi
from service.api.auth import auth_middleware
from service.api.customers import CUSTOMERS, CustomerApi
from service.api.feeds import EVENTS, FeedApi
from service.api.openapi import document
from service.api.problems import problem
from service.api.routes import BASE, SubscriptionApi
from service.store import StoreUnavailable

__all__ = ["setup_api"]

log = structlog.get_logger(__name__)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turns aiohttp's own errors (404 route, 405, 413), store outages and any unexpected
    exception into problem+json. An unexpected one is a bug: it is logged by type and place
    only (its message could quote the request), and the caller gets a 500 problem."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return problem(exc.status, exc.reason, headers=headers)
    except StoreUnavailable:
        # The route's template, not the path: a path may name a customer (an erasure).
        log.warning("api.store_unavailable", route=_route(request))
        return problem(
            503, "the store is unavailable; try again shortly", headers={"Retry-After": "5"}
        )
    except Exception as exc:  # noqa: BLE001 - the API's backstop: never a bare 500
        log.error(
            "api.unexpected_error",
            method=request.method,
            route=_route(request),
            error=type(exc).__name__,
            where=_frames(exc),
        )
        return problem(500, "an unexpected error; it has been logged")


def _frames(exc: BaseException) -> list[str]:
    # File, line and function of the innermost frames: no source text, no message.
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    return [f"{frame.filename}:{frame.lineno} {frame.name}" for frame in frames]


def _route(request: web.Request) -> str:
    # The route's template, not the path as sent: a path can hold anything the caller typed.
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


def setup_api(app: web.Application) -> None:
    """Adds the management routes and `/openapi.json` to `app`."""
    app.middlewares.append(problem_middleware)
    app.middlewares.append(auth_middleware(BASE, CUSTOMERS, EVENTS, AUDIT_PATH))
    app.add_routes(SubscriptionApi().routes())
    app.add_routes(FeedApi().routes(BASE))
    app.add_routes(CustomerApi().routes())
    app.add_routes(AuditApi().routes())
    spec = orjson.dumps(document())

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(body=spec, content_type="application/json")

    app.router.add_get("/openapi.json", openapi)
