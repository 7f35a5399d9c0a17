"""Bearer API keys: each key belongs to one org, and a request sees only that org's data."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from service.api.problems import problem
from service.appkeys import STORE
from service.domain import Actor, ActorKind
from service.store import ApiKeys

ORG: web.RequestKey[str] = web.RequestKey("org", str)
ACTOR: web.RequestKey[Actor] = web.RequestKey("actor", Actor)
"""The caller's API key as the audit trail names it (its id and name)."""
_BEARER = re.compile(r"^Bearer ([A-Za-z0-9_\-]{8,200})$")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="identity-webhooks"'}


def auth_middleware(*prefixes: str) -> Middleware:
    """Requires a valid, unrevoked key on every path under one of `prefixes`."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(prefixes):
            return await handler(request)
        header = request.headers.get("Authorization")
        if header is None:
            return problem(401, "send Authorization: Bearer <api key>", headers=_CHALLENGE)
        match = _BEARER.match(header)
        if match is None:
            return problem(
                401, "the Authorization header must be 'Bearer <api key>'", headers=_CHALLENGE
            )
        keys: ApiKeys = request.config_dict[STORE]
        record = await keys.api_key_for(match.group(1))
        if record is None:
            return problem(401, "the API key is unknown or revoked", headers=_CHALLENGE)
        request[ORG] = record.org_id
        request[ACTOR] = Actor(ActorKind.API_KEY, record.id, record.name)
        return await handler(request)

    return authenticate
