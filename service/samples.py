"""Sample catalog events shaped like the seed page's examples: the examples of the event catalog
(GET …/event-types), and the events of demos, tests and load."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from service import ids
from service.events import CATALOG, format_time


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
