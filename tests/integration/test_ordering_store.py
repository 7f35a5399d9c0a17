"""Ordered delivery in the store, on both stores: only the head of a customer's queue is ever
claimable, so no claimer — another replica, or this one after a crash — can send one customer's
deliveries together or out of order; a failing head holds up only its own customer."""

from __future__ import annotations

import asyncpg

from service import ids
from service.clock import now_ms
from service.domain import (
    DeliveryStatus,
    IncomingEvent,
    NewDelivery,
    Ordering,
    Redelivery,
    ReplayWindow,
)
from service.store import Claim, Lease, Store, open_store
from tests.support.process import service_settings
from tests.support.store import EVENTS, attempt

ORG = "org_a"


def event_about(customer: str) -> IncomingEvent:
    return IncomingEvent(
        id=ids.new_id("evt"),
        org_id=ORG,
        event="verification.created",
        occurred_at=now_ms(),
        body=b'{"id":"x"}',
        sibling_service=None,
        source="t/0/1",
        customer_id=customer,
    )


async def _ordered_queue(store: Store, customers: list[str]) -> tuple[str, list[NewDelivery]]:
    sub = await store.create_subscription(
        ORG, "https://a.example/o", EVENTS, None, ordering=Ordering.CUSTOMER
    )
    events = [event_about(c) for c in customers]
    deliveries = [
        NewDelivery(ids.new_id("whd"), e.id, sub.id, e.event, ORG, ordering_key=e.customer_id)
        for e in events
    ]
    created = await store.record_events(events, deliveries, Lease("ingest", 60_000))
    assert {d.id for d in created} == {d.id for d in deliveries}
    return sub.id, deliveries


async def test_only_each_customers_head_is_claimable(store: Store) -> None:
    _, ds = await _ordered_queue(store, ["c1", "c2", "c1", "c1", "c2"])
    # Recorded unleased: nobody holds them, the claim decides.
    first = await store.claim_due(Claim("a", 100, 60_000))
    assert {j.id for j in first} == {ds[0].id, ds[1].id}
    # Another claimer (a replica, or this one after a crash) gets nothing more meanwhile.
    assert await store.claim_due(Claim("b", 100, 60_000)) == []
    # c1's head sent: c1's next is the only new head; c2 still waits on its own.
    await store.record_attempts([attempt(ds[0], 1, DeliveryStatus.SENT, 200, now_ms())], "a")
    assert [j.id for j in await store.claim_due(Claim("b", 100, 60_000))] == [ds[2].id]


async def test_a_failing_head_blocks_only_its_customer_until_it_finally_fails(
    store: Store,
) -> None:
    sub_id, ds = await _ordered_queue(store, ["c1", "c2", "c1", "c2"])
    await store.claim_due(Claim("a", 100, 60_000))
    now = now_ms()
    await store.record_attempts(
        [
            attempt(ds[0], 1, DeliveryStatus.RETRYING, 503, now),  # c1's head fails
            attempt(ds[1], 1, DeliveryStatus.SENT, 200, now),
        ],
        "a",
    )
    # c2 flows on; c1 waits behind its retrying head (due in 5 s).
    assert [j.id for j in await store.claim_due(Claim("a", 100, 60_000))] == [ds[3].id]
    summary = (await store.subscription_summaries([sub_id]))[sub_id]
    assert summary.blocked_customers == 1
    assert summary.oldest_blocked is not None
    assert summary.oldest_blocked[0] == ds[0].id
    # The head fails for good: the queue moves on to c1's next. (Its retry is 5 s away: made
    # due now by a redelivery, which keeps an open delivery's place.)
    retry = attempt(ds[0], 2, DeliveryStatus.FAILED, 503, now + 1)
    await store.redeliver(ORG, sub_id, ds[0].id)
    assert [j.id for j in await store.claim_due(Claim("a", 100, 60_000))] == [ds[0].id]
    await store.record_attempts([retry], "a")
    assert [j.id for j in await store.claim_due(Claim("a", 100, 60_000))] == [ds[2].id]
    summary = (await store.subscription_summaries([sub_id]))[sub_id]
    assert summary.blocked_customers == 0


async def test_a_redelivered_finished_delivery_goes_out_of_band(store: Store) -> None:
    sub_id, ds = await _ordered_queue(store, ["c1", "c1", "c1"])
    await store.claim_due(Claim("a", 100, 60_000))
    await store.record_attempts([attempt(ds[0], 1, DeliveryStatus.SENT, 200, now_ms())], "a")
    # The second is now the head; the first, redelivered, does not wait behind it nor hold
    # the third back: both the redelivery and the head are claimable together.
    assert await store.redeliver(ORG, sub_id, ds[0].id) is Redelivery.QUEUED
    assert {j.id for j in await store.claim_due(Claim("a", 100, 60_000))} == {ds[0].id, ds[1].id}


async def test_replay_queues_in_event_order_behind_what_is_open(store: Store) -> None:
    sub_id, ds = await _ordered_queue(store, ["c1", "c1"])
    await store.claim_due(Claim("a", 100, 60_000))
    at = now_ms()
    await store.record_attempts([attempt(ds[0], 1, DeliveryStatus.FAILED, 410, at)], "a")
    sub = await store.get_subscription(ORG, sub_id)
    assert sub is not None
    replayed = await store.replay(
        ORG, sub, ReplayWindow(EVENTS, at - 60_000, at + 60_000, only_failed=True, limit=100)
    )
    assert replayed.count == 1
    # The replayed first event now queues behind the open second one.
    assert [j.id for j in await store.claim_due(Claim("a", 100, 60_000))] == [ds[1].id]
    await store.record_attempts([attempt(ds[1], 1, DeliveryStatus.SENT, 200, now_ms())], "a")
    assert [j.id for j in await store.claim_due(Claim("a", 100, 60_000))] == [ds[0].id]


async def test_unordered_subscriptions_are_untouched(store: Store) -> None:
    sub = await store.create_subscription(ORG, "https://a.example/u", EVENTS, None)
    events = [event_about("c1") for _ in range(3)]
    deliveries = [NewDelivery(ids.new_id("whd"), e.id, sub.id, e.event, ORG) for e in events]
    created = await store.record_events(events, deliveries, Lease("ingest", 60_000))
    assert len(created) == 3
    # Leased to ingest at once, as before: nothing left for a claimer.
    assert await store.claim_due(Claim("a", 100, 60_000)) == []


async def test_a_place_taken_earlier_but_committed_later_waits_for_the_one_in_flight(
    fresh_postgres_url: str,
) -> None:
    """On PostgreSQL places come from a sequence, outside the transactions that take them: a
    writer (another replica ingesting the customer's event from another topic, or a replay) can
    take a smaller place and commit after a larger one was recorded and claimed. That delivery
    must wait until the one in flight is done, or the customer has two requests at once."""
    settings = service_settings(fresh_postgres_url, "127.0.0.1:9")
    store = await open_store(settings, run_migrations=False)
    connection = await asyncpg.connect(fresh_postgres_url)
    try:
        # The slow writer takes its place first...
        early = int(await connection.fetchval("SELECT nextval('delivery_seq')"))
        # ...the customer's next event is recorded with a larger one, and claimed: in flight.
        sub_id, (later,) = await _ordered_queue(store, ["c1"])
        assert [j.id for j in await store.claim_due(Claim("a", 100, 60_000))] == [later.id]
        # Then the slow writer commits its delivery, with the smaller place.
        event = event_about("c1")
        await store.record_events([event], [], Lease("ingest", 60_000))
        late = ids.new_id("whd")
        # The customer as the store keeps it (a keyed hash), as the in-flight one has it.
        key = await connection.fetchval(
            "SELECT ordering_key FROM deliveries WHERE id = $1", later.id
        )
        assert key is not None
        assert key != "c1"
        await connection.execute(
            "INSERT INTO deliveries (id, event_id, org_id, subscription_id, event, status, "
            "attempts, next_attempt_at, created_at, updated_at, ordering_key, seq) "
            "VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $6, $6, $8, $7)",
            late,
            event.id,
            ORG,
            sub_id,
            event.event,
            now_ms(),
            early,
            key,
        )
        # Nobody takes it while the other is in flight; then it goes.
        assert await store.claim_due(Claim("b", 100, 60_000)) == []
        await store.record_attempts([attempt(later, 1, DeliveryStatus.SENT, 200, now_ms())], "a")
        assert [j.id for j in await store.claim_due(Claim("b", 100, 60_000))] == [late]
    finally:
        await connection.close()
        await store.close()
