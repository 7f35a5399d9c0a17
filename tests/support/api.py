"""The management API in this process over a test client, on any store, with two orgs' keys; and
what its answers must look like."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp.test_utils import TestClient, TestServer

from service.app import Roles, create_app
from service.appkeys import STORE
from service.settings import Settings
from service.store import Store
from tests.support.store import seal_elsewhere

BASE = "/api/identity/webhooks"
CUSTOMERS = "/api/identity/customers"


SEED_REQUEST = {
    "url": "https://your-app.example.com/webhooks/quantum-identity",
    "events": ["verification.created", "customer.kyc_updated"],
    "installedBy": "kyc-service@v0.1.0",
}


RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass
class Api:
    client: TestClient[Any, Any]
    store: Store
    key: str
    other_key: str

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    async def call(
        self,
        method: str,
        path: str = "",
        body: Any = None,
        *,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any, str]:
        all_headers = {**self.auth(key), **(headers or {})}
        data = raw
        if body is not None:
            data = orjson.dumps(body)
            all_headers.setdefault("Content-Type", "application/json")
        async with self.client.request(
            method, BASE + path, data=data, headers=all_headers
        ) as response:
            text = await response.read()
            payload = orjson.loads(text) if text else None
            return response.status, payload, response.content_type


@asynccontextmanager
async def api_over(settings: Settings, roles: Roles) -> AsyncIterator[Api]:
    """The app with `roles` on `settings` (private targets refused), with keys of org_a and,
    as `other_key`, org_b."""
    settings = settings.model_copy(update={"allow_private_targets": False})
    app = create_app(settings, roles)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        store = app[STORE]
        _, key = await store.create_api_key("org_a", "tests")
        _, other = await store.create_api_key("org_b", "tests")
        yield Api(client, store, key, other)
    finally:
        await client.close()


async def create(api: Api, **overrides: Any) -> dict[str, Any]:
    status, body, _ = await api.call("POST", body={**SEED_REQUEST, **overrides})
    assert status == 201, body
    assert isinstance(body, dict)
    return body


def problem_fields(body: Any) -> set[str]:
    return {error["field"] for error in body.get("errors", [])}


def assert_problem(status: int, body: Any, content_type: str, expected: int) -> None:
    assert status == expected, body
    assert content_type == "application/problem+json"
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == expected


async def sealed_elsewhere(api: Api, settings: Settings) -> str:
    """A subscription of org_a whose secret was sealed with a key this service lacks (say, one
    removed from WEBHOOKS_ENCRYPTION_KEY too early); its id."""
    created = await create(api)
    await seal_elsewhere(settings, created["id"])
    return str(created["id"])


def erase_path(customer_id: str, query: str = "") -> str:
    """The erasure route of a customer, the id percent-encoded as a client sends it (a `/` as
    %2F, other characters as UTF-8); `query` as it goes after the `?`."""
    path = f"{CUSTOMERS}/{quote(customer_id, safe='')}/erase"
    return f"{path}?{query}" if query else path


async def erase(
    client: TestClient[Any, Any],
    key: str,
    customer_id: str,
    *,
    dry_run: bool = False,
    query: str | None = None,
    body: bytes | None = None,
) -> tuple[int, Any, str]:
    """POST of the erasure route with `key`: a dry run, or as `query` says; its status,
    decoded answer and content type."""
    path = erase_path(customer_id, "dryRun=true" if dry_run else (query or ""))
    headers = {"Authorization": f"Bearer {key}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    async with client.post(path, data=body, headers=headers) as response:
        raw = await response.read()
        return response.status, orjson.loads(raw) if raw else None, response.content_type
