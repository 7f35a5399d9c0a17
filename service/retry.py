"""When to try again: the retry schedule with jitter, `Retry-After`, and the disable rule
(SPEC section 2). Pure functions; the dispatcher supplies the clock and the randomness."""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

JITTER = 0.2  # ±20%


class ResultClass(enum.StrEnum):
    """How an attempt ended, for metrics and the attempt log."""

    OK = "2xx"
    REDIRECT = "3xx"
    CLIENT_ERROR = "4xx"
    SERVER_ERROR = "5xx"
    TIMEOUT = "timeout"
    CONNECTION = "connection"


def classify(status: int | None, *, timed_out: bool = False) -> ResultClass:
    if timed_out:
        return ResultClass.TIMEOUT
    if status is None:
        return ResultClass.CONNECTION
    if 200 <= status < 300:
        return ResultClass.OK
    if 300 <= status < 400:
        return ResultClass.REDIRECT
    if 400 <= status < 500:
        return ResultClass.CLIENT_ERROR
    return ResultClass.SERVER_ERROR


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def next_delay(
    attempts_made: int,
    schedule: Sequence[float],
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds until the next attempt after `attempts_made` attempts, or None when the schedule
    is spent (the delivery has failed). A `Retry-After` is honoured but never makes the wait
    shorter than the schedule's nor longer than the schedule's longest step (the cap)."""
    index = attempts_made - 1
    if index < 0 or index >= len(schedule):
        return None
    base = schedule[index]
    delay = base * (1 + (rng or random).uniform(-JITTER, JITTER))
    if retry_after is not None:
        delay = min(max(delay, retry_after), max(schedule))
    return max(0.0, delay)


def should_disable(failing_since_ms: int | None, now_ms: int, disable_after_s: float) -> bool:
    """Only failures since `failing_since_ms`, for at least `disable_after_s`."""
    return failing_since_ms is not None and now_ms - failing_since_ms >= disable_after_s * 1000


def http_date(ts: float) -> str:
    """An HTTP date, for tests and receivers that want one."""
    return datetime.fromtimestamp(ts, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
