"""The store's interfaces, one per role: each part of the service depends on the narrow one it
uses (API keys for authentication, the log for recovery, the pipeline for ingest and delivery,
retention for housekeeping), and `Store` is all of them with the lifecycle. `sql.SqlStore`
implements `Store` for both databases, over the thin drivers of `sqlite.py` and `postgres.py`;
a contract test suite runs against both."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from service.domain import (
    SYSTEM,
    Actor,
    ApiKey,
    AttemptRecord,
    AuditEntry,
    AuditFilter,
    DeliveryFilter,
    DeliveryJob,
    DeliveryLogEntry,
    DeliveryLogRow,
    DeliveryMode,
    EndpointAuth,
    ErasureReceipt,
    EventTrail,
    FeedCounts,
    FeedHealth,
    FeedPage,
    HourStats,
    IncomingEvent,
    NewDelivery,
    Ordering,
    Redelivery,
    Replayed,
    ReplayWindow,
    Signing,
    Subscription,
    Summary,
)
from service.headers import Patch as HeadersPatch
from service.operational import AlertPolicy

UNSET: Any = object()
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SubscriptionChanges:
    """A PATCH: fields left UNSET stay as they are. `headers` is a merge patch of the static
    headers (`service.headers.merge`: None removes them all), merged with the stored ones in
    the transaction that writes the result."""

    url: str = UNSET
    events: tuple[str, ...] = UNSET
    active: bool = UNSET
    installed_by: str | None = UNSET
    rate_limit: int | None = UNSET
    headers: HeadersPatch | None = UNSET
    ordering: Ordering = UNSET
    data_fields: tuple[str, ...] | None = UNSET
    signing: Signing = UNSET
    hmac_headers: bool = UNSET
    content_filter: str | None = UNSET  # its compact JSON, checked by `service.filters`
    # Replaces the stored one whole, but an OAuth client secret left out
    # (`endpointauth.KEEP_SECRET`) is kept; None removes it.
    auth: EndpointAuth | None = UNSET
    ca_certificate: str | None = UNSET

    def given(self) -> Mapping[str, Any]:
        names = (
            "url",
            "events",
            "active",
            "installed_by",
            "rate_limit",
            "headers",
            "ordering",
            "data_fields",
            "signing",
            "hmac_headers",
            "content_filter",
            "auth",
            "ca_certificate",
        )
        return {name: value for name in names if (value := getattr(self, name)) is not UNSET}


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; `next_after` is the key the next page starts after (None: the
    last page). The API turns it into an opaque cursor."""

    rows: list[T]
    next_after: str | None


@dataclass(frozen=True, slots=True)
class Lease:
    """Who new deliveries are leased to, and for how long, as they are recorded."""

    owner: str
    ms: int


@dataclass(frozen=True, slots=True)
class Claim:
    """A claim of due work: up to `limit` due open deliveries nobody holds (or whose lease
    expired), leased to `owner` for `lease_ms`; only `subscription_id`'s when it is given, and
    none of the subscriptions in `exclude`."""

    owner: str
    limit: int
    lease_ms: int
    _: KW_ONLY
    subscription_id: str | None = None
    exclude: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which page of a listing: at most `limit` rows, after the key `after` (None: the first
    page)."""

    limit: int
    after: str | None


@dataclass(frozen=True, slots=True)
class Recorded:
    """What `record_attempts` wrote: per subscription touched, since when it has only failed
    (None: its latest attempt succeeded); and the deliveries it did not record because this
    replica no longer held them (their lease ran out and another replica took them)."""

    failing_since: dict[str, int | None]
    lost: frozenset[str]
    emitted: int = 0  # deliveries of operational events it made (due now, unleased)


@dataclass(slots=True)
class RekeyProgress:
    """What one `rekey` pass did, per table: rows sealed again with the current key (or sealed
    for the first time, from an older revision's clear values), and rows no configured key
    opens (left as they are)."""

    resealed: dict[str, int] = field(default_factory=dict)
    undecryptable: dict[str, int] = field(default_factory=dict)

    def add(self, table: str, resealed: int, undecryptable: int) -> None:
        self.resealed[table] = self.resealed.get(table, 0) + resealed
        self.undecryptable[table] = self.undecryptable.get(table, 0) + undecryptable


@dataclass(frozen=True, slots=True)
class SealedCensus:
    """The rows holding sealed values, by the key that sealed them: the current one, another
    configured one (`rekey` seals them again), none configured (they cannot be read), or none
    at all (in clear, written by an older revision; `rekey` seals them)."""

    current: int
    older: int
    unknown: int
    clear: int

    def plus(self, other: SealedCensus) -> SealedCensus:
        return SealedCensus(
            self.current + other.current,
            self.older + other.older,
            self.unknown + other.unknown,
            self.clear + other.clear,
        )

    @property
    def rows(self) -> int:
        return self.current + self.older + self.unknown + self.clear

    @property
    def settled(self) -> bool:
        """True when every value is sealed by the current key: nothing for `rekey` to do."""
        return self.rows == self.current


CENSUS_BUCKETS = {"events": 600_000, "attempts": 100_000}
"""How the census cuts the two large tables (`PersonalData.sealed_buckets`): events by the ten
minutes they were received in (ms), attempts by blocks of ids."""


@dataclass(frozen=True, slots=True)
class ChangedSubscriptions:
    """What changed among subscriptions after a stamp (see `Pipeline.changed_subscriptions`):
    the ones that are active now, the ids of those that are not (deactivated, paused or
    deleted), and the newest stamp read (the next read starts after it)."""

    live: list[Subscription]
    gone: list[str]
    high: int
    # Of the live ones, those read with their secrets, header values and credentials still
    # sealed (their `secret`, `headers`, `auth` and keys not filled): what
    # `Pipeline.open_subscription` opens when a delivery first needs them
    # (docs/decisions/0008-index-follows-changes.md).
    sealed: dict[str, Sealed] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sealed:
    """A subscription's sealed values as its row holds them: the signing secret, the one a
    rotation replaced, the header values, the endpoint credentials and the Ed25519 keys."""

    values: tuple[str | None, ...]
    # One of them sealed by a key that is not configured, or its content filter unreadable:
    # known without opening anything, so its deliveries wait from the first read.
    unreadable: bool
    # Its content filter could not be opened (then it waits, as `unreadable`).
    filter_unreadable: bool = False
    # It authenticates to its endpoint (a client certificate may run out).
    authenticated: bool = False


class StoreUnavailable(Exception):
    """The database is away (down, locked, failing over, out of connections or disk); the
    caller pauses and tries again, and the API answers 503."""


class ApiKeys(Protocol):
    """The API keys: issued and revoked by operators, checked on every API request."""

    async def create_api_key(
        self, org_id: str, name: str | None, *, actor: Actor = SYSTEM
    ) -> tuple[ApiKey, str]:
        """A new key for `org_id`; returns the record and the key itself, shown once. The
        audit trail records it (never the key)."""

    async def org_for_api_key(self, key: str) -> str | None:
        """The org a presented, unrevoked key belongs to."""

    async def api_key_for(self, key: str) -> ApiKey | None:
        """The record of a presented, unrevoked key: its org, id and name."""

    async def list_api_keys(self) -> list[ApiKey]: ...

    async def revoke_api_key(self, key_id: str, *, actor: Actor = SYSTEM) -> bool: ...


class Subscriptions(Protocol):
    """Subscriptions as their owners manage them (the API) and operators find them (the CLI)."""

    async def create_subscription(
        self,
        org_id: str,
        url: str,
        events: Sequence[str],
        installed_by: str | None,
        *,
        rate_limit: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
        ordering: Ordering = Ordering.NONE,
        data_fields: Sequence[str] | None = None,
        signing: Signing = Signing.HMAC,
        hmac_headers: bool = True,
        content_filter: str | None = None,
        auth: EndpointAuth | None = None,
        ca_certificate: str | None = None,
        delivery: DeliveryMode = DeliveryMode.PUSH,
        actor: Actor = SYSTEM,
    ) -> Subscription:
        """A new subscription made by `actor`: its audit entry and `changed` (created) are
        written with it."""

    async def get_subscription(self, org_id: str, subscription_id: str) -> Subscription | None: ...

    async def find_subscription(self, subscription_id: str) -> Subscription | None:
        """The subscription with this id in whichever org holds it (ids are unique across
        orgs): for operators' commands only; the API always asks within the caller's org."""

    async def list_subscriptions(
        self, org_id: str, limit: int, after: str | None, *, search: str | None = None
    ) -> Page[Subscription]:
        """The org's subscriptions by id, a page at a time; with `search`, only the one with
        that id and those whose URL holds it (case ignored)."""

    async def update_subscription(
        self,
        org_id: str,
        subscription_id: str,
        changes: SubscriptionChanges,
        *,
        actor: Actor = SYSTEM,
        push_only: bool = False,
    ) -> Subscription | None:
        """Applies `changes` made by `actor`, with their audit entry and `changed` (and
        `disabled` when it pauses an active one); None when there is no such subscription (or,
        `push_only`, when it is a polling one: nothing is changed).
        Raises `InvalidInput` (field `headers`) when the merged headers are over the limits,
        or the stored ones cannot be opened to merge with; (field `auth.clientSecret`) when a
        secret to keep is not there."""

    async def delete_subscription(
        self, org_id: str, subscription_id: str, *, actor: Actor = SYSTEM
    ) -> bool:
        """Soft-deletes it and cancels its open deliveries (audited, `changed`)."""

    async def rotate_secret(
        self, org_id: str, subscription_id: str, overlap_ms: int, *, actor: Actor = SYSTEM
    ) -> Subscription | None:
        """A new signing secret, and a new key pair for an Ed25519 subscription; the current
        ones stay valid for `overlap_ms` (0: they end now). Returns the subscription with its
        new secret, shown once."""


class Summaries(Protocol):
    """Each subscription's deliveries at a glance, for the API's rows."""

    async def subscription_summaries(self, subscription_ids: Sequence[str]) -> dict[str, Summary]:
        """Per subscription: its deliveries retained, the latest one, the last 24 hours'
        attempts (from hourly counters) and its open deliveries."""

    async def subscription_hours(self, subscription_id: str, count: int = 24) -> list[HourStats]:
        """Its attempts of the last `count` hours (the current one last), an hour each, from
        the hourly counters: sent, failed by result class, p95 latency."""


class DeliveryLog(Protocol):
    """A subscription's delivery log, and the recovery that acts on it: redeliver, replay."""

    async def list_deliveries(
        self, org_id: str, subscription_id: str, where: DeliveryFilter, page_of: PageRequest
    ) -> Page[DeliveryLogRow]:
        """A subscription's deliveries, newest first (cancelled ones are not listed)."""

    async def get_delivery(
        self, org_id: str, subscription_id: str, delivery_id: str
    ) -> DeliveryLogEntry | None: ...

    async def redeliver(self, org_id: str, subscription_id: str, delivery_id: str) -> Redelivery:
        """Makes the delivery due now (reopening a sent or failed one, same id): one more
        attempt on its schedule. Not when there is no such delivery, or its payload is no
        longer kept."""

    async def replay(
        self, org_id: str, subscription: Subscription, window: ReplayWindow
    ) -> Replayed:
        """Queues, due now, what `window` selects of the subscription's deliveries of the org's
        retained events. What is open already is left alone."""


class Feeds(Protocol):
    """Polling subscriptions' feeds: read after a place, the reader's progress, its health;
    and an event's every delivery in an org (docs/decisions/0014-polling-and-listen.md)."""

    async def read_feed(self, subscription_id: str, after: int, limit: int) -> FeedPage:
        """At most `limit` deliveries of the feed after place `after`, in order; the same
        ones on a repeat (reading changes nothing of them)."""

    async def acknowledge(self, subscription_id: str, through: int) -> None:
        """The reader read with `through` as its cursor, so it has what comes up to there:
        those still `available` become `sent`, and the feed's read time and progress move."""

    async def feed_health(self, subscription_ids: Sequence[str]) -> dict[str, FeedHealth]:
        """Per polling subscription: when it was last read and what is unread."""

    async def feed_counts(self, behind_before: int) -> FeedCounts:
        """The active polling subscriptions, and those whose oldest unread delivery entered
        the feed before `behind_before` (epoch ms): a reader as far behind as its row says."""

    async def event_trail(self, org_id: str, event_id: str) -> EventTrail | None:
        """The org's event and its deliveries to the org's subscriptions (not deleted ones)."""


@dataclass(frozen=True, slots=True)
class IndexBehind:
    """`record_matched` wrote nothing: subscriptions changed after the revision of the index
    that matched the events (the store's is `revision`)."""

    revision: int


class Pipeline(Protocol):
    """What ingest and delivery write and read: events and deliveries recorded, due work claimed
    under leases, outcomes recorded; the active subscriptions the index matches against; the
    gauges' counts."""

    async def record_events(
        self, events: Sequence[IncomingEvent], deliveries: Sequence[NewDelivery], lease: Lease
    ) -> list[NewDelivery]:
        """Writes events and deliveries in one transaction; an (event, subscription) pair that
        exists is left alone. Returns the deliveries that are new: under `lease`, but for
        ordered ones (an `ordering_key`), which wait unleased for their turn."""

    async def record_matched(
        self,
        events: Sequence[IncomingEvent],
        deliveries: Sequence[NewDelivery],
        lease: Lease,
        revision: int,
    ) -> list[NewDelivery] | IndexBehind:
        """`record_events`, for events matched against an index of subscription revision
        `revision`: written only when that is still the store's, as read by the write itself,
        so no subscription changed before the write that the match did not see; otherwise
        nothing is written (docs/decisions/0019-fewer-statements-per-event.md)."""

    async def claim_due(self, claim: Claim) -> list[DeliveryJob]:
        """Leases the due work `claim` asks for."""

    async def renew(self, delivery_ids: Sequence[str], owner: str, lease_ms: int) -> set[str]:
        """Extends, by the database clock, the leases `owner` still holds of these; returns
        their ids (the others were lost)."""

    async def release(self, delivery_ids: Sequence[str], owner: str) -> None:
        """Gives back the leases `owner` still holds of these: claimable at once."""

    async def take_back_leases(self) -> int:
        """Clears every lease (for the one process that owns an embedded database, at start:
        whatever an earlier, crashed process held is claimable at once); returns how many."""

    async def record_attempts(self, attempts: Sequence[AttemptRecord], owner: str) -> Recorded:
        """Attempt rows, delivery status, lease release and the subscriptions' failure clocks,
        atomically (one statement, or one transaction), for the deliveries `owner` still
        holds; a `recovered` event in the transaction that clears its streak."""

    async def deactivate_subscription(self, subscription_id: str, reason: str) -> bool:
        """Marks it inactive with a reason and fails its open deliveries; `disabled` (by
        `system`) and its audit entry go with it."""

    async def announce_failing(self, now: int) -> int:
        """`failing` for each active subscription whose run of failures began
        `alerts.after_ms` or more before `now` and is not announced yet, with its audit entry,
        as if an attempt had been recorded at `now` (housekeeping's timer: a subscription
        retried rarely is told of on time). Returns how many were announced."""

    async def pending_count(self) -> int:
        """The open deliveries, counted: a read of every one of them."""

    async def pending_at_most(self, cap: int) -> int:
        """The open deliveries counted up to `cap`, reading no more than that many: the
        count when it is below `cap`, else `cap`."""

    async def pending_estimate(self) -> int | None:
        """The open deliveries as the database's planner estimates them from its statistics,
        at a cost that does not grow with them; None where there is no such estimate
        (SQLite)."""

    async def subscriptions_revision(self) -> int:
        """A counter bumped by every subscription change, for cheap change detection."""

    async def active_subscriptions(self) -> list[Subscription]: ...

    async def changed_subscriptions(self, after: int) -> ChangedSubscriptions:
        """Every subscription changed after the stamp `after` (-1: every one), as of one
        snapshot: a change is stamped with the revision it moved, and changes commit in the
        order of their stamps, so a reader that has seen a stamp has seen all before it. The
        live ones come with their secrets still sealed (`ChangedSubscriptions.sealed`)."""

    def open_subscription(self, subscription: Subscription, sealed: Sealed) -> Subscription:
        """`subscription` as `changed_subscriptions` read it, with its sealed values opened
        (its `secret` None when the configured keys cannot open one, as every read shows it)."""

    async def deactivated_subscriptions(self) -> int:
        """Subscriptions not deleted and not active (deactivated by the service, or paused by
        their owner): as many rows read as there are such subscriptions, not all of them. The
        active ones are counted by the subscription index, which holds them."""


@dataclass(frozen=True, slots=True)
class PurgeCursor:
    """How far one retention pass has walked: the last delivery (by its last touch, then id)
    and the last event (by receipt, then org and id) it passed. Each batch starts after them, so
    a pass reads every row once, never again the rows it kept (deliveries still open, events a
    delivery still needs) nor the dead ones its own deletes left behind."""

    delivery: tuple[int, str] = (-1, "")
    event: tuple[int, str, str] = (-1, "", "")


@dataclass(frozen=True, slots=True)
class Purged:
    """One retention batch: the rows it removed, and where the pass goes on (`done`: both walks
    reached the cutoff)."""

    removed: int
    cursor: PurgeCursor
    done: bool


@dataclass(frozen=True, slots=True)
class ExpungeCursor:
    """How far one pass of the payload retention has walked: the last event (by receipt, then
    org and id) and the last attempt (by start, then id) it passed; as `PurgeCursor`."""

    event: tuple[int, str, str] = (-1, "", "")
    attempt: tuple[int, int] = (-1, -1)


@dataclass(frozen=True, slots=True)
class Expunged:
    """One batch of the payload retention: the bodies and excerpts it removed, and where the
    pass goes on (`done`: both walks reached the cutoff)."""

    removed: int
    cursor: ExpungeCursor
    done: bool


class Audit(Protocol):
    """The audit trail: every change to an org's subscriptions and API keys, appended in the
    transaction of the change (the API only reads it), kept for its own retention."""

    async def list_audit(
        self, org_id: str, where: AuditFilter, page_of: PageRequest
    ) -> Page[AuditEntry]:
        """The org's entries, newest first."""

    async def purge_audit(self, before: int, batch: int) -> int:
        """Deletes at most `batch` entries made before then; returns how many."""


async def walk(batch: Callable[[Any], Awaitable[Purged | Expunged]], pause: float = 0.0) -> int:
    """A whole retention pass: `batch` (given where the last one stopped, None at first) until
    it says the pass is done, `pause` seconds between batches; returns the rows removed."""
    step = await batch(None)
    total = step.removed
    while not step.done:
        if pause:
            await asyncio.sleep(pause)
        step = await batch(step.cursor)
        total += step.removed
    return total


class Retention(Protocol):
    """The purge of finished deliveries and old events."""

    async def purge(
        self, finished_before: int, batch: int, after: PurgeCursor | None = None
    ) -> Purged:
        """Deletes, in one short transaction, at most `batch` finished deliveries last touched
        before then (after `after`) with their attempts, then as many events received before
        then, and before the deliveries' walk, that no delivery needs, and the hourly counters
        of before then."""


class PersonalData(Protocol):
    """What the store does for the people the events are about (docs/personal-data.md)."""

    async def erase_customer(
        self, org_id: str, customer_id: str, *, dry_run: bool = False
    ) -> ErasureReceipt:
        """Removes the payloads and response excerpts of every event about the customer in the
        org (by `data.customerId`), keeping their metadata, and cancels their open deliveries;
        with `dry_run`, only counts. Idempotent: a repeat finds the same events and deliveries
        and cancels nothing more."""

    async def expunge_payloads(
        self, received_before: int, batch: int, after: ExpungeCursor | None = None
    ) -> Expunged:
        """The payload retention: removes at most `batch` bodies of events received before
        then and as many response excerpts of attempts made before then (each walk after
        `after`), but none a delivery still open needs."""

    async def rekey(self, batch: int, progress: Callable[[RekeyProgress], None]) -> RekeyProgress:
        """Seals again, with the current key, everything an older key sealed (or an older
        revision kept in clear), in batches of `batch` rows, each its own transaction; safe
        beside running replicas (a row changed in between is left to them) and resumable
        (a second run finds only what the first did not finish). `progress` hears of each
        batch."""

    async def sealed_census(self) -> SealedCensus:
        """The sealed rows by the key that sealed them: every one read."""

    async def sealed_buckets(
        self, table: str, first: int | None = None, end: int | None = None
    ) -> dict[int, SealedCensus]:
        """The sealed values of "events" or "attempts" by bucket (`CENSUS_BUCKETS`), for the
        buckets from `first` to before `end` (None: no bound); empty ones left out."""

    async def sealed_settings(self) -> SealedCensus:
        """The sealed values of subscriptions and of the store's own keys."""


class Store(
    ApiKeys,
    Subscriptions,
    Summaries,
    DeliveryLog,
    Feeds,
    Pipeline,
    Retention,
    PersonalData,
    Audit,
    Protocol,
):
    """Everything the service keeps: API keys, subscriptions, events, deliveries, attempts;
    for whoever opens and closes the store (the app's wiring, the CLI)."""

    alerts: AlertPolicy
    """When a run of failures is announced as `failing`."""

    async def load_keys(self) -> None:
        """Reads the store's own keys (raises `crypto.Undecryptable` when no configured key
        opens them); `open_store` does this."""

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
