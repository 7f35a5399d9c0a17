"""A subscription summary's arithmetic: latency buckets and their p95, and the failure streak
kept per written batch."""

from __future__ import annotations

import math
import random

from service.domain import AttemptRecord, DeliveryStatus, failure_clocks
from service.summaries import (
    DAY_MS,
    DELIVERIES,
    HOUR_MS,
    LATENCY_BUCKETS_MS,
    LATENCY_COUNTERS,
    OK,
    failed_counter,
    hours,
    latency_counter,
    p95,
    period,
)


def test_each_duration_lands_in_the_first_bucket_that_holds_it() -> None:
    assert latency_counter(0) == "le:5"
    assert latency_counter(5) == "le:5"
    assert latency_counter(6) == "le:10"
    assert latency_counter(30_000) == "le:30000"
    assert latency_counter(30_001) == "le:inf"


def test_the_latency_counters_are_the_buckets_in_order_then_inf() -> None:
    assert (*(f"le:{b}" for b in LATENCY_BUCKETS_MS), "le:inf") == LATENCY_COUNTERS


def test_deliveries_are_counted_by_the_day_attempts_by_the_hour() -> None:
    at = 3 * DAY_MS + 5 * HOUR_MS + 1234
    assert period(at, DELIVERIES) == 3 * DAY_MS
    assert period(at, OK) == 3 * DAY_MS + 5 * HOUR_MS
    assert period(at, latency_counter(40)) == 3 * DAY_MS + 5 * HOUR_MS


def _counts(durations: list[int]) -> list[int]:
    names = [f"le:{b}" for b in LATENCY_BUCKETS_MS] + ["le:inf"]
    counts = dict.fromkeys(names, 0)
    for ms in durations:
        counts[latency_counter(ms)] += 1
    return [counts[name] for name in names]


def test_p95_is_none_without_attempts() -> None:
    assert p95(_counts([])) is None


def test_p95_stays_within_its_bucket_of_the_exact_value() -> None:
    rng = random.Random(7)
    for _ in range(200):
        durations = [int(rng.lognormvariate(5, 1.2)) for _ in range(rng.randint(1, 500))]
        # The nearest-rank p95; the estimate lies in the bucket that holds it.
        exact = sorted(durations)[math.ceil(0.95 * len(durations)) - 1]
        estimate = p95(_counts(durations))
        assert estimate is not None
        i = next((n for n, b in enumerate(LATENCY_BUCKETS_MS) if exact <= b), None)
        if i is None:
            assert estimate == LATENCY_BUCKETS_MS[-1]
            continue
        low = 0 if i == 0 else LATENCY_BUCKETS_MS[i - 1]
        assert low <= estimate <= LATENCY_BUCKETS_MS[i], (exact, estimate)


def test_p95_past_the_last_bound_reports_that_bound() -> None:
    assert p95(_counts([60_000] * 20)) == LATENCY_BUCKETS_MS[-1]


def test_all_fast_attempts_give_a_small_p95() -> None:
    estimate = p95(_counts([3] * 100))
    assert estimate is not None
    assert 0 <= estimate <= 5


def _attempt(subscription: str, status: DeliveryStatus, at: int) -> AttemptRecord:
    return AttemptRecord(
        delivery_id=f"whd_{at}",
        subscription_id=subscription,
        number=1,
        started_at=at,
        duration_ms=10,
        status_code=200 if status is DeliveryStatus.SENT else 500,
        result="2xx" if status is DeliveryStatus.SENT else "5xx",
        error=None,
        response_excerpt=None,
        new_status=status,
        next_attempt_at=None,
    )


def test_failure_streak_counts_failures_after_the_last_success() -> None:
    sent, retrying = DeliveryStatus.SENT, DeliveryStatus.RETRYING
    clocks = failure_clocks(
        [
            _attempt("a", retrying, 1),
            _attempt("a", sent, 2),
            _attempt("a", retrying, 3),
            _attempt("a", retrying, 4),
            _attempt("b", retrying, 5),
            _attempt("b", retrying, 6),
            _attempt("c", retrying, 7),
            _attempt("c", sent, 8),
        ]
    )
    # a: a success came first (the stored streak restarts), then two failures from t=3.
    assert clocks["a"] == (True, 3, 2)
    # b: no success in the batch: two more on top of the stored streak, clock from t=5.
    assert clocks["b"] == (False, 5, 2)
    # c: ends with a success: no streak.
    assert clocks["c"] == (True, None, 0)


def test_hours_are_a_day_oldest_first_with_failures_by_class_and_the_rest_as_other() -> None:
    now = 100 * HOUR_MS + 1_234
    rows = [
        (100 * HOUR_MS, "le:50", 3),
        (100 * HOUR_MS, "le:inf", 1),
        (100 * HOUR_MS, OK, 2),
        (100 * HOUR_MS, failed_counter("5xx"), 1),
        (90 * HOUR_MS, "le:10", 2),  # counted before the classes were kept
        (70 * HOUR_MS, "le:10", 9),  # older than the day: left out
    ]
    day = hours(rows, now)
    assert [h.start for h in day] == [(77 + i) * HOUR_MS for i in range(24)]
    last = day[-1]
    assert (last.attempts, last.sent, dict(last.failed)) == (4, 2, {"5xx": 1, "other": 1})
    assert last.p95_latency_ms == LATENCY_BUCKETS_MS[-1]
    assert (day[13].attempts, dict(day[13].failed), day[13].p95_latency_ms) == (2, {"other": 2}, 10)
    assert sum(h.attempts for h in day) == 6
