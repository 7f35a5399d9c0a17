"""The recorder: writes attempt outcomes in batches, and hands leases back. An attempt counts as
done only once its record is durable; until then its lease covers the delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from service.metrics import Metrics
from service.store import Recorded, Store, StoreUnavailable
from service.store.models import AttemptRecord

log = structlog.get_logger(__name__)

RECORD_BATCH = 500


class Recorder:
    """Writes attempt outcomes in batches; an attempt counts as done only once written."""

    def __init__(self, store: Store, metrics: Metrics, owner: str) -> None:
        self._store = store
        self._metrics = metrics
        self._owner = owner  # records and releases are fenced: only what this replica holds
        self._pending: list[tuple[AttemptRecord, asyncio.Future[Recorded]]] = []
        self._releases: list[str] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def submit(self, attempt: AttemptRecord) -> asyncio.Future[Recorded]:
        """Queues the attempt; the future resolves once its batch is written (see `Recorded`
        for the failure clocks and what was not this replica's to record any more)."""
        future: asyncio.Future[Recorded] = asyncio.get_running_loop().create_future()
        self._pending.append((attempt, future))
        self._wake.set()
        return future

    def release(self, delivery_ids: Sequence[str]) -> None:
        """Gives these leases back (in the background): the deliveries are claimable at once."""
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
                recorded = await self._store.record_attempts([a for a, _ in batch], self._owner)
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
            if recorded.lost:
                self._metrics.leases_lost.inc(len(recorded.lost))
                log.warning("recorder.lease_lost", deliveries=len(recorded.lost))
            for _, future in batch:
                if not future.done():
                    future.set_result(recorded)
            releases, self._releases = self._releases, []
            try:
                await self._store.release(releases, self._owner)
            except (StoreUnavailable, OSError):
                # Recorded outcomes stay recorded; only the lease hand-back is retried.
                self._releases[:0] = releases
                await asyncio.sleep(backoff)
        return True
