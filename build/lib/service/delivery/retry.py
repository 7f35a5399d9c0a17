"""What happens after an attempt (SPEC section 2): sent, retry at a time, failed, and whether the
subscription is deactivated — one pure function, `decide`, of the attempt's exchange, its number,
the subscription's failure clock and the policy. No I/O and no clock of its own: the dispatcher
passes the times and the randomness, so unit tests call it directly."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from service.delivery.attempt import Exchange, ResultClass
from service.store.models import DeliveryStatus

JITTER = 0.2  # ±20%
GONE = "the endpoint answered 410 Gone"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The schedule of waits after each failed attempt, and how long a subscription may fail
    without a single success before it is deactivated (both in seconds)."""

    schedule: tuple[float, ...]
    disable_after: float


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a delivery goes after one attempt."""

    status: DeliveryStatus
    next_attempt_at: int | None  # epoch ms, when `status` is retrying
    deactivate: str | None  # the reason, when the subscription is to be deactivated


def decide(
    exchange: Exchange,
    *,
    number: int,
    failing_since_ms: int | None,
    policy: RetryPolicy,
    rng: random.Random,
) -> Decision:
    """After attempt `number` (1 for the first) ended as `exchange`.

    `failing_since_ms` is when the subscription's current run of failures began (None when its
    latest attempt succeeded); this attempt, if it failed, starts the run when there is none. A 2xx
    is sent. A 410 fails the delivery and deactivates the subscription. Anything else retries on
    the schedule — 429 and 503 honour `Retry-After` within it — or fails once the schedule is
    spent; and a failure that ends a run of failures as long as `disable_after` deactivates.
    """
    finished = exchange.started + exchange.duration
    if exchange.result is ResultClass.OK:
        return Decision(DeliveryStatus.SENT, None, None)
    if exchange.status == 410:
        return Decision(DeliveryStatus.FAILED, None, GONE)
    wait = (
        parse_retry_after(exchange.retry_after, finished) if exchange.status in (429, 503) else None
    )
    delay = next_delay(number, policy.schedule, retry_after=wait, rng=rng)
    since = failing_since_ms if failing_since_ms is not None else int(exchange.started * 1000)
    deactivate = None
    if finished * 1000 - since >= policy.disable_after * 1000:
        deactivate = f"every attempt failed for {policy.disable_after / 86400:g} days"
    if delay is None:
        return Decision(DeliveryStatus.FAILED, None, deactivate)
    return Decision(DeliveryStatus.RETRYING, int((finished + delay) * 1000), deactivate)


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
    if when.tzinfo is None:  # "-0000": a time in UTC from a source that would not say so
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
