"""What happens after an attempt: `retry.decide` with no I/O, every branch of SPEC section 2."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from service.delivery.attempt import Exchange, ResultClass, classify
from service.delivery.retry import GONE, RetryPolicy, decide, next_delay, parse_retry_after
from service.domain import DeliveryStatus

T0 = 1_800_000_000.0  # epoch seconds of the attempt's start
POLICY = RetryPolicy(schedule=(5.0, 300.0, 1800.0), disable_after=5 * 86400.0)


def exchange(
    status: int | None, *, retry_after: str | None = None, timed_out: bool = False
) -> Exchange:
    return Exchange(
        started=T0,
        duration=0.25,
        status=status,
        result=classify(status, timed_out=timed_out),
        error=None,
        excerpt=None,
        retry_after=retry_after,
    )


def run(
    ex: Exchange,
    number: int = 1,
    failing_since: int | None = None,
    policy: RetryPolicy = POLICY,
) -> tuple[DeliveryStatus, float | None, str | None]:
    """(status, seconds from the attempt's end to the next one, deactivation reason)."""
    decision = decide(
        ex, number=number, failing_since_ms=failing_since, policy=policy, rng=random.Random(7)
    )
    wait = None
    if decision.next_attempt_at is not None:
        wait = decision.next_attempt_at / 1000 - (T0 + 0.25)
    return decision.status, wait, decision.deactivate


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_any_2xx_is_sent(status: int) -> None:
    assert run(exchange(status)) == (DeliveryStatus.SENT, None, None)


def test_a_2xx_is_sent_even_for_a_subscription_failing_for_weeks() -> None:
    weeks_ago = int((T0 - 30 * 86400) * 1000)
    assert run(exchange(200), failing_since=weeks_ago) == (DeliveryStatus.SENT, None, None)


def test_410_fails_the_delivery_and_deactivates() -> None:
    assert run(exchange(410)) == (DeliveryStatus.FAILED, None, GONE)


@pytest.mark.parametrize(
    ("status", "timed_out"), [(500, False), (404, False), (302, False), (None, False), (None, True)]
)
def test_other_failures_retry_on_the_schedule_with_jitter(
    status: int | None, timed_out: bool
) -> None:
    for number, base in enumerate(POLICY.schedule, start=1):
        got, wait, deactivate = run(exchange(status, timed_out=timed_out), number=number)
        assert got is DeliveryStatus.RETRYING
        assert wait is not None
        assert base * 0.8 - 0.001 <= wait <= base * 1.2 + 0.001
        assert deactivate is None


def test_the_delivery_fails_once_the_schedule_is_spent() -> None:
    assert run(exchange(500), number=len(POLICY.schedule) + 1) == (
        DeliveryStatus.FAILED,
        None,
        None,
    )


def test_retry_after_is_honoured_within_the_schedule() -> None:
    # 429 asks for 60 s: more than the first step (5 s ±20%), less than the cap (1,800 s).
    assert run(exchange(429, retry_after="60"))[1] == pytest.approx(60, abs=0.01)
    # 503 asks for a day: capped at the schedule's longest step.
    assert run(exchange(503, retry_after="86400"))[1] == pytest.approx(1800, abs=0.01)
    # Asking for less than the schedule never makes it sooner.
    assert 4 <= (run(exchange(503, retry_after="1"))[1] or 0) <= 6
    # Only 429 and 503 are listened to.
    assert 4 <= (run(exchange(500, retry_after="60"))[1] or 0) <= 6


def test_retry_after_as_an_http_date() -> None:
    # Whole seconds: the next attempt is at the date itself, 119.75 s after the attempt ended.
    when = datetime.fromtimestamp(T0, UTC) + timedelta(seconds=120)
    header = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert run(exchange(429, retry_after=header))[1] == pytest.approx(119.75, abs=0.01)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", 0.0) == 1445412480.0
    assert parse_retry_after("soon", T0) is None
    assert parse_retry_after("", T0) is None


def test_a_failure_that_ends_a_long_enough_run_of_failures_deactivates() -> None:
    just_over = int((T0 + 0.25 - POLICY.disable_after) * 1000)
    status, wait, reason = run(exchange(500), number=2, failing_since=just_over)
    assert (status, reason) == (DeliveryStatus.RETRYING, "every attempt failed for 5 days")
    assert wait is not None
    not_yet = just_over + 1000
    assert run(exchange(500), number=2, failing_since=not_yet)[2] is None


def test_a_first_failure_starts_the_clock_rather_than_deactivating() -> None:
    instant = RetryPolicy(schedule=(1.0,), disable_after=0.0)
    # With no clock running, this failure starts it: 0 s of failures is already "long enough"
    # only for a zero disable window.
    assert run(exchange(500), failing_since=None, policy=instant)[2] is not None
    assert run(exchange(500), failing_since=None)[2] is None


def test_next_delay_refuses_attempt_numbers_outside_the_schedule() -> None:
    assert next_delay(0, POLICY.schedule) is None
    assert next_delay(4, POLICY.schedule) is None
    assert next_delay(1, POLICY.schedule, rng=random.Random(1)) is not None


def test_classify() -> None:
    assert classify(204) is ResultClass.OK
    assert classify(301) is ResultClass.REDIRECT
    assert classify(404) is ResultClass.CLIENT_ERROR
    assert classify(502) is ResultClass.SERVER_ERROR
    assert classify(None) is ResultClass.CONNECTION
    assert classify(None, timed_out=True) is ResultClass.TIMEOUT
