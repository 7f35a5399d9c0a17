"""The recorder: writes attempt outcomes in batches, and hands leases back. An attempt counts as
done only once its record is durable; until then its lease covers the delivery.

An outcome waits up to RECORD_LINGER for others to share its transaction, unless someone is
waiting on it (`urgent`: an ordered subscription's next delivery, a `/test` call) or a whole
batch is queued. The attempt has been made by then and its lane has moved on, so the wait adds
nothing to delivery latency; it only makes the outcome visible (health, the log) that much later,
and widens what a crash would send again (the delivery, same id, after its lease) from the
deliveries of one write to those of RECORD_LINGER. At 50 events/s it turns one write per
delivery into one per two or three; at 500/s one per ~25 (issue 15).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import structlog

from service.metrics import Metrics
from service.store import Recorded, Store, StoreUnavailable
from service.store.models import AttemptRecord

log = structlog.get_logger(__name__)

RECORD_BATCH = 500
RECORD_LINGER = 0.05


class Recorder:
    """Writes attempt outcomes in batches; an attempt counts as done only once written."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        owner: str,
        on_recorded: Callable[[Recorded], None] = lambda _: None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._owner = owner  # records and releases are fenced: only what this replica holds
        self._on_recorded = on_recorded  # once per written batch, before its futures resolve
        self._pending: list[tuple[AttemptRecord, asyncio.Future[Recorded]]] = []
        self._releases: list[str] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._deadline: float | None = None  # loop time; set by `close`, nothing retried after
        self._linger: asyncio.TimerHandle | None = None

    def submit(self, attempt: AttemptRecord, *, urgent: bool = False) -> asyncio.Future[Recorded]:
        """Queues the attempt; the future resolves once its batch is written (see `Recorded`
        for the failure clocks and what was not this replica's to record any more). Written
        within RECORD_LINGER, or at once when `urgent`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Recorded] = loop.create_future()
        self._pending.append((attempt, future))
        if urgent or len(self._pending) >= RECORD_BATCH:
            self._wake.set()
        elif self._linger is None:
            self._linger = loop.call_later(RECORD_LINGER, self._wake.set)
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
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            await self.flush()

    async def flush(self) -> bool:
        """Writes everything queued, retrying while the store is away (until the drain's
        deadline, once `close` set one). True when nothing is left. One flush at a time: the
        final flush of a drain must not race the background one."""
        async with self._lock:
            return await self._flush()

    async def close(self, deadline: float) -> bool:
        """The drain's last flush, over by `deadline` (a loop time) whatever the store does.

        The background flush stops retrying at the deadline too, so the lock it holds is free
        by then; a write the store is stalling on is given up at the deadline (the caller then
        cancels the background task, and `abandon`s what is left). True when everything was
        written. What was not keeps its lease: those deliveries are attempted again once the
        lease expires.
        """
        self._deadline = deadline
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                return await self.flush()
        return False

    def abandon(self) -> int:
        """After `close` and the background task stopped: whoever still awaits an outcome that
        was never written is cancelled. Returns how many there were."""
        for _, future in self._pending:
            future.cancel()
        return len(self._pending)

    async def _flush(self) -> bool:
        loop = asyncio.get_running_loop()
        backoff = 0.1
        while self._pending or self._releases:
            if self._deadline is not None and loop.time() >= self._deadline:
                return False
            batch, self._pending = self._pending[:RECORD_BATCH], self._pending[RECORD_BATCH:]
            try:
                recorded = await self._store.record_attempts([a for a, _ in batch], self._owner)
            except (StoreUnavailable, OSError) as exc:
                self._metrics.store_errors.labels("record_attempts").inc()
                log.warning("recorder.store_unavailable", error=str(exc), retry_in=backoff)
                self._pending[:0] = batch
                await self._pause(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except asyncio.CancelledError:
                # A drain past its deadline: the write is not known to be durable, so it stays
                # queued (and its lease covers the deliveries).
                self._pending[:0] = batch
                raise
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
            self._on_recorded(recorded)
            for _, future in batch:
                if not future.done():
                    future.set_result(recorded)
            releases, self._releases = self._releases, []
            try:
                await self._store.release(releases, self._owner)
            except (StoreUnavailable, OSError):
                # Recorded outcomes stay recorded; only the lease hand-back is retried.
                self._releases[:0] = releases
                await self._pause(backoff)
        return True

    async def _pause(self, seconds: float) -> None:
        """Backs off before the next try, but never past the drain's deadline."""
        if self._deadline is not None:
            seconds = min(seconds, max(0.0, self._deadline - asyncio.get_running_loop().time()))
        await asyncio.sleep(seconds)
