"""Polling subscriptions through the API, on both stores: made without a URL; every catalog
event triggered on `/test` lands in the feed, validates against the schema `/event-types`
serves, is marked as a test and verifies with the push receivers' code in every scheme; reads
repeat, a cursor older than the retention answers 410 with where to resume, another org reads
nothing, a push subscription has no feed; the log's search and an event's trail find it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import orjson
import pytest

from service import ids
from service.api.paging import encode_cursor
from service.app import Roles
from service.events import CATALOG
from service.settings import Settings
from service.signing import verify_signature, verify_standard
from tests.support import api as support


@pytest.fixture
async def api(settings_for: Settings) -> AsyncIterator[support.Api]:
    async with support.api_over(settings_for, Roles(consumer=False)) as api:
        yield api


async def _get(api: support.Api, path: str, key: str | None = None) -> tuple[int, Any]:
    async with api.client.get(path, headers=api.auth(key)) as response:
        return response.status, orjson.loads(await response.read())


async def test_every_catalog_event_is_triggered_into_a_feed_signed_as_a_push(
    api: support.Api,
) -> None:
    status, created, _ = await api.call(
        "POST", body={"delivery": "poll", "events": list(CATALOG), "signing": "ed25519"}
    )
    assert status == 201
    assert created["url"] is None
    assert created["delivery"] == "poll"
    feed = f"{support.BASE}/{created['id']}/events"
    _, types = await _get(api, support.BASE + "/event-types")
    schemas = {row["name"]: row["schema"] for row in types["rows"]}
    triggered = {}
    for event in CATALOG:
        status, result, _ = await api.call("POST", f"/{created['id']}/test", body={"event": event})
        assert status == 200, result
        assert result["status"] == "available"
        triggered[result["deliveryId"]] = event

    status, page = await _get(api, feed + "?limit=100")
    assert status == 200
    assert [(r["deliveryId"], r["event"]) for r in page["rows"]] == list(triggered.items())
    for row in page["rows"]:
        body = row["body"].encode()
        envelope = orjson.loads(body)
        jsonschema.validate(envelope, schemas[row["event"]])
        assert envelope["test"] is True
        assert envelope["orgId"] == "org_a"
        headers = row["headers"]
        assert headers["X-Identity-Delivery"] == row["deliveryId"]
        verify_signature(created["secret"], headers["X-Identity-Signature"], body)
        verify_signature(created["secret"], headers["X-Quantum-Signature"], body)
        verify_standard(created["publicKey"], headers, body)

    # Repeatable: the same rows again from the same place; nothing after the last cursor.
    _, again = await _get(api, feed + "?limit=100")
    assert [r["deliveryId"] for r in again["rows"]] == list(triggered)
    started = time.monotonic()
    _, empty = await _get(api, feed + f"?after={page['nextCursor']}&wait=1")
    assert empty["rows"] == []
    assert time.monotonic() - started >= 0.9  # it waited for something to arrive
    _, row, _ = await api.call("GET", f"/{created['id']}")
    assert row["lastDelivery"]["status"] == "sent"  # read past: acknowledged
    assert row["feed"]["unread"] == 0
    assert row["feed"]["lastReadAt"] is not None

    # The log's search and the event's trail find a triggered one.
    delivery_id = next(iter(triggered))
    event_id = page["rows"][0]["eventId"]
    customer = orjson.loads(page["rows"][0]["body"])["data"]["customerId"]
    for query in (f"eventId={event_id}", f"customerId={customer}"):
        status, log, _ = await api.call("GET", f"/{created['id']}/deliveries?{query}")
        assert status == 200
        assert [r["id"] for r in log["rows"]] == [delivery_id]
    status, trail = await _get(api, f"/api/identity/events/{event_id}")
    assert status == 200
    assert [d["id"] for d in trail["deliveries"]] == [delivery_id]
    assert (await _get(api, f"/api/identity/events/{event_id}", api.other_key))[0] == 404


async def test_what_a_feed_refuses(api: support.Api) -> None:
    _, polled, _ = await api.call("POST", body={"delivery": "poll", "events": list(CATALOG)})
    _, pushed, _ = await api.call("POST", body=support.SEED_REQUEST)
    await api.call("POST", f"/{polled['id']}/test")
    # Its newest delivery, unread, shows in the list (an `available` last delivery).
    status, listed, _ = await api.call("GET", "")
    assert status == 200
    shown = {row["id"]: row for row in listed["rows"]}
    assert shown[polled["id"]]["lastDelivery"]["status"] == "available"
    assert shown[polled["id"]]["feed"]["unread"] == 1
    feed = f"{support.BASE}/{polled['id']}/events"
    # Another org's key finds no such subscription.
    assert (await _get(api, feed, api.other_key))[0] == 404
    status, problem = await _get(api, f"{support.BASE}/{pushed['id']}/events")
    assert status == 409
    assert problem["type"].endswith("not-a-polling-subscription")
    # A cursor handed out longer ago than the retention: 410, and where to go on from.
    stale = encode_cursor(ids.feed_position(0, 1_000))
    status, problem = await _get(api, feed + f"?after={stale}")
    assert status == 410
    assert (await _get(api, feed + f"?after={problem['resumeCursor']}"))[0] == 200
    for query in ("after=x", "wait=31", "limit=0", "nope=1"):
        assert (await _get(api, f"{feed}?{query}"))[0] == 422
    status, refused, _ = await api.call(
        "POST",
        body={"delivery": "poll", "url": "https://a.example/h", "events": list(CATALOG)},
    )
    assert status == 422
    assert [e["field"] for e in refused["errors"]] == ["url"]
    status, _, _ = await api.call("POST", body={"events": list(CATALOG)})
    assert status == 422
    status, _, _ = await api.call("PATCH", f"/{polled['id']}", body={"rateLimit": 5})
    assert status == 422
