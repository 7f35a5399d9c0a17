"""The store's work does not grow with a backlog it cannot act on. The claim of due work reads
what it claims: a paused subscription's overdue deliveries and an excluded lane's (circuit open,
queue full) cost it an index probe each, however many there are
(docs/decisions/0012-claim-by-subscription.md). A retention pass reads the rows it keeps (open
deliveries, the events they need) once, not once per batch
(docs/decisions/0013-history-at-scale.md).

Counted in SQLite's virtual-machine steps (its progress handler), which, unlike a time, do not
move with the machine's load; the PostgreSQL side is measured by `make bench-scale`."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from service import ids
from service.clock import now_ms
from service.domain import DeliveryStatus, NewDelivery
from service.settings import load_settings
from service.store import Claim, Lease, Store, SubscriptionChanges, open_store, walk
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.store import EVENTS, attempt, incoming


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


async def _record(
    store: Store, subscription_id: str, count: int, lease: Lease
) -> list[NewDelivery]:
    events = [incoming() for _ in range(count)]
    deliveries = [
        NewDelivery(ids.new_id("whd"), e.id, subscription_id, e.event, e.org_id) for e in events
    ]
    await store.record_events(events, deliveries, lease)
    return deliveries


async def _owe(store: Store, subscription_id: str, count: int) -> list[str]:
    """`count` deliveries to the subscription, due at once and held by nobody."""
    return [d.id for d in await _record(store, subscription_id, count, Lease("nobody", 0))]


class _Steps:
    """SQLite's virtual-machine steps (in hundreds) while the block runs."""

    def __init__(self, store: Store) -> None:
        self._connection: sqlite3.Connection = store._driver._connection  # type: ignore[attr-defined]
        self.count = 0

    def _step(self) -> int:
        self.count += 1
        return 0

    def __enter__(self) -> _Steps:
        self._connection.set_progress_handler(self._step, 100)
        return self

    def __exit__(self, *_: object) -> None:
        self._connection.set_progress_handler(None, 0)


async def _claim_steps(store: Store, claim: Claim) -> int:
    with _Steps(store) as steps:
        await store.claim_due(claim)
    return steps.count


async def test_a_paused_or_excluded_backlog_does_not_grow_the_claims_work(
    sqlite_store: Store,
) -> None:
    store = sqlite_store
    paused = await store.create_subscription("org_a", "https://a.example/paused", EVENTS, None)
    await store.update_subscription("org_a", paused.id, SubscriptionChanges(active=False))
    excluded = await store.create_subscription("org_a", "https://a.example/open", EVENTS, None)
    healthy = await store.create_subscription("org_a", "https://a.example/ok", EVENTS, None)
    nothing_to_claim = Claim("me", 100, 60_000, exclude=[excluded.id, healthy.id])

    await _owe(store, paused.id, 100)
    await _owe(store, excluded.id, 100)
    small = await _claim_steps(store, nothing_to_claim)
    await _owe(store, paused.id, 5_000)
    await _owe(store, excluded.id, 5_000)
    large = await _claim_steps(store, nothing_to_claim)
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


async def _purge_pass(store: Store, cutoff: int) -> tuple[int, int]:
    """A whole retention pass in batches of 50: the rows it removed, and its steps."""
    with _Steps(store) as steps:
        removed = await walk(lambda after: store.purge(cutoff, 50, after))
    return removed, steps.count


async def test_a_retention_pass_reads_the_rows_it_keeps_once(sqlite_store: Store) -> None:
    store = sqlite_store
    sub = await store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    long_ago = now_ms() - 3 * 86_400_000
    me = Lease("me", 60_000)

    async def finish(count: int, status: DeliveryStatus) -> None:
        deliveries = await _record(store, sub.id, count, me)
        code = 200 if status is DeliveryStatus.SENT else 500
        outcomes = [attempt(d, 1, status, code, long_ago) for d in deliveries]
        await store.record_attempts(outcomes, "me")

    await finish(600, DeliveryStatus.SENT)
    removed, alone = await _purge_pass(store, now_ms() + 1_000)
    assert removed == 2 * 600 + 2  # deliveries, events, the hour's two counters

    await finish(3_000, DeliveryStatus.RETRYING)  # open: kept, with their events
    await finish(600, DeliveryStatus.SENT)
    removed, beside_kept = await _purge_pass(store, now_ms() + 1_000)
    # The hour's counters are three now: the open deliveries' failures (`failed:5xx`) too.
    assert removed == 2 * 600 + 3
    # Reading the 3,000 kept deliveries and events once costs a few times the pass; reading
    # them again for each of its 12 batches costs tens of times.
    assert beside_kept < 8 * alone, (alone, beside_kept)
    assert await store.pending_count() == 3_000


async def _expunge_pass(store: Store, cutoff: int) -> tuple[int, int]:
    """A whole pass of the payload retention in batches of 50: what it removed, and its steps."""
    with _Steps(store) as steps:
        removed = await walk(lambda after: store.expunge_payloads(cutoff, 50, after))
    return removed, steps.count


async def test_the_payload_retention_reads_what_it_removed_never_and_what_it_keeps_once(
    sqlite_store: Store,
) -> None:
    store = sqlite_store
    sub = await store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
    me = Lease("me", 60_000)

    async def finish(count: int, status: DeliveryStatus) -> None:
        deliveries = await _record(store, sub.id, count, me)
        code = 200 if status is DeliveryStatus.SENT else 500
        outcomes = [attempt(d, 1, status, code, now_ms() - 1_000) for d in deliveries]
        await store.record_attempts(outcomes, "me")

    await finish(600, DeliveryStatus.SENT)
    removed, alone = await _expunge_pass(store, now_ms() + 1_000)
    assert removed == 2 * 600  # the bodies and the excerpts

    await finish(3_000, DeliveryStatus.RETRYING)  # an open delivery keeps both
    await finish(600, DeliveryStatus.SENT)
    removed, beside = await _expunge_pass(store, now_ms() + 1_000)
    assert removed == 2 * 600
    # The 600 emptied before are not read, the 3,000 kept once: a few times the pass alone.
    assert beside < 8 * alone, (alone, beside)
