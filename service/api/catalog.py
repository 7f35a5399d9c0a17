"""The event catalog as the API shows it (`GET …/event-types`): each event's name, what it
means, the JSON Schema of its envelope — generated from the same pydantic models ingest validates
with, so the document cannot drift from what is accepted — and an example."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from service.events import (
    CATALOG,
    DATA_MODELS,
    DELIVERY_EXHAUSTED,
    OPERATIONAL,
    SUBSCRIPTION_CHANGED,
    SUBSCRIPTION_DISABLED,
    SUBSCRIPTION_FAILING,
    SUBSCRIPTION_RECOVERED,
    TEST_EVENT,
    Envelope,
    test_event_body,
)
from service.samples import sample_event

DESCRIPTIONS = {
    "verification.created": "A new verification was persisted.",
    "customer.kyc_updated": "A customer's KYC tier went up or down.",
    "review.overridden": "An analyst overrode a verification verdict.",
    TEST_EVENT: "Sent by POST …/{id}/test to check an endpoint, whatever `events` hold.",
    SUBSCRIPTION_FAILING: "Operational: another of your subscriptions has failed "
    "WEBHOOKS_FAILING_AFTER_ATTEMPTS attempts in a row (5 by default) or for "
    "WEBHOOKS_FAILING_AFTER (an hour); once per run of failures.",
    SUBSCRIPTION_DISABLED: "Operational: another of your subscriptions stopped receiving "
    "deliveries: deactivated by the service (410 Gone, failing too long) or paused by someone.",
    SUBSCRIPTION_RECOVERED: "Operational: another of your subscriptions succeeded again after a "
    "failing or disabled event about it.",
    DELIVERY_EXHAUSTED: "Operational: a delivery to another of your subscriptions failed its "
    "last attempt.",
    SUBSCRIPTION_CHANGED: "Operational: another of your subscriptions was created, changed, "
    "had its secret rotated or was deleted, and by whom.",
}
EXAMPLE_ORG = "org_8fa2c1"
EXAMPLE_TIME = datetime(2026, 5, 24, 11, 42, 18, 122000, tzinfo=UTC)  # the seed page's


def event_types() -> list[dict[str, Any]]:
    """Every event a subscription can receive: the catalog, the operational events about the
    org's subscriptions, then `webhook.test` (sent by `POST …/{id}/test` whatever a
    subscription's `events` hold)."""
    rows = []
    for name in (*CATALOG, *OPERATIONAL, TEST_EVENT):
        model = DATA_MODELS[name]
        if name == TEST_EVENT:
            _, body = test_event_body(EXAMPLE_ORG, EXAMPLE_TIME)
            example = orjson.loads(body)
        else:
            example = sample_event(name, EXAMPLE_ORG, EXAMPLE_TIME)
        rows.append(
            {
                "name": name,
                "description": DESCRIPTIONS[name],
                "schema": _envelope_schema(name, model.model_json_schema()),
                "example": example,
            }
        )
    return rows


def _envelope_schema(name: str, data: dict[str, Any]) -> dict[str, Any]:
    envelope = Envelope.model_json_schema()
    envelope["title"] = name
    envelope["properties"]["event"] = {"const": name}
    envelope["properties"]["data"] = {k: v for k, v in data.items() if k != "$defs"}
    defs = {**envelope.get("$defs", {}), **data.get("$defs", {})}
    if defs:
        envelope["$defs"] = defs
    return envelope
