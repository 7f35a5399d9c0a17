"""The claim of due work reads what it claims, not the backlog it cannot claim: a paused
subscription's overdue deliveries and an excluded lane's (circuit open, queue full) cost the claim
an index probe each, however many there are (docs/decisions/0012-claim-by-subscription.md).

Counted in SQLite's virtual-machine steps (its progress handler), which, unlike a time, do not
move with the machine's load; the PostgreSQL side is measured by `make bench-scale`."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from service import ids
from service.domain import NewDelivery
from service.settings import load_settings
from service.store import Claim, Lease, Store, SubscriptionChanges, open_store
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.store import EVENTS, incoming


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path}/claims.db",
        encryption_key=SecretStr(TEST_ENCRYPTION_KEY),
    )
    store = await open_store(settings, run_migrations=True)
    try:
        yield store
    finally:
        await store.close()


async def _owe(store: Store, subscription_id: str, count: int) -> list[str]:
    """`count` deliveries to the subscription, due at once and held by nobody."""
    events = [incoming() for _ in range(count)]
    deliveries = [
        NewDelivery(ids.new_id("whd"), e.id, subscription_id, e.event, e.org_id) for e in events
    ]
    await store.record_events(events, deliveries, Lease("nobody", 0))
    return [d.id for d in deliveries]


async def _claim_steps(store: Store, connection: sqlite3.Connection, claim: Claim) -> int:
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    connection.set_progress_handler(count, 100)
    try:
        await store.claim_due(claim)
    finally:
        connection.set_progress_handler(None, 0)
    return steps


async def test_a_paused_or_excluded_backlog_does_not_grow_the_claims_work(
    sqlite_store: Store,
) -> None:
    store = sqlite_store
    connection = store._driver._connection  # type: ignore[attr-defined]
    paused = await store.create_subscription("org_a", "https://a.example/paused", EVENTS, None)
    await store.update_subscription("org_a", paused.id, SubscriptionChanges(active=False))
    excluded = await store.create_subscription("org_a", "https://a.example/open", EVENTS, None)
    healthy = await store.create_subscription("org_a", "https://a.example/ok", EVENTS, None)
    nothing_to_claim = Claim("me", 100, 60_000, exclude=[excluded.id, healthy.id])

    await _owe(store, paused.id, 100)
    await _owe(store, excluded.id, 100)
    small = await _claim_steps(store, connection, nothing_to_claim)
    await _owe(store, paused.id, 5_000)
    await _owe(store, excluded.id, 5_000)
    large = await _claim_steps(store, connection, nothing_to_claim)
    # Walking the due rows, 50 times the backlog is about 50 times the steps.
    assert large < 2 * small + 50, (small, large)

    # And what may be claimed still is, past all of it, and nothing else.
    wanted = await _owe(store, healthy.id, 3)
    claim = Claim("me", 100, 60_000, exclude=[excluded.id])
    assert sorted(job.id for job in await store.claim_due(claim)) == sorted(wanted)
    assert await store.claim_due(Claim("me", 100, 60_000, subscription_id=paused.id)) == []
    lane = await store.claim_due(Claim("me", 7, 60_000, subscription_id=excluded.id))
    assert len(lane) == 7
    assert {job.subscription_id for job in lane} == {excluded.id}
