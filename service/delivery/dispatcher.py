"""The dispatcher: takes deliveries in (from ingest, the claimer and `/test`), runs each through
its lane — send (`attempt`), decide (`retry.decide`), record (`recorder`) — and acts on what was
decided once it is durable (count it, log it, deactivate the subscription). It drains on stop.

New deliveries from ingest go out at once; retries and leftovers come back through the claimer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from service import ids
from service.delivery.attempt import Exchange, Sender
from service.delivery.claimer import Claimer
from service.delivery.lane import ConnectionBudget, Lane, Lanes
from service.delivery.recorder import Recorder
from service.delivery.retry import Decision, RetryPolicy, decide
from service.domain import (
    AttemptRecord,
    DeliveryJob,
    DeliveryStatus,
    NewDelivery,
    Subscription,
)
from service.events import TEST_EVENT
from service.matching import SubscriptionIndex
from service.metrics import Metrics
from service.settings import Settings
from service.store import Lease, Pipeline, Recorded, StoreUnavailable
from service.supervise import Fatal, in_background
from service.triggers import test_event

log = structlog.get_logger(__name__)

FINAL_FLUSH = 2.0
"""Seconds a drain gives the last write of outcomes at least, even when the grace is spent."""
TEST_STORE_WAIT = 2.0
"""Seconds `/test` waits for the store: to record its delivery, then for the outcome."""


class Dispatcher:
    """Owns the lanes, the recorder and the claimer; one per process."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Pipeline,
        index: SubscriptionIndex,
        sender: Sender,
        metrics: Metrics,
        owner: str,
        fatal: Fatal | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        # The stages' shared parts: where deliveries are kept, who wants them, how they go out.
        self._store, self._index, self._sender = store, index, sender
        self._metrics = metrics
        self.owner = owner
        self.lease_ms = int(settings.lease * 1000)
        self._policy = RetryPolicy(tuple(settings.retry_schedule), settings.disable_after)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._fatal = fatal or Fatal()
        self._recorder = Recorder(store, metrics, owner, on_recorded=self._follow_clocks)
        self._connections = ConnectionBudget(settings.max_connections)
        metrics.connections_in_use.set_function(lambda: self._connections.in_use)
        metrics.lanes_waiting_for_connection.set_function(lambda: self._connections.lanes_waiting)
        self._lanes = Lanes(self._open_lane)
        # The failure clocks of the subscriptions failing now, as the store last wrote them:
        # a lane forgotten while idle (between two retries of a lone delivery) opens again
        # with its clock, not with the index's copy of the row, which no outcome refreshes.
        self._failing_since: dict[str, int] = {}
        self._claimer = Claimer(
            store=store,
            lanes=self._lanes,
            recorder=self._recorder,
            submit=self.submit,
            parked=index.undecryptable,
            metrics=metrics,
            owner=owner,
            lease=settings.lease,
            poll_interval=settings.poll_interval,
        )
        self._accepting = True
        self._taken: dict[str, float] = {}  # loop time each held delivery was leased to us
        # `/test` attempts, outside the lanes, and the delivery each sends.
        self._tests: dict[asyncio.Task[Any], str] = {}
        self._finishing: set[asyncio.Task[None]] = set()

    def _open_lane(self, subscription_id: str) -> Lane:
        subscription = self._index.get(subscription_id)
        return Lane(
            subscription_id,
            self._settings.lane_concurrency,
            self._settings.lane_queue_size,
            self._deliver,
            self._claimer.wake,
            failing_since=self._failing_since.get(
                subscription_id, None if subscription is None else subscription.failing_since
            ),
            fatal=self._fatal,
            budget=self._connections,
            rate=lambda: self._rate_limit(subscription_id),
        )

    def _rate_limit(self, subscription_id: str) -> int | None:
        subscription = self._index.get(subscription_id)
        return None if subscription is None else subscription.rate_limit

    # -- intake ------------------------------------------------------------------------------

    def submit(self, jobs: Sequence[DeliveryJob]) -> None:
        """Hands new or claimed deliveries (leased to this process) to their lanes; what does
        not fit is given back to the store to be claimed when its lane has room."""
        overflow: list[str] = []
        taken = asyncio.get_running_loop().time()
        for job in jobs:
            if not self._accepting or not self._lanes.open(job.subscription_id).offer(job):
                overflow.append(job.id)
            else:
                self._taken[job.id] = taken
        if overflow:
            self._metrics.lane_overflow.inc(len(overflow))
            self._recorder.release(overflow)

    # -- one delivery through its lane -------------------------------------------------------

    async def _deliver(self, job: DeliveryJob) -> bool:
        """A lane's attempt: the lane's slot is free again once the HTTP exchange is over; the
        outcome is recorded in the background (the lease covers the delivery until then)."""
        taken = self._taken.pop(job.id, asyncio.get_running_loop().time())
        if not self._claimer.holds(job.id, taken):
            # The lease may have run out while it waited (the store was away, renewals
            # failed): another replica may be sending it now. Not ours to send any more.
            self._metrics.leases_lost.inc()
            return True
        subscription = self._index.get(job.subscription_id)
        if subscription is None or subscription.secret is None:
            # Deleted or deactivated since it was queued (the store already closed the
            # delivery), or its secret cannot be opened (it waits, unclaimed, until the key is
            # back): give the lease back.
            self._recorder.release([job.id])
            return True
        record, decision, durable = await self._attempt(job, subscription)
        self._settle(record, decision, job, durable)
        return decision.status is DeliveryStatus.SENT

    async def _attempt(
        self, job: DeliveryJob, subscription: Subscription, *, test: bool = False
    ) -> tuple[AttemptRecord, Decision, asyncio.Future[Recorded]]:
        """Sends, decides, and queues the record; the future resolves once it is durable. The
        record is written at once when someone waits for it: the `/test` caller, or the next
        delivery of an ordered subscription's customer (else within the recorder's linger)."""
        exchange = await self._sender.send(job, subscription)
        lane = self._lanes.get(subscription.id)
        failing_since = lane.failing_since if lane is not None else subscription.failing_since
        decision = decide(
            exchange,
            number=job.attempts + 1,
            failing_since_ms=failing_since,
            policy=self._policy,
            rng=self._rng,
        )
        if lane is not None:
            if decision.status is DeliveryStatus.SENT:
                lane.failing_since = None
            elif failing_since is None:
                lane.failing_since = int(exchange.started * 1000)
        self._metrics.child(self._metrics.attempts, exchange.result.value).inc()
        self._metrics.child(self._metrics.attempt_duration, exchange.result.value).observe(
            exchange.duration
        )
        record = _record(job, subscription, exchange, decision)
        urgent = test or subscription.ordered
        return record, decision, self._recorder.submit(record, urgent=urgent)

    def _follow_clocks(self, recorded: Recorded) -> None:
        """The store's failure clocks are the truth (other replicas attempt too): lanes follow,
        once per written batch. And a written outcome of an ordered subscription may have
        moved a customer's queue on: the claimer looks for the next head at once."""
        ordered = False
        for subscription_id, since in recorded.failing_since.items():
            if since is None:
                self._failing_since.pop(subscription_id, None)
            else:
                self._failing_since[subscription_id] = since
            lane = self._lanes.get(subscription_id)
            if lane is not None:
                lane.failing_since = since
            subscription = self._index.get(subscription_id)
            ordered |= subscription is not None and subscription.ordered
        # Operational events the batch caused wait unleased in the store: claimed at once.
        if ordered or recorded.emitted:
            self._claimer.wake()

    def _settle(
        self,
        record: AttemptRecord,
        decision: Decision,
        job: DeliveryJob,
        durable: asyncio.Future[Recorded],
        *,
        test: bool = False,
    ) -> asyncio.Future[Any]:
        """Starts what follows an attempt once its record is durable: a 2xx is counted (and a
        `/test` 2xx closes the lane's circuit breaker); a failure is logged, counted when final,
        and may deactivate the subscription. Returns a future done once that has happened."""
        if decision.status is DeliveryStatus.SENT:
            # The common case needs no task: count it once it is durable (a failed write
            # stops the process through the recorder; it is not counted as sent).
            durable.add_done_callback(lambda done: self._count_if_durable(done, job, test=test))
            return durable
        task = asyncio.create_task(self._after_failure(record, decision, job, durable))
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        self._fatal.watch(task)
        return task

    def _count_if_durable(
        self, done: asyncio.Future[Recorded], job: DeliveryJob, *, test: bool
    ) -> None:
        if done.cancelled() or done.exception() is not None or job.id in done.result().lost:
            return  # not durable, or another replica holds it now and counts it
        self._count_sent(job)
        lane = self._lanes.get(job.subscription_id) if test else None
        if lane is not None:
            lane.succeeded()

    def _count_sent(self, job: DeliveryJob) -> None:
        self._metrics.child(self._metrics.deliveries, job.event, "sent").inc()
        self._metrics.end_to_end.observe(max(0.0, time.time() - job.occurred_at / 1000))

    async def _after_failure(
        self,
        record: AttemptRecord,
        decision: Decision,
        job: DeliveryJob,
        durable: asyncio.Future[Recorded],
    ) -> None:
        """Once the failed attempt is durable: log it, count a final failure, deactivate."""
        if job.id in (await durable).lost:
            return  # another replica holds it now, and decides
        bound = log.bind(
            delivery_id=job.id, subscription_id=job.subscription_id, event_id=job.event_id
        )
        bound.info(
            "delivery.attempt_failed",
            attempt=record.number,
            status=record.status_code,
            error=record.error,
            next_status=decision.status.value,
        )
        if decision.status is DeliveryStatus.FAILED:
            self._metrics.deliveries.labels(job.event, "failed").inc()
        if decision.deactivate is not None:
            await self._deactivate(record.subscription_id, decision.deactivate)

    async def _deactivate(self, subscription_id: str, reason: str) -> None:
        if await self._store.deactivate_subscription(subscription_id, reason):
            log.warning("subscription.deactivated", subscription_id=subscription_id, reason=reason)
            await self._index.refresh()  # reads that one change, not every subscription
            self._claimer.wake()  # its `disabled` event's deliveries

    def wake(self) -> None:
        """A redelivery or a replay made deliveries due now: claim them at once."""
        self._claimer.wake()

    # -- /test -------------------------------------------------------------------------------

    async def send_test(self, subscription: Subscription, event: str = TEST_EVENT) -> AttemptRecord:
        """A test `event` (`triggers.test_event`: `webhook.test` unless another is named)
        through the normal path — recorded, signed, sent, recorded — outside the lane's queue,
        so a test answers now even when the lane is backed up.

        It answers within `TEST_STORE_WAIT` twice plus one attempt (the delivery timeout and
        the body's read bound) whatever the store does: when the delivery cannot be recorded
        in time, nothing is sent and `StoreUnavailable` is raised (the API's 503, "try again");
        when the attempt was made but its outcome is not durable in time, the attempt is
        returned with status `pending` (the outcome is recorded as soon as the store answers;
        should this process stop first, the delivery is attempted again after its lease).
        """
        incoming = test_event(event, subscription.org_id, datetime.now(UTC))
        delivery = NewDelivery(
            ids.new_id(ids.DELIVERY),
            incoming.id,
            subscription.id,
            incoming.event,
            subscription.org_id,
        )
        try:
            async with asyncio.timeout(TEST_STORE_WAIT):
                await self._store.record_events(
                    [incoming], [delivery], Lease(self.owner, self.lease_ms)
                )
        except TimeoutError:
            # Should the write land after all, the delivery is leased to this process and
            # unknown to it: the claimer sends it once the lease expires.
            raise StoreUnavailable("the store did not record the test delivery in time") from None
        job = DeliveryJob.first(delivery, incoming)
        # Shielded: a client that hangs up does not cancel an attempt halfway.
        attempt = asyncio.create_task(
            self._attempt(job, subscription, test=True), name=f"test-{delivery.id}"
        )
        self._tests[attempt] = delivery.id
        attempt.add_done_callback(lambda done: self._tests.pop(done, None))
        self._fatal.watch(attempt)
        record, decision, durable = await asyncio.shield(attempt)
        settled = self._settle(record, decision, job, durable, test=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TEST_STORE_WAIT):
                await asyncio.shield(settled)
        if durable.done():
            return record
        log.warning(
            "delivery.test_not_recorded_in_time",
            delivery_id=job.id,
            subscription_id=subscription.id,
            waited=TEST_STORE_WAIT,
        )
        return dataclasses.replace(record, new_status=DeliveryStatus.PENDING)

    # -- running and draining ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Dispatcher]:
        """Claims due work and records outcomes until the block ends, then drains."""
        recorder = asyncio.create_task(self._recorder.run(), name="recorder")
        self._fatal.watch(recorder)
        try:
            async with in_background(self._claimer.run(), "claimer", self._fatal):
                yield self
        finally:
            await self._drain(recorder)

    async def _drain(self, recorder: asyncio.Task[None]) -> None:
        """SIGTERM: stop taking work, give in-flight attempts `shutdown_grace`, record what
        finished, and leave the rest pending in the store with their leases given back. Ends
        within `shutdown_grace` plus `FINAL_FLUSH` plus a second, whatever the store does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.shutdown_grace
        self._accepting = False
        queued = [i for lane in self._lanes for i in lane.drain_queue()]
        self._taken.clear()
        in_flight: dict[asyncio.Task[Any], str] = {**self._lanes.in_flight(), **self._tests}
        finished: set[asyncio.Task[Any]] = set()
        if in_flight:
            finished, _ = await asyncio.wait(set(in_flight), timeout=self._settings.shutdown_grace)
        cut_short = in_flight.keys() - finished
        for task in cut_short:
            task.cancel()
        if cut_short:
            await asyncio.gather(*cut_short, return_exceptions=True)
        cut_ids = [in_flight[t] for t in cut_short]
        self._recorder.release(queued + cut_ids)
        # What is left of the grace, and at least FINAL_FLUSH, to write the outcomes: the
        # recorder gives up at that deadline even while the store is away or stalls, so an
        # outage cannot hold the drain until SIGKILL. Then its background task is stopped.
        await self._recorder.close(max(deadline, loop.time() + FINAL_FLUSH))
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder
        # Never written: their leases stay with this process and expire, and they are
        # attempted again (possibly a duplicate of what was sent; the delivery id dedupes).
        unrecorded = self._recorder.abandon()
        if self._finishing:
            _, stuck = await asyncio.wait(self._finishing, timeout=1.0)
            for task in stuck:
                task.cancel()
        log.info(
            "dispatch.drained",
            finished_in_flight=len(finished),
            cut_short=len(cut_short),
            left_pending=len(queued) + len(cut_short),
            unrecorded=unrecorded,
        )


def _record(
    job: DeliveryJob, subscription: Subscription, exchange: Exchange, decision: Decision
) -> AttemptRecord:
    return AttemptRecord(
        delivery_id=job.id,
        subscription_id=subscription.id,
        number=job.attempts + 1,
        started_at=int(exchange.started * 1000),
        duration_ms=int(exchange.duration * 1000),
        status_code=exchange.status,
        result=exchange.result.value,
        error=exchange.error,
        response_excerpt=exchange.excerpt,
        new_status=decision.status,
        next_attempt_at=decision.next_attempt_at,
    )
