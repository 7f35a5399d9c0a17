"""Sample catalog events shaped like the seed page's examples, and poison records that the
service must dead-letter: for demos (`identity-webhooks produce`), tests and load."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from service import ids
from service.events import CATALOG, format_time

# A record bigger than this is refused by the broker's default `message.max.bytes` (1 MiB).
_LARGEST_POISON = 900 * 1024


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
    """The Kafka record key producers are asked to use: the customer id (SPEC section 1)."""
    customer: str = event["data"]["customerId"]
    return customer.encode()


@dataclass(frozen=True, slots=True)
class Poison:
    """A record the service cannot accept. `event` picks its topic; `reason` is the
    `x-dlq-reason` the service gives it (see `service.events`)."""

    event: str
    reason: str
    key: bytes
    value: bytes | None


# One data field per event that a broken producer might send with the wrong type.
_BROKEN_FIELD: dict[str, tuple[str, object]] = {
    "verification.created": ("score", "87"),
    "customer.kyc_updated": ("kycExpiresAt", "next year"),
    "review.overridden": ("actorUserId", 42),
}


def poison_records(
    count: int,
    org_id: str,
    now: datetime,
    events: Sequence[str] = CATALOG,
    max_event_bytes: int = 256 * 1024,
) -> list[Poison]:
    """`count` records of different kinds that the service must dead-letter, cycling through
    the kinds and through `events` (which decide their topics)."""
    kinds = [
        "invalid_json",
        "not_an_object",
        "missing_field",
        "invalid_field",
        "invalid_utf8",
        "empty",
    ]
    if max_event_bytes < _LARGEST_POISON:
        kinds.append("too_large")
    records = []
    for i in range(count):
        event = events[i % len(events)]
        records.append(_poison(kinds[i % len(kinds)], event, org_id, now, max_event_bytes))
    return records


def _poison(kind: str, event: str, org_id: str, now: datetime, max_bytes: int) -> Poison:
    envelope = sample_event(event, org_id, now)
    key = record_key(envelope)
    if kind == "invalid_json":
        return Poison(event, "invalid_json", key, orjson.dumps(envelope)[:-7])
    if kind == "not_an_object":
        return Poison(event, "not_an_object", key, orjson.dumps([envelope]))
    if kind == "missing_field":
        del envelope["orgId"]
        return Poison(event, "missing_field:orgId", key, orjson.dumps(envelope))
    if kind == "invalid_field":
        name, bad = _BROKEN_FIELD[event]
        envelope["data"][name] = bad
        return Poison(event, f"invalid_field:data.{name}", key, orjson.dumps(envelope))
    if kind == "invalid_utf8":
        return Poison(event, "invalid_utf8", key, b"\xff\xfe" + orjson.dumps(envelope))
    if kind == "empty":
        return Poison(event, "empty", key, None)  # a tombstone
    envelope["data"]["padding"] = "x" * max_bytes
    return Poison(event, "too_large", key, orjson.dumps(envelope))
