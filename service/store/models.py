"""The records the store hands out and takes in. Plain frozen dataclasses: no driver types leak."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class DeliveryStatus(enum.StrEnum):
    """A delivery's life: pending → (retrying →)* sent | failed; cancelled when its
    subscription is deleted."""

    PENDING = "pending"
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
    # when the configured encryption keys cannot open it (the key that sealed it was removed):
    # the row is still listed, changed and deleted; its deliveries wait in the store.
    secret: str | None = field(repr=False)

    UNDECRYPTABLE = (
        "its signing secret cannot be decrypted with the configured WEBHOOKS_ENCRYPTION_KEY: "
        "deliveries wait in the store until the key that sealed it is configured again"
    )


@dataclass(frozen=True, slots=True)
class LastDelivery:
    status: DeliveryStatus
    response_code: int | None
    at: int


@dataclass(frozen=True, slots=True)
class DeliverySummary:
    """A subscription's deliveries at a glance, for the API's rows."""

    delivery_count: int
    last_delivery: LastDelivery | None


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


@dataclass(frozen=True, slots=True)
class NewDelivery:
    id: str
    event_id: str
    subscription_id: str
    event: str
    org_id: str


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
