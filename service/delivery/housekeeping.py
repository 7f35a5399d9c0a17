"""Housekeeping: the store-wide gauges (pending deliveries, deactivated subscriptions — the active
ones are the subscription index's count —, polling subscriptions and those whose reader is
behind) every few seconds; every `ALERT_INTERVAL` the `failing` announcement of a subscription
whose run of failures has lasted `WEBHOOKS_FAILING_AFTER` though no attempt was recorded since
(its next retry may be hours away: docs/decisions/0017-failing-on-a-timer-and-the-console.md);
and retention every `PURGE_INTERVAL`: what is older than `WEBHOOKS_RETENTION` goes, the payloads
(event bodies, response excerpts) older than `WEBHOOKS_PAYLOAD_RETENTION` are removed, their
metadata kept (docs/personal-data.md), and the audit trail's entries older than
`WEBHOOKS_AUDIT_RETENTION` (its own, a year by default) go. The census of sealed values (by the
key that sealed them) is taken at start and every `PURGE_INTERVAL` too, a part of the history at
a time after the first (`census.RollingCensus`); readiness shows the last one. The pending gauge
reads at most a bounded number of rows however large the backlog (`PendingGauge`;
docs/decisions/0018-store-wide-counts-at-scale.md).

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
from typing import Any, Protocol

import structlog

from service.clock import iso, now_ms
from service.delivery.census import RollingCensus
from service.domain import FeedCounts
from service.metrics import Metrics
from service.store import (
    Audit,
    Feeds,
    PersonalData,
    Pipeline,
    Retention,
    SealedCensus,
    StoreUnavailable,
    walk,
)
from service.supervise import Fatal, in_background

log = structlog.get_logger(__name__)

GAUGE_INTERVAL = 5.0
PURGE_INTERVAL = 600.0
PURGE_BATCH = 500
PURGE_PAUSE = 0.05  # seconds between batches: other writers get the store in between
ALERT_INTERVAL = 60.0


class Kept(Pipeline, Retention, PersonalData, Feeds, Audit, Protocol):
    """What housekeeping reads (the gauges' counts), purges and expunges."""


PENDING_COUNTED_BELOW = 100_000


class PendingGauge:
    """The pending deliveries as the gauge shows them, read at a cost that does not grow with
    the backlog (docs/decisions/0018-store-wide-counts-at-scale.md): counted exactly while
    fewer than `cap` (a read of at most `cap` rows); from `cap` on, PostgreSQL's planner
    estimate (never shown below `cap`); on SQLite, which has none, a full count once every
    `ceil(n / cap)` readings, its figure shown in between, so that a reading reads about
    `2 * cap` rows on average however large the backlog."""

    def __init__(self, store: Pipeline, cap: int = PENDING_COUNTED_BELOW) -> None:
        self._store = store
        self._cap = cap
        self._counted: int | None = None  # the last full count (SQLite, at `cap` or more)
        self._until_next = 0  # readings left before the next full count

    async def read(self) -> int:
        cap = self._cap
        bounded = await self._store.pending_at_most(cap)
        if bounded < cap:
            self._counted, self._until_next = None, 0
            return bounded
        estimate = await self._store.pending_estimate()
        if estimate is not None:
            return max(estimate, cap)
        if self._counted is None or self._until_next <= 0:
            self._counted = await self._store.pending_count()
            self._until_next = -(-self._counted // cap) - 1
        else:
            self._until_next -= 1
        return max(self._counted, cap)


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
        feed_behind: float = 900.0,
        audit_retention: float = 365 * 86400.0,
        alert_interval: float = ALERT_INTERVAL,
    ) -> None:
        self._alert_interval = alert_interval
        self._audit_retention = audit_retention
        self._store = store
        self._metrics = metrics
        self._retention = retention
        self._payload_retention = retention if payload_retention is None else payload_retention
        self._purge_interval = purge_interval
        self._purge_batch = purge_batch
        self._feed_behind = feed_behind
        self.census: SealedCensus | None = None
        """The last census of sealed values; None until the first is taken."""
        self._census_at: int | None = None
        self.pending = PendingGauge(store)
        self._census = RollingCensus(store)

    @contextlib.asynccontextmanager
    async def running(self, fatal: Fatal) -> AsyncIterator[Housekeeping]:
        async with (
            in_background(self._gauges(), "housekeeping-gauges", fatal),
            in_background(self._retain(), "housekeeping-retention", fatal),
            in_background(self._alerts(), "housekeeping-alerts", fatal),
            in_background(self._count_sealed(), "housekeeping-census", fatal),
        ):
            yield self

    async def _gauges(self) -> None:
        while True:
            try:
                await self.read_gauges()
            except (StoreUnavailable, OSError) as exc:
                log.warning("housekeeping.failed", error=str(exc))
            await asyncio.sleep(GAUGE_INTERVAL)

    async def _alerts(self) -> None:
        while True:
            try:
                await self.announce_failing()
            except (StoreUnavailable, OSError) as exc:
                log.warning("housekeeping.alerts_failed", error=str(exc))
            await asyncio.sleep(self._alert_interval)

    async def announce_failing(self, now: int | None = None) -> int:
        """`failing` for the subscriptions whose run of failures has reached
        `WEBHOOKS_FAILING_AFTER` by `now` (the clock's, unless a test drives it) without an
        attempt recorded since; returns how many were announced."""
        announced = await self._store.announce_failing(now_ms() if now is None else now)
        if announced:
            log.info("housekeeping.failing_announced", subscriptions=announced)
        return announced

    async def _retain(self) -> None:
        while True:
            try:
                removed = await self.purge()
                if removed:
                    log.info("retention.purged", rows=removed)
                expunged = await self.expunge()
                if expunged:
                    log.info("retention.payloads_removed", rows=expunged)
                audited = await self.purge_audit()
                if audited:
                    log.info("retention.audit_purged", rows=audited)
            except (StoreUnavailable, OSError) as exc:
                log.warning("retention.failed", error=str(exc))
            await asyncio.sleep(self._purge_interval)

    async def _count_sealed(self) -> None:
        while True:
            try:
                await self.take_census()
            except (StoreUnavailable, OSError) as exc:
                log.warning("census.failed", error=str(exc))
            await asyncio.sleep(self._purge_interval)

    async def read_gauges(self) -> None:
        """The pending deliveries, the deactivated subscriptions and the polling ones, into the
        gauges (the active subscriptions' is the index's own count, read when scraped)."""
        self._metrics.pending.set(await self.pending.read())
        deactivated = await self._store.deactivated_subscriptions()
        self._metrics.subscriptions.labels("deactivated").set(deactivated)
        await self.count_feeds()

    async def count_feeds(self) -> FeedCounts:
        """The polling subscriptions and those whose reader is behind (as their rows say),
        into the gauges: a reader behind is alerted on as a failing endpoint is."""
        counts = await self._store.feed_counts(now_ms() - int(self._feed_behind * 1000))
        self._metrics.feeds.set(counts.feeds)
        self._metrics.feeds_behind.set(counts.behind)
        return counts

    async def take_census(self) -> SealedCensus:
        """Counts the sealed values by the key that sealed them (the first time all of them,
        then what changes and a part of the rest), into the gauge and `census`; says so in the
        log when some cannot be opened."""
        census = await self._census.take()
        for state in ("current", "older", "unknown", "clear"):
            self._metrics.sealed_rows.labels(state).set(getattr(census, state))
        self.census, self._census_at = census, now_ms()
        if census.unknown:
            log.error(
                "census.undecryptable",
                values=census.unknown,
                hint="configure the key that sealed them in WEBHOOKS_ENCRYPTION_KEY (after the "
                "first), then run `identity-webhooks rekey`",
            )
        return census

    def sealed_report(self) -> dict[str, Any] | None:
        """The last census as readiness shows it; None until one is taken."""
        if self.census is None or self._census_at is None:
            return None
        census = self.census
        return {
            "current": census.current,
            "older": census.older,
            "unknown": census.unknown,
            "clear": census.clear,
            "countedAt": iso(self._census_at),
        }

    async def purge(self) -> int:
        """Deletes everything past the retention, a batch per transaction; returns the rows."""
        cutoff = now_ms() - int(self._retention * 1000)
        return await walk(
            lambda after: self._store.purge(cutoff, self._purge_batch, after), PURGE_PAUSE
        )

    async def expunge(self) -> int:
        """Removes the payloads past the payload retention, a batch per transaction; returns
        how many bodies and excerpts went."""
        cutoff = now_ms() - int(self._payload_retention * 1000)
        return await walk(
            lambda after: self._store.expunge_payloads(cutoff, self._purge_batch, after),
            PURGE_PAUSE,
        )

    async def purge_audit(self) -> int:
        """Deletes the audit entries past the audit retention, a batch per transaction;
        returns how many went."""
        cutoff = now_ms() - int(self._audit_retention * 1000)
        total = 0
        while removed := await self._store.purge_audit(cutoff, self._purge_batch):
            total += removed
            if removed < self._purge_batch:
                break
            await asyncio.sleep(PURGE_PAUSE)
        return total
