"""Events, deliveries and attempts for the store tests: the contract suite and the stores' own."""

from __future__ import annotations

from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from service import credentials, ids
from service.clock import now_ms
from service.domain import (
    AttemptRecord,
    DeliveryStatus,
    IncomingEvent,
    NewDelivery,
    Subscription,
)
from service.settings import Settings
from service.store import Lease, Store
from service.store.crypto import Keyring
from service.store.migrate import sqlalchemy_url
from service.store.sql.base import BUMP_REVISION, secret_context

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


async def seal_elsewhere(settings: Settings, subscription_id: str) -> None:
    """Seals the subscription's secret anew with a key `settings` lacks, as if the key that
    sealed it had been removed from WEBHOOKS_ENCRYPTION_KEY too early (the store's own keys,
    sealed with the configured one, still open)."""
    foreign = Keyring(Fernet.generate_key().decode())
    sealed = foreign.seal_text(credentials.new_secret(), secret_context(subscription_id))
    engine = create_async_engine(sqlalchemy_url(settings.database_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE subscriptions SET secret_enc = :sealed WHERE id = :id"),
                {"sealed": sealed, "id": subscription_id},
            )
            # What the store does: the revision moves and the row is stamped with it.
            await conn.execute(text(BUMP_REVISION))
            await conn.execute(
                text(
                    "UPDATE subscriptions SET change_seq = (SELECT value FROM store_meta "
                    "WHERE name = 'subscriptions_revision') WHERE id = :id"
                ),
                {"id": subscription_id},
            )
    finally:
        await engine.dispose()
