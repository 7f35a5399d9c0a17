"""Housekeeping: the store-wide gauges (pending deliveries, subscriptions by state) every few
seconds, and retention every `PURGE_INTERVAL`: what is older than `WEBHOOKS_RETENTION` goes, and
the payloads (event bodies, response excerpts) older than `WEBHOOKS_PAYLOAD_RETENTION` are
removed, their metadata kept (docs/personal-data.md).

Retention deletes in small batches (`PURGE_BATCH` deliveries with their attempts, events and
hourly counters per transaction) with a pause between them, so it never holds the store for
long: SQLite has one writer, and ingest and the recorder must not wait behind a purge of a
month of history. Both loops run under their own cleanup context in `app.py`, apart from
delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

import structlog

from service.clock import now_ms
from service.metrics import Metrics
from service.store import PersonalData, Pipeline, Retention, StoreUnavailable
from service.supervise import Fatal, in_background

log = structlog.get_logger(__name__)

GAUGE_INTERVAL = 5.0
PURGE_INTERVAL = 600.0
PURGE_BATCH = 500
PURGE_PAUSE = 0.05  # seconds between batches: other writers get the store in between


class Kept(Pipeline, Retention, PersonalData, Protocol):
    """What housekeeping reads (the gauges' counts), purges and expunges."""


class Housekeeping:
    def __init__(
        self,
        store: Kept,
        metrics: Metrics,
        retention: float,
        payload_retention: float | None = None,
        *,
        purge_interval: float = PURGE_INTERVAL,
        purge_batch: int = PURGE_BATCH,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._retention = retention
        self._payload_retention = retention if payload_retention is None else payload_retention
        self._purge_interval = purge_interval
        self._purge_batch = purge_batch

    @contextlib.asynccontextmanager
    async def running(self, fatal: Fatal) -> AsyncIterator[Housekeeping]:
        async with (
            in_background(self._gauges(), "housekeeping-gauges", fatal),
            in_background(self._retain(), "housekeeping-retention", fatal),
        ):
            yield self

    async def _gauges(self) -> None:
        while True:
            try:
                self._metrics.pending.set(await self._store.pending_count())
                for state, count in (await self._store.subscription_counts()).items():
                    self._metrics.subscriptions.labels(state).set(count)
            except (StoreUnavailable, OSError) as exc:
                log.warning("housekeeping.failed", error=str(exc))
            await asyncio.sleep(GAUGE_INTERVAL)

    async def _retain(self) -> None:
        while True:
            try:
                removed = await self.purge()
                if removed:
                    log.info("retention.purged", rows=removed)
                expunged = await self.expunge()
                if expunged:
                    log.info("retention.payloads_removed", rows=expunged)
            except (StoreUnavailable, OSError) as exc:
                log.warning("retention.failed", error=str(exc))
            await asyncio.sleep(self._purge_interval)

    async def purge(self) -> int:
        """Deletes everything past the retention, a batch per transaction; returns the rows."""
        cutoff = now_ms() - int(self._retention * 1000)
        total = 0
        while removed := await self._store.purge(cutoff, self._purge_batch):
            total += removed
            await asyncio.sleep(PURGE_PAUSE)
        return total

    async def expunge(self) -> int:
        """Removes the payloads past the payload retention, a batch per transaction; returns
        how many bodies and excerpts went."""
        cutoff = now_ms() - int(self._payload_retention * 1000)
        total = 0
        while removed := await self._store.expunge_payloads(cutoff, self._purge_batch):
            total += removed
            await asyncio.sleep(PURGE_PAUSE)
        return total
