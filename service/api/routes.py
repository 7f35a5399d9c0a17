"""The management API: register, list, get, change, delete and test subscriptions; their delivery
log, redelivery, replay and secret rotation (done by `service.operations`); each scoped to the org
of the caller's API key."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel, ValidationError

from service import ids
from service.api.auth import ACTOR, ORG
from service.api.catalog import event_types
from service.api.deliverylog import LogQuery, delivery_detail, delivery_row
from service.api.models import (
    CreatedSubscription,
    CreateSubscription,
    DeliveryList,
    DeliveryRow,
    EventTypes,
    FilterTest,
    FilterVerdict,
    OAuthClientCredentialsAuth,
    PatchSubscription,
    ReplayRequest,
    ReplayResult,
    RotatedSecret,
    RotateSecret,
    SubscriptionHours,
    SubscriptionList,
    SubscriptionRow,
    TestRequest,
    TestResult,
    auth_errors,
    endpoint_auth,
    field_messages,
)
from service.api.paging import decode_cursor, encode_cursor, page_limit
from service.api.problems import invalid, problem
from service.api.subscriptionrows import public_key_or_none, subscription_row
from service.appkeys import FEED_WAITS, ON_CHANGE, RESOLVE, SETTINGS, STORE, TESTER
from service.clock import iso, iso_or_none
from service.domain import (
    AttemptRecord,
    DeliveryMode,
    NewDelivery,
    Ordering,
    Signing,
    Subscription,
    Summary,
)
from service.egress import vet_url
from service.errors import (
    CannotSend,
    DeliveryNotFound,
    InvalidInput,
    PayloadRemoved,
    SubscriptionNotFound,
    TargetRejected,
)
from service.filters import compile_filter
from service.operations import recovery, secrets
from service.signing import standard_secret
from service.store import (
    DeliveryLog,
    Feeds,
    Lease,
    PageRequest,
    Pipeline,
    SubscriptionChanges,
    Subscriptions,
    Summaries,
)
from service.triggers import test_event

MAX_SEARCH = 200
_PRINTABLE_TEXT = re.compile(r"[^\x00-\x1F\x7F-\x9F]+")

BASE = "/api/identity/webhooks"
MAX_BODY = 64 * 1024

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(model.model_dump(mode="json")),
        status=status,
        content_type="application/json",
    )


class ManagedStore(Subscriptions, Summaries, DeliveryLog, Feeds, Pipeline, Protocol):
    """What the management API uses of the store (API keys are `auth`'s; the pipeline's
    `record_events` puts a polling subscription's test event in its feed)."""


def _store(request: web.Request) -> ManagedStore:
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
            web.post(BASE + "/filter-test", self.filter_test),
            web.route("*", BASE + "/filter-test", _only_post),
            web.get(BASE + "/{id}", self.get),
            web.patch(BASE + "/{id}", self.patch),
            web.delete(BASE + "/{id}", self.delete),
            web.post(BASE + "/{id}/test", self.test),
            web.get(BASE + "/{id}/deliveries", self.deliveries),
            web.get(BASE + "/{id}/hours", self.hours),
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

    async def _vet(self, request: web.Request, url: str, field: str = "url") -> web.Response | None:
        """422 naming `field` unless `url` is a target deliveries may reach (the SSRF guard)."""
        allow_private = request.config_dict[SETTINGS].allow_private_targets
        try:
            await vet_url(
                url, allow_private=allow_private, resolver=request.config_dict.get(RESOLVE)
            )
        except TargetRejected as exc:
            return invalid([(field, exc.reason)])
        return None

    async def _vet_auth(
        self,
        request: web.Request,
        body: CreateSubscription | PatchSubscription,
        *,
        creating: bool,
    ) -> web.Response | None:
        """422 unless the request's `auth` and `caCertificate` can be used: readable, current
        certificates with their key, and a token URL held to the endpoint URL's rules."""
        errors = auth_errors(body.auth, body.caCertificate, creating=creating)
        if errors:
            return invalid(errors)
        if isinstance(body.auth, OAuthClientCredentialsAuth):
            return await self._vet(request, body.auth.tokenUrl, "auth.tokenUrl")
        return None

    def _id(self, request: web.Request) -> str | None:
        subscription_id = request.match_info["id"]
        return subscription_id if ids.looks_like(subscription_id, ids.SUBSCRIPTION) else None

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

    async def _rows(
        self,
        request: web.Request,
        subscriptions: Sequence[Subscription],
        summary: Mapping[str, Summary] | None = None,
    ) -> list[SubscriptionRow]:
        """The subscriptions as the API shows them, with their summaries (read here unless
        given)."""
        store = _store(request)
        if summary is None:
            summary = await store.subscription_summaries([s.id for s in subscriptions])
        feeds = await store.feed_health([s.id for s in subscriptions if s.polled])
        behind_ms = int(request.config_dict[SETTINGS].feed_behind * 1000)
        return [
            subscription_row(s, summary[s.id], feeds.get(s.id), behind_ms) for s in subscriptions
        ]

    # -- handlers ----------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        body = await self._body(request, CreateSubscription)
        if isinstance(body, web.Response):
            return body
        delivery = DeliveryMode(body.delivery)
        if delivery is DeliveryMode.POLL:
            if refused := _not_for_polling(body.model_fields_set, body):
                return invalid(refused)
        elif body.url is None:
            return invalid([("url", 'is required (or "delivery": "poll", without a URL)')])
        elif rejected := await self._vet(request, body.url):
            return rejected
        if rejected := await self._vet_auth(request, body, creating=True):
            return rejected
        subscription = await _store(request).create_subscription(
            request[ORG],
            body.url or "",
            body.events,
            body.installedBy,
            rate_limit=body.rateLimit,
            headers=tuple((body.headers or {}).items()),
            ordering=Ordering(body.ordering),
            data_fields=body.dataFields,
            signing=Signing(body.signing),
            hmac_headers=body.hmacHeaders,
            content_filter=_filter_json(body.filter),
            auth=endpoint_auth(body.auth),
            ca_certificate=body.caCertificate,
            delivery=delivery,
            actor=request[ACTOR],
        )
        if subscription.secret is None:  # just made with the configured key: it opens
            raise RuntimeError(f"subscription {subscription.id}: its new secret did not open")
        await self._changed(request, subscription.id)
        log.info(
            "subscription.created",
            subscription_id=subscription.id,
            org_id=subscription.org_id,
            events=list(subscription.events),
        )
        created = CreatedSubscription(
            id=subscription.id,
            url=subscription.url if not subscription.polled else None,
            delivery=subscription.delivery.value,
            events=list(subscription.events),
            installedBy=subscription.installed_by,
            secret=subscription.secret,
            standardSecret=standard_secret(subscription.secret),
            active=subscription.active,
            createdAt=iso(subscription.created_at),
            signing=subscription.signing.value,
            publicKey=public_key_or_none(subscription),
            hmacHeaders=subscription.hmac_headers,
        )
        return _json(created, status=201)

    async def list(self, request: web.Request) -> web.Response:
        query: Mapping[str, str] = request.query
        errors = [
            (name, "unknown query parameter")
            for name in query
            if name not in ("limit", "cursor", "search")
        ]
        limit = page_limit(query, errors)
        search = query.get("search")
        if search is not None and not (
            1 <= len(search) <= MAX_SEARCH and _PRINTABLE_TEXT.fullmatch(search)
        ):
            errors.append(
                ("search", f"must be 1 to {MAX_SEARCH} characters, no control characters")
            )
        after = None
        if "cursor" in query:
            try:
                after = decode_cursor(query["cursor"])
            except ValueError as exc:
                errors.append(("cursor", str(exc)))
        if errors:
            return invalid(errors)
        page = await _store(request).list_subscriptions(request[ORG], limit, after, search=search)
        rows = await self._rows(request, page.rows)
        cursor = None if page.next_after is None else encode_cursor(page.next_after)
        return _json(SubscriptionList(rows=rows, nextCursor=cursor))

    async def event_types(self, _: web.Request) -> web.Response:
        """The catalog: the same for every org, built once."""
        if self._event_types is None:
            rows = EventTypes.model_validate({"rows": event_types()})
            self._event_types = orjson.dumps(rows.model_dump(mode="json", by_alias=True))
        return web.Response(body=self._event_types, content_type="application/json")

    async def filter_test(self, request: web.Request) -> web.Response:
        """Whether a filter matches an event, and if not, which clause refused it: nothing is
        stored or sent."""
        body = await self._body(request, FilterTest)
        if isinstance(body, web.Response):
            return body
        refused = compile_filter(body.filter).explain(body.event)
        verdict = FilterVerdict(
            matches=refused is None,
            refusedBy=None if refused is None else refused.clause,
            reason=None if refused is None else refused.reason,
        )
        return _json(verdict)

    async def get(self, request: web.Request) -> web.Response:
        found = await self._found(request)
        if isinstance(found, web.Response):
            return found
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
        for name in ("url", "events", "active", "ordering", "signing", "hmacHeaders"):
            if name in given and getattr(body, name) is None:
                return invalid([(name, "cannot be null")])
        if (
            "url" in given
            and body.url is not None
            and (rejected := await self._vet(request, body.url))
        ):
            return rejected
        if rejected := await self._vet_auth(request, body, creating=False):
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
            changes["headers"] = body.headers  # a merge patch: the store merges it
        if "ordering" in given and body.ordering is not None:
            changes["ordering"] = Ordering(body.ordering)
        if "dataFields" in given:
            changes["data_fields"] = None if body.dataFields is None else tuple(body.dataFields)
        if "signing" in given and body.signing is not None:
            changes["signing"] = Signing(body.signing)
        if "hmacHeaders" in given:
            changes["hmac_headers"] = body.hmacHeaders
        if "filter" in given:
            changes["content_filter"] = _filter_json(body.filter)
        if "auth" in given:
            changes["auth"] = endpoint_auth(body.auth)
        if "caCertificate" in given:
            changes["ca_certificate"] = body.caCertificate
        # What a polling subscription refuses is refused by the change itself (one read
        # fewer on the way): only a change that found nothing asks which of the two it was.
        refused_if_polled = _not_for_polling(given, body)
        store = _store(request)
        # The answer's summary of deliveries is read while the change is made, on another
        # connection: a change alters none of it, and the answer waits for one round trip
        # fewer. Read for an id that turns out not to be the org's, it is never shown.
        updated, summary = await asyncio.gather(
            store.update_subscription(
                request[ORG],
                subscription_id,
                SubscriptionChanges(**changes),
                actor=request[ACTOR],
                push_only=bool(refused_if_polled),
            ),
            store.subscription_summaries([subscription_id]),
            return_exceptions=True,
        )
        if isinstance(updated, InvalidInput):
            return invalid(updated.errors)
        if isinstance(updated, BaseException):
            raise updated
        if isinstance(summary, BaseException):
            raise summary
        if updated is None:
            current = await store.get_subscription(request[ORG], subscription_id)
            if current is not None and current.polled and refused_if_polled:
                return invalid(refused_if_polled)
            return self._not_found(subscription_id)
        await self._changed(request, updated.id)
        log.info("subscription.updated", subscription_id=updated.id, fields=sorted(given))
        (row,) = await self._rows(request, [updated], summary)
        return _json(row)

    async def delete(self, request: web.Request) -> web.Response:
        subscription_id = self._id(request)
        if not subscription_id or not await _store(request).delete_subscription(
            request[ORG], subscription_id, actor=request[ACTOR]
        ):
            return self._not_found(request.match_info["id"])
        await self._changed(request, subscription_id)
        log.info("subscription.deleted", subscription_id=subscription_id)
        return web.Response(status=204)

    async def test(self, request: web.Request) -> web.Response:
        found = await self._found(request)
        if isinstance(found, web.Response):
            return found
        body = await self._body(request, TestRequest, optional=True)
        if isinstance(body, web.Response):
            return body
        if found.secret is None:
            return problem(409, f"cannot send a test: {Subscription.UNDECRYPTABLE}")
        if found.polled:
            return _json(await self._feed_test(request, found, body.event))
        tester = request.config_dict.get(TESTER)
        if tester is None:
            return problem(503, "this process runs without the dispatcher")
        record = await tester.send_test(found, body.event)
        return _json(_test_result(record))

    @staticmethod
    async def _feed_test(request: web.Request, found: Subscription, event: str) -> TestResult:
        """A polling subscription's test: recorded in its feed, where its reader finds it."""
        incoming = test_event(event, found.org_id, datetime.now(UTC))
        delivery = NewDelivery(
            ids.new_id(ids.DELIVERY), incoming.id, found.id, incoming.event, found.org_id, poll=True
        )
        # A feed's delivery is never leased: the lease is only what the signature asks for.
        await _store(request).record_events([incoming], [delivery], Lease("api", 0))
        request.config_dict[FEED_WAITS].notify([found.id])
        return TestResult(
            deliveryId=delivery.id,
            eventId=incoming.id,
            status="available",
            responseCode=None,
            durationMs=None,
            error=None,
        )

    # -- the delivery log and recovery ---------------------------------------------------------

    async def deliveries(self, request: web.Request) -> web.Response:
        """The log, newest first; filters and the cursor are checked before the lookup."""
        query = LogQuery(request.query)
        found = await self._found(request)
        if isinstance(found, web.Response):
            return found
        if query.errors:
            return invalid(query.errors)
        page = await _store(request).list_deliveries(
            request[ORG], found.id, query.where, PageRequest(query.limit, query.after)
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

    async def hours(self, request: web.Request) -> web.Response:
        """The last 24 hours of its attempts from the hourly counters, for the console's
        chart: no query parameters."""
        found = await self._found(request)
        if isinstance(found, web.Response):
            return found
        if request.query:
            return invalid([(name, "unknown query parameter") for name in request.query])
        stats = await _store(request).subscription_hours(found.id)
        return _json(
            SubscriptionHours.model_validate(
                {
                    "hours": [
                        {
                            "start": iso(hour.start),
                            "attempts": hour.attempts,
                            "sent": hour.sent,
                            "failed": dict(hour.failed),
                            "p95LatencyMs": hour.p95_latency_ms,
                        }
                        for hour in stats
                    ]
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
        return _json(delivery_detail(detail, found.data_fields))

    @staticmethod
    def _cannot_send(blocked: CannotSend) -> web.Response:
        """409: the subscription's deliveries cannot go out now, with what to do."""
        reason = blocked.reason
        if blocked.slug == "subscription-inactive":
            reason += ' (PATCH {"active": true})'
        return problem(409, reason, slug=blocked.slug)

    @staticmethod
    def _wake(request: web.Request) -> recovery.Wake | None:
        """The dispatcher's wake-up when this process runs one; else a dispatcher elsewhere
        claims what is due within its poll."""
        tester = request.config_dict.get(TESTER)
        return None if tester is None else tester.wake

    async def redeliver(self, request: web.Request) -> web.Response:
        """One more attempt now, same delivery id, signed afresh; 202 with its log row."""
        found = await self._found(request)
        if isinstance(found, web.Response):
            return found
        delivery_id = await self._delivery_id(request)
        if not delivery_id:
            return self._no_delivery(request)
        try:
            detail = await recovery.redeliver(
                _store(request), found, delivery_id, wake=self._wake(request)
            )
        except DeliveryNotFound:
            return self._no_delivery(request)
        except PayloadRemoved as exc:
            return problem(410, str(exc), slug="payload-removed")
        except CannotSend as exc:
            return self._cannot_send(exc)
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
        try:
            replayed = await recovery.replay(
                _store(request),
                found,
                body.ask(),
                retention_s=request.config_dict[SETTINGS].retention,
                wake=self._wake(request),
            )
        except InvalidInput as exc:
            return invalid(exc.errors)
        except PayloadRemoved as exc:
            return problem(410, f"nothing to replay: {exc}", slug="payload-removed")
        result = ReplayResult(
            count=replayed.count,
            nextSince=iso_or_none(replayed.next_since),
            withoutPayload=replayed.without_payload,
            filtered=replayed.filtered,
        )
        return _json(result, status=202)

    async def rotate_secret(self, request: web.Request) -> web.Response:
        subscription_id = self._id(request)
        if subscription_id is None:
            return self._not_found(request.match_info["id"])
        body = await self._body(request, RotateSecret, optional=True)
        if isinstance(body, web.Response):
            return body
        try:
            rotated = await secrets.rotate_secret(
                _store(request),
                request[ORG],
                subscription_id,
                body.overlapSeconds,
                on_change=request.config_dict.get(ON_CHANGE),
                actor=request[ACTOR],
            )
        except SubscriptionNotFound:
            return self._not_found(subscription_id)
        expires = iso(rotated.previous_until)
        return _json(
            RotatedSecret(
                secret=rotated.secret,
                standardSecret=standard_secret(rotated.secret),
                publicKey=public_key_or_none(rotated.subscription),
                previousSecretExpiresAt=expires,
            )
        )


def _not_for_polling(given: set[str], body: BaseModel) -> list[tuple[str, str]]:
    """What a polling subscription refuses: what only a push has (a URL, static headers, a
    rate limit), when given a value."""
    return [
        (name, "a polling subscription has no URL to send to")
        for name in ("url", "headers", "rateLimit")
        if name in given and getattr(body, name) is not None
    ]


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


async def _only_post(request: web.Request) -> web.Response:
    raise web.HTTPMethodNotAllowed(request.method, ["POST"])


def _filter_json(document: dict[str, Any] | None) -> str | None:
    """A filter as stored: its compact JSON (checked already by the request's model)."""
    return None if document is None else orjson.dumps(document).decode()
