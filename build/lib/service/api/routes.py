"""The management API (SPEC section 3, issue 12): register, list, get, change, delete and test
subscriptions; their delivery log, redelivery, replay and secret rotation; each scoped to the org
of the caller's API key."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from service import ids
from service.api.auth import ORG
from service.api.catalog import event_types
from service.api.models import (
    CreatedSubscription,
    CreateSubscription,
    DeliveryList,
    DeliveryRow,
    EventTypes,
    PatchSubscription,
    ReplayRequest,
    ReplayResult,
    RotatedSecret,
    RotateSecret,
    SubscriptionList,
    SubscriptionRow,
    TestResult,
)
from service.api.paging import decode_cursor, encode_cursor
from service.api.problems import invalid, problem
from service.api.recovery import (
    MAX_REPLAY,
    LogQuery,
    cannot_send,
    delivery_detail,
    delivery_row,
    field_messages,
    iso,
    iso_or_none,
    page_limit,
    replay_window,
)
from service.appkeys import ON_CHANGE, RESOLVE, SETTINGS, STORE, TESTER
from service.clock import now_ms
from service.egress import vet_url
from service.errors import TargetRejected
from service.store import Store, SubscriptionChanges
from service.store.models import AttemptRecord, Health, Subscription

BASE = "/api/identity/webhooks"
MAX_BODY = 64 * 1024
_ID = re.compile(r"^whk_[0-9A-HJKMNP-TV-Z]{26}$")

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(model.model_dump(mode="json")),
        status=status,
        content_type="application/json",
    )


def _store(request: web.Request) -> Store:
    return request.config_dict[STORE]


class SubscriptionApi:
    """Handlers over the store. The resources come from the app keys set at start-up: the store,
    the matcher's `ON_CHANGE` (told at once of a change) and the dispatcher's `TESTER`."""

    _event_types: bytes | None = None

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(BASE, self.create),
            web.get(BASE, self.list),
            # Before `/{id}`, which would take `event-types` for an id (and answer another
            # method with a 404): every other method is a 405 here.
            web.get(BASE + "/event-types", self.event_types),
            web.route("*", BASE + "/event-types", _only_get),
            web.get(BASE + "/{id}", self.get),
            web.patch(BASE + "/{id}", self.patch),
            web.delete(BASE + "/{id}", self.delete),
            web.post(BASE + "/{id}/test", self.test),
            web.get(BASE + "/{id}/deliveries", self.deliveries),
            web.get(BASE + "/{id}/deliveries/{delivery}", self.delivery),
            web.post(BASE + "/{id}/deliveries/{delivery}/redeliver", self.redeliver),
            web.post(BASE + "/{id}/replay", self.replay),
            web.post(BASE + "/{id}/rotate-secret", self.rotate_secret),
        ]

    # -- helpers -----------------------------------------------------------------------------

    async def _body(
        self, request: web.Request, model: type[M], *, optional: bool = False
    ) -> M | web.Response:
        """The body as `model`, or the problem to answer (`optional`: no body at all means
        every field's default)."""
        if optional and not request.body_exists:
            return model.model_validate({})
        content_type = request.content_type
        if content_type != "application/json" and not content_type.endswith("+json"):
            return problem(415, "send the body as application/json", slug="unsupported-media-type")
        if request.content_length is not None and request.content_length > MAX_BODY:
            return problem(413, f"the body is over {MAX_BODY // 1024} KiB")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return problem(413, f"the body is over {MAX_BODY // 1024} KiB")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return problem(400, f"the body is not valid JSON: {exc.msg}", slug="invalid-json")
        if not isinstance(data, dict):
            return invalid([("(body)", "must be a JSON object")])
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            return invalid(field_messages(exc))

    async def _vet(self, request: web.Request, url: str) -> web.Response | None:
        allow_private = request.config_dict[SETTINGS].allow_private_targets
        try:
            await vet_url(
                url, allow_private=allow_private, resolver=request.config_dict.get(RESOLVE)
            )
        except TargetRejected as exc:
            return invalid([("url", exc.reason)])
        return None

    def _id(self, request: web.Request) -> str | None:
        subscription_id = request.match_info["id"]
        return subscription_id if _ID.match(subscription_id) else None

    @staticmethod
    def _not_found(subscription_id: str) -> web.Response:
        return problem(404, f"no subscription {subscription_id[:64]!r} in this organisation")

    @staticmethod
    async def _changed(request: web.Request, subscription_id: str) -> None:
        on_change = request.config_dict.get(ON_CHANGE)
        if on_change is not None:
            await on_change(subscription_id)

    async def _found(self, request: web.Request) -> Subscription | web.Response:
        """The subscription of the path's `{id}` in the caller's org, or the 404 to answer."""
        subscription_id = self._id(request)
        found = subscription_id and await _store(request).get_subscription(
            request[ORG], subscription_id
        )
        return found or self._not_found(request.match_info["id"])

    @staticmethod
    def _row(subscription: Subscription, health: Health) -> SubscriptionRow:
        last = health.last_delivery
        return SubscriptionRow.model_validate(
            {
                "id": subscription.id,
                "url": subscription.url,
                "events": list(subscription.events),
                "installedBy": subscription.installed_by,
                "active": subscription.active,
                "createdAt": iso(subscription.created_at),
                "deliveryCount": health.delivery_count,
                "lastDelivery": None
                if last is None
                else {
                    "status": last.status.value,
                    "responseCode": last.response_code,
                    "at": iso(last.at),
                },
                "deactivatedReason": subscription.deactivated_reason,
                "problem": Subscription.UNDECRYPTABLE if subscription.secret is None else None,
                "rateLimit": subscription.rate_limit,
                "headers": dict(subscription.headers),
                "successRate24h": health.success_rate_24h,
                "p95LatencyMs24h": health.p95_latency_ms_24h,
                "consecutiveFailures": subscription.consecutive_failures,
                "pendingCount": health.pending_count,
                "nextRetryAt": iso_or_none(health.next_retry_at),
                "ordering": subscription.ordering,
                "blockedCustomers": health.blocked_customers,
                "oldestBlockedDelivery": None
                if health.oldest_blocked is None
                else {
                    "id": health.oldest_blocked[0],
                    "createdAt": iso(health.oldest_blocked[1]),
                },
                "disabledAt": None
                if subscription.active
                else iso_or_none(subscription.disabled_at),
                "disabledReason": None if subscription.active else subscription.deactivated_reason,
            }
        )

    async def _rows(
        self, request: web.Request, subscriptions: Sequence[Subscription]
    ) -> list[SubscriptionRow]:
        health = await _store(request).subscription_health([s.id for s in subscriptions])
        return [self._row(s, health[s.id]) for s in subscriptions]

    # -- handlers ----------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await self._body(request, CreateSubscription)
        if isinstance(body, web.Response):
            return body
        if rejected := await self._vet(request, body.url):
            return rejected
        subscription = await _store(request).create_subscription(
            request[ORG],
            body.url,
            body.events,
            body.installedBy,
            rate_limit=body.rateLimit,
            headers=tuple((body.headers or {}).items()),
            ordering=body.ordering,
        )
        await self._changed(request, subscription.id)
        log.info(
            "subscription.created",
            subscription_id=subscription.id,
            org_id=subscription.org_id,
            events=list(subscription.events),
        )
        created = CreatedSubscription(
            id=subscription.id,
            url=subscription.url,
            events=list(subscription.events),
            installedBy=subscription.installed_by,
            secret=subscription.secret,
            active=subscription.active,
            createdAt=iso(subscription.created_at),
        )
        return _json(created, status=201)

    async def list(self, request: web.Request) -> web.Response:
        query: Mapping[str, str] = request.query
        errors = [
            (name, "unknown query parameter") for name in query if name not in ("limit", "cursor")
        ]
        limit = page_limit(query, errors)
        after = None
        if "cursor" in query:
            try:
                after = decode_cursor(query["cursor"])
            except ValueError as exc:
                errors.append(("cursor", str(exc)))
        if errors:
            return invalid(errors)
        page = await _store(request).list_subscriptions(request[ORG], limit, after)
        rows = await self._rows(request, page.rows)
        cursor = None if page.next_after is None else encode_cursor(page.next_after)
        return _json(SubscriptionList(rows=rows, nextCursor=cursor))

    async def event_types(self, _: web.Request) -> web.Response:
        """The catalog: the same for every org, built once."""
        if self._event_types is None:
            rows = EventTypes.model_validate({"rows": event_types()})
            self._event_types = orjson.dumps(rows.model_dump(mode="json", by_alias=True))
        return web.Response(body=self._event_types, content_type="application/json")

    async def get(self, request: web.Request) -> web.Response:
        subscription_id = self._id(request)
        found = subscription_id and await _store(request).get_subscription(
            request[ORG], subscription_id
        )
        if not found:
            return self._not_found(request.match_info["id"])
        (row,) = await self._rows(request, [found])
        return _json(row)

    async def patch(self, request: web.Request) -> web.Response:
        subscription_id = self._id(request)
        if subscription_id is None:
            return self._not_found(request.match_info["id"])
        body = await self._body(request, PatchSubscription)
        if isinstance(body, web.Response):
            return body
        given = body.model_fields_set
        for name in ("url", "events", "active", "ordering"):
            if name in given and getattr(body, name) is None:
                return invalid([(name, "cannot be null")])
        if (
            "url" in given
            and body.url is not None
            and (rejected := await self._vet(request, body.url))
        ):
            return rejected
        changes: dict[str, Any] = {}
        if "url" in given:
            changes["url"] = body.url
        if "events" in given and body.events is not None:
            changes["events"] = tuple(body.events)
        if "active" in given:
            changes["active"] = body.active
        if "installedBy" in given:
            changes["installed_by"] = body.installedBy
        if "rateLimit" in given:
            changes["rate_limit"] = body.rateLimit
        if "headers" in given:
            changes["headers"] = tuple((body.headers or {}).items())
        if "ordering" in given:
            changes["ordering"] = body.ordering
        updated = await _store(request).update_subscription(
            request[ORG], subscription_id, SubscriptionChanges(**changes)
        )
        if updated is None:
            return self._not_found(subscription_id)
        await self._changed(request, updated.id)
        log.info("subscription.updated", subscription_id=updated.id, fields=sorted(given))
        (row,) = await self._rows(request, [updated])
        return _json(row)

    async def delete(self, request: web.Request) -> web.Response:
        subscription_id = self._id(request)
        if not subscription_id or not await _store(request).delete_subscription(
            request[ORG], subscription_id
        ):
            return self._not_found(request.match_info["id"])
        await self._changed(request, subscription_id)
        log.info("subscription.deleted", subscription_id=subscription_id)
        return web.Response(status=204)

    async def test(self, request: web.Request) -> web.Response:
        subscription_id = self._id(request)
        found = subscription_id and await _store(request).get_subscription(
            request[ORG], subscription_id
        )
        if not found:
            return self._not_found(request.match_info["id"])
        if found.secret is None:
            return problem(409, f"cannot send a test: {Subscription.UNDECRYPTABLE}")
        tester = request.config_dict.get(TESTER)
        if tester is None:
            return problem(503, "this process runs without the dispatcher")
        return _json(_test_result(await tester.send_test(found)))

    # -- the delivery log and recovery (issue 12) ---------------------------------------------

    async def deliveries(self, request: web.Request) -> web.Response:
        """The log, newest first; filters and the cursor are checked before the lookup."""
        query = LogQuery(request.query)
        found = await self._found(request)
        if isinstance(found, web.Response):
            return found
        if query.errors:
            return invalid(query.errors)
        page = await _store(request).list_deliveries(
            request[ORG], found.id, query.where, query.limit, query.after
        )
        return _json(
            DeliveryList.model_validate(
                {
                    "rows": [delivery_row(row) for row in page.rows],
                    "nextCursor": None
                    if page.next_after is None
                    else encode_cursor(page.next_after),
                }
            )
        )

    async def _delivery_id(self, request: web.Request) -> str | None:
        delivery_id = request.match_info["delivery"]
        return delivery_id if ids.looks_like(delivery_id, ids.DELIVERY) else None

    @staticmethod
    def _no_delivery(request: web.Request) -> web.Response:
        return problem(
            404, f"no delivery {request.match_info['delivery'][:64]!r} of this subscription"
        )

    async def delivery(self, request: web.Request) -> web.Response:
        found = await self._found(request)
        if isinstance(found, web.Response):
            return found
        delivery_id = await self._delivery_id(request)
        detail = delivery_id and await _store(request).get_delivery(
            request[ORG], found.id, delivery_id
        )
        if not detail:
            return self._no_delivery(request)
        return _json(delivery_detail(detail))

    @staticmethod
    def _cannot_send(subscription: Subscription) -> web.Response | None:
        """409 when the subscription's deliveries cannot go out now, with what to do."""
        blocked = cannot_send(subscription)
        if blocked is None:
            return None
        slug, reason = blocked
        if slug == "subscription-inactive":
            reason += ' (PATCH {"active": true})'
        return problem(409, reason, slug=slug)

    @staticmethod
    def _wake(request: web.Request) -> None:
        tester = request.config_dict.get(TESTER)
        if tester is not None:  # else a dispatcher elsewhere claims it within its poll
            tester.wake()

    async def redeliver(self, request: web.Request) -> web.Response:
        """One more attempt now, same delivery id, signed afresh; 202 with its log row."""
        found = await self._found(request)
        if isinstance(found, web.Response):
            return found
        delivery_id = await self._delivery_id(request)
        store = _store(request)
        if not delivery_id or not await store.get_delivery(request[ORG], found.id, delivery_id):
            return self._no_delivery(request)
        if blocked := self._cannot_send(found):
            return blocked
        if not await store.redeliver(request[ORG], found.id, delivery_id):
            return self._no_delivery(request)
        self._wake(request)
        log.info("delivery.redeliver", subscription_id=found.id, delivery_id=delivery_id)
        detail = await store.get_delivery(request[ORG], found.id, delivery_id)
        if detail is None:  # purged in between: nothing to show, the request was taken
            return web.Response(status=202)
        return _json(DeliveryRow.model_validate(delivery_row(detail.row)), status=202)

    async def replay(self, request: web.Request) -> web.Response:
        found = await self._found(request)
        if isinstance(found, web.Response):
            return found
        body = await self._body(request, ReplayRequest)
        if isinstance(body, web.Response):
            return body
        window = replay_window(
            found,
            body,
            now=now_ms(),
            retention_s=request.config_dict[SETTINGS].retention,
        )
        if isinstance(window, list):
            return invalid(window)
        # An inactive subscription may be replayed into: what is queued waits in the store
        # until it is re-enabled (re-enable first to have it go out now).
        replayed = await _store(request).replay(
            request[ORG],
            found,
            window.events,
            window.since,
            window.until,
            only_failed=body.onlyFailed,
            limit=MAX_REPLAY,
        )
        if replayed.count:
            self._wake(request)
        log.info(
            "subscription.replay",
            subscription_id=found.id,
            queued=replayed.count,
            only_failed=body.onlyFailed,
            cut_short=replayed.next_since is not None,
        )
        result = ReplayResult(count=replayed.count, nextSince=iso_or_none(replayed.next_since))
        return _json(result, status=202)

    async def rotate_secret(self, request: web.Request) -> web.Response:
        subscription_id = self._id(request)
        if subscription_id is None:
            return self._not_found(request.match_info["id"])
        body = await self._body(request, RotateSecret, optional=True)
        if isinstance(body, web.Response):
            return body
        rotated = await _store(request).rotate_secret(
            request[ORG], subscription_id, body.overlapSeconds * 1000
        )
        if rotated is None or rotated.secret is None:
            return self._not_found(subscription_id)
        await self._changed(request, rotated.id)
        log.info(
            "subscription.secret_rotated",
            subscription_id=rotated.id,
            overlap_seconds=body.overlapSeconds,
        )
        expires = rotated.previous_secret_until or rotated.updated_at
        return _json(RotatedSecret(secret=rotated.secret, previousSecretExpiresAt=iso(expires)))


def _test_result(record: AttemptRecord) -> TestResult:
    return TestResult(
        deliveryId=record.delivery_id,
        status=record.new_status.value,
        responseCode=record.status_code,
        durationMs=record.duration_ms,
        error=record.error,
    )


async def _only_get(request: web.Request) -> web.Response:
    raise web.HTTPMethodNotAllowed(request.method, ["GET"])
