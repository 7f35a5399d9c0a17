"""The claimer: takes due work from the store (retries, what lanes turned away, a crashed
replica's deliveries), keeps this process's leases alive, and forgets idle lanes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import structlog

from service.delivery.lane import Lanes
from service.delivery.recorder import Recorder
from service.domain import DeliveryJob
from service.metrics import Metrics
from service.store import Claim, Pipeline, StoreUnavailable

log = structlog.get_logger(__name__)

CLAIM_BATCH = 200
# Renewals come every third of a lease; a delivery is sent only while its lease is surely
# alive, with a margin for the time an attempt takes to start.
SAFE_SHARE = 0.8


class Claimer:
    """Claims every `poll_interval`, or at once when woken (a lane found room)."""

    def __init__(
        self,
        *,
        store: Pipeline,
        lanes: Lanes,
        recorder: Recorder,
        submit: Callable[[Sequence[DeliveryJob]], None],
        parked: Callable[[], Sequence[str]],
        metrics: Metrics,
        owner: str,
        lease: float,
        poll_interval: float,
    ) -> None:
        self._store = store
        self._lanes = lanes
        self._recorder = recorder
        self._submit = submit
        self._parked = parked  # subscriptions whose deliveries wait: not claimed
        self._metrics = metrics
        self._owner = owner
        self._lease = lease
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._renewed_at = 0.0  # loop time the last successful renewal started
        self._lost: set[str] = set()  # held ids the last renewal found taken by another

    def wake(self) -> None:
        """Claim now rather than at the next interval."""
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while True:
            if loop.time() - renewed > self._lease / 3:
                renewed = loop.time()
                await self._renew_leases()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._claim_once()
            except (StoreUnavailable, OSError) as exc:
                self._metrics.store_errors.labels("claim").inc()
                log.warning("dispatch.claim_failed", error=str(exc))
            self._lanes.forget_idle()
            self._metrics.lanes.set(len(self._lanes))
            self._metrics.lanes_circuit_open.set(self._lanes.circuits_open())

    def holds(self, delivery_id: str, taken_at: float) -> bool:
        """Whether this process surely still holds a delivery it was leased at `taken_at` (loop
        time): its lease, or the last renewal of it, is younger than SAFE_SHARE of a lease, and
        that renewal did not find it lost. A delivery it may have lost is not sent."""
        if delivery_id in self._lost:
            return False
        since = max(taken_at, self._renewed_at)
        return asyncio.get_running_loop().time() - since < self._lease * SAFE_SHARE

    async def _renew_leases(self) -> None:
        """Keeps the leases of everything this process holds (queued, in flight, unrecorded)
        from expiring, however long a slow lane takes, so no other replica sends it too."""
        held = self._lanes.held()
        held.update(self._recorder.unrecorded())
        started = asyncio.get_running_loop().time()
        try:
            kept = await self._store.renew(sorted(held), self._owner, self._lease_ms)
        except (StoreUnavailable, OSError) as exc:
            self._metrics.store_errors.labels("renew").inc()
            log.warning("dispatch.renew_failed", error=str(exc))
            return
        self._renewed_at = started
        self._lost = held - kept
        if self._lost:
            log.warning("dispatch.leases_lost", deliveries=len(self._lost))

    @property
    def _lease_ms(self) -> int:
        return int(self._lease * 1000)

    async def _claim_once(self) -> None:
        """Backlogged lanes with room take their own due deliveries, as many as fit; then
        everyone else's due work is claimed, leaving out lanes that are full or backlogged."""
        parked = self._parked()
        busy = [lane for lane in self._lanes if lane.backlogged or lane.room <= 0]
        for lane in busy:
            if not lane.wants_claim or lane.subscription_id in parked:
                continue
            wanted = lane.room
            jobs = await self._store.claim_due(
                Claim(self._owner, wanted, self._lease_ms, subscription_id=lane.subscription_id)
            )
            lane.backlogged = len(jobs) >= wanted
            self._submit(jobs)
        jobs = await self._store.claim_due(
            Claim(
                self._owner,
                CLAIM_BATCH,
                self._lease_ms,
                exclude=[*(lane.subscription_id for lane in busy), *parked],
            )
        )
        if jobs:
            self._submit(jobs)
