"""The OpenAPI 3.1 document, generated from the same pydantic models the handlers validate with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service import __version__
from service.api.models import (
    CreatedSubscription,
    CreateSubscription,
    EventTypes,
    PatchSubscription,
    Problem,
    SubscriptionList,
    SubscriptionRow,
    TestResult,
)
from service.api.routes import BASE, DEFAULT_LIMIT, MAX_LIMIT

_MODELS: list[type[BaseModel]] = [
    CreateSubscription,
    PatchSubscription,
    CreatedSubscription,
    SubscriptionRow,
    SubscriptionList,
    TestResult,
    EventTypes,
    Problem,
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def _problems(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {
            "description": "problem details (RFC 9457)",
            "content": {"application/problem+json": {"schema": _ref(Problem)}},
        }
        for status in statuses
    }


def schemas() -> dict[str, Any]:
    """Each model's JSON Schema, with nested models lifted into components."""
    components: dict[str, Any] = {}
    for model in _MODELS:
        schema = model.model_json_schema(
            ref_template="#/components/schemas/{model}",
            mode="validation"
            if model in (CreateSubscription, PatchSubscription)
            else "serialization",
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
        )
    }


def document() -> dict[str, Any]:
    id_param = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^whk_[0-9A-HJKMNP-TV-Z]{26}$"},
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
                    "requestBody": {"required": True, "content": _json(CreateSubscription)},
                    "responses": {
                        "201": {
                            "description": "created; holds the secret, once",
                            "content": _json(CreatedSubscription),
                            "links": _links(),
                        },
                        **_problems(400, 401, 413, 415, 422),
                    },
                },
                "get": {
                    "operationId": "listSubscriptions",
                    "parameters": [
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
                    ],
                    "responses": {
                        "200": {"description": "a page", "content": _json(SubscriptionList)},
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
                        "200": {"description": "the catalog", "content": _json(EventTypes)},
                        **_problems(401),
                    },
                },
            },
            BASE + "/{id}": {
                "parameters": [id_param],
                "get": {
                    "operationId": "getSubscription",
                    "responses": {
                        "200": {"description": "the row", "content": _json(SubscriptionRow)},
                        **_problems(401, 404),
                    },
                },
                "patch": {
                    "operationId": "updateSubscription",
                    "requestBody": {"required": True, "content": _json(PatchSubscription)},
                    "responses": {
                        "200": {"description": "the row", "content": _json(SubscriptionRow)},
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
                    "responses": {
                        "200": {
                            "description": "the first attempt's result",
                            "content": _json(TestResult),
                        },
                        **_problems(401, 404, 409, 503),
                    },
                },
            },
        },
    }
