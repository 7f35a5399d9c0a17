"""A subscription created while another replica writes: on PostgreSQL, where the API and ingest
run in different processes, an event that occurred from a subscription's `createdAt` on must
be matched with it (docs/contract.md, "Who receives an event"). The revision's row lock orders
the two: a create holds it from before its `createdAt` to its commit, and ingest's read of the
revision (in the statement that writes, or the index's refresh) waits for it and sees the new
value. A raw connection stands for the other process, holding its transaction open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from service import ids
from service.clock import now_ms
from service.domain import NewDelivery
from service.store import IndexBehind, Lease, Store, SubscriptionChanges, open_store
from service.store.postgres import PostgresDriver
from tests.support.process import service_settings
from tests.support.store import EVENTS, incoming

REVISION = "SELECT value FROM store_meta WHERE name = 'subscriptions_revision'"
BUMP = "UPDATE store_meta SET value = value + 1 WHERE name = 'subscriptions_revision'"


async def a_create_begins(other: asyncpg.Connection) -> None:
    """What a create (or a deactivation) does first in its transaction: the revision's row
    lock, then the bump."""
    await other.fetchval(REVISION + " FOR UPDATE")
    await other.execute(BUMP)


HELD = 0.3  # seconds the other transaction stays open: long enough to see a read not wait


@pytest.fixture
async def pg_store(fresh_postgres_url: str) -> AsyncIterator[Store]:
    store = await open_store(service_settings(fresh_postgres_url, "127.0.0.1:9"))
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def other(fresh_postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(fresh_postgres_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.mark.parametrize("ordered", [False, True], ids=["one-statement", "transaction"])
async def test_a_write_begun_during_a_subscription_change_waits_and_is_matched_again(
    pg_store: Store, other: asyncpg.Connection, ordered: bool
) -> None:
    sub = await pg_store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    matched_at = await pg_store.subscriptions_revision()
    event = incoming()
    delivery = NewDelivery(
        ids.new_id("whd"),
        event.id,
        sub.id,
        event.event,
        event.org_id,
        ordering_key="cus_1" if ordered else None,
    )
    async with other.transaction():
        await a_create_begins(other)  # another replica's, not committed yet
        write = asyncio.create_task(
            pg_store.record_matched([event], [delivery], Lease("me", 60_000), matched_at)
        )
        await asyncio.sleep(HELD)
        assert not write.done()
    # Committed: the write read the new revision, wrote nothing, and asks for a new match.
    assert await write == IndexBehind(matched_at + 1)
    assert await pg_store.pending_count() == 0


async def test_the_index_refresh_waits_for_a_change_in_flight(
    pg_store: Store, other: asyncpg.Connection
) -> None:
    before = await pg_store.subscriptions_revision()
    async with other.transaction():
        await a_create_begins(other)
        read = asyncio.create_task(pg_store.subscriptions_revision())
        await asyncio.sleep(HELD)
        assert not read.done()
    assert await read == before + 1


async def test_created_at_is_stamped_after_the_writes_in_flight(
    pg_store: Store, other: asyncpg.Connection
) -> None:
    async with other.transaction():
        # Ingest's statement as another replica runs it: the revision read, under its lock.
        await other.fetchval(f"{REVISION} {PostgresDriver.share_row}")
        create = asyncio.create_task(
            pg_store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
        )
        await asyncio.sleep(HELD)
        assert not create.done()
        released = now_ms()
    # That write was matched without the subscription: its events occurred before `createdAt`.
    created = await create
    assert created.created_at >= released


async def test_a_patch_neither_waits_for_ingest_nor_holds_it_up(
    pg_store: Store, other: asyncpg.Connection
) -> None:
    """Only a create's promise needs the order: a PATCH moves the revision with a plain update,
    which a write in flight does not block (its events are matched against the index it read,
    as before), so a PATCH waits for no ingest statement under load."""
    sub = await pg_store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    async with other.transaction():
        await other.fetchval(f"{REVISION} {PostgresDriver.share_row}")  # a write in flight
        patched = await asyncio.wait_for(
            pg_store.update_subscription(
                "org_a", sub.id, SubscriptionChanges(url="https://b.example/h")
            ),
            timeout=HELD * 10,
        )
    assert patched is not None
    assert patched.url == "https://b.example/h"
