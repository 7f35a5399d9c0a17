"""The OpenAPI 3.1 document, generated from the same pydantic models the handlers validate with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service import __version__
from service.api import models
from service.api.audit import AUDIT_PATH
from service.api.customers import CUSTOMERS, DRY_RUN
from service.api.deliverylog import LOG_STATUSES
from service.api.feeds import EVENTS, MAX_WAIT
from service.api.paging import DEFAULT_LIMIT, MAX_LIMIT
from service.api.routes import BASE, MAX_SEARCH
from service.events import MAX_ID_LENGTH, SUBSCRIBABLE
from service.operations.erasure import MAX_CUSTOMER_ID
from service.operations.recovery import MAX_REPLAY

_REQUESTS: tuple[type[BaseModel], ...] = (
    models.CreateSubscription,
    models.PatchSubscription,
    models.ReplayRequest,
    models.RotateSecret,
    models.FilterTest,
    models.TestRequest,
)
_MODELS: list[type[BaseModel]] = [
    *_REQUESTS,
    models.CreatedSubscription,
    models.SubscriptionRow,
    models.SubscriptionList,
    models.TestResult,
    models.EventTypes,
    models.DeliveryRow,
    models.DeliveryList,
    models.SubscriptionHours,
    models.DeliveryDetail,
    models.ReplayResult,
    models.RotatedSecret,
    models.CustomerErasure,
    models.FilterVerdict,
    models.Feed,
    models.EventTrail,
    models.AuditList,
    models.Problem,
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def _problems(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {
            "description": "problem details (RFC 9457)",
            "content": {"application/problem+json": {"schema": _ref(models.Problem)}},
        }
        for status in statuses
    }


def schemas() -> dict[str, Any]:
    """Each model's JSON Schema, with nested models lifted into components."""
    components: dict[str, Any] = {}
    for model in _MODELS:
        schema = model.model_json_schema(
            ref_template="#/components/schemas/{model}",
            mode="validation" if model in _REQUESTS else "serialization",
        )
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    return components


def _links() -> dict[str, Any]:
    """What a new subscription's id leads to (OpenAPI links, which API fuzzers follow)."""
    by_id = {"id": "$response.body#/id"}
    return {
        name: {"operationId": operation, "parameters": by_id}
        for name, operation in (
            ("GetSubscription", "getSubscription"),
            ("UpdateSubscription", "updateSubscription"),
            ("TestSubscription", "testSubscription"),
            ("DeleteSubscription", "deleteSubscription"),
            ("ListDeliveries", "listDeliveries"),
            ("ReplaySubscription", "replaySubscription"),
            ("RotateSecret", "rotateSecret"),
            ("ReadFeed", "readFeed"),
        )
    }


def _paging() -> list[dict[str, Any]]:
    return [
        {
            "name": "limit",
            "in": "query",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT,
            },
        },
        {
            "name": "cursor",
            "in": "query",
            "description": "the previous page's nextCursor (opaque)",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+={0,2}$"},
        },
    ]


def _log_filters() -> list[dict[str, Any]]:
    time = {"type": "string", "format": "date-time"}
    return [
        {
            "name": "status",
            "in": "query",
            "schema": {"enum": list(LOG_STATUSES)},
        },
        {"name": "event", "in": "query", "schema": {"enum": [*SUBSCRIBABLE, "webhook.test"]}},
        {"name": "since", "in": "query", "description": "createdAt at or after", "schema": time},
        {"name": "until", "in": "query", "description": "createdAt before", "schema": time},
        {
            "name": "eventId",
            "in": "query",
            "description": "only the delivery of this event",
            "schema": _ID_TEXT,
        },
        {
            "name": "customerId",
            "in": "query",
            "description": "only deliveries of events about this customer (data.customerId)",
            "schema": _ID_TEXT,
        },
        {
            "name": "verificationId",
            "in": "query",
            "description": "only deliveries of events about this verification "
            "(data.verificationId)",
            "schema": _ID_TEXT,
        },
    ]


_ID_TEXT = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID_LENGTH,
    "pattern": "^[^\\x00-\\x1F\\x7F]+$",
}


def _feed() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "readFeed",
            "description": "A polling subscription's deliveries after `after`, oldest first: "
            "each with the exact body a push would POST and the headers it would carry (signed "
            "at this read). Reading is repeatable (the same ids after the same cursor); passing "
            "a cursor tells the service that what came before it was read. With `wait`, holds "
            "the request until something arrives or that many seconds pass.",
            "parameters": [
                {
                    "name": "after",
                    "in": "query",
                    "description": "a nextCursor this feed returned (opaque); none: from the "
                    "oldest delivery it keeps",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+={0,2}$"},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_LIMIT,
                        "default": DEFAULT_LIMIT,
                    },
                },
                {
                    "name": "wait",
                    "in": "query",
                    "description": "seconds to wait when nothing is there (long poll)",
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT, "default": 0},
                },
            ],
            "responses": {
                "200": {"description": "what came after the cursor", "content": _json(models.Feed)},
                **_problems(401, 404, 409, 410, 422),
            },
        }
    }


def _event() -> dict[str, Any]:
    return {
        "parameters": [
            {"name": "eventId", "in": "path", "required": True, "schema": _ID_TEXT},
        ],
        "get": {
            "operationId": "getEvent",
            "description": "The event (by its id) and every subscription's delivery of it in "
            "your org, with its status.",
            "responses": {
                "200": {"description": "the event", "content": _json(models.EventTrail)},
                **_problems(401, 404),
            },
        },
    }


def _audit() -> dict[str, Any]:
    time = {"type": "string", "format": "date-time"}
    return {
        "get": {
            "operationId": "listAudit",
            "description": "Your org's audit trail, newest first: every change to its "
            "subscriptions and API keys, with the time, the actor (an API key's id and name, "
            "cli with the operating-system user, or system), the action and what changed "
            "(never a secret, header value or credential). Read-only.",
            "parameters": [
                {"name": "since", "in": "query", "description": "at or after", "schema": time},
                {"name": "until", "in": "query", "description": "before", "schema": time},
                {
                    "name": "subscriptionId",
                    "in": "query",
                    "schema": {"type": "string", "pattern": "^whk_[0-9A-HJKMNP-TV-Z]{26}$"},
                },
                {
                    "name": "action",
                    "in": "query",
                    "description": "only these actions, comma-separated",
                    "schema": {"type": "string"},
                },
                *_paging(),
            ],
            "responses": {
                "200": {"description": "a page of entries", "content": _json(models.AuditList)},
                **_problems(401, 422),
            },
        }
    }


def _erasure() -> dict[str, Any]:
    customer_param = {
        "name": "customerId",
        "in": "path",
        "required": True,
        "description": "The customer's id as the events carry it (data.customerId), "
        "percent-encoded: a / as %2F, other characters as UTF-8.",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_CUSTOMER_ID,
            "pattern": "^[^\\x00-\\x1F\\x7F-\\x9F]+$",
        },
    }
    dry_run = {
        "name": DRY_RUN,
        "in": "query",
        "description": "true: only count what would be erased and cancelled; nothing changes.",
        "schema": {"type": "boolean", "default": False},
    }
    return {
        "parameters": [customer_param],
        "post": {
            "operationId": "eraseCustomer",
            "description": "Removes the payloads of the org's retained events about the "
            "customer (by data.customerId) and the response excerpts of their deliveries, "
            "keeping their metadata, and cancels their open deliveries: they cannot be sent "
            "again (redeliver and replay answer 410). Events about the customer that arrive "
            "later are delivered as usual. Another org's data is untouched. A repeat finds the "
            "same events and deliveries and cancels nothing more. Takes no body.",
            "parameters": [dry_run],
            "responses": {
                "200": {
                    "description": "the receipt (with dryRun, the counts alone)",
                    "content": _json(models.CustomerErasure),
                },
                **_problems(401, 404, 422),
            },
        },
    }


def document() -> dict[str, Any]:
    id_param = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^whk_[0-9A-HJKMNP-TV-Z]{26}$"},
    }
    delivery_param = {
        "name": "delivery",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^whd_[0-9A-HJKMNP-TV-Z]{26}$"},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Identity Platform webhooks", "version": __version__},
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"apiKey": []}],
        "paths": {
            BASE: {
                "post": {
                    "operationId": "createSubscription",
                    "requestBody": {"required": True, "content": _json(models.CreateSubscription)},
                    "responses": {
                        "201": {
                            "description": "created; holds the secret, once",
                            "content": _json(models.CreatedSubscription),
                            "links": _links(),
                        },
                        **_problems(400, 401, 413, 415, 422),
                    },
                },
                "get": {
                    "operationId": "listSubscriptions",
                    "parameters": [
                        {
                            "name": "search",
                            "in": "query",
                            "description": "only the subscription with this id and those whose "
                            "URL holds this text (case ignored); pass it again with the cursor",
                            "schema": {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_SEARCH,
                                "pattern": "^[^\\x00-\\x1F\\x7F-\\x9F]+$",
                            },
                        },
                        *_paging(),
                    ],
                    "responses": {
                        "200": {"description": "a page", "content": _json(models.SubscriptionList)},
                        **_problems(401, 422),
                    },
                },
            },
            BASE + "/event-types": {
                "get": {
                    "operationId": "listEventTypes",
                    "description": "Every event a subscription can receive, with the JSON Schema "
                    "of its envelope and an example; the same for every org.",
                    "responses": {
                        "200": {"description": "the catalog", "content": _json(models.EventTypes)},
                        **_problems(401),
                    },
                },
            },
            BASE + "/filter-test": {
                "post": {
                    "operationId": "testFilter",
                    "description": "Whether a content filter matches an event and, if not, which "
                    "clause refused it. Nothing is stored or sent; the same for every org.",
                    "requestBody": {"required": True, "content": _json(models.FilterTest)},
                    "responses": {
                        "200": {
                            "description": "the verdict",
                            "content": _json(models.FilterVerdict),
                        },
                        **_problems(400, 401, 413, 415, 422),
                    },
                },
            },
            BASE + "/{id}": {
                "parameters": [id_param],
                "get": {
                    "operationId": "getSubscription",
                    "responses": {
                        "200": {"description": "the row", "content": _json(models.SubscriptionRow)},
                        **_problems(401, 404),
                    },
                },
                "patch": {
                    "operationId": "updateSubscription",
                    "requestBody": {"required": True, "content": _json(models.PatchSubscription)},
                    "responses": {
                        "200": {"description": "the row", "content": _json(models.SubscriptionRow)},
                        **_problems(400, 401, 404, 413, 415, 422),
                    },
                },
                "delete": {
                    "operationId": "deleteSubscription",
                    "responses": {
                        "204": {"description": "deleted; pending deliveries cancelled"},
                        **_problems(401, 404),
                    },
                },
            },
            BASE + "/{id}/test": {
                "parameters": [id_param],
                "post": {
                    "operationId": "testSubscription",
                    "requestBody": {"required": False, "content": _json(models.TestRequest)},
                    "responses": {
                        "200": {
                            "description": "the first attempt's result",
                            "content": _json(models.TestResult),
                        },
                        **_problems(400, 401, 404, 409, 413, 415, 422, 503),
                    },
                },
            },
            BASE + "/{id}/events": {"parameters": [id_param], **_feed()},
            BASE + "/{id}/deliveries": {
                "parameters": [id_param],
                "get": {
                    "operationId": "listDeliveries",
                    "description": "The subscription's delivery log, newest first.",
                    "parameters": [*_log_filters(), *_paging()],
                    "responses": {
                        "200": {"description": "a page", "content": _json(models.DeliveryList)},
                        **_problems(401, 404, 422),
                    },
                },
            },
            BASE + "/{id}/hours": {
                "parameters": [id_param],
                "get": {
                    "operationId": "getSubscriptionHours",
                    "description": "The subscription's attempts over the last 24 hours, an "
                    "hour each: attempts, sent, failed by result class, p95 latency.",
                    "responses": {
                        "200": {
                            "description": "24 hours, oldest first",
                            "content": _json(models.SubscriptionHours),
                        },
                        **_problems(401, 404, 422),
                    },
                },
            },
            BASE + "/{id}/deliveries/{delivery}": {
                "parameters": [id_param, delivery_param],
                "get": {
                    "operationId": "getDelivery",
                    "responses": {
                        "200": {
                            "description": "the delivery, its payload and its attempts",
                            "content": _json(models.DeliveryDetail),
                        },
                        **_problems(401, 404),
                    },
                },
            },
            BASE + "/{id}/deliveries/{delivery}/redeliver": {
                "parameters": [id_param, delivery_param],
                "post": {
                    "operationId": "redeliver",
                    "description": "Sends it again now: same X-Identity-Delivery, signed "
                    "afresh, one more attempt in its log (a sent or failed one too).",
                    "responses": {
                        "202": {"description": "due now", "content": _json(models.DeliveryRow)},
                        **_problems(401, 404, 409, 410),
                    },
                },
            },
            BASE + "/{id}/replay": {
                "parameters": [id_param],
                "post": {
                    "operationId": "replaySubscription",
                    "description": "Re-sends the org's retained events that occurred in the "
                    "window and match the subscription, oldest first, at most "
                    f"{MAX_REPLAY} per call; what is pending already is not queued again.",
                    "requestBody": {"required": True, "content": _json(models.ReplayRequest)},
                    "responses": {
                        "202": {"description": "queued", "content": _json(models.ReplayResult)},
                        **_problems(400, 401, 404, 410, 413, 415, 422),
                    },
                },
            },
            BASE + "/{id}/rotate-secret": {
                "parameters": [id_param],
                "post": {
                    "operationId": "rotateSecret",
                    "description": "A new signing secret, shown once; the previous one keeps "
                    "signing (a second v1=) for overlapSeconds.",
                    "requestBody": {"required": False, "content": _json(models.RotateSecret)},
                    "responses": {
                        "200": {"description": "rotated", "content": _json(models.RotatedSecret)},
                        **_problems(400, 401, 404, 413, 415, 422),
                    },
                },
            },
            CUSTOMERS + "/{customerId}/erase": _erasure(),
            EVENTS + "/{eventId}": _event(),
            AUDIT_PATH: _audit(),
        },
    }
