"""Housekeeping: the store-wide gauges (pending deliveries, subscriptions by state) every few
seconds, and retention (finished deliveries older than `WEBHOOKS_RETENTION` go) every hour.
Runs under its own cleanup context in `app.py`, apart from delivery."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import structlog

from service.clock import now_ms
from service.metrics import Metrics
from service.store import Store, StoreUnavailable
from service.supervise import Fatal, in_background

log = structlog.get_logger(__name__)

GAUGE_INTERVAL = 5.0
PURGE_INTERVAL = 3600.0


class Housekeeping:
    def __init__(self, store: Store, metrics: Metrics, retention: float) -> None:
        self._store = store
        self._metrics = metrics
        self._retention = retention

    @contextlib.asynccontextmanager
    async def running(self, fatal: Fatal) -> AsyncIterator[Housekeeping]:
        async with in_background(self._run(), "housekeeping", fatal):
            yield self

    async def _run(self) -> None:
        last_purge = 0.0
        while True:
            try:
                self._metrics.pending.set(await self._store.pending_count())
                for state, count in (await self._store.subscription_counts()).items():
                    self._metrics.subscriptions.labels(state).set(count)
                if time.monotonic() - last_purge > PURGE_INTERVAL:
                    removed = await self._store.purge(now_ms() - int(self._retention * 1000))
                    last_purge = time.monotonic()
                    if removed:
                        log.info("retention.purged", deliveries=removed)
            except (StoreUnavailable, OSError) as exc:
                log.warning("housekeeping.failed", error=str(exc))
            await asyncio.sleep(GAUGE_INTERVAL)
