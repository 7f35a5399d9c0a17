"""The management API (SPEC section 3): register, list, get, change, delete and test
subscriptions, each scoped to the org of the caller's API key."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from service.api.auth import ORG
from service.api.catalog import event_types
from service.api.models import (
    CreatedSubscription,
    CreateSubscription,
    EventTypes,
    PatchSubscription,
    SubscriptionList,
    SubscriptionRow,
    TestResult,
)
from service.api.paging import decode_cursor, encode_cursor
from service.api.problems import invalid, problem
from service.appkeys import ON_CHANGE, RESOLVE, SETTINGS, STORE, TESTER
from service.egress import vet_url
from service.errors import TargetRejected
from service.events import format_time
from service.store import Store, SubscriptionChanges
from service.store.models import AttemptRecord, DeliverySummary, Subscription

BASE = "/api/identity/webhooks"
MAX_BODY = 64 * 1024
DEFAULT_LIMIT = 50
MAX_LIMIT = 100
_ID = re.compile(r"^whk_[0-9A-HJKMNP-TV-Z]{26}$")

# How registration looks host names up; unset, the system resolver. Tests set a resolver with
# fixed answers (a name that is public now and private at delivery: DNS rebinding).

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)


def iso(ms: int) -> str:
    return format_time(datetime.fromtimestamp(ms / 1000, UTC))


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(model.model_dump(mode="json")),
        status=status,
        content_type="application/json",
    )


def _field(loc: Sequence[int | str]) -> str:
    """pydantic's location as a field path: ("events", 1) -> "events[1]"."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or "(body)"


def _messages(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for error in exc.errors():
        kind = error["type"]
        message = str(error["msg"]).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = "is required"
        out.append((_field(error["loc"]), message))
    return out


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
        ]

    # -- helpers -----------------------------------------------------------------------------

    async def _body(self, request: web.Request, model: type[M]) -> M | web.Response:
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
            return invalid(_messages(exc))

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

    @staticmethod
    def _row(subscription: Subscription, summary: DeliverySummary) -> SubscriptionRow:
        last = summary.last_delivery
        return SubscriptionRow.model_validate(
            {
                "id": subscription.id,
                "url": subscription.url,
                "events": list(subscription.events),
                "installedBy": subscription.installed_by,
                "active": subscription.active,
                "createdAt": iso(subscription.created_at),
                "deliveryCount": summary.delivery_count,
                "lastDelivery": None
                if last is None
                else {
                    "status": last.status.value,
                    "responseCode": last.response_code,
                    "at": iso(last.at),
                },
                "deactivatedReason": subscription.deactivated_reason,
                "problem": Subscription.UNDECRYPTABLE if subscription.secret is None else None,
            }
        )

    async def _rows(
        self, request: web.Request, subscriptions: Sequence[Subscription]
    ) -> list[SubscriptionRow]:
        summaries = await _store(request).delivery_summaries([s.id for s in subscriptions])
        return [self._row(s, summaries[s.id]) for s in subscriptions]

    # -- handlers ----------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await self._body(request, CreateSubscription)
        if isinstance(body, web.Response):
            return body
        if rejected := await self._vet(request, body.url):
            return rejected
        subscription = await _store(request).create_subscription(
            request[ORG], body.url, body.events, body.installedBy
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
        limit = DEFAULT_LIMIT
        if "limit" in query:
            text = query["limit"]
            # The length check comes first: int() of a 4,301-digit string raises ValueError.
            if (
                not (text.isascii() and text.isdigit() and len(text) <= len(str(MAX_LIMIT)))
                or not 1 <= int(text) <= MAX_LIMIT
            ):
                errors.append(("limit", f"must be a whole number from 1 to {MAX_LIMIT}"))
            else:
                limit = int(text)
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
        for name in ("url", "events", "active"):
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
