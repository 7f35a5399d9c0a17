"""A lane's bounded concurrency, its probing mode and its circuit breaker, with a fake sender."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from service.delivery.lane import Lane, Lanes
from service.domain import DeliveryJob
from tests.support.virtual_time import in_virtual_time


def job(n: int) -> DeliveryJob:
    return DeliveryJob(
        id=f"whd_{n}",
        subscription_id="whk_1",
        event_id=f"evt_{n}",
        event="verification.created",
        body=b"{}",
        sibling_service=None,
        attempts=0,
        occurred_at=0,
    )


class Endpoint:
    """Answers as `healthy` says; notes each attempt and the most in flight at once."""

    def __init__(self, *, healthy: bool) -> None:
        self.healthy = healthy
        self.attempts: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def run(self, job: DeliveryJob) -> bool:
        self.attempts.append(job.id)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.001)
        self.in_flight -= 1
        return self.healthy


@pytest.fixture
def fast_breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Lane, "COOLDOWN_START", 0.5)
    monkeypatch.setattr(Lane, "COOLDOWN_MAX", 1.0)


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


async def opened(jobs: int) -> tuple[Endpoint, Lane]:
    """A lane of 8 whose endpoint has failed until its circuit opened, `jobs` offered."""
    endpoint = Endpoint(healthy=False)
    lane = Lane("whk_1", 8, 100, endpoint.run, lambda: None)
    for n in range(jobs):
        lane.offer(job(n))
    await settle()
    assert lane.circuit_open
    return endpoint, lane


@in_virtual_time
async def test_a_healthy_lane_sends_up_to_its_concurrency_at_once() -> None:
    endpoint = Endpoint(healthy=True)
    lane = Lane("whk_1", 4, 100, endpoint.run, lambda: None)
    for n in range(20):
        assert lane.offer(job(n))
    await settle()
    assert len(endpoint.attempts) == 20
    assert endpoint.most_in_flight == 4
    assert lane.idle


@in_virtual_time
async def test_a_full_queue_turns_jobs_away_and_marks_the_lane_backlogged() -> None:
    endpoint = Endpoint(healthy=True)
    lane = Lane("whk_1", 1, 2, endpoint.run, lambda: None)
    taken = [lane.offer(job(n)) for n in range(5)]
    # The first starts at once (it left the queue), two wait, the rest stay in the store.
    assert taken == [True, True, True, False, False]
    assert lane.backlogged


@pytest.mark.usefixtures("fast_breaker")
@in_virtual_time
async def test_a_failing_endpoint_opens_the_circuit_then_gets_one_probe_per_cooldown() -> None:
    # Probing (one at a time) after 3 failures; the circuit opens after 10 in a row.
    endpoint, lane = await opened(50)
    opened_at = len(endpoint.attempts)
    assert Lane.BREAK_AFTER_FAILURES <= opened_at < Lane.BREAK_AFTER_FAILURES + 8
    await settle(0.1)
    assert len(endpoint.attempts) == opened_at  # nothing sent during the cooldown
    await settle(0.5)
    assert len(endpoint.attempts) == opened_at + 1  # one probe after 0.5 s (the next at 1.5 s)
    assert lane.circuit_open
    # Nothing was dropped: the waiting jobs are still held by the lane.
    assert len(lane.held) == 50 - len(endpoint.attempts)


@pytest.mark.usefixtures("fast_breaker")
@in_virtual_time
async def test_a_successful_probe_closes_the_circuit_and_the_backlog_flows() -> None:
    endpoint, lane = await opened(50)
    endpoint.healthy = True
    await settle(0.6)  # the next probe succeeds
    assert not lane.circuit_open
    assert len(endpoint.attempts) == 50
    assert endpoint.most_in_flight == 8  # full concurrency again
    assert lane.idle


@pytest.mark.usefixtures("fast_breaker")
@in_virtual_time
async def test_a_successful_test_send_closes_the_circuit_at_once() -> None:
    endpoint, lane = await opened(30)
    endpoint.healthy = True
    lane.succeeded()  # what the dispatcher calls after a 2xx to POST .../test
    await settle()
    assert not lane.circuit_open
    assert len(endpoint.attempts) == 30


# -- rate limits --------------------------------------------------------------------------------


class PacedLane(Lane):
    """A lane that notes the loop time of each start, at the moment the lane decides it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.starts: list[float] = []

    def _started(self) -> None:
        self.starts.append(asyncio.get_running_loop().time())
        super()._started()


def spacing(starts: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(starts)]


# Loop times are floats: (t + 1/rate) - t may come out a hair under 1/rate.
EPSILON = 1e-9


@in_virtual_time
async def test_a_rate_limited_lane_spaces_its_starts_by_one_over_the_rate() -> None:
    endpoint = Endpoint(healthy=True)
    lane = PacedLane("whk_1", 4, 100, endpoint.run, lambda: None, rate=lambda: 20)
    for n in range(8):
        assert lane.offer(job(n))
    assert len(endpoint.attempts) == 0  # nothing runs before the loop turns
    assert len(lane.starts) == 1  # but only the first may start at once
    await settle(8 / 20 + 0.1)
    assert len(endpoint.attempts) == 8
    assert len(lane.starts) == 8
    assert min(spacing(lane.starts)) >= 1 / 20 - EPSILON, spacing(lane.starts)
    assert endpoint.most_in_flight == 1  # 1 ms attempts 50 ms apart never overlap
    assert lane.idle


@in_virtual_time
async def test_a_rate_change_applies_to_the_open_lane_at_its_next_start() -> None:
    endpoint = Endpoint(healthy=True)
    rate: list[int | None] = [50]
    lane = PacedLane("whk_1", 4, 100, endpoint.run, lambda: None, rate=lambda: rate[0])
    for n in range(10):
        lane.offer(job(n))
    await settle(0.07)  # a few at 50/s
    rate[0] = 10
    started = len(lane.starts)
    assert 2 <= started < 10
    await settle(1.0)
    assert len(lane.starts) == 10
    # The start due at the old pace may come; every start after it waits 1/10 s.
    slower = spacing(lane.starts[started:])
    assert min(slower) >= 1 / 10 - EPSILON, slower
    # Lifting the limit lets the rest go at once, as far as the concurrency allows.
    rate[0] = None
    for n in range(10, 20):
        lane.offer(job(n))
    await settle()
    assert len(endpoint.attempts) == 20
    assert endpoint.most_in_flight == 4


def test_a_rate_limited_lane_holds_two_seconds_worth_within_its_queue_size() -> None:
    rate: list[int | None] = [None]

    def lane(concurrency: int, queue_size: int) -> Lane:
        return Lane(
            "whk_1",
            concurrency,
            queue_size,
            Endpoint(healthy=True).run,
            lambda: None,
            rate=lambda: rate[0],
        )

    cases = [
        # (rate, concurrency, queue size): min(queue size, max(concurrency, 2 x rate))
        (None, 4, 100, 100),
        (20, 4, 100, 40),
        (1, 4, 100, 4),
        (1, 1, 100, 2),
        (20, 4, 10, 10),
        (10_000, 10, 200, 200),
    ]
    for limit, concurrency, queue_size, expected in cases:
        rate[0] = limit
        assert lane(concurrency, queue_size).capacity == expected, (limit, concurrency)


@in_virtual_time
async def test_a_rate_limited_lane_turns_away_what_is_over_its_capacity() -> None:
    endpoint = Endpoint(healthy=True)
    lane = Lane("whk_1", 10, 200, endpoint.run, lambda: None, rate=lambda: 5)
    assert lane.capacity == 10
    taken = [lane.offer(job(n)) for n in range(15)]
    # The first starts at once and leaves the queue; ten wait in memory, the rest in the store.
    assert taken == [True] * 11 + [False] * 4
    assert lane.backlogged
    assert len(lane.held) == 11
    lane.drain_queue()
    await settle()


@in_virtual_time
async def test_a_lane_within_its_spacing_is_not_forgotten_as_idle() -> None:
    """The claimer forgets idle lanes after every round; a rate-limited lane forgotten between
    two deliveries would start the next one at once (measured: 51 ms apart at 1/s)."""
    endpoint = Endpoint(healthy=True)
    lanes = Lanes(lambda sid: PacedLane(sid, 4, 100, endpoint.run, lambda: None, rate=lambda: 5))
    first = lanes.open("whk_1")
    first.offer(job(1))
    await settle(0.05)
    assert len(endpoint.attempts) == 1
    lanes.forget_idle()
    assert lanes.get("whk_1") is first  # still spacing: kept, with its pace
    first.offer(job(2))
    await settle(0.45)
    assert isinstance(first, PacedLane)
    assert min(spacing(first.starts)) >= 1 / 5 - EPSILON
    lanes.forget_idle()
    assert lanes.get("whk_1") is None  # idle once its spacing has run out


@in_virtual_time
async def test_the_pace_counts_from_when_an_attempt_really_runs() -> None:
    """On a busy loop an attempt's task may run well after the lane decided to start it; the
    next attempt still runs at least 1/rate after it (the receiver would otherwise see two
    requests close together)."""
    endpoint = Endpoint(healthy=True)
    ran: list[float] = []

    async def run(j: DeliveryJob) -> bool:
        ran.append(asyncio.get_running_loop().time())
        return await endpoint.run(j)

    lane = Lane("whk_1", 4, 100, run, lambda: None, rate=lambda: 5)
    loop = asyncio.get_running_loop()
    loop.call_soon(time.sleep, 0.15)  # the loop is busy before the first task gets to run
    lane.offer(job(1))
    lane.offer(job(2))
    await settle(0.6)
    assert len(ran) == 2
    assert ran[1] - ran[0] >= 1 / 5 - EPSILON, ran
