"""The delivery log as both the management API and the command line check and show it: the log's
filters and the JSON shapes of the log. No HTTP here: the handlers turn the filters' errors into
a 422, the command line into one line and exit code 2."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

import orjson

from service.api.models import AttemptRow, DeliveryDetail, Errors
from service.api.paging import decode_cursor, page_limit
from service.clock import iso, iso_or_none, to_ms
from service.domain import (
    AttemptLog,
    DeliveryFilter,
    DeliveryLogEntry,
    DeliveryLogRow,
    DeliveryStatus,
)
from service.events import MAX_ID_LENGTH, SUBSCRIBABLE, TEST_EVENT, parse_time, project
from service.ids import LOG_POSITION

LOG_QUERY = (
    "status",
    "event",
    "since",
    "until",
    "limit",
    "cursor",
    "eventId",
    "customerId",
    "verificationId",
)
LOG_STATUSES = ("pending", "available", "retrying", "sent", "failed", "cancelled")
_SEARCHED = re.compile(rf"[^\x00-\x1F\x7F]{{1,{MAX_ID_LENGTH}}}")


def query_time(query: Mapping[str, str], name: str, errors: Errors) -> int | None:
    """The RFC 3339 time of query parameter `name` as epoch ms (None when absent); a bad one
    is added to `errors`."""
    if name not in query:
        return None
    try:
        return to_ms(parse_time(query[name]))
    except ValueError as exc:
        errors.append((name, str(exc)))
        return None


class LogQuery:
    """The delivery log's query (the API's query string, the command line's options), checked:
    what it filters on, or the errors."""

    def __init__(self, query: Mapping[str, str]) -> None:
        self.errors: Errors = [
            (name, "unknown query parameter") for name in query if name not in LOG_QUERY
        ]
        self.limit = page_limit(query, self.errors)
        self.after: str | None = None
        if "cursor" in query:
            try:
                self.after = decode_cursor(query["cursor"], LOG_POSITION)
            except ValueError as exc:
                self.errors.append(("cursor", str(exc)))
        status = query.get("status")
        if status is not None and status not in LOG_STATUSES:
            self.errors.append(("status", f"must be one of {', '.join(LOG_STATUSES)}"))
            status = None
        event = query.get("event")
        if event is not None and event not in SUBSCRIBABLE and event != TEST_EVENT:
            self.errors.append(("event", f"is not an event of the catalog (or {TEST_EVENT})"))
            event = None
        since, until = (
            query_time(query, "since", self.errors),
            query_time(query, "until", self.errors),
        )
        if since is not None and until is not None and until <= since:
            self.errors.append(("until", "must be after since"))
        searched = {}
        for name in ("eventId", "customerId", "verificationId"):
            value = query.get(name)
            if value is not None and not _SEARCHED.fullmatch(value):
                message = f"must be 1 to {MAX_ID_LENGTH} characters, no control characters"
                self.errors.append((name, message))
                value = None
            searched[name] = value
        self.where = DeliveryFilter(
            status=None if status is None else DeliveryStatus(status),
            event=event,
            since=since,
            until=until,
            event_id=searched["eventId"],
            customer_id=searched["customerId"],
            verification_id=searched["verificationId"],
        )


def _attempt(attempt: AttemptLog) -> dict[str, Any]:
    return {
        "at": iso(attempt.at),
        "responseCode": attempt.response_code,
        "durationMs": attempt.duration_ms,
        "error": attempt.error,
    }


def delivery_row(row: DeliveryLogRow) -> dict[str, Any]:
    """One row of the log in the API's shape (`DeliveryRow`)."""
    return {
        "id": row.id,
        "eventId": row.event_id,
        "event": row.event,
        # A delivery of a deleted subscription is cancelled; the log never shows those.
        "status": row.status.value,
        "createdAt": iso(row.created_at),
        "attemptCount": row.attempt_count,
        "lastAttempt": None if row.last_attempt is None else _attempt(row.last_attempt),
        "nextAttemptAt": iso_or_none(row.next_attempt_at),
        "cancelledReason": row.cancelled_reason,
    }


def delivery_detail(
    detail: DeliveryLogEntry, data_fields: Collection[str] | None
) -> DeliveryDetail:
    """One delivery with its payload and attempts, in the API's shape: the payload as it is
    sent now, cut down to the subscription's current `data_fields` (None: all of `data`)."""
    payload: dict[str, Any] | None = None
    if detail.payload is not None:
        sent = detail.payload if data_fields is None else project(detail.payload, data_fields)
        try:
            payload = orjson.loads(sent)
        except orjson.JSONDecodeError:  # every accepted event is a JSON object; be safe
            payload = {"unreadable": True}
    removed = None
    if (gone := detail.gone) is not None:
        removed = {
            "reason": "undecryptable" if gone.reason is None else gone.reason.value,
            "at": iso_or_none(gone.at),
            "detail": gone.detail,
        }
    attempts = [
        AttemptRow(**_attempt(a), number=a.number, responseExcerpt=a.response_excerpt)
        for a in detail.attempts
    ]
    return DeliveryDetail.model_validate(
        {
            **delivery_row(detail.row),
            "payload": payload,
            "payloadRemoved": removed,
            "attempts": attempts,
        }
    )
