"""The searches of the delivery log and an event's trail read through an index at 100,000
deliveries, on both stores: each statement the store runs is captured and its plan asked for
(EXPLAIN on PostgreSQL, EXPLAIN QUERY PLAN on SQLite). Plans, never times, are asserted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import SecretStr

from service import ids
from service.clock import now_ms
from service.domain import DeliveryFilter, NewDelivery
from service.settings import load_settings
from service.store import Lease, PageRequest, Store, open_store
from service.store.interfaces import walk
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.integration.test_feeds_store import about
from tests.support.store import EVENTS

ORG = "org_a"
ROWS = 100_000


class _Spy:
    """A connection that keeps every statement it runs, and runs it."""

    def __init__(self, conn: Any, seen: list[tuple[str, Sequence[Any]]]) -> None:
        self._conn, self._seen = conn, seen

    async def fetch(self, sql: str, *args: Any) -> Any:
        self._seen.append((sql, args))
        return await self._conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self._seen.append((sql, args))
        return await self._conn.fetchrow(sql, *args)

    async def execute(self, sql: str, *args: Any) -> Any:
        self._seen.append((sql, args))
        return await self._conn.execute(sql, *args)


def _numbers(store: Store) -> str:
    """A SELECT of the numbers 1 to ROWS, as `n`, in the store's dialect."""
    if hasattr(store._driver, "_pool"):  # type: ignore[attr-defined]
        return f"SELECT generate_series(1, {ROWS}) AS n"
    return (
        f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {ROWS}) "
        "SELECT n FROM s"
    )


async def _seed(store: Store, subscription_id: str) -> None:
    """ROWS events of ROWS customers and verifications, each delivered to the subscription."""
    numbers = _numbers(store)
    now = now_ms()
    async with store._transaction() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            "INSERT INTO events (org_id, id, event, occurred_at, body, received_at, customer_id, "
            f"verification_key) SELECT $1, 'evt_seed_' || n, 'verification.created', $2, $3, $2, "
            f"'c1.cus' || n, 'c1.ver' || n FROM ({numbers}) s",
            ORG,
            now,
            b"{}",
        )
        await conn.execute(
            "INSERT INTO deliveries (id, event_id, org_id, subscription_id, event, status, "
            "attempts, next_attempt_at, created_at, updated_at) SELECT 'whd_seed_' || n, "
            "'evt_seed_' || n, $1, $2, 'verification.created', 'sent', 1, CAST($3 AS BIGINT), "
            "CAST($3 AS BIGINT) + n, CAST($3 AS BIGINT) + n "
            f"FROM ({numbers}) s",
            ORG,
            subscription_id,
            now,
        )
    async with store._transaction() as conn:  # type: ignore[attr-defined]
        await conn.execute("ANALYZE")


@pytest.fixture
async def seeded(store: Store) -> tuple[Store, str, list[str]]:
    sub = await store.create_subscription(ORG, "https://a.example/h", EVENTS, None)
    await _seed(store, sub.id)
    event = about("cus_findme", "ver_findme")
    delivery = NewDelivery(ids.new_id("whd"), event.id, sub.id, event.event, ORG)
    await store.record_events([event], [delivery], Lease("t", 1000))
    return store, sub.id, [event.id, delivery.id]


async def _plans(store: Store, run: Any) -> list[str]:
    """Runs `run()` with every statement captured; the plan of each, as text."""
    driver = store._driver  # type: ignore[attr-defined]
    seen: list[tuple[str, Sequence[Any]]] = []
    real_scan, real_connection = driver.scan, driver.connection

    def spying(real: Any) -> Any:
        @asynccontextmanager
        async def session() -> AsyncIterator[_Spy]:
            async with real() as conn:
                yield _Spy(conn, seen)

        return session

    real_transaction = driver.transaction
    driver.scan, driver.connection = spying(real_scan), spying(real_connection)
    driver.transaction = spying(real_transaction)
    try:
        await run()
    finally:
        driver.scan, driver.connection = real_scan, real_connection
        driver.transaction = real_transaction
    plans = []
    postgres = hasattr(driver, "_pool")
    for sql, args in seen:
        explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
        async with store._connection() as conn:  # type: ignore[attr-defined]
            rows = await conn.fetch(explain + sql, *args)
        plans.append("\n".join(" ".join(str(v) for v in dict(row).values()) for row in rows))
    return plans


def _reads_through_an_index(plan: str) -> bool:
    walks_deliveries = ("Seq Scan on deliveries", "SCAN d\n", "SCAN deliveries")
    walks_events = ("Seq Scan on events", "SCAN e\n", "SCAN events")
    ends = plan + "\n"
    return not any(w in ends for w in (*walks_deliveries, *walks_events)) and (
        "Index" in plan or "USING" in plan
    )


@pytest.mark.timeout(120)
async def test_search_and_an_events_trail_use_indexes_at_100000(
    seeded: tuple[Store, str, list[str]],
) -> None:
    store, subscription_id, (event_id, delivery_id) = seeded
    searches = [
        DeliveryFilter(event_id=event_id),
        DeliveryFilter(customer_id="cus_findme"),
        DeliveryFilter(verification_id="ver_findme"),
    ]
    for where in searches:
        found: list[str] = []

        async def search(where: DeliveryFilter = where, found: list[str] = found) -> None:
            page = await store.list_deliveries(ORG, subscription_id, where, PageRequest(50, None))
            found.extend(row.id for row in page.rows)

        plans = await _plans(store, search)
        assert found == [delivery_id]
        assert plans, where
        for plan in plans:
            assert _reads_through_an_index(plan), (where, plan)

    async def trail() -> None:
        assert await store.event_trail(ORG, event_id) is not None

    for plan in await _plans(store, trail):
        assert _reads_through_an_index(plan), plan


@pytest.mark.timeout(120)
async def test_the_payload_retention_probes_its_batch_deliveries_by_event_at_100000(
    seeded: tuple[Store, str, list[str]],
) -> None:
    """Which events of a batch an open delivery still needs is asked of their deliveries by
    event id: never by reading every delivery of the history (the open ones are few, and a
    planner that believes so reads them all to test the batch against)."""
    store, _, (event_id, _) = seeded

    async def expunge() -> None:
        removed = await store.expunge_payloads(now_ms() + 1_000, 500)
        assert removed.removed == 500

    plans = await _plans(store, expunge)
    assert plans
    for plan in plans:
        assert "Seq Scan on deliveries" not in plan, plan
        assert "SCAN d\n" not in plan + "\n", plan
    # The one event an open delivery needs keeps its payload, whichever batch it is in.
    await walk(lambda after: store.expunge_payloads(now_ms() + 1_000, 5_000, after))
    async with store._connection() as conn:  # type: ignore[attr-defined]
        kept = await conn.fetch("SELECT id FROM events WHERE payload_removed_at IS NULL")
    assert [row["id"] for row in kept] == [event_id]


async def test_postgres_sessions_compile_no_statement(fresh_postgres_url: str) -> None:
    """JIT is off in the store's sessions: a statement priced high by the planner (the walk
    above, bounded only by its LIMIT) is not compiled for longer than it runs."""
    settings = load_settings(
        database_url=fresh_postgres_url, encryption_key=SecretStr(TEST_ENCRYPTION_KEY)
    )
    store = await open_store(settings)
    try:
        async with store._connection() as conn:  # type: ignore[attr-defined]
            row = await conn.fetchrow("SHOW jit")
        assert row is not None
        assert row["jit"] == "off"
    finally:
        await store.close()


@pytest.mark.timeout(120)
async def test_the_deactivated_count_reads_the_state_index_at_100000(store: Store) -> None:
    """Housekeeping's gauge every 5 s: the deactivated subscriptions from the state index's
    entries of them. Counting every state walked the table on PostgreSQL (a condition nearly
    every row meets is cheaper to test row by row, the planner reckons)."""
    numbers = _numbers(store)
    async with store._transaction() as conn:  # type: ignore[attr-defined]
        await conn.execute(
            "INSERT INTO subscriptions (id, org_id, url, events, installed_by, secret_enc, "
            "active, created_at, updated_at, change_seq) SELECT 'whk_seed_' || n, "
            "'org_' || (n % 30000), 'https://h.example/' || n, '[\"a.b\"]', 'seed', 'x', "
            f"n > 3, $1, $1, 1 FROM ({numbers}) s",
            now_ms(),
        )
        await conn.execute("ANALYZE")
    counted: list[int] = []

    async def count() -> None:
        counted.append(await store.deactivated_subscriptions())

    plans = await _plans(store, count)
    assert counted == [3]
    assert plans
    for plan in plans:
        assert "subscriptions_state" in plan, plan
        assert "Seq Scan" not in plan, plan
