"""A lane per subscription: its bounded queue, its bounded concurrency and its circuit breaker;
`Lanes`, the set of lanes one process has open; and `ConnectionBudget`, how the lanes share the
process's HTTP connections.

A slow or dead endpoint only ever fills its own lane: at most `concurrency` requests in flight and
`capacity` deliveries queued in memory. What does not fit stays `pending` in the store and is
claimed when the lane has room (see `claimer`), so memory stays bounded however large a backlog
grows. Nor can slow lanes together take the connections the others need: an attempt starts only
with a slot of the budget, and the budget keeps a reserve that only a lane holding no connection
may use (see `ConnectionBudget`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from service.store.models import DeliveryJob
from service.supervise import Fatal

Run = Callable[[DeliveryJob], Coroutine[Any, Any, bool]]


class ConnectionBudget:
    """The process's HTTP connections (`WEBHOOKS_MAX_CONNECTIONS`), shared fairly by the lanes.

    A lane takes a slot before it starts an attempt and gives it back when the attempt ends, so
    attempts never wait inside aiohttp's pool (whose wait would count against the delivery
    timeout: a healthy endpoint would "time out" unsent behind slow ones). The wait happens
    here, in the lane's queue, before any clock of the attempt starts.

    Fairness: the last `reserve` free slots (a quarter of the budget) go only to lanes that hold
    none, so a lane with work always gets its first connection at once, however many slow
    endpoints each hold their `concurrency` of connections, unless more lanes than the reserve
    start at the same moment (then they take turns, first come first served). More connections
    than the first are handed out while the free slots exceed the reserve, to waiting lanes in
    turn (round robin), so under contention every lane ends up near an equal share. A slow lane
    capped this way only delays its own deliveries; its backlog waits in the store as before.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.reserve = size // 4
        self.free = size
        self._first: deque[Lane] = deque()  # lanes holding none, waiting for their first
        self._more: deque[Lane] = deque()  # lanes holding some, waiting for another
        self._waiting: set[Lane] = set()

    @property
    def in_use(self) -> int:
        return self.size - self.free

    @property
    def lanes_waiting(self) -> int:
        return len(self._waiting)

    def take(self, lane: Lane, holding: int, *, turn: bool = False) -> bool:
        """A slot for `lane`, which holds `holding` already (`turn`: it was just called back);
        False, and the lane is called back through `Lane.pump` when its turn comes, when there
        is none for it now."""
        first_free = self.free > 0 and (turn or not self._first)
        if self.free > self.reserve or (holding == 0 and first_free):
            self.free -= 1
            return True
        if lane not in self._waiting:
            self._waiting.add(lane)
            (self._first if holding == 0 else self._more).append(lane)
        return False

    def give_back(self) -> None:
        """An attempt ended: its slot goes to whoever waits, lanes holding none first."""
        self.free += 1
        while self._first and self.free > 0:
            self._serve(self._first)
        while self._more and self.free > self.reserve:
            self._serve(self._more)

    def _serve(self, line: deque[Lane]) -> None:
        lane = line.popleft()
        self._waiting.discard(lane)
        # The lane takes what it may now (nothing, if its queue emptied meanwhile) and, if it
        # wants more still, goes to the back of the line.
        lane.pump(turn=True)


class Lane:
    """One subscription's bounded queue and bounded concurrency.

    A lane whose endpoint keeps failing drops to one request in flight (probing) until a success,
    so a dead endpoint holds one pooled connection, not `concurrency` of them, while it retries.
    After `BREAK_AFTER_FAILURES` failures in a row its circuit opens: it waits a cooldown (1 s,
    doubling up to 10 s) between attempts, so a dead endpoint with a large backlog due gets a
    probe every few seconds rather than a thousand doomed requests a second that take CPU from
    every other lane. Waiting deliveries keep their leases and attempt counts (no attempt was
    made); the first success, or a successful `/test`, closes the circuit.

    A subscription with a `rateLimit` has its attempts started at least `1 / rate` seconds
    apart (spacing, no burst: over any window of t seconds at most t x rate + 1 start), and its
    queue holds at most two seconds' worth; the rest of its backlog waits in the store. The
    limit is the process's: replicas sharing a PostgreSQL store each keep it.

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
        budget: ConnectionBudget | None = None,
        rate: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.subscription_id = subscription_id
        self.failing_since = failing_since
        self._concurrency = concurrency
        self._capacity = capacity
        self._run = run
        self._on_room = on_room
        self._fatal = fatal or Fatal()
        self._budget = budget  # None: connections are not this lane's concern (unit tests)
        self._queue: deque[DeliveryJob] = deque()
        self._held: set[str] = set()  # queued or in flight
        self._failures = 0
        self._cooldown = 0.0
        self._resume_at = 0.0  # loop time the open circuit allows the next attempt
        self._resume: asyncio.TimerHandle | None = None
        self._rate = rate  # read at each start: a PATCH applies to the lane at once
        self._next_start = 0.0  # loop time the rate limit allows the next attempt
        self._paced: asyncio.TimerHandle | None = None
        self.backlogged = False  # jobs were turned away and wait in the store
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def idle(self) -> bool:
        """Nothing queued, in flight or turned away, and no rate-limit spacing still running
        (a lane forgotten and opened again would start its next attempt at once)."""
        if self._held or self.backlogged or self.tasks:
            return False
        return asyncio.get_running_loop().time() >= self._next_start

    @property
    def held(self) -> set[str]:
        return self._held

    @property
    def capacity(self) -> int:
        """How many deliveries may wait in memory: two seconds' worth when rate-limited."""
        rate = self._rate()
        if rate is None:
            return self._capacity
        return min(self._capacity, max(self._concurrency, 2 * rate))

    @property
    def room(self) -> int:
        return self.capacity - len(self._queue)

    @property
    def wants_claim(self) -> bool:
        """Deliveries were turned away and at least half the queue is free for them."""
        return self.backlogged and self.room * 2 >= self.capacity

    @property
    def concurrency(self) -> int:
        return 1 if self._failures >= self.PROBE_AFTER_FAILURES else self._concurrency

    @property
    def circuit_open(self) -> bool:
        return self._resume_at > asyncio.get_running_loop().time()

    def succeeded(self) -> None:
        """The endpoint answered 2xx through `/test`: full speed again."""
        self._close()
        self.pump()

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
        if len(self._queue) >= self.capacity:
            self.backlogged = True
            return False
        self._queue.append(job)
        self._held.add(job.id)
        self.pump()
        return True

    def drain_queue(self) -> list[str]:
        """Empties the queue (not what is in flight), for shutdown; returns the ids."""
        dropped = [job.id for job in self._queue]
        self._queue.clear()
        self._held.difference_update(dropped)
        return dropped

    def pump(self, *, turn: bool = False) -> None:
        """Starts queued jobs as far as the concurrency, the circuit and the connection budget
        allow (`turn`: the budget is calling back a lane that waited for a connection)."""
        if self._queue and self.circuit_open:
            if self._resume is None:
                self._resume = asyncio.get_running_loop().call_at(self._resume_at, self._reopen)
            return
        while self._queue and len(self.tasks) < self.concurrency:
            if not self._pace():
                break  # called back when the rate limit allows the next start
            if self._budget is not None and not self._budget.take(self, len(self.tasks), turn=turn):
                break  # the budget calls back when a connection is free for this lane
            self._started()
            job = self._queue.popleft()
            task = asyncio.create_task(self._attempt(job), name=f"attempt-{job.id}")
            self.tasks.add(task)
            task.add_done_callback(self._end)
            # An attempt that raises is a bug: it ends the process rather than vanish.
            self._fatal.watch(task)
        if self.wants_claim:
            self._on_room()

    def _reopen(self) -> None:
        self._resume = None
        self.pump()

    def _pace(self) -> bool:
        """True when the rate limit allows a start now; else a call back is set for when."""
        if self._rate() is None:
            return True
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_start:
            return True
        if self._paced is None:
            self._paced = loop.call_at(self._next_start, self._unpace)
        return False

    def _unpace(self) -> None:
        self._paced = None
        self.pump()

    def _started(self) -> None:
        """The lane decided to start an attempt: the next may start one interval later."""
        rate = self._rate()
        if rate is not None:
            now = asyncio.get_running_loop().time()
            self._next_start = max(now, self._next_start) + 1.0 / rate

    def _began(self) -> None:
        """The attempt's task runs (on a busy loop, maybe well after the decision): the next
        may start no sooner than one interval from now either."""
        rate = self._rate()
        if rate is not None:
            now = asyncio.get_running_loop().time()
            self._next_start = max(self._next_start, now + 1.0 / rate)

    def _end(self, task: asyncio.Task[Any]) -> None:
        """The attempt is over: out of the in-flight set, its connection slot handed on. Once
        per task: from the attempt's `finally`, or from the done-callback for a task cancelled
        before it ever ran (a drain), whose `finally` never ran."""
        if task in self.tasks:
            self.tasks.discard(task)
            if self._budget is not None:
                self._budget.give_back()

    async def _attempt(self, job: DeliveryJob) -> None:
        # The pace counts from when the attempt really starts: on a busy loop a task may run
        # well after the lane decided to start it, and the next must still keep its distance.
        self._began()
        ok = False
        try:
            ok = await self._run(job)
        finally:
            if ok:
                self._close()
            else:
                self._failed()
            self._held.discard(job.id)
            # Leave the in-flight set (and hand the connection on) before pumping, or a full
            # lane would never start its next job (the done-callback runs only after this).
            task = asyncio.current_task()
            if task is not None:  # always, inside the task
                self._end(task)
            self.pump()


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
