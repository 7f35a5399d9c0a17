"""The management API's reads for receivers and support: a polling subscription's feed
(`GET …/{id}/events`, a long poll; docs/decisions/0014-polling-and-listen.md) and an event's
every delivery in the caller's org (`GET /api/identity/events/{eventId}`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from aiohttp import web

from service import ids
from service.api.auth import ORG
from service.api.deliverylog import delivery_row
from service.api.models import Errors, EventTrail, Feed
from service.api.paging import decode_cursor, encode_cursor, page_limit
from service.api.problems import invalid, problem
from service.appkeys import FEED_WAITS, SETTINGS, STORE
from service.clock import iso, iso_or_none, now_ms
from service.domain import DeliveryJob, FeedItem, Subscription
from service.events import MAX_ID_LENGTH
from service.feedwaits import RECHECK
from service.store import Feeds, Subscriptions
from service.wire import delivery_body, delivery_headers

EVENTS = "/api/identity/events"
FEED_QUERY = ("after", "limit", "wait")
MAX_WAIT = 30


class FeedStore(Subscriptions, Feeds, Protocol):
    """What these reads use of the store."""


def _store(request: web.Request) -> FeedStore:
    return request.config_dict[STORE]


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class FeedQuery:
    """A feed read's query, checked: where it starts, how many, how long it may wait."""

    def __init__(self, query: Mapping[str, str]) -> None:
        self.errors: Errors = [
            (name, "unknown query parameter") for name in query if name not in FEED_QUERY
        ]
        self.limit = page_limit(query, self.errors)
        self.after: tuple[int, int] | None = None
        if "after" in query:
            try:
                position = decode_cursor(query["after"], ids.FEED_POSITION)
                self.after = ids.parse_feed_position(position)
            except ValueError as exc:
                self.errors.append(("after", str(exc)))
        self.wait = 0
        if "wait" in query:
            text = query["wait"]
            if not (text.isascii() and text.isdigit() and len(text) <= 2) or int(text) > MAX_WAIT:
                self.errors.append(("wait", f"must be a whole number of seconds, 0 to {MAX_WAIT}"))
            else:
                self.wait = int(text)


def cursor(place: int) -> str:
    return encode_cursor(ids.feed_position(place, now_ms()))


class FeedApi:
    """Handlers over the store's feeds."""

    def routes(self, base: str) -> list[web.RouteDef]:
        return [
            web.get(base + "/{id}/events", self.read),
            web.get(EVENTS + "/{eventId}", self.event),
        ]

    async def read(self, request: web.Request) -> web.Response:
        """At-least-once: the rows after `after`, the same ones on a repeat; passing a cursor
        acknowledges what came before it. Waits up to `wait` seconds when there is nothing."""
        query = FeedQuery(request.query)
        subscription_id = request.match_info["id"]
        store = _store(request)
        found = (
            await store.get_subscription(request[ORG], subscription_id)
            if ids.looks_like(subscription_id, ids.SUBSCRIPTION)
            else None
        )
        if found is None:
            return problem(404, f"no subscription {subscription_id[:64]!r} in this organisation")
        if query.errors:
            return invalid(query.errors)
        if not found.polled:
            return problem(
                409,
                "this subscription pushes its deliveries to its URL: only a polling "
                'subscription ("delivery": "poll") has a feed to read',
                slug="not-a-polling-subscription",
            )
        if found.secret is None:
            return problem(409, f"cannot sign its deliveries: {Subscription.UNDECRYPTABLE}")
        settings = request.config_dict[SETTINGS]
        place, issued = query.after or (0, None)
        if issued is not None and issued < now_ms() - int(settings.retention * 1000):
            page = await store.read_feed(found.id, place, 0)
            resume = 0 if page.oldest_kept is None else page.oldest_kept - 1
            return problem(
                410,
                "this cursor is older than the retention (WEBHOOKS_RETENTION): deliveries "
                "after it may have been removed; go on from resumeCursor (the oldest delivery "
                "the feed still keeps)",
                slug="cursor-expired",
                extra={"resumeCursor": cursor(resume)},
            )
        await store.acknowledge(found.id, place)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(query.wait, settings.feed_wait_max)
        waits = request.config_dict[FEED_WAITS]
        while True:
            page = await store.read_feed(found.id, place, query.limit)
            left = deadline - loop.time()
            if page.items or left <= 0:
                break
            await waits.wait(found.id, min(RECHECK, left))
        schemes = settings.signature_headers
        rows = [_row(item, found, schemes) for item in page.items]
        return _json(
            Feed.model_validate({"rows": rows, "nextCursor": cursor(page.last)}).model_dump(
                mode="json"
            )
        )

    async def event(self, request: web.Request) -> web.Response:
        """The org's event and each subscription's delivery of it, with its status."""
        event_id = request.match_info["eventId"]
        trail = None
        if 1 <= len(event_id) <= MAX_ID_LENGTH:
            trail = await _store(request).event_trail(request[ORG], event_id)
        if trail is None:
            return problem(404, f"no event {event_id[:64]!r} in this organisation")
        shown = EventTrail.model_validate(
            {
                "id": trail.id,
                "event": trail.event,
                "occurredAt": iso(trail.occurred_at),
                "receivedAt": iso(trail.received_at),
                "deliveries": [
                    {**delivery_row(d.row), "subscriptionId": d.subscription_id}
                    for d in trail.deliveries
                ],
            }
        )
        return _json(shown.model_dump(mode="json"))


def _row(item: FeedItem, subscription: Subscription, schemes: Any) -> dict[str, Any]:
    """One delivery as the feed shows it: the body a push would POST and the headers it would
    carry, signed now (as a push's retry is signed afresh)."""
    row: dict[str, Any] = {
        "deliveryId": item.delivery_id,
        "eventId": item.event_id,
        "event": item.event,
        "createdAt": iso(item.created_at),
        "body": None,
        "headers": {},
        "payloadRemoved": None,
    }
    if item.body is None:
        gone = item.gone
        assert gone is not None
        row["payloadRemoved"] = {
            "reason": "undecryptable" if gone.reason is None else gone.reason.value,
            "at": iso_or_none(gone.at),
            "detail": gone.detail,
        }
        return row
    job = DeliveryJob(
        id=item.delivery_id,
        subscription_id=subscription.id,
        event_id=item.event_id,
        event=item.event,
        body=item.body,
        sibling_service=item.sibling_service,
        attempts=0,
        occurred_at=item.occurred_at,
    )
    body = delivery_body(job, subscription)
    row["body"] = body.decode()
    row["headers"] = delivery_headers(schemes, job, subscription, body, time.time())
    return row
