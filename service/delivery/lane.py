"""A lane per subscription: its bounded queue, its bounded concurrency and its circuit breaker;
and `Lanes`, the set of lanes one process has open.

A slow or dead endpoint only ever fills its own lane: at most `concurrency` requests in flight and
`capacity` deliveries queued in memory. What does not fit stays `pending` in the store and is
claimed when the lane has room (see `claimer`), so memory stays bounded however large a backlog
grows.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from service.store.models import DeliveryJob
from service.supervise import Fatal

Run = Callable[[DeliveryJob], Coroutine[Any, Any, bool]]


class Lane:
    """One subscription's bounded queue and bounded concurrency.

    A lane whose endpoint keeps failing drops to one request in flight (probing) until a success,
    so a dead endpoint holds one pooled connection, not `concurrency` of them, while it retries.
    After `BREAK_AFTER_FAILURES` failures in a row its circuit opens: it waits a cooldown (1 s,
    doubling up to 10 s) between attempts, so a dead endpoint with a large backlog due gets a
    probe every few seconds rather than a thousand doomed requests a second that take CPU from
    every other lane. Waiting deliveries keep their leases and attempt counts (no attempt was
    made); the first success, or a successful `/test`, closes the circuit.

    The lane also keeps the subscription's failure clock (`failing_since`, epoch ms) for the
    disable rule: seeded from the store when the lane opens, moved by each attempt in the order
    they end, and corrected by what the store returns when outcomes are recorded.
    """

    PROBE_AFTER_FAILURES = 3
    BREAK_AFTER_FAILURES = 10
    COOLDOWN_START = 1.0
    COOLDOWN_MAX = 10.0

    def __init__(
        self,
        subscription_id: str,
        concurrency: int,
        capacity: int,
        run: Run,
        on_room: Callable[[], None],
        *,
        failing_since: int | None = None,
        fatal: Fatal | None = None,
    ) -> None:
        self.subscription_id = subscription_id
        self.failing_since = failing_since
        self._concurrency = concurrency
        self._capacity = capacity
        self._run = run
        self._on_room = on_room
        self._fatal = fatal or Fatal()
        self._queue: deque[DeliveryJob] = deque()
        self._held: set[str] = set()  # queued or in flight
        self._failures = 0
        self._cooldown = 0.0
        self._resume_at = 0.0  # loop time the open circuit allows the next attempt
        self._resume: asyncio.TimerHandle | None = None
        self.backlogged = False  # jobs were turned away and wait in the store
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def idle(self) -> bool:
        return not self._held and not self.backlogged and not self.tasks

    @property
    def held(self) -> set[str]:
        return self._held

    @property
    def room(self) -> int:
        return self._capacity - len(self._queue)

    @property
    def wants_claim(self) -> bool:
        """Deliveries were turned away and at least half the queue is free for them."""
        return self.backlogged and self.room * 2 >= self._capacity

    @property
    def concurrency(self) -> int:
        return 1 if self._failures >= self.PROBE_AFTER_FAILURES else self._concurrency

    @property
    def circuit_open(self) -> bool:
        return self._resume_at > asyncio.get_running_loop().time()

    def succeeded(self) -> None:
        """The endpoint answered 2xx through `/test`: full speed again."""
        self._close()
        self._pump()

    def _close(self) -> None:
        self._failures = 0
        self._cooldown = 0.0
        self._resume_at = 0.0
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None

    def _failed(self) -> None:
        self._failures += 1
        if self._failures >= self.BREAK_AFTER_FAILURES:
            self._cooldown = min(self.COOLDOWN_MAX, max(self.COOLDOWN_START, self._cooldown * 2))
            self._resume_at = asyncio.get_running_loop().time() + self._cooldown

    def offer(self, job: DeliveryJob) -> bool:
        """Takes the job unless the queue is full; a job already held counts as taken."""
        if job.id in self._held:
            return True
        if len(self._queue) >= self._capacity:
            self.backlogged = True
            return False
        self._queue.append(job)
        self._held.add(job.id)
        self._pump()
        return True

    def drain_queue(self) -> list[str]:
        """Empties the queue (not what is in flight), for shutdown; returns the ids."""
        dropped = [job.id for job in self._queue]
        self._queue.clear()
        self._held.difference_update(dropped)
        return dropped

    def _pump(self) -> None:
        if self._queue and self.circuit_open:
            if self._resume is None:
                self._resume = asyncio.get_running_loop().call_at(self._resume_at, self._reopen)
            return
        while self._queue and len(self.tasks) < self.concurrency:
            job = self._queue.popleft()
            task = asyncio.create_task(self._attempt(job), name=f"attempt-{job.id}")
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            # An attempt that raises is a bug: it ends the process rather than vanish.
            self._fatal.watch(task)
        if self.wants_claim:
            self._on_room()

    def _reopen(self) -> None:
        self._resume = None
        self._pump()

    async def _attempt(self, job: DeliveryJob) -> None:
        ok = False
        try:
            ok = await self._run(job)
        finally:
            if ok:
                self._close()
            else:
                self._failed()
            self._held.discard(job.id)
            # Leave the in-flight set before pumping, or a full lane would never start its
            # next job (the done-callback runs only after this returns).
            self.tasks.discard(asyncio.current_task())
            self._pump()


class Lanes:
    """The open lanes of this process, by subscription id. A lane opens with its first delivery
    and is forgotten once idle."""

    def __init__(self, make: Callable[[str], Lane]) -> None:
        self._make = make
        self._lanes: dict[str, Lane] = {}

    def __iter__(self) -> Iterator[Lane]:
        return iter(list(self._lanes.values()))

    def __len__(self) -> int:
        return len(self._lanes)

    def get(self, subscription_id: str) -> Lane | None:
        return self._lanes.get(subscription_id)

    def open(self, subscription_id: str) -> Lane:
        lane = self._lanes.get(subscription_id)
        if lane is None:
            lane = self._lanes[subscription_id] = self._make(subscription_id)
        return lane

    def held(self) -> set[str]:
        """Every delivery id queued or in flight in any lane."""
        return {i for lane in self._lanes.values() for i in lane.held}

    def in_flight(self) -> set[asyncio.Task[None]]:
        return {t for lane in self._lanes.values() for t in lane.tasks}

    def forget_idle(self) -> None:
        for sid in [sid for sid, lane in self._lanes.items() if lane.idle]:
            del self._lanes[sid]

    def circuits_open(self) -> int:
        return sum(lane.circuit_open for lane in self._lanes.values())
