"""Sample catalog events shaped like the seed page's examples: the examples of the event catalog
(GET …/event-types), and the events of demos, tests and load."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from service import ids
from service.events import (
    CATALOG,
    DELIVERY_EXHAUSTED,
    OPERATIONAL,
    SUBSCRIPTION_CHANGED,
    SUBSCRIPTION_DISABLED,
    SUBSCRIPTION_FAILING,
    format_time,
)


def sample_event(event_name: str, org_id: str, now: datetime) -> dict[str, Any]:
    """One envelope of `event_name` that occurred `now`, with fresh ids."""
    at = format_time(now)
    customer = ids.new_id("cus")
    verification = ids.new_id("ver")
    data: dict[str, Any]
    if event_name == "verification.created":
        data = {
            "verificationId": verification,
            "customerId": customer,
            "method": "ktp_capture",
            "status": "verified",
            "score": 87,
        }
    elif event_name == "customer.kyc_updated":
        data = {
            "customerId": customer,
            "kycLevel": "premium",
            "kycLastVerifiedAt": at,
            "kycExpiresAt": format_time(now + timedelta(days=365)),
        }
    elif event_name == "review.overridden":
        data = {
            "verificationId": verification,
            "customerId": customer,
            "actorUserId": ids.new_id("usr"),
            "fromStatus": "requires_review",
            "toStatus": "verified",
            "reason": (
                "Glare on hologram but all OCR fields self-consistent. Approved per supervisor."
            ),
        }
    elif event_name in OPERATIONAL:
        data = _operational_data(event_name, now)
    else:
        raise ValueError(f"no sample for {event_name!r}")
    return {
        "id": ids.new_id("evt"),
        "event": event_name,
        "occurredAt": at,
        "orgId": org_id,
        "data": data,
    }


def seed_examples(org_id: str, now: datetime) -> list[dict[str, Any]]:
    """The seed page's three examples, one of each catalog event, occurring `now`."""
    return [sample_event(name, org_id, now) for name in CATALOG]


def record_key(event: dict[str, Any]) -> bytes:
    """The Kafka record key producers are asked to use: the customer id."""
    customer: str = event["data"]["customerId"]
    return customer.encode()


def _operational_data(event_name: str, now: datetime) -> dict[str, Any]:
    """`data` of an operational event about a made-up subscription of the org."""
    subscription = {
        "subscriptionId": ids.new_id(ids.SUBSCRIPTION),
        "url": "https://example.com/webhooks/identity",
    }
    an_hour_ago = format_time(now - timedelta(hours=1))
    if event_name == SUBSCRIPTION_FAILING:
        return {
            **subscription,
            "failingSince": an_hour_ago,
            "consecutiveFailures": 5,
            "lastStatusCode": 500,
            "lastError": "HTTP 500",
        }
    if event_name == SUBSCRIPTION_DISABLED:
        return {
            **subscription,
            "reason": "the endpoint answered 410 Gone",
            "automatic": True,
            "actor": {"type": "system", "id": None, "name": None},
            "disabledAt": format_time(now),
        }
    if event_name == DELIVERY_EXHAUSTED:
        return {
            **subscription,
            "deliveryId": ids.new_id(ids.DELIVERY),
            "eventId": ids.new_id(ids.EVENT),
            "eventType": "verification.created",
            "attempts": 8,
            "lastStatusCode": 503,
            "lastError": "HTTP 503",
        }
    if event_name == SUBSCRIPTION_CHANGED:
        return {
            **subscription,
            "action": "updated",
            "actor": {"type": "api_key", "id": ids.new_id(ids.API_KEY), "name": "kyc-service"},
            "changes": {
                "fields": ["url"],
                "url": {"old": "https://old.example.com/hooks", "new": subscription["url"]},
            },
        }
    return {**subscription, "failingSince": an_hour_ago, "recoveredAt": format_time(now)}
