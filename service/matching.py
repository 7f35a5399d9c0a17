"""Which subscriptions want an event: an in-memory index by (orgId, event).

The index follows the store's subscription changes: when the store's revision moves (at once
when this process's API changes a subscription, and every `refresh_interval` otherwise, so
replicas see each other's changes within a few seconds) it reads only the subscriptions changed
since the newest change it has read, and applies them; a first load reads them all, without
holding the event loop for long (docs/decisions/0008-index-follows-changes.md). A lookup is two
dict reads, and a call of each candidate's content filter, compiled when the subscription
entered the index (docs/decisions/0009-content-filters.md). Signing secrets, header values and
endpoint credentials stay sealed until a delivery first needs them (`get`); a value sealed by a
key that is not configured is known from its prefix at the read, so its deliveries are parked
from the start (`undecryptable`).

The index also knows how current it is: the wall-clock time (the clock subscriptions' createdAt
is stamped with) taken just before its last successful revision read. Every subscription made
before then is in it, so an event that occurred before then is matched right; a newer one may
want a subscription made since (`covers`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

import orjson
import structlog

from service.clock import now_ms
from service.domain import Subscription
from service.filters import FilterError, Predicate, compile_filter
from service.store import ChangedSubscriptions, Pipeline, Sealed, StoreUnavailable
from service.supervise import in_background

log = structlog.get_logger(__name__)


class Matched(NamedTuple):
    """What an event matched: the subscriptions that want it (as read: their secrets still
    sealed, `SubscriptionIndex.get` opens them), and how many more of its type refused it by
    their filters."""

    wanted: tuple[Subscription, ...]
    filtered: int


_NONE = Matched((), 0)


class SubscriptionIndex:
    """Active subscriptions by (org, event) and by id."""

    def __init__(self, store: Pipeline, refresh_interval: float = 2.0) -> None:
        self._store = store
        self._interval = refresh_interval
        self._revision: int | None = None
        self._seen = 0  # the newest change stamp applied
        self._by_key: dict[tuple[str, str], dict[str, Subscription]] = {}
        self._by_id: dict[str, Subscription] = {}  # as read: secrets still sealed (`_sealed`)
        self._undecryptable: set[str] = set()
        self._filters: dict[str, Predicate] = {}  # by subscription id, those with one
        self._sealed: dict[str, Sealed] = {}  # by subscription id, as read
        self._opened: dict[str, Subscription] = {}  # those a delivery has needed, opened
        self._authenticated: set[str] = set()  # those with endpoint authentication
        self._current_at: int | None = None  # epoch ms; see the module docstring
        self._lock = asyncio.Lock()
        self._nudged = asyncio.Event()  # set by a change of this process's API

    def match(
        self, org_id: str, event: str, occurred_at_ms: int, envelope: Mapping[str, Any]
    ) -> Matched:
        """Subscriptions of `org_id` that want `event`, existed when it occurred and whose
        filter takes its `envelope` (the parsed event) (docs/contract.md, "Events in")."""
        candidates = self._by_key.get((org_id, event))
        if not candidates:
            return _NONE
        filters = self._filters
        if not filters:
            return Matched(
                tuple(s for s in candidates.values() if s.created_at <= occurred_at_ms), 0
            )
        wanted = []
        filtered = 0
        for s in candidates.values():
            if s.created_at > occurred_at_ms:
                continue
            accepts = filters.get(s.id)
            if accepts is None or _takes(accepts, envelope, s.id):
                wanted.append(s)
            else:
                filtered += 1
        return Matched(tuple(wanted), filtered)

    def covers(self, occurred_at_ms: int) -> bool:
        """True when the index held every subscription that existed when an event at
        `occurred_at_ms` occurred, so matching it now is right (False before the first load)."""
        return self._current_at is not None and occurred_at_ms < self._current_at

    def get(self, subscription_id: str) -> Subscription | None:
        """The active subscription with its secrets opened, the first time a delivery needs
        them (docs/decisions/0008-index-follows-changes.md); one that does not open is
        reported and parked from then on, as those the first read knew to be unreadable."""
        opened = self._opened.get(subscription_id)
        if opened is not None:
            return opened
        read = self._by_id.get(subscription_id)
        sealed = self._sealed.get(subscription_id)
        if read is None or sealed is None:
            return read
        opened = self._store.open_subscription(read, sealed)
        if opened.secret is None and subscription_id not in self._undecryptable:
            log.error("subscription.undecryptable", subscription_id=subscription_id)
            self._undecryptable.add(subscription_id)
        self._opened[subscription_id] = opened
        return opened

    def authenticated(self) -> list[Subscription]:
        """The active subscriptions that authenticate to their endpoint, opened."""
        found = (self.get(subscription_id) for subscription_id in self._authenticated)
        return [subscription for subscription in found if subscription is not None]

    @property
    def revision(self) -> int | None:
        """The store's subscription revision the index holds (None before its first load)."""
        return self._revision

    def active_count(self) -> int:
        """The active subscriptions the index holds: the store's, as of `revision`."""
        return len(self._by_id)

    def undecryptable(self) -> tuple[str, ...]:
        """Active subscriptions whose signing secret the configured keys cannot open: their
        deliveries are recorded but not claimed until the key is back."""
        return tuple(sorted(self._undecryptable))

    async def refresh(self, *, force: bool = False) -> bool:
        """Applies what changed when the revision moved (everything when `force`); True when
        it read changes."""
        async with self._lock:
            # Taken before the read: a subscription committed after it is not covered.
            current_at = now_ms()
            revision = await self._store.subscriptions_revision()
            if not force and revision == self._revision:
                self._current_at = current_at
                return False
            changed = await self._store.changed_subscriptions(-1 if force else self._seen)
            if force:
                # Built aside and swapped in: a lookup never sees half an index.
                maps = _Maps({}, {}, set(), {}, {}, {}, set())
                await _apply(changed, maps)
                self._by_key, self._by_id = maps.by_key, maps.by_id
                self._undecryptable, self._filters = maps.undecryptable, maps.filters
                self._sealed, self._opened = maps.sealed, maps.opened
                self._authenticated = maps.authenticated
            else:
                maps = _Maps(
                    self._by_key,
                    self._by_id,
                    self._undecryptable,
                    self._filters,
                    self._sealed,
                    self._opened,
                    self._authenticated,
                )
                await _apply(changed, maps)
            self._seen = max(self._seen, changed.high) if not force else changed.high
            self._revision = revision
            self._current_at = current_at
        log.debug(
            "index.refreshed",
            revision=revision,
            changed=len(changed.live) + len(changed.gone),
            active=len(self._by_id),
        )
        return True

    async def on_change(self, _subscription_id: str) -> None:
        """Called by this process's API after a change: the index follows at once, in its own
        task (it reads what changed, not every subscription). The API answers without waiting
        for it: an event written after the change was matched by an index that holds it,
        whichever replica wrote it, because the write checks the index's revision against the
        store's (`Pipeline.record_matched`) (docs/decisions/0008-index-follows-changes.md)."""
        self._nudged.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SubscriptionIndex]:
        """Loads the index, then keeps it fresh in the background until the block ends."""
        await self.refresh(force=True)
        async with in_background(self._follow(), "subscription-index"):
            yield self

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), self._interval)
            self._nudged.clear()
            try:
                await self.refresh()
            except (StoreUnavailable, OSError) as exc:
                log.warning("index.refresh_failed", error=str(exc))


_CHUNK = 1000  # subscriptions applied between two yields to the loop


class _Maps(NamedTuple):
    by_key: dict[tuple[str, str], dict[str, Subscription]]
    by_id: dict[str, Subscription]
    undecryptable: set[str]
    filters: dict[str, Predicate]
    sealed: dict[str, Sealed]
    opened: dict[str, Subscription]
    authenticated: set[str]


async def _apply(changed: ChangedSubscriptions, maps: _Maps) -> None:
    """Puts the changed subscriptions into the maps (a changed one out of its old keys first),
    and takes the gone ones out, a chunk at a time. A filter is compiled here, once per change
    of its subscription; secrets stay sealed (`SubscriptionIndex.get` opens them)."""
    for n, subscription in enumerate(changed.live):
        if n and not n % _CHUNK:
            await asyncio.sleep(0)
        _remove(subscription.id, maps)
        maps.by_id[subscription.id] = subscription
        for event in subscription.events:
            maps.by_key.setdefault((subscription.org_id, event), {})[subscription.id] = subscription
        sealed = changed.sealed.get(subscription.id)
        if sealed is None:  # read opened
            if subscription.secret is None:
                maps.undecryptable.add(subscription.id)
            if subscription.auth is not None:
                maps.authenticated.add(subscription.id)
        else:
            maps.sealed[subscription.id] = sealed
            if sealed.unreadable:
                maps.undecryptable.add(subscription.id)
            if sealed.authenticated:
                maps.authenticated.add(subscription.id)
        if subscription.filter is not None:
            accepts = _compiled(subscription)
            if accepts is not None:
                maps.filters[subscription.id] = accepts
    for subscription_id in changed.gone:
        _remove(subscription_id, maps)


def _takes(accepts: Predicate, envelope: Mapping[str, Any], subscription_id: str) -> bool:
    """The filter's verdict; True (recorded, nothing lost) should it ever raise: a filter
    must never stop the consumer."""
    try:
        return accepts(envelope)
    except Exception as exc:  # noqa: BLE001 - the backstop for a filter's bug
        log.error("subscription.filter_failed", subscription_id=subscription_id, error=repr(exc))
        return True


def _compiled(subscription: Subscription) -> Predicate | None:
    """The subscription's filter compiled; None (every event) for a stored one the checks of
    this version refuse: nothing is lost, and the error says which to fix."""
    assert subscription.filter is not None
    try:
        return compile_filter(orjson.loads(subscription.filter)).matches
    except (FilterError, orjson.JSONDecodeError) as exc:
        log.error("subscription.filter_unusable", subscription_id=subscription.id, error=str(exc))
        return None


def _remove(subscription_id: str, maps: _Maps) -> None:
    old = maps.by_id.pop(subscription_id, None)
    maps.undecryptable.discard(subscription_id)
    maps.filters.pop(subscription_id, None)
    maps.sealed.pop(subscription_id, None)
    maps.opened.pop(subscription_id, None)
    maps.authenticated.discard(subscription_id)
    if old is None:
        return
    for event in old.events:
        key = (old.org_id, event)
        keyed = maps.by_key.get(key)
        if keyed is not None:
            keyed.pop(subscription_id, None)
            if not keyed:
                del maps.by_key[key]
