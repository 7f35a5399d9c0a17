"""The types every stage speaks: subscriptions, events, deliveries, attempts and their statuses.

Plain frozen dataclasses and enums, owned by no stage: ingest makes events and deliveries, the
store keeps them, delivery sends and records attempts, the API and the CLI present them. No
driver type leaks into them."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Ordering(enum.StrEnum):
    """How a subscription's deliveries are sequenced (stored and shown as the value)."""

    NONE = "none"  # each delivery goes out as soon as its lane has room
    CUSTOMER = "customer"  # one customer's deliveries go out one at a time, in order


class Signing(enum.StrEnum):
    """What signs a subscription's Standard Webhooks header (stored and shown as the value)."""

    HMAC = "hmac"  # v1: HMAC-SHA256 with the shared secret
    ED25519 = "ed25519"  # v1a: Ed25519 with the subscription's private key


class DeliveryMode(enum.StrEnum):
    """How a subscription's deliveries reach its receiver (stored and shown as the value)."""

    PUSH = "push"  # POSTed to its URL
    POLL = "poll"  # kept in its feed, read with GET …/{id}/events (no URL)


class DeliveryStatus(enum.StrEnum):
    """A delivery's life: pending → (retrying →)* sent | failed; cancelled when its
    subscription is deleted or its payload erased while it was open. A polling subscription's:
    available → sent once its reader reads past it (docs/decisions/0014-polling-and-listen.md)."""

    PENDING = "pending"
    AVAILABLE = "available"
    RETRYING = "retrying"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    org_id: str
    name: str | None
    prefix: str  # the first characters, to recognise a key in a list without revealing it
    created_at: int
    revoked_at: int | None


class ClientAuth(enum.StrEnum):
    """How a client proves itself to an OAuth token endpoint (RFC 6749 section 2.3.1)."""

    BASIC = "basic"  # HTTP Basic with the client id and secret
    BODY = "body"  # client_id and client_secret in the form body


@dataclass(frozen=True, slots=True)
class OAuthClientCredentials:
    """An endpoint behind a gateway that wants an OAuth 2.0 access token, had by the client
    credentials grant (RFC 6749 section 4.4) from `token_url`."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    audience: str | None = None
    client_auth: ClientAuth = ClientAuth.BASIC


@dataclass(frozen=True, slots=True)
class MutualTls:
    """An endpoint that asks for a client certificate on the TLS handshake: `certificate` (PEM,
    the leaf first, then any intermediates) and its `private_key` (PEM, unencrypted)."""

    certificate: str
    private_key: str = field(repr=False)


EndpointAuth = OAuthClientCredentials | MutualTls
"""How deliveries prove themselves to a subscription's endpoint beyond the signature."""


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    org_id: str
    url: str
    events: tuple[str, ...]
    installed_by: str | None
    active: bool
    deactivated_reason: str | None
    created_at: int
    updated_at: int
    failing_since: int | None
    # Decrypted signing secret: never rendered by the API after creation, never logged. None
    # when the configured encryption keys cannot open it or the header values (the key that
    # sealed them was removed):
    # the row is still listed, changed and deleted; its deliveries wait in the store.
    secret: str | None = field(repr=False)
    # The secret a rotation replaced, signed with too until `previous_secret_until` (epoch ms).
    previous_secret: str | None = field(default=None, repr=False)
    previous_secret_until: int | None = None
    rate_limit: int | None = None  # deliveries per second at most; None: no limit
    # Static headers sent with every delivery; some values are credentials (never logged).
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    disabled_at: int | None = None  # when it was last deactivated
    consecutive_failures: int = 0  # failed attempts since its last success
    ordering: Ordering = Ordering.NONE
    # The keys of an event's `data` its deliveries carry (`events.project`); None: all of them.
    data_fields: tuple[str, ...] | None = None
    # What signs its Standard Webhooks header: "hmac" (the secret) or "ed25519" (its key pair).
    signing: Signing = Signing.HMAC
    # Ed25519 only: the private key's 32-byte seed (decrypted, never shown or logged; None when
    # no configured key opens it), the one a rotation replaced (until `previous_secret_until`,
    # as the previous secret), and the 32 raw bytes of the public key, which is published.
    signing_key: bytes | None = field(default=None, repr=False)
    previous_signing_key: bytes | None = field(default=None, repr=False)
    public_key: bytes | None = None
    # False: no X-Identity-Signature nor X-Quantum-Signature (HMAC only, no asymmetric form).
    hmac_headers: bool = True
    # Its content filter as compact JSON (`service.filters`), compiled where it is matched;
    # None: every event of its types.
    filter: str | None = field(default=None, repr=False)
    # How deliveries authenticate to the endpoint (credentials: never logged, never shown).
    auth: EndpointAuth | None = field(default=None, repr=False)
    # A PEM bundle of the only CAs its endpoint's certificate may chain to; None: the system's
    # (and WEBHOOKS_TLS_CA_FILE's).
    ca_certificate: str | None = None
    # Pushed to `url`, or kept in its feed for its reader (`url` is then empty).
    delivery: DeliveryMode = DeliveryMode.PUSH
    # Who last changed it (`Actor.label`: an API key's id, `cli:<user>` or `system`); None for a
    # subscription last changed before the audit trail.
    updated_by: str | None = None

    @property
    def polled(self) -> bool:
        """True when its deliveries are read from its feed, never sent."""
        return self.delivery is DeliveryMode.POLL

    @property
    def ordered(self) -> bool:
        """True when one customer's deliveries go out one at a time, in order."""
        return self.ordering == Ordering.CUSTOMER

    def signing_secrets(self, now: int) -> list[str]:
        """The secrets an attempt at `now` (epoch ms) is signed with: the current one first,
        then the previous one while its overlap lasts."""
        secrets = [] if self.secret is None else [self.secret]
        if (
            self.previous_secret is not None
            and self.previous_secret_until is not None
            and now < self.previous_secret_until
        ):
            secrets.append(self.previous_secret)
        return secrets

    def signing_keys(self, now: int) -> list[bytes]:
        """The Ed25519 keys an attempt at `now` (epoch ms) is signed with, as `signing_secrets`:
        none for an HMAC subscription."""
        keys = [] if self.signing_key is None else [self.signing_key]
        if (
            self.previous_signing_key is not None
            and self.previous_secret_until is not None
            and now < self.previous_secret_until
        ):
            keys.append(self.previous_signing_key)
        return keys

    @property
    def plain(self) -> bool:
        """True when its deliveries go through the shared pool as they are: no endpoint
        authentication and no CA of its own."""
        return self.auth is None and self.ca_certificate is None

    UNDECRYPTABLE = (
        "its signing secret, header values or endpoint credentials cannot be decrypted with the "
        "configured WEBHOOKS_ENCRYPTION_KEY: deliveries wait in the store until the key that "
        "sealed them is configured again"
    )


@dataclass(frozen=True, slots=True)
class LatestOutcome:
    """Where a subscription's newest delivery stands: its status, its last response code and
    when it was last attempted (or created, before any attempt)."""

    status: DeliveryStatus
    response_code: int | None
    at: int


@dataclass(frozen=True, slots=True)
class Summary:
    """A subscription's deliveries at a glance, for the API's rows: read from the hourly
    counters and the open deliveries, never from its whole history."""

    delivery_count: int  # deliveries retained (created within the retention)
    last_delivery: LatestOutcome | None
    attempts_24h: int
    ok_24h: int  # of those, 2xx
    p95_latency_ms_24h: int | None  # None without attempts
    pending_count: int  # open deliveries (pending or retrying)
    next_retry_at: int | None  # the earliest retry due
    # Ordered subscriptions: customers whose head delivery is failing (retrying), and the
    # oldest such head (id, createdAt).
    blocked_customers: int = 0
    oldest_blocked: tuple[str, int] | None = None

    @property
    def success_rate_24h(self) -> float | None:
        return None if not self.attempts_24h else self.ok_24h / self.attempts_24h


@dataclass(frozen=True, slots=True)
class HourStats:
    """One hour of a subscription's attempts, from its hourly counters."""

    start: int  # epoch ms, on the hour
    attempts: int
    sent: int  # of those, 2xx
    failed: Mapping[str, int]  # the others by result class (5xx, timeout…), none at zero
    p95_latency_ms: int | None  # None without attempts


@dataclass(frozen=True, slots=True)
class AttemptLog:
    """One attempt as the delivery log shows it."""

    number: int
    at: int
    response_code: int | None
    duration_ms: int
    error: str | None
    response_excerpt: str | None


@dataclass(frozen=True, slots=True)
class DeliveryLogRow:
    """One delivery in a subscription's log."""

    id: str
    event_id: str
    event: str
    status: DeliveryStatus
    created_at: int
    attempt_count: int
    last_attempt: AttemptLog | None  # without its excerpt
    next_attempt_at: int | None  # while open
    cancelled_reason: str | None = None  # why it was cancelled (its payload was erased)


class PayloadRemoval(enum.StrEnum):
    """Why an event's payload is no longer kept (its metadata still is)."""

    ERASED = "erased"  # at the customer's request (an erasure)
    EXPIRED = "expired"  # past WEBHOOKS_PAYLOAD_RETENTION


@dataclass(frozen=True, slots=True)
class PayloadGone:
    """Why a delivery's payload cannot be shown or sent again, and since when."""

    reason: PayloadRemoval | None  # None: no configured key opens it
    at: int | None

    @property
    def detail(self) -> str:
        if self.reason is PayloadRemoval.ERASED:
            return "its payload was erased at the customer's request"
        if self.reason is PayloadRemoval.EXPIRED:
            return "its payload is no longer kept (WEBHOOKS_PAYLOAD_RETENTION)"
        return "its payload cannot be decrypted with the configured WEBHOOKS_ENCRYPTION_KEY"


@dataclass(frozen=True, slots=True)
class DeliveryLogEntry:
    """One delivery in full as the log shows it: its row, the payload, its latest attempts."""

    row: DeliveryLogRow
    payload: bytes | None = field(repr=False)  # the event's envelope; None when `gone`
    attempts: tuple[AttemptLog, ...]
    gone: PayloadGone | None = None


class Redelivery(enum.Enum):
    """What a redelivery did."""

    QUEUED = "queued"
    NOT_FOUND = "not_found"
    PAYLOAD_GONE = "payload_gone"


@dataclass(frozen=True, slots=True)
class ErasureReceipt:
    """What an erasure of one customer's data in one org found and did: `events` about the
    customer and their `deliveries` now hold no payload or excerpt; `cancelled` of those
    deliveries were still open and were cancelled by this call."""

    customer_id: str
    events: int
    deliveries: int
    cancelled: int
    erased_at: int


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """What the log is narrowed to; times are epoch ms, `until` exclusive."""

    status: DeliveryStatus | None = None
    event: str | None = None
    since: int | None = None
    until: int | None = None
    # Search: one event, or the events about one customer or one verification (by their
    # `data.customerId` and `data.verificationId`, matched through their keyed hashes).
    event_id: str | None = None
    customer_id: str | None = None
    verification_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    """What a replay queues again: a subscription's deliveries of the events `events` that
    occurred in [`since`, `until`) (epoch ms), oldest first, at most `limit`; its failed ones,
    and unless `only_failed` its sent ones and new deliveries of events it never had."""

    events: Sequence[str]
    since: int
    until: int
    only_failed: bool
    limit: int
    # The subscription's content filter as it stands, on an event's parsed envelope: an event
    # it refuses is not queued. None: no filter.
    accepts: Callable[[Any], bool] | None = None


@dataclass(frozen=True, slots=True)
class Replayed:
    """What a replay queued: `count` deliveries; `next_since` is where the next call starts
    when the per-call bound cut the window short (None: the window is done)."""

    count: int
    next_since: int | None
    without_payload: int = 0  # in the window but not queued: their payloads are removed
    filtered: int = 0  # in the window but not queued: the content filter refuses them


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """An accepted event as ingest records it."""

    id: str
    org_id: str
    event: str
    occurred_at: int
    body: bytes = field(repr=False)
    sibling_service: str | None
    source: str | None
    customer_id: str | None = None  # its ordering key (see `ordering_key`)
    verification_id: str | None = None  # `data.verificationId`, to search by (hashed)


@dataclass(frozen=True, slots=True)
class NewDelivery:
    id: str
    event_id: str
    subscription_id: str
    event: str
    org_id: str
    # Set for a subscription with `ordering: customer`: the customer whose deliveries go out
    # one at a time. Such a delivery is recorded unleased and sent once it heads its queue.
    ordering_key: str | None = None
    # A polling subscription's: recorded `available` in its feed, never leased nor sent.
    poll: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryJob:
    """Everything one attempt needs: the dispatcher never reads the store to send."""

    id: str
    subscription_id: str
    event_id: str
    event: str
    body: bytes = field(repr=False)
    sibling_service: str | None
    attempts: int
    occurred_at: int

    @classmethod
    def first(cls, delivery: NewDelivery, event: IncomingEvent) -> DeliveryJob:
        """The first attempt's job of a delivery just recorded."""
        return cls(
            delivery.id,
            delivery.subscription_id,
            event.id,
            event.event,
            event.body,
            event.sibling_service,
            0,
            event.occurred_at,
        )


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One finished attempt and what it does to its delivery."""

    delivery_id: str
    subscription_id: str
    number: int
    started_at: int
    duration_ms: int
    status_code: int | None
    result: str
    error: str | None
    response_excerpt: str | None
    new_status: DeliveryStatus
    next_attempt_at: int | None  # when new_status is retrying


class FailureClock(NamedTuple):
    """What a batch of attempts does to one subscription's failure clock."""

    reset: bool  # a success came first in the batch: the stored streak restarts
    first_failure: int | None  # the first failure after the last success; None: it succeeded
    failures: int  # failures after the last success


def failure_clocks(attempts: Sequence[AttemptRecord]) -> dict[str, FailureClock]:
    """Per subscription, the attempts taken in order: where its failure clock stands after
    them, relative to what is stored (see `FailureClock`)."""
    clocks: dict[str, FailureClock] = {}
    for attempt in attempts:
        reset, first, failures = clocks.get(attempt.subscription_id, (False, None, 0))
        if attempt.new_status is DeliveryStatus.SENT:
            clocks[attempt.subscription_id] = FailureClock(True, None, 0)
        else:
            start = attempt.started_at if first is None else first
            clocks[attempt.subscription_id] = FailureClock(reset, start, failures + 1)
    return clocks


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One delivery in a polling subscription's feed, at its place `seq`: its event's body as
    kept (None when its payload was removed: `gone` says why)."""

    seq: int
    delivery_id: str
    event_id: str
    event: str
    occurred_at: int
    created_at: int
    body: bytes | None = field(repr=False)
    sibling_service: str | None
    gone: PayloadGone | None = None


@dataclass(frozen=True, slots=True)
class FeedPage:
    """What one read of a feed found after a place: its items in order, the newest place it
    looked at (`last`), and the oldest place the feed still keeps (None: it is empty)."""

    items: list[FeedItem]
    last: int
    oldest_kept: int | None


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """How a polling subscription's reader stands: when it last read, what it has not read
    past yet (`unread`, and the oldest of those, epoch ms)."""

    read_at: int | None
    unread: int
    oldest_unread_at: int | None


@dataclass(frozen=True, slots=True)
class FeedCounts:
    """The store's active polling subscriptions, and how many of their readers are behind."""

    feeds: int
    behind: int


@dataclass(frozen=True, slots=True)
class EventDelivery:
    """One subscription's delivery of an event, as `GET /api/identity/events/{id}` lists it."""

    subscription_id: str
    row: DeliveryLogRow


@dataclass(frozen=True, slots=True)
class EventTrail:
    """An event of an org and every delivery of it to the org's subscriptions."""

    id: str
    event: str
    occurred_at: int
    received_at: int
    deliveries: list[EventDelivery]


class ActorKind(enum.StrEnum):
    """Who made a change to a subscription or an API key (stored and shown as the value)."""

    API_KEY = "api_key"  # a call of the API, with this key
    CLI = "cli"  # the command line, run by an operating-system user
    SYSTEM = "system"  # the service itself (410 Gone, the failure clock)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: an API key's id and name, the CLI's operating-system user (`name`),
    or the service."""

    kind: ActorKind
    id: str | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        """What a subscription's `updatedBy` shows: the key's id, `cli:<user>` or `system`."""
        if self.kind is ActorKind.API_KEY:
            return self.id or "api_key"
        if self.kind is ActorKind.CLI:
            return f"cli:{self.name}" if self.name else "cli"
        return "system"

    def document(self) -> dict[str, str | None]:
        """As operational events and the audit trail show it."""
        return {"type": self.kind.value, "id": self.id, "name": self.name}


SYSTEM = Actor(ActorKind.SYSTEM)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change in an org's audit trail: when, by whom, what was done to which subscription
    or API key, and what changed (field names and plain facts, never a secret)."""

    id: str
    org_id: str
    at: int
    actor: Actor
    action: str
    subscription_id: str | None
    api_key_id: str | None
    changes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What the audit trail is narrowed to; times are epoch ms, `until` exclusive."""

    since: int | None = None
    until: int | None = None
    subscription_id: str | None = None
    actions: tuple[str, ...] = ()  # empty: every action
