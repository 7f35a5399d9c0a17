"""RFC 9457 problem details: every error the API gives is `application/problem+json`."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

PROBLEM_TYPE = "https://identity-webhooks.dev/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem(
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    errors: Sequence[tuple[str, str]] = (),
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    """A problem response; `errors` are (field, message) pairs, given with 422; `extra` are
    members of its own (RFC 9457's extension members)."""
    phrase = HTTPStatus(status).phrase
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE + (slug or phrase.lower().replace(" ", "-").replace("'", "")),
        "title": phrase,
        "status": status,
        "detail": detail,
    }
    body.update(extra or {})
    if errors:
        body["errors"] = [{"field": field, "message": message} for field, message in errors]
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def invalid(errors: Sequence[tuple[str, str]], detail: str | None = None) -> web.Response:
    """422 naming each offending field."""
    if detail is None:
        detail = "; ".join(f"{field}: {message}" for field, message in errors)
    return problem(422, detail, slug="invalid-field", errors=errors)
