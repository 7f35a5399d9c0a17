"""The wall clock, in the epoch milliseconds the store and the records keep, and those
milliseconds as the RFC 3339 times people read.

One `now_ms`, so that every place that stamps a time reads the same clock (and a test can see
where times come from)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from service.events import format_time


def now_ms() -> int:
    """Milliseconds since the epoch, now."""
    return int(time.time() * 1000)


def iso(ms: int) -> str:
    """Epoch milliseconds as the RFC 3339 text the API and the command line show."""
    return format_time(datetime.fromtimestamp(ms / 1000, UTC))


def iso_or_none(ms: int | None) -> str | None:
    return None if ms is None else iso(ms)


def to_ms(dt: datetime) -> int:
    """An aware datetime as epoch milliseconds."""
    return int(dt.timestamp() * 1000)
