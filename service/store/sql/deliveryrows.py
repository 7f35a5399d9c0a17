"""New deliveries' rows, shared by whatever makes deliveries (ingest's events, recovery's replays,
operational events): unordered or ordered ones due now, and polling subscriptions' ones at
their places in their feeds."""

from __future__ import annotations

from collections.abc import Sequence

from service.domain import NewDelivery
from service.store.sql.base import Column, Conn, Driver

_DELIVERY_COLUMNS: tuple[Column, ...] = (
    ("id", "text"),
    ("event_id", "text"),
    ("subscription_id", "text"),
    ("event", "text"),
    ("org_id", "text"),
)
_ORDERED_COLUMNS: tuple[Column, ...] = (
    *_DELIVERY_COLUMNS,
    ("ordering_key", "text"),
    ("seq", "bigint"),
)
_POLLED_COLUMNS: tuple[Column, ...] = (*_DELIVERY_COLUMNS, ("poll_seq", "bigint"))


async def take_places(driver: Driver, conn: Conn, n: int) -> list[int]:
    """`n` new places in the store-wide order of ordered deliveries, ascending."""
    rows = await conn.fetch(driver.sequence_sql, n)
    if len(rows) == n:
        return sorted(int(row["v"]) for row in rows)
    top = int(rows[0]["v"])  # a counter's new top: the n values up to it are ours
    return list(range(top - n + 1, top + 1))


async def insert_deliveries(
    driver: Driver, conn: Conn, deliveries: Sequence[tuple[NewDelivery, int | None]], now: int
) -> set[str]:
    """Unleased deliveries due now, each with its place in the order (None: unordered);
    returns the ids that were new."""
    source, args = driver.row_source(
        _ORDERED_COLUMNS,
        [
            (d.id, d.event_id, d.subscription_id, d.event, d.org_id, d.ordering_key, seq)
            for d, seq in deliveries
        ],
        first=2,
    )
    rows = await conn.fetch(
        "INSERT INTO deliveries (id, event_id, subscription_id, event, org_id, status, "
        "attempts, next_attempt_at, created_at, updated_at, ordering_key, seq) "
        "SELECT r.id, r.event_id, r.subscription_id, r.event, r.org_id, 'pending', 0, "
        f"$1, $1, $1, r.ordering_key, r.seq FROM ({source}) r WHERE true "
        "ON CONFLICT (event_id, subscription_id) DO NOTHING RETURNING id",
        now,
        *args,
    )
    return {row["id"] for row in rows}


async def stamp_feed(conn: Conn, subscription_id: str, n: int) -> list[int]:
    """`n` new places in a polling subscription's feed, ascending. The feed's row stays locked
    until the transaction ends, so its places commit in the order they were given: a reader
    never sees a place before a smaller one that is still to commit."""
    row = await conn.fetchrow(
        "UPDATE poll_feeds SET top = top + $2 WHERE subscription_id = $1 RETURNING top",
        subscription_id,
        n,
    )
    if row is None:  # made with the subscription, in the same transaction
        raise RuntimeError(f"subscription {subscription_id} has no feed")
    top = int(row["top"])
    return list(range(top - n + 1, top + 1))


async def insert_polled(
    driver: Driver,
    conn: Conn,
    deliveries: Sequence[NewDelivery],
    now: int,
    places: Sequence[int] | None = None,
) -> set[str]:
    """Polling subscriptions' deliveries, `available` in their feeds, each at a new place in
    the order listed (Kafka's within a partition), feeds locked by subscription id (the order
    every writer locks subscriptions in); or at `places`, taken already by the caller. Returns
    the ids that were new."""
    rows: list[tuple[str, str, str, str, str, int]] = []
    if places is not None:
        rows = [
            (d.id, d.event_id, d.subscription_id, d.event, d.org_id, place)
            for d, place in zip(deliveries, places, strict=True)
        ]
    by_subscription: dict[str, list[NewDelivery]] = {}
    for delivery in deliveries if places is None else ():
        by_subscription.setdefault(delivery.subscription_id, []).append(delivery)
    for subscription_id in sorted(by_subscription):
        listed = by_subscription[subscription_id]
        taken = await stamp_feed(conn, subscription_id, len(listed))
        rows += [
            (d.id, d.event_id, d.subscription_id, d.event, d.org_id, place)
            for d, place in zip(listed, taken, strict=True)
        ]
    source, args = driver.row_source(_POLLED_COLUMNS, rows, first=2)
    created = await conn.fetch(
        "INSERT INTO deliveries (id, event_id, subscription_id, event, org_id, status, "
        "attempts, next_attempt_at, created_at, updated_at, poll_seq) "
        "SELECT r.id, r.event_id, r.subscription_id, r.event, r.org_id, 'available', 0, "
        f"$1, $1, $1, r.poll_seq FROM ({source}) r WHERE true "
        "ON CONFLICT (event_id, subscription_id) DO NOTHING RETURNING id",
        now,
        *args,
    )
    return {row["id"] for row in created}
