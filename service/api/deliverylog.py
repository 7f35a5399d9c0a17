"""The delivery log as both the management API and the command line check and show it: the log's
filters, the request models' errors in our words, and the JSON shapes of the log. No HTTP here:
the handlers turn the errors into a 422, the command line into one line and exit code 2."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from pydantic import ValidationError

from service.api.models import AttemptRow, DeliveryDetail
from service.api.paging import decode_cursor
from service.clock import iso, iso_or_none, to_ms
from service.domain import (
    AttemptLog,
    DeliveryFilter,
    DeliveryLogEntry,
    DeliveryLogRow,
    DeliveryStatus,
)
from service.events import CATALOG, TEST_EVENT, parse_time
from service.ids import LOG_POSITION

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
LOG_QUERY = ("status", "event", "since", "until", "limit", "cursor")
LOG_STATUSES = ("pending", "retrying", "sent", "failed")

Errors = list[tuple[str, str]]
"""(field, message) pairs: what is wrong with the input, all of it at once."""


def _field(loc: Sequence[int | str]) -> str:
    """pydantic's location as a field path: ("events", 1) -> "events[1]"."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or "(body)"


def field_messages(exc: ValidationError) -> Errors:
    """A request model's validation errors as (field, message) pairs, in our words."""
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


def page_limit(query: Mapping[str, str], errors: Errors) -> int:
    """A listing's `limit` (default DEFAULT_LIMIT); a bad one is added to `errors`."""
    if "limit" not in query:
        return DEFAULT_LIMIT
    text = query["limit"]
    # The length check comes first: int() of a 4,301-digit string raises ValueError.
    if (
        not (text.isascii() and text.isdigit() and len(text) <= len(str(MAX_LIMIT)))
        or not 1 <= int(text) <= MAX_LIMIT
    ):
        errors.append(("limit", f"must be a whole number from 1 to {MAX_LIMIT}"))
        return DEFAULT_LIMIT
    return int(text)


def _time(query: Mapping[str, str], name: str, errors: Errors) -> int | None:
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
        if event is not None and event not in CATALOG and event != TEST_EVENT:
            self.errors.append(("event", f"is not an event of the catalog (or {TEST_EVENT})"))
            event = None
        since, until = _time(query, "since", self.errors), _time(query, "until", self.errors)
        if since is not None and until is not None and until <= since:
            self.errors.append(("until", "must be after since"))
        self.where = DeliveryFilter(
            status=None if status is None else DeliveryStatus(status),
            event=event,
            since=since,
            until=until,
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
    }


def delivery_detail(detail: DeliveryLogEntry) -> DeliveryDetail:
    """One delivery with its payload and attempts, in the API's shape."""
    try:
        payload = orjson.loads(detail.payload)
    except orjson.JSONDecodeError:  # every accepted event is a JSON object; be safe
        payload = {"unreadable": True}
    attempts = [
        AttemptRow(**_attempt(a), number=a.number, responseExcerpt=a.response_excerpt)
        for a in detail.attempts
    ]
    return DeliveryDetail.model_validate(
        {**delivery_row(detail.row), "payload": payload, "attempts": attempts}
    )
