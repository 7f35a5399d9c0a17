"""Delivery: one lane per subscription, signed HTTP attempts, outcomes recorded durably.

A slow or dead endpoint only ever fills its own lane: at most `lane_concurrency` requests in
flight and `lane_queue_size` deliveries queued in memory. What does not fit stays `pending` in the
store (its lease given back) and is claimed when the lane has room, so memory stays bounded
however large a backlog grows. New deliveries from ingest go out at once; retries and leftovers
are claimed from the store when due. All lanes share one pooled `ClientSession`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from service import __version__, ids
from service.api.models import TestResult
from service.egress import check_literal_target
from service.errors import TargetRejected
from service.events import TEST_EVENT, test_event_body
from service.matching import SubscriptionIndex
from service.metrics import Metrics
from service.retry import ResultClass, classify, next_delay, parse_retry_after, should_disable
from service.settings import Settings
from service.signing import signature_headers
from service.store import Store, StoreUnavailable
from service.store.models import (
    AttemptRecord,
    DeliveryJob,
    DeliveryStatus,
    IncomingEvent,
    NewDelivery,
    Subscription,
)
from service.store.sql import now_ms
from service.supervise import Fatal

log = structlog.get_logger(__name__)

USER_AGENT = f"QuantumElixir-Identity-Webhooks/{__version__}"
MAX_RESPONSE_BYTES = 64 * 1024
EXCERPT_BYTES = 1024
RECORD_BATCH = 500
CLAIM_BATCH = 200


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to, once durably recorded."""

    record: AttemptRecord


class Lane:
    """One subscription's bounded queue and bounded concurrency.

    A lane whose endpoint keeps failing drops to one request in flight (probing) until a success,
    so a dead endpoint holds one pooled connection, not `concurrency` of them, while it retries.
    After `BREAK_AFTER_FAILURES` failures in a row its circuit opens: it waits a cooldown (1 s,
    doubling up to 10 s) between attempts, so a dead endpoint with a large backlog due gets a
    probe every few seconds rather than a thousand doomed requests a second that take CPU from
    every other lane. Waiting deliveries keep their leases and attempt counts (no attempt was
    made); the first success, or a successful `/test`, closes the circuit.
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
        run: Callable[[DeliveryJob], Coroutine[Any, Any, bool]],
        on_room: Callable[[], None],
    ) -> None:
        self.subscription_id = subscription_id
        self._concurrency = concurrency
        self._capacity = capacity
        self._run = run
        self._on_room = on_room
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
        return not self._held and not self.backlogged

    @property
    def held(self) -> set[str]:
        return self._held

    @property
    def room(self) -> int:
        return self._capacity - len(self._queue)

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
        if self.backlogged and self.room * 2 >= self._capacity:
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


class Recorder:
    """Writes attempt outcomes in batches; an attempt counts as done only once written."""

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        self._pending: list[tuple[AttemptRecord, asyncio.Future[dict[str, int | None]]]] = []
        self._releases: list[str] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def submit(self, attempt: AttemptRecord) -> asyncio.Future[dict[str, int | None]]:
        """Queues the attempt; the future resolves, with the failure clocks, once durable."""
        future: asyncio.Future[dict[str, int | None]] = asyncio.get_running_loop().create_future()
        self._pending.append((attempt, future))
        self._wake.set()
        return future

    def release(self, delivery_ids: Sequence[str]) -> None:
        self._releases.extend(delivery_ids)
        self._wake.set()

    def unrecorded(self) -> list[str]:
        return [attempt.delivery_id for attempt, _ in self._pending]

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self, deadline: float | None = None) -> bool:
        """Writes everything queued, retrying while the store is away (until `deadline`, a
        loop time, when given). True when nothing is left. One flush at a time: the final
        flush of a drain must not race the background one."""
        async with self._lock:
            return await self._flush(deadline)

    async def _flush(self, deadline: float | None) -> bool:
        loop = asyncio.get_running_loop()
        backoff = 0.1
        while self._pending or self._releases:
            if deadline is not None and loop.time() >= deadline:
                return False
            batch, self._pending = self._pending[:RECORD_BATCH], self._pending[RECORD_BATCH:]
            try:
                clocks = await self._store.record_attempts([a for a, _ in batch])
            except (StoreUnavailable, OSError) as exc:
                self._metrics.store_errors.labels("record_attempts").inc()
                log.warning("recorder.store_unavailable", error=str(exc), retry_in=backoff)
                self._pending[:0] = batch
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except Exception as exc:
                # Not an outage: a bug or data the store refuses. Whoever waits learns of it
                # (the process then stops, and the leases let the deliveries be retried).
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                raise
            backoff = 0.1
            for _, future in batch:
                if not future.done():
                    future.set_result(clocks)
            releases, self._releases = self._releases, []
            try:
                await self._store.release(releases)
            except (StoreUnavailable, OSError):
                # Recorded outcomes stay recorded; only the lease hand-back is retried.
                self._releases[:0] = releases
                await asyncio.sleep(backoff)
        return True


class Dispatcher:
    """Owns the lanes, the shared HTTP session, the claim loop and the recorder."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        index: SubscriptionIndex,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        owner: str,
        fatal: Fatal | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._index = index
        self._session = session
        self._metrics = metrics
        self.owner = owner
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._lanes: dict[str, Lane] = {}
        self._recorder = Recorder(store, metrics)
        self._timeout = aiohttp.ClientTimeout(
            total=settings.delivery_timeout, sock_connect=settings.delivery_connect_timeout
        )
        self._lease_ms = int(settings.lease * 1000)
        self._accepting = True
        self._wake = asyncio.Event()
        self._direct: set[asyncio.Task[Any]] = set()
        self._finishing: set[asyncio.Task[None]] = set()
        self._fatal = fatal or Fatal()

    # -- intake ------------------------------------------------------------------------------

    def submit(self, jobs: Sequence[DeliveryJob]) -> None:
        """Hands new or claimed deliveries (leased to this process) to their lanes; what does
        not fit is given back to the store to be claimed when its lane has room."""
        overflow: list[str] = []
        for job in jobs:
            if not self._accepting:
                overflow.append(job.id)
                continue
            lane = self._lanes.get(job.subscription_id)
            if lane is None:
                lane = Lane(
                    job.subscription_id,
                    self._settings.lane_concurrency,
                    self._settings.lane_queue_size,
                    self._deliver,
                    self.wake,
                )
                self._lanes[job.subscription_id] = lane
            if not lane.offer(job):
                overflow.append(job.id)
        if overflow:
            self._metrics.lane_overflow.inc(len(overflow))
            self._recorder.release(overflow)

    def lease_ms(self) -> int:
        return self._lease_ms

    # -- the attempt -------------------------------------------------------------------------

    async def _deliver(self, job: DeliveryJob) -> bool:
        """A lane's attempt: the lane's slot is free again once the HTTP exchange is over; the
        outcome is recorded in the background (the lease covers the delivery until then)."""
        subscription = self._index.get(job.subscription_id)
        if subscription is None:
            # Deleted or deactivated since it was queued: the store already closed the
            # delivery; give the lease back in case it did not.
            self._recorder.release([job.id])
            return True
        record, durable = await self._send(job, subscription)
        if record.new_status is DeliveryStatus.SENT:
            # The common case needs no task: count it once it is durable (a failed write
            # stops the process through the recorder; it is not counted as sent).
            durable.add_done_callback(lambda done: self._count_if_durable(done, job))
            return True
        task = asyncio.create_task(self._finish(record, job, durable))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return False

    async def attempt(self, job: DeliveryJob, subscription: Subscription) -> AttemptRecord:
        """Signs, sends, classifies and durably records one attempt."""
        record, durable = await self._send(job, subscription)
        await self._finish(record, job, durable)
        lane = self._lanes.get(subscription.id)
        if lane is not None and record.new_status is DeliveryStatus.SENT:
            lane.succeeded()
        return record

    async def _finish(
        self,
        record: AttemptRecord,
        job: DeliveryJob,
        durable: asyncio.Future[dict[str, int | None]],
    ) -> None:
        await self._after(record, job, await durable)

    async def _send(
        self, job: DeliveryJob, subscription: Subscription
    ) -> tuple[AttemptRecord, asyncio.Future[dict[str, int | None]]]:
        """Signs, sends and classifies one attempt, and queues its record."""
        number = job.attempts + 1
        status: int | None = None
        excerpt: str | None = None
        error: str | None = None
        retry_after: str | None = None
        timed_out = False
        started = time.time()
        headers = self._headers(job, subscription, int(started))
        try:
            if not self._settings.allow_private_targets:
                check_literal_target(subscription.url, allow_private=False)
            async with self._session.post(
                subscription.url,
                data=job.body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                excerpt = await _read_excerpt(response)
        except TimeoutError:
            timed_out = True
            error = f"timed out after {self._settings.delivery_timeout:g}s"
        except TargetRejected as exc:
            error = f"refused: {exc.reason}"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            error = printable(f"{type(exc).__name__}: {exc}"[:500])
        duration = time.time() - started
        result = classify(status, timed_out=timed_out)
        if result is not ResultClass.OK and error is None:
            error = f"HTTP {status}"
        record = self._decide(
            job,
            subscription,
            number=number,
            started=started,
            duration=duration,
            status=status,
            result=result,
            error=error,
            excerpt=excerpt,
            retry_after=retry_after,
        )
        self._metrics.child(self._metrics.attempts, result.value).inc()
        self._metrics.child(self._metrics.attempt_duration, result.value).observe(duration)
        return record, self._recorder.submit(record)

    def _headers(self, job: DeliveryJob, subscription: Subscription, ts: int) -> dict[str, str]:
        # The User-Agent is the session's default header (see `app.py`), not repeated here.
        headers = {
            "Content-Type": "application/json",
            "X-Identity-Event": job.event,
            "X-Identity-Delivery": job.id,
            **signature_headers(
                self._settings.signature_headers, [subscription.secret], job.body, ts
            ),
        }
        if job.sibling_service:
            headers["X-Sibling-Service"] = job.sibling_service
        return headers

    def _decide(
        self,
        job: DeliveryJob,
        subscription: Subscription,
        *,
        number: int,
        started: float,
        duration: float,
        status: int | None,
        result: ResultClass,
        error: str | None,
        excerpt: str | None,
        retry_after: str | None,
    ) -> AttemptRecord:
        next_at: int | None = None
        if result is ResultClass.OK:
            new_status = DeliveryStatus.SENT
        elif status == 410:
            new_status = DeliveryStatus.FAILED
        else:
            wait = parse_retry_after(retry_after, started) if status in (429, 503) else None
            delay = next_delay(
                number, self._settings.retry_schedule, retry_after=wait, rng=self._rng
            )
            if delay is None:
                new_status = DeliveryStatus.FAILED
            else:
                new_status = DeliveryStatus.RETRYING
                next_at = int((started + duration + delay) * 1000)
        return AttemptRecord(
            delivery_id=job.id,
            subscription_id=subscription.id,
            number=number,
            started_at=int(started * 1000),
            duration_ms=int(duration * 1000),
            status_code=status,
            result=result.value,
            error=error,
            response_excerpt=excerpt,
            new_status=new_status,
            next_attempt_at=next_at,
        )

    def _count_if_durable(self, done: asyncio.Future[Any], job: DeliveryJob) -> None:
        if not done.cancelled() and done.exception() is None:
            self._count_sent(job)

    def _count_sent(self, job: DeliveryJob) -> None:
        self._metrics.child(self._metrics.deliveries, job.event, "sent").inc()
        self._metrics.end_to_end.observe(max(0.0, time.time() - job.occurred_at / 1000))

    async def _after(
        self, record: AttemptRecord, job: DeliveryJob, clocks: dict[str, int | None]
    ) -> None:
        if record.new_status is DeliveryStatus.SENT:
            self._count_sent(job)
            return
        bound = log.bind(
            delivery_id=record.delivery_id,
            subscription_id=record.subscription_id,
            event_id=job.event_id,
        )
        bound.info(
            "delivery.attempt_failed",
            attempt=record.number,
            status=record.status_code,
            error=record.error,
            next_status=record.new_status.value,
        )
        if record.new_status is DeliveryStatus.FAILED:
            self._metrics.deliveries.labels(job.event, "failed").inc()
        if record.status_code == 410:
            await self._deactivate(record.subscription_id, "the endpoint answered 410 Gone")
            return
        failing_since = clocks.get(record.subscription_id)
        if should_disable(failing_since, now_ms(), self._settings.disable_after):
            days = self._settings.disable_after / 86400
            await self._deactivate(
                record.subscription_id, f"every attempt failed for {days:g} days"
            )

    async def _deactivate(self, subscription_id: str, reason: str) -> None:
        if await self._store.deactivate_subscription(subscription_id, reason):
            log.warning("subscription.deactivated", subscription_id=subscription_id, reason=reason)
            await self._index.refresh(force=True)

    # -- /test -------------------------------------------------------------------------------

    async def send_test(self, subscription: Subscription) -> TestResult:
        """`webhook.test` through the normal path: recorded, signed, sent, recorded."""
        now = datetime.now(UTC)
        event_id, body = test_event_body(subscription.org_id, now)
        event = IncomingEvent(
            id=event_id,
            org_id=subscription.org_id,
            event=TEST_EVENT,
            occurred_at=int(now.timestamp() * 1000),
            body=body,
            sibling_service=None,
            source="api:test",
        )
        delivery = NewDelivery(
            ids.new_id(ids.DELIVERY), event_id, subscription.id, TEST_EVENT, subscription.org_id
        )
        await self._store.record_events([event], [delivery], self.owner, self._lease_ms)
        job = DeliveryJob(
            id=delivery.id,
            subscription_id=subscription.id,
            event_id=event_id,
            event=TEST_EVENT,
            body=body,
            sibling_service=None,
            attempts=0,
            occurred_at=event.occurred_at,
            created_at=event.occurred_at,
        )
        # Not through the lane queue: a test must answer now even when the lane is backed up.
        task = asyncio.create_task(self.attempt(job, subscription))
        self._direct.add(task)
        task.add_done_callback(self._direct.discard)
        record = await asyncio.shield(task)
        return TestResult(
            deliveryId=delivery.id,
            status=record.new_status.value,
            responseCode=record.status_code,
            durationMs=record.duration_ms,
            error=record.error,
        )

    # -- background work ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Dispatcher]:
        """Claims due work and records outcomes until the block ends, then drains."""
        recorder = asyncio.create_task(self._recorder.run(), name="recorder")
        claimer = asyncio.create_task(self._claim_loop(), name="claimer")
        housekeeping = asyncio.create_task(self._housekeeping(), name="housekeeping")
        for task in (recorder, claimer, housekeeping):
            self._fatal.watch(task)
        try:
            yield self
        finally:
            for task in (claimer, housekeeping):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self._drain(recorder)

    def wake(self) -> None:
        """Claim now rather than at the next interval."""
        self._wake.set()

    async def _claim_loop(self) -> None:
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            if loop.time() - renewed > self._settings.lease / 3:
                renewed = loop.time()
                await self._renew_leases()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._claim_once()
            except (StoreUnavailable, OSError) as exc:
                self._metrics.store_errors.labels("claim").inc()
                log.warning("dispatch.claim_failed", error=str(exc))
            self._forget_idle_lanes()

    async def _renew_leases(self) -> None:
        """Keeps the leases of everything this process holds (queued, in flight, unrecorded)
        from expiring, however long a slow lane takes, so no other replica sends it too."""
        held = {i for lane in self._lanes.values() for i in lane.held}
        held.update(self._recorder.unrecorded())
        try:
            await self._store.renew(sorted(held), self.owner, self._lease_ms)
        except (StoreUnavailable, OSError) as exc:
            log.warning("dispatch.renew_failed", error=str(exc))

    async def _claim_once(self) -> None:
        """Backlogged lanes with room take their own due deliveries, as many as fit; then
        everyone else's due work (retries, leftovers, a crashed replica's) is claimed."""
        busy = [sid for sid, lane in self._lanes.items() if lane.backlogged or lane.room <= 0]
        for sid in busy:
            lane = self._lanes[sid]
            if not lane.backlogged or lane.room * 2 < self._settings.lane_queue_size:
                continue
            wanted = lane.room
            jobs = await self._store.claim_due(
                self.owner, wanted, self._lease_ms, subscription_id=sid
            )
            lane.backlogged = len(jobs) >= wanted
            self.submit(jobs)
        jobs = await self._store.claim_due(self.owner, CLAIM_BATCH, self._lease_ms, exclude=busy)
        if jobs:
            self.submit(jobs)

    def _forget_idle_lanes(self) -> None:
        for sid in [sid for sid, lane in self._lanes.items() if lane.idle and not lane.tasks]:
            del self._lanes[sid]
        self._metrics.lanes.set(len(self._lanes))
        self._metrics.lanes_circuit_open.set(
            sum(lane.circuit_open for lane in self._lanes.values())
        )

    async def _housekeeping(self) -> None:
        last_purge = 0.0
        while True:
            try:
                self._metrics.pending.set(await self._store.pending_count())
                for state, count in (await self._store.subscription_counts()).items():
                    self._metrics.subscriptions.labels(state).set(count)
                if time.monotonic() - last_purge > 3600:
                    cutoff = now_ms() - int(self._settings.retention * 1000)
                    removed = await self._store.purge(cutoff)
                    last_purge = time.monotonic()
                    if removed:
                        log.info("retention.purged", deliveries=removed)
            except (StoreUnavailable, OSError) as exc:
                log.warning("housekeeping.failed", error=str(exc))
            await asyncio.sleep(5)

    async def _drain(self, recorder: asyncio.Task[None]) -> None:
        """SIGTERM: stop taking work, give in-flight attempts `shutdown_grace`, record what
        finished, and leave the rest pending in the store with their leases given back."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.shutdown_grace
        self._accepting = False
        queued = [i for lane in self._lanes.values() for i in lane.drain_queue()]
        in_flight = {t for lane in self._lanes.values() for t in lane.tasks} | self._direct
        finished: set[asyncio.Task[Any]] = set()
        if in_flight:
            finished, _ = await asyncio.wait(in_flight, timeout=self._settings.shutdown_grace)
        cut_short = in_flight - finished
        for task in cut_short:
            task.cancel()
        if cut_short:
            await asyncio.gather(*cut_short, return_exceptions=True)
        cut_ids = [t.get_name().removeprefix("attempt-") for t in cut_short]
        self._recorder.release(queued + cut_ids)
        # The background writer may be mid-batch: the lock inside flush waits for it, and only
        # then is it stopped, so no write is cancelled halfway.
        complete = await self._recorder.flush(deadline=max(deadline, loop.time() + 2.0))
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder
        if self._finishing:
            _, stuck = await asyncio.wait(self._finishing, timeout=1.0)
            for task in stuck:
                task.cancel()
        log.info(
            "dispatch.drained",
            finished_in_flight=len(finished),
            cut_short=len(cut_short),
            left_pending=len(queued) + len(cut_short),
            unrecorded=0 if complete else "some: their leases expire and they are retried",
        )


async def _read_excerpt(response: aiohttp.ClientResponse) -> str:
    """Reads at most 64 KiB of the body (a lying or endless endpoint cannot make us read more)
    and keeps the first KiB for the attempt log."""
    data = bytearray()
    while len(data) < MAX_RESPONSE_BYTES:
        chunk = await response.content.read(MAX_RESPONSE_BYTES - len(data))
        if not chunk:
            break
        data += chunk
    return printable(bytes(data[:EXCERPT_BYTES]).decode("utf-8", errors="replace"))


_CONTROL = re.compile(r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F]")


def printable(text: str) -> str:
    """What an endpoint sends us is stored and logged: no NUL (PostgreSQL text refuses it) and
    no other control characters."""
    return _CONTROL.sub("\ufffd", text)
