"""Which subscriptions want an event: an in-memory index by (orgId, event).

The index is rebuilt from the store when the store's subscription revision moves: at once when
this process's API changes a subscription, and every `refresh_interval` otherwise, so replicas see
each other's changes within a few seconds. A lookup is two dict reads.

The index also knows how current it is: the wall-clock time (the clock subscriptions' createdAt
is stamped with) taken just before its last successful revision read. Every subscription made
before then is in it, so an event that occurred before then is matched right; a newer one may
want a subscription made since (`covers`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

import structlog

from service.clock import now_ms
from service.store import Store, StoreUnavailable
from service.store.models import Subscription
from service.supervise import in_background

log = structlog.get_logger(__name__)


class SubscriptionIndex:
    """Active subscriptions by (org, event) and by id."""

    def __init__(self, store: Store, refresh_interval: float = 2.0) -> None:
        self._store = store
        self._interval = refresh_interval
        self._revision: int | None = None
        self._by_key: dict[tuple[str, str], tuple[Subscription, ...]] = {}
        self._by_id: dict[str, Subscription] = {}
        self._undecryptable: tuple[str, ...] = ()
        self._current_at: int | None = None  # epoch ms; see the module docstring
        self._lock = asyncio.Lock()

    def match(self, org_id: str, event: str, occurred_at_ms: int) -> tuple[Subscription, ...]:
        """Subscriptions of `org_id` that want `event` and existed when it occurred (SPEC 1)."""
        candidates = self._by_key.get((org_id, event), ())
        return tuple(s for s in candidates if s.created_at <= occurred_at_ms)

    def covers(self, occurred_at_ms: int) -> bool:
        """True when the index held every subscription that existed when an event at
        `occurred_at_ms` occurred, so matching it now is right (False before the first load)."""
        return self._current_at is not None and occurred_at_ms < self._current_at

    def get(self, subscription_id: str) -> Subscription | None:
        return self._by_id.get(subscription_id)

    def undecryptable(self) -> tuple[str, ...]:
        """Active subscriptions whose signing secret the configured keys cannot open: their
        deliveries are recorded but not claimed until the key is back."""
        return self._undecryptable

    async def refresh(self, *, force: bool = False) -> bool:
        """Reloads when the revision moved (or `force`); True when it reloaded."""
        async with self._lock:
            # Taken before the read: a subscription committed after it is not covered.
            current_at = now_ms()
            revision = await self._store.subscriptions_revision()
            if not force and revision == self._revision:
                self._current_at = current_at
                return False
            active = await self._store.active_subscriptions()
            by_key: dict[tuple[str, str], list[Subscription]] = defaultdict(list)
            for subscription in active:
                for event in subscription.events:
                    by_key[(subscription.org_id, event)].append(subscription)
            self._by_key = {key: tuple(value) for key, value in by_key.items()}
            self._by_id = {s.id: s for s in active}
            self._undecryptable = tuple(s.id for s in active if s.secret is None)
            self._revision = revision
            self._current_at = current_at
        log.debug("index.reloaded", revision=revision, active=len(active))
        return True

    async def on_change(self, _subscription_id: str) -> None:
        """Called by this process's API after a change: the index follows at once."""
        await self.refresh(force=True)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SubscriptionIndex]:
        """Loads the index, then keeps it fresh in the background until the block ends."""
        await self.refresh(force=True)
        async with in_background(self._follow(), "subscription-index"):
            yield self

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except (StoreUnavailable, OSError) as exc:
                log.warning("index.refresh_failed", error=str(exc))
