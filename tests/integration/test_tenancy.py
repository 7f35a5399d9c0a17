"""Tenant isolation across every route, generated from the app's own route table.

Org A registers a subscription; org B's key then calls every management route the app serves
(so a route added later is covered without anyone remembering to): a route that takes an id must
answer 404 exactly as it does for an id that does not exist (same status, content type, headers
and body but for the id itself), and a route without one must not show A's subscription. After
all of it, A's subscription is exactly as it was, with no delivery made for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service import ids
from service.app import Roles, create_app
from service.appkeys import STORE
from service.settings import Settings

BASE = "/api/identity/webhooks"
# A body each method can carry; a route added later gets the same, so it is never skipped.
BODIES: dict[str, Any] = {
    "PATCH": {"active": False, "url": "https://elsewhere.example.com/x", "installedBy": "b"},
    "POST": {},
    "PUT": {},
}


@pytest.fixture
async def client(settings_for: Settings) -> AsyncIterator[tuple[TestClient[Any, Any], str, str]]:
    app = create_app(settings_for, Roles(consumer=False))
    test_client: TestClient[Any, Any] = TestClient(TestServer(app))
    await test_client.start_server()
    try:
        _, key_a = await app[STORE].create_api_key("org_a", "a")
        _, key_b = await app[STORE].create_api_key("org_b", "b")
        yield test_client, key_a, key_b
    finally:
        await test_client.close()


def _routes(app: web.Application) -> list[tuple[str, str]]:
    return sorted(
        {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None
            and route.resource.canonical.startswith(BASE)
            and route.method not in ("HEAD", "OPTIONS")
        }
    )


async def _call(
    client: TestClient[Any, Any], method: str, path: str, key: str
) -> tuple[int, str, dict[str, str], bytes]:
    body = BODIES.get(method)
    async with client.request(
        method,
        path,
        data=None if body is None else orjson.dumps(body),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    ) as response:
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("Date", "Content-Length")
        }
        return response.status, response.content_type, headers, await response.read()


async def test_another_orgs_key_reaches_nothing_on_any_route(
    client: tuple[TestClient[Any, Any], str, str],
) -> None:
    test_client, key_a, key_b = client
    async with test_client.post(
        BASE,
        json={"url": "https://hooks.example.com/a", "events": ["verification.created"]},
        headers={"Authorization": f"Bearer {key_a}"},
    ) as response:
        assert response.status == 201
        created = await response.json()
    own_id = created["id"]
    async with test_client.get(
        f"{BASE}/{own_id}", headers={"Authorization": f"Bearer {key_a}"}
    ) as response:
        before = await response.json()

    routes = _routes(test_client.app)
    with_id = [(method, path) for method, path in routes if "{id}" in path]
    assert len(with_id) >= 4, routes  # get, patch, delete, test at least
    for method, template in routes:
        if "{id}" not in template:
            status, _, _, body = await _call(test_client, method, template, key_b)
            assert own_id.encode() not in body, (method, template, status)
            continue
        missing_id = ids.new_id("whk")
        theirs = await _call(test_client, method, template.replace("{id}", own_id), key_b)
        missing = await _call(test_client, method, template.replace("{id}", missing_id), key_b)
        assert theirs[0] == 404, (method, template, theirs)
        assert theirs[:3] == missing[:3], (method, template)
        assert theirs[3].replace(own_id.encode(), b"<id>") == missing[3].replace(
            missing_id.encode(), b"<id>"
        ), (method, template)

    async with test_client.get(
        f"{BASE}/{own_id}", headers={"Authorization": f"Bearer {key_a}"}
    ) as response:
        assert response.status == 200
        assert await response.json() == before
    assert before["deliveryCount"] == 0
