"""The store's one interface. `sql.SqlStore` implements it for both databases, over the thin
drivers of `sqlite.py` and `postgres.py`; a contract test suite runs against both."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from service.store.models import (
    ApiKey,
    AttemptRecord,
    DeliveryDetail,
    DeliveryFilter,
    DeliveryJob,
    DeliveryLogRow,
    Health,
    IncomingEvent,
    NewDelivery,
    Replayed,
    Subscription,
)

UNSET: Any = object()
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SubscriptionChanges:
    """A PATCH: fields left UNSET stay as they are."""

    url: str = UNSET
    events: tuple[str, ...] = UNSET
    active: bool = UNSET
    installed_by: str | None = UNSET
    rate_limit: int | None = UNSET
    headers: tuple[tuple[str, str], ...] = UNSET
    ordering: str = UNSET

    def given(self) -> Mapping[str, Any]:
        names = ("url", "events", "active", "installed_by", "rate_limit", "headers", "ordering")
        return {name: value for name in names if (value := getattr(self, name)) is not UNSET}


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; `next_after` is the key the next page starts after (None: the
    last page). The API turns it into an opaque cursor."""

    rows: list[T]
    next_after: str | None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What `record_attempts` wrote: per subscription touched, since when it has only failed
    (None: its latest attempt succeeded); and the deliveries it did not record because this
    replica no longer held them (their lease ran out and another replica took them)."""

    failing_since: dict[str, int | None]
    lost: frozenset[str]


class StoreUnavailable(Exception):
    """The database is away (down, locked, failing over, out of connections or disk); the
    caller pauses and tries again, and the API answers 503."""


class Store(abc.ABC):
    """Everything the service keeps: API keys, subscriptions, events, deliveries, attempts."""

    # lifecycle
    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> bool:
        """True when the database answers a trivial query."""

    # API keys
    @abc.abstractmethod
    async def create_api_key(self, org_id: str, name: str | None) -> tuple[ApiKey, str]:
        """A new key for `org_id`; returns the record and the key itself, shown once."""

    @abc.abstractmethod
    async def org_for_api_key(self, key: str) -> str | None:
        """The org a presented, unrevoked key belongs to."""

    @abc.abstractmethod
    async def list_api_keys(self) -> list[ApiKey]: ...

    @abc.abstractmethod
    async def revoke_api_key(self, key_id: str) -> bool: ...

    # subscriptions
    @abc.abstractmethod
    async def create_subscription(
        self,
        org_id: str,
        url: str,
        events: Sequence[str],
        installed_by: str | None,
        *,
        rate_limit: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
        ordering: str = "none",
    ) -> Subscription: ...

    @abc.abstractmethod
    async def get_subscription(self, org_id: str, subscription_id: str) -> Subscription | None: ...

    @abc.abstractmethod
    async def find_subscription(self, subscription_id: str) -> Subscription | None:
        """The subscription with this id in whichever org holds it (ids are unique across
        orgs): for operators' commands only; the API always asks within the caller's org."""

    @abc.abstractmethod
    async def list_subscriptions(
        self, org_id: str, limit: int, after: str | None
    ) -> Page[Subscription]: ...

    @abc.abstractmethod
    async def update_subscription(
        self, org_id: str, subscription_id: str, changes: SubscriptionChanges
    ) -> Subscription | None: ...

    @abc.abstractmethod
    async def delete_subscription(self, org_id: str, subscription_id: str) -> bool:
        """Soft-deletes it and cancels its open deliveries."""

    @abc.abstractmethod
    async def subscription_health(self, subscription_ids: Sequence[str]) -> dict[str, Health]:
        """Per subscription: its deliveries retained, the latest one, the last 24 hours'
        attempts (from hourly counters) and its open deliveries."""

    @abc.abstractmethod
    async def rotate_secret(
        self, org_id: str, subscription_id: str, overlap_ms: int
    ) -> Subscription | None:
        """A new signing secret; the current one stays valid for `overlap_ms` (0: it ends
        now). Returns the subscription with its new secret, shown once."""

    # the delivery log and recovery
    @abc.abstractmethod
    async def list_deliveries(
        self,
        org_id: str,
        subscription_id: str,
        where: DeliveryFilter,
        limit: int,
        after: str | None,
    ) -> Page[DeliveryLogRow]:
        """A subscription's deliveries, newest first (cancelled ones are not listed)."""

    @abc.abstractmethod
    async def get_delivery(
        self, org_id: str, subscription_id: str, delivery_id: str
    ) -> DeliveryDetail | None: ...

    @abc.abstractmethod
    async def redeliver(self, org_id: str, subscription_id: str, delivery_id: str) -> bool:
        """Makes the delivery due now (reopening a sent or failed one, same id): one more
        attempt on its schedule. False when there is no such delivery."""

    @abc.abstractmethod
    async def replay(
        self,
        org_id: str,
        subscription: Subscription,
        events: Sequence[str],
        since: int,
        until: int,
        *,
        only_failed: bool,
        limit: int,
    ) -> Replayed:
        """Queues, due now, the subscription's deliveries of the org's retained events named
        `events` that occurred in [since, until), oldest first, at most `limit`: its failed
        ones, and unless `only_failed` its sent ones and new deliveries of events it never
        had. What is open already is left alone."""

    @abc.abstractmethod
    async def subscriptions_revision(self) -> int:
        """A counter bumped by every subscription change, for cheap change detection."""

    @abc.abstractmethod
    async def active_subscriptions(self) -> list[Subscription]: ...

    @abc.abstractmethod
    async def subscription_counts(self) -> dict[str, int]:
        """Subscriptions not deleted, by state: `active` and `deactivated`."""

    @abc.abstractmethod
    async def deactivate_subscription(self, subscription_id: str, reason: str) -> bool:
        """Marks it inactive with a reason and fails its open deliveries."""

    # pipeline
    @abc.abstractmethod
    async def record_events(
        self,
        events: Sequence[IncomingEvent],
        deliveries: Sequence[NewDelivery],
        lease_owner: str,
        lease_ms: int,
    ) -> list[NewDelivery]:
        """Writes events and deliveries in one transaction; an (event, subscription) pair that
        exists is left alone. Returns the deliveries that are new: leased to `lease_owner`,
        but for ordered ones (an `ordering_key`), which wait unleased for their turn."""

    @abc.abstractmethod
    async def claim_due(
        self,
        owner: str,
        limit: int,
        lease_ms: int,
        *,
        subscription_id: str | None = None,
        exclude: Sequence[str] = (),
    ) -> list[DeliveryJob]:
        """Leases up to `limit` due open deliveries nobody holds (or whose lease expired)."""

    @abc.abstractmethod
    async def renew(self, delivery_ids: Sequence[str], owner: str, lease_ms: int) -> set[str]:
        """Extends, by the database clock, the leases `owner` still holds of these; returns
        their ids (the others were lost)."""

    @abc.abstractmethod
    async def release(self, delivery_ids: Sequence[str], owner: str) -> None:
        """Gives back the leases `owner` still holds of these: claimable at once."""

    @abc.abstractmethod
    async def take_back_leases(self) -> int:
        """Clears every lease (for the one process that owns an embedded database, at start:
        whatever an earlier, crashed process held is claimable at once); returns how many."""

    @abc.abstractmethod
    async def record_attempts(self, attempts: Sequence[AttemptRecord], owner: str) -> Recorded:
        """Attempt rows, delivery status, lease release and the subscriptions' failure clocks,
        in one transaction, for the deliveries `owner` still holds."""

    @abc.abstractmethod
    async def pending_count(self) -> int: ...

    @abc.abstractmethod
    async def purge(self, finished_before: int, batch: int) -> int:
        """Deletes at most `batch` finished deliveries last touched before then with their
        attempts, then as many events received before then that no delivery needs, and the
        hourly counters of before then, in one short transaction; returns how many rows went
        (0: nothing is left to purge)."""
