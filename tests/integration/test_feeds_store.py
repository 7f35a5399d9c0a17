"""Polling subscriptions' feeds and search in the store, on both stores: a feed gives its
deliveries in order after a place, the same ones again on a repeat, never another org's nor a
push subscription's; reading past them marks them sent; redelivery and replay put them back at
new places; retention removes them; the log finds a delivery by event, customer and
verification through the keyed hashes; an event's trail lists every subscription's delivery."""

from __future__ import annotations

import asyncio

from service import ids
from service.api.subscriptionrows import feed_state
from service.clock import now_ms
from service.delivery.housekeeping import Housekeeping
from service.domain import (
    DeliveryFilter,
    DeliveryMode,
    DeliveryStatus,
    FeedCounts,
    IncomingEvent,
    NewDelivery,
    Redelivery,
    ReplayWindow,
)
from service.metrics import Metrics
from service.store import Lease, PageRequest, Store
from tests.support.store import EVENTS

ORG = "org_a"
LEASE = Lease("ingest", 60_000)


def about(customer: str, verification: str, org: str = ORG) -> IncomingEvent:
    return IncomingEvent(
        id=ids.new_id("evt"),
        org_id=org,
        event="verification.created",
        occurred_at=now_ms(),
        body=b'{"id":"x","data":{"customerId":"' + customer.encode() + b'"}}',
        sibling_service=None,
        source="t/0/1",
        customer_id=customer,
        verification_id=verification,
    )


async def test_a_feed_reads_in_order_repeatably_and_reading_past_marks_sent(store: Store) -> None:
    feed = await store.create_subscription(ORG, "", EVENTS, None, delivery=DeliveryMode.POLL)
    push = await store.create_subscription(ORG, "https://a.example/h", EVENTS, None)
    other = await store.create_subscription("org_b", "", EVENTS, None, delivery=DeliveryMode.POLL)
    assert feed.polled
    assert not push.polled
    events = [about(f"cus_{n % 3}", f"ver_{n}") for n in range(7)]
    polled = [
        NewDelivery(ids.new_id("whd"), e.id, feed.id, e.event, ORG, poll=True) for e in events
    ]
    pushed = [NewDelivery(ids.new_id("whd"), e.id, push.id, e.event, ORG) for e in events]
    created = await store.record_events(events, polled + pushed, LEASE)
    assert len(created) == 14
    # Nothing of it is claimable: a feed's deliveries are never sent.
    assert await store.pending_count() == 7

    first = await store.read_feed(feed.id, 0, 4)
    assert [i.delivery_id for i in first.items] == [d.id for d in polled[:4]]
    assert [i.body for i in first.items] == [e.body for e in events[:4]]
    again = await store.read_feed(feed.id, 0, 4)
    assert [i.delivery_id for i in again.items] == [i.delivery_id for i in first.items]
    rest = await store.read_feed(feed.id, first.last, 100)
    assert [i.delivery_id for i in rest.items] == [d.id for d in polled[4:]]
    assert (await store.read_feed(other.id, 0, 100)).items == []

    health = (await store.feed_health([feed.id]))[feed.id]
    assert health.read_at is None
    assert health.unread == 7
    await store.acknowledge(feed.id, first.last)
    health = (await store.feed_health([feed.id]))[feed.id]
    assert health.read_at is not None
    assert health.unread == 3
    log = await store.list_deliveries(ORG, feed.id, DeliveryFilter(), PageRequest(100, None))
    statuses = {row.id: row.status for row in log.rows}
    assert {statuses[d.id] for d in polled[:4]} == {DeliveryStatus.SENT}
    assert {statuses[d.id] for d in polled[4:]} == {DeliveryStatus.AVAILABLE}
    # Read past once more: the rest; an older cursor reads the same ids again.
    await store.acknowledge(feed.id, rest.last)
    assert (await store.feed_health([feed.id]))[feed.id].unread == 0
    assert [i.delivery_id for i in (await store.read_feed(feed.id, 0, 100)).items] == [
        d.id for d in polled
    ]

    # A redelivery puts one back after everything, available again, same id.
    assert await store.redeliver(ORG, feed.id, polled[1].id) is Redelivery.QUEUED
    back = await store.read_feed(feed.id, rest.last, 100)
    assert [i.delivery_id for i in back.items] == [polled[1].id]
    # A replay of sent ones: each again, in the events' order, after the redelivered one.
    window = ReplayWindow(EVENTS, 0, now_ms() + 1, only_failed=False, limit=100)
    replayed = await store.replay(ORG, feed, window)
    assert replayed.count == 6  # the redelivered one is open already: left alone
    after = await store.read_feed(feed.id, back.last, 100)
    assert [i.delivery_id for i in after.items] == [d.id for d in polled if d != polled[1]]


async def test_retention_removes_a_feeds_deliveries_read_or_not(store: Store) -> None:
    feed = await store.create_subscription(ORG, "", EVENTS, None, delivery=DeliveryMode.POLL)
    events = [about("cus_1", f"ver_{n}") for n in range(3)]
    polled = [
        NewDelivery(ids.new_id("whd"), e.id, feed.id, e.event, ORG, poll=True) for e in events
    ]
    await store.record_events(events, polled, LEASE)
    await store.acknowledge(feed.id, 1)
    purged = await store.purge(now_ms() + 1000, 100)
    assert purged.removed >= 6  # three deliveries, three events
    page = await store.read_feed(feed.id, 0, 100)
    assert page.items == []
    assert page.oldest_kept is None


async def test_the_log_is_searched_by_event_customer_and_verification(store: Store) -> None:
    sub = await store.create_subscription(ORG, "https://a.example/h", EVENTS, None)
    elsewhere = await store.create_subscription("org_b", "https://b.example/h", EVENTS, None)
    mine = [about("cus_x", "ver_1"), about("cus_y", "ver_2"), about("cus_x", "ver_3")]
    theirs = about("cus_x", "ver_1", org="org_b")
    deliveries = [NewDelivery(ids.new_id("whd"), e.id, sub.id, e.event, ORG) for e in mine]
    foreign = NewDelivery(ids.new_id("whd"), theirs.id, elsewhere.id, theirs.event, "org_b")
    await store.record_events([*mine, theirs], [*deliveries, foreign], LEASE)

    async def found(where: DeliveryFilter) -> list[str]:
        page = await store.list_deliveries(ORG, sub.id, where, PageRequest(100, None))
        return sorted(row.id for row in page.rows)

    assert await found(DeliveryFilter(event_id=mine[1].id)) == [deliveries[1].id]
    assert await found(DeliveryFilter(customer_id="cus_x")) == sorted(
        [deliveries[0].id, deliveries[2].id]
    )
    assert await found(DeliveryFilter(verification_id="ver_3")) == [deliveries[2].id]
    assert await found(DeliveryFilter(customer_id="cus_nobody")) == []
    both = DeliveryFilter(customer_id="cus_x", verification_id="ver_1")
    assert await found(both) == [deliveries[0].id]
    # Paged: the cursor walks the search too.
    first = await store.list_deliveries(
        ORG, sub.id, DeliveryFilter(customer_id="cus_x"), PageRequest(1, None)
    )
    assert first.next_after is not None
    second = await store.list_deliveries(
        ORG, sub.id, DeliveryFilter(customer_id="cus_x"), PageRequest(1, first.next_after)
    )
    assert {first.rows[0].id, second.rows[0].id} == {deliveries[0].id, deliveries[2].id}

    trail = await store.event_trail(ORG, mine[0].id)
    assert trail is not None
    assert [(d.subscription_id, d.row.id) for d in trail.deliveries] == [(sub.id, deliveries[0].id)]
    assert await store.event_trail("org_b", mine[0].id) is None


async def test_what_is_searched_is_stored_as_keyed_hashes_only(store: Store) -> None:
    event = about("cus_secret_1", "ver_secret_1")
    await store.record_events([event], [], LEASE)
    # A look at the row as stored.
    async with store._connection() as conn:  # type: ignore[attr-defined]
        row = await conn.fetchrow(
            "SELECT customer_id, verification_key FROM events WHERE id = $1", event.id
        )
    assert row is not None
    assert row["verification_key"].startswith("c1.")
    assert "ver_secret" not in row["verification_key"]
    assert row["customer_id"].startswith("c1.")
    assert row["customer_id"] != row["verification_key"]


async def test_housekeeping_counts_the_feeds_whose_reader_is_behind(store: Store) -> None:
    """The gauges the alert reads: active polling subscriptions, and those whose oldest
    unread delivery is older than WEBHOOKS_FEED_BEHIND (as their rows say `behind`)."""
    feeds = {
        name: await store.create_subscription(ORG, "", EVENTS, None, delivery=DeliveryMode.POLL)
        for name in ("unread", "read", "empty", "deactivated", "deleted")
    }
    await store.create_subscription(ORG, "https://a.example/h", EVENTS, None)
    events = [about("cus_h", f"ver_h{n}") for n in range(2)]
    polled = [
        NewDelivery(ids.new_id("whd"), e.id, feeds[name].id, e.event, ORG, poll=True)
        for e in events
        for name in ("unread", "read", "deactivated", "deleted")
    ]
    await store.record_events(events, polled, LEASE)
    page = await store.read_feed(feeds["read"].id, 0, 100)
    await store.acknowledge(feeds["read"].id, page.last)
    await store.deactivate_subscription(feeds["deactivated"].id, "test")
    await store.delete_subscription(ORG, feeds["deleted"].id)
    metrics = Metrics()
    housekeeping = Housekeeping(store, metrics, retention=3600, feed_behind=0.001)
    await asyncio.sleep(0.01)

    assert await housekeeping.count_feeds() == FeedCounts(feeds=3, behind=1)
    assert metrics.registry.get_sample_value("webhooks_feeds") == 3
    assert metrics.registry.get_sample_value("webhooks_feeds_behind") == 1
    health = await store.feed_health([feeds["unread"].id])
    assert feed_state(health[feeds["unread"].id], 1)["behind"] is True
    # Not yet behind by a longer allowance.
    patient = Housekeeping(store, Metrics(), retention=3600, feed_behind=900)
    assert await patient.count_feeds() == FeedCounts(feeds=3, behind=0)
