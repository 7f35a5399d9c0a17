"""The delivery log and recovery (issue 12) as both the management API and the command line check
and show them: the log's filters, replay's window, whether a subscription's deliveries can go out
now, and the JSON shapes of the log. No HTTP here: the handlers turn the errors into a 422, the
command line into one line and exit code 2."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from service.api.models import AttemptRow, DeliveryDetail, ReplayRequest
from service.api.paging import LOG_POSITION, decode_cursor
from service.events import CATALOG, TEST_EVENT, format_time, parse_time
from service.store.models import (
    AttemptLog,
    DeliveryFilter,
    DeliveryLogRow,
    DeliveryStatus,
    Subscription,
)
from service.store.models import DeliveryDetail as StoredDetail

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_REPLAY = 10_000
"""Deliveries one replay call queues at most; `nextSince` says where the next call goes on."""
LOG_QUERY = ("status", "event", "since", "until", "limit", "cursor")
LOG_STATUSES = ("pending", "retrying", "sent", "failed")

Errors = list[tuple[str, str]]
"""(field, message) pairs: what is wrong with the input, all of it at once."""


def iso(ms: int) -> str:
    return format_time(datetime.fromtimestamp(ms / 1000, UTC))


def iso_or_none(ms: int | None) -> str | None:
    return None if ms is None else iso(ms)


def to_ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


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


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    """A replay checked against its subscription and the retention: what to queue."""

    events: list[str]
    since: int
    until: int


def replay_window(
    subscription: Subscription, body: ReplayRequest, *, now: int, retention_s: float
) -> ReplayWindow | Errors:
    """The window of a replay request, or its errors: `since` within the retention, `until`
    (default now) after it, and the events (default the subscription's) among the
    subscription's."""
    retained_from = now - int(retention_s * 1000)
    since = to_ms(body.since)
    until = now if body.until is None else to_ms(body.until)
    # As documented (and as PATCH does): these may be left out, not null.
    errors: Errors = [
        (name, "cannot be null")
        for name in ("until", "events")
        if name in body.model_fields_set and getattr(body, name) is None
    ]
    if since < retained_from:
        errors.append(
            ("since", f"is before the retention (events are kept from {iso(retained_from)})")
        )
    if until <= since:
        errors.append(("until", "must be after since"))
    events: list[str] = list(subscription.events if body.events is None else body.events)
    if others := [e for e in events if e not in subscription.events]:
        errors.append(("events", f"the subscription does not receive {', '.join(others)}"))
    return errors or ReplayWindow(events, since, until)


INACTIVE = "the subscription is inactive; re-enable it first"


def cannot_send(subscription: Subscription) -> tuple[str, str] | None:
    """(slug, reason) when the subscription's deliveries cannot go out now."""
    if not subscription.active:
        return "subscription-inactive", INACTIVE
    if subscription.secret is None:
        return "secret-undecryptable", Subscription.UNDECRYPTABLE
    return None


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


def delivery_detail(detail: StoredDetail) -> DeliveryDetail:
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
