"""Poison records: what a broken producer might send, that the service must dead-letter (each
with the `x-dlq-reason` it names). `python -m tools.produce --invalid N` publishes them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from service.events import CATALOG
from service.samples import record_key, sample_event

# A record bigger than this is refused by the broker's default `message.max.bytes` (1 MiB).
_LARGEST_POISON = 900 * 1024


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
