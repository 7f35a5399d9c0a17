"""Events, deliveries and attempts for the store tests: the contract suite and the stores' own."""

from __future__ import annotations

from service import ids
from service.clock import now_ms
from service.domain import (
    AttemptRecord,
    DeliveryStatus,
    IncomingEvent,
    NewDelivery,
    Subscription,
)
from service.store import Lease, Store

EVENTS = ("verification.created", "customer.kyc_updated")


def incoming(org: str = "org_a", event: str = "verification.created") -> IncomingEvent:
    return IncomingEvent(
        id=ids.new_id("evt"),
        org_id=org,
        event=event,
        occurred_at=now_ms(),
        body=b'{"id":"x"}',
        sibling_service=None,
        source="t/0/1",
    )


def attempt(
    delivery: NewDelivery, number: int, status: DeliveryStatus, code: int | None, at: int
) -> AttemptRecord:
    return AttemptRecord(
        delivery_id=delivery.id,
        subscription_id=delivery.subscription_id,
        number=number,
        started_at=at,
        duration_ms=12,
        status_code=code,
        result="2xx" if status is DeliveryStatus.SENT else "5xx",
        error=None if status is DeliveryStatus.SENT else "HTTP 500",
        response_excerpt="ok",
        new_status=status,
        next_attempt_at=at + 5000 if status is DeliveryStatus.RETRYING else None,
    )


async def recorded(
    store: Store, owner: str, lease_ms: int, count: int = 1
) -> tuple[Subscription, list[NewDelivery]]:
    """A subscription of org_a and `count` deliveries to it of new events, recorded leased to
    `owner` for `lease_ms`."""
    sub = await store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    events = [incoming() for _ in range(count)]
    deliveries = [NewDelivery(ids.new_id("whd"), e.id, sub.id, e.event, e.org_id) for e in events]
    await store.record_events(events, deliveries, Lease(owner, lease_ms))
    return sub, deliveries
