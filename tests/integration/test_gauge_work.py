"""The store-wide counts housekeeping takes on a timer read a bounded part of the store, however
large the backlog and the history (docs/decisions/0018-store-wide-counts-at-scale.md): the
pending gauge's count stops at its cap, and a census pass after the first reads the newest
bucket and its budget of older ones.

Counted in SQLite's virtual-machine steps on both of its connections, which, unlike a time, do
not move with the machine's load."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from pydantic import SecretStr

from service import ids
from service.delivery.census import RollingCensus
from service.domain import NewDelivery
from service.settings import load_settings
from service.store import CENSUS_BUCKETS, Lease, Store, open_store
from service.store.migrate import sqlite_path
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.sqlite_steps import SqliteSteps
from tests.support.store import EVENTS, incoming


@contextlib.asynccontextmanager
async def _store_with(folder: Path, events: int) -> AsyncIterator[Store]:
    """A SQLite store holding `events` events, each with one open delivery, received ten to a
    census bucket over the past."""
    settings = load_settings(
        database_url=f"sqlite:///{folder}/history-{events}.db",
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY),
    )
    store = await open_store(settings)
    try:
        await _record(store, events)
        with sqlite3.connect(sqlite_path(settings.database_url)) as db:
            db.execute(
                "UPDATE events SET received_at = received_at - "
                f"(rowid % {events // 10}) * {CENSUS_BUCKETS['events']}"
            )
        yield store
    finally:
        await store.close()


async def _record(store: Store, count: int) -> None:
    subscription = await store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    events = [incoming() for _ in range(count)]
    deliveries = [
        NewDelivery(ids.new_id("whd"), e.id, subscription.id, e.event, e.org_id) for e in events
    ]
    await store.record_events(events, deliveries, Lease("nobody", 0))


async def _later_pass_steps(folder: Path, events: int) -> int:
    async with _store_with(folder, events) as store:
        census = RollingCensus(store, budget=20)
        await census.take()
        await _record(store, 10)
        async with SqliteSteps(store) as steps:
            await census.take()
        assert census.last_read["events"]  # an older bucket was read too
    return steps.count


async def test_a_census_pass_after_the_first_reads_no_more_beside_ten_times_the_history(
    tmp_path: Path,
) -> None:
    small = await _later_pass_steps(tmp_path, 300)
    large = await _later_pass_steps(tmp_path, 3_000)
    # A read of every event would be thousands of steps more.
    assert large <= small * 1.3 + 5, (small, large)


async def _pending_steps(folder: Path, events: int) -> int:
    async with _store_with(folder, events) as store, SqliteSteps(store) as steps:
        assert await store.pending_at_most(100) == 100
    return steps.count


async def test_the_pending_gauges_count_stops_at_its_cap(tmp_path: Path) -> None:
    small = await _pending_steps(tmp_path, 300)
    large = await _pending_steps(tmp_path, 3_000)
    assert large <= small * 1.3 + 5, (small, large)
