"""The SQLite driver's own contract: statements on the loop's thread, the write lock and the
commit there too unless they must wait (the lock for another process, a slow disk's fsync), the
WAL checkpointed in the store's thread, and a transaction cancelled at any point leaves the
connection ready for the next (nothing half-open, nothing of the cancelled one kept but a full
commit)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import threading
from pathlib import Path

from pydantic import SecretStr

from service import ids
from service.domain import DeliveryFilter, NewDelivery
from service.settings import load_settings
from service.store import Lease, PageRequest, open_store
from service.store.sqlite import CHECKPOINT_EVERY, SqliteDriver
from tests.conftest import TEST_ENCRYPTION_KEY
from tests.support.store import EVENTS, incoming


async def test_transactions_cancelled_anywhere_leave_the_store_usable(tmp_path: Path) -> None:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path}/w.db", encryption_key=SecretStr(TEST_ENCRYPTION_KEY)
    )
    store = await open_store(settings, run_migrations=True)
    try:
        sub = await store.create_subscription("org_a", "https://a.example/h", EVENTS, None)
        rng = random.Random(5)
        written: list[str] = []
        for _ in range(60):
            event = incoming()
            delivery = NewDelivery(ids.new_id("whd"), event.id, sub.id, event.event, "org_a")
            task = asyncio.create_task(
                store.record_events([event], [delivery], Lease("me", 60_000))
            )
            # Cancelled before, during or after BEGIN, the statements, or COMMIT.
            for _ in range(rng.randrange(0, 6)):
                await asyncio.sleep(0)
            if rng.random() < 0.3:
                await asyncio.sleep(rng.uniform(0, 0.003))
            task.cancel()
            try:
                await task
                written.append(delivery.id)  # it finished before the cancel came
            except asyncio.CancelledError:
                pass
        # The store still takes writes and reads, and nothing is half-written: every delivery
        # has its event (one transaction wrote both, or neither).
        event = incoming()
        delivery = NewDelivery(ids.new_id("whd"), event.id, sub.id, event.event, "org_a")
        assert await store.record_events([event], [delivery], Lease("me", 60_000)) == [delivery]
        summary = (await store.subscription_summaries([sub.id]))[sub.id]
        assert summary.pending_count >= len(written) + 1
        page = await store.list_deliveries(
            "org_a", sub.id, DeliveryFilter(), PageRequest(100, None)
        )
        for row in page.rows:
            assert await store.get_delivery("org_a", sub.id, row.id) is not None
    finally:
        await store.close()


async def test_a_transaction_cancelled_while_its_begin_waits_leaves_none_open(
    tmp_path: Path,
) -> None:
    """Another process (an admin command) holds the write lock, so BEGIN IMMEDIATE waits in
    the store's thread; its caller is cancelled meanwhile (a /test's time bound, a shutdown).
    The BEGIN still succeeds once the other commits: the driver waits for it and rolls it back
    before letting anyone in, so the next transaction does not find one open."""
    driver = await SqliteDriver.open(tmp_path / "d.db")
    other = sqlite3.connect(tmp_path / "d.db", isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")

        async def write() -> None:
            async with driver.transaction() as conn:
                await conn.execute("CREATE TABLE t (x)")

        task = asyncio.create_task(write())
        await asyncio.sleep(0.2)  # its BEGIN is waiting in the store's thread
        task.cancel()
        asyncio.get_running_loop().call_later(0.3, other.execute, "COMMIT")
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with driver.transaction() as conn:  # raised "within a transaction" before
            await conn.execute("CREATE TABLE u (x)")
        async with driver.connection() as conn:
            tables = {row["name"] for row in await conn.fetch("SELECT name FROM sqlite_master")}
        assert tables == {"u"}
    finally:
        with contextlib.suppress(sqlite3.Error):
            other.execute("ROLLBACK")
        other.close()
        await driver.close()


async def test_commits_run_inline_while_fast_and_in_the_thread_once_one_is_slow(
    tmp_path: Path,
) -> None:
    driver = await SqliteDriver.open(tmp_path / "d.db")
    loop_thread = threading.get_ident()
    where: list[bool] = []  # True: the COMMIT ran on the loop's thread
    real = driver._timed_commit

    def timed_commit() -> None:
        where.append(threading.get_ident() == loop_thread)
        real()

    driver._timed_commit = timed_commit  # type: ignore[method-assign]
    try:
        async with driver.transaction() as conn:
            await conn.execute("CREATE TABLE t (x)")
        assert where == [True]  # a local file's fsync is far under INLINE_COMMIT_MAX
        # A commit as slow as a network disk's: the next ones go to the store's thread...
        driver._commit_s = 0.02
        for n in range(3):
            async with driver.transaction() as conn:
                await conn.execute("INSERT INTO t VALUES ($1)", n)
        assert where[1:] == [False, False, False]
        # ...and come back once commits are fast again: without the fsync (a loaded machine's
        # disk can keep a real one over INLINE_COMMIT_MAX for as long as the load lasts).
        driver._connection.execute("PRAGMA synchronous=OFF")
        for n in range(100):
            async with driver.transaction() as conn:
                await conn.execute("INSERT INTO t VALUES ($1)", n)
            if where[-1]:
                break
        assert where[-1] is True
        async with driver.connection() as conn:
            assert (await conn.fetchrow("SELECT count(*) AS n FROM t"))["n"] == len(where) - 1  # type: ignore[index]
    finally:
        await driver.close()


async def test_the_driver_checkpoints_the_wal_so_it_does_not_grow_without_bound(
    tmp_path: Path,
) -> None:
    """SQLite's own checkpoints are off (they would run inside a COMMIT, maybe on the loop's
    thread); the driver's must keep the WAL from growing: 1,000 commits of 8 KiB each would
    leave an 8 MiB WAL without them."""
    path = tmp_path / "d.db"
    driver = await SqliteDriver.open(path)
    try:
        async with driver.transaction() as conn:
            await conn.execute("CREATE TABLE t (x BLOB)")
        for _ in range(1000):
            async with driver.transaction() as conn:
                await conn.execute("INSERT INTO t VALUES (randomblob(8192))")
        wal = Path(f"{path}-wal").stat().st_size  # noqa: ASYNC240 - a local stat
        # CHECKPOINT_EVERY commits of ~3 pages each between restarts, not 1,000.
        assert CHECKPOINT_EVERY * 3 * 4096 < 1024 * 1024
        assert wal < 2 * 1024 * 1024, wal
        async with driver.connection() as conn:
            assert (await conn.fetchrow("SELECT count(*) AS n FROM t"))["n"] == 1000  # type: ignore[index]
    finally:
        await driver.close()


async def test_a_long_scan_holds_up_neither_writes_nor_the_loop(tmp_path: Path) -> None:
    driver = await SqliteDriver.open(tmp_path / "d.db")
    try:
        async with driver.transaction() as conn:
            await conn.execute("CREATE TABLE t (x)")
        finished: list[str] = []
        ticks = 0

        async def scan() -> None:
            async with driver.scan() as conn:
                # A read walking millions of rows, as a count over a backlog does.
                await conn.fetch(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
                    "WHERE x < 3000000) SELECT count(*) AS n FROM c"
                )
            finished.append("scan")

        async def write() -> None:
            for n in range(20):
                async with driver.transaction() as conn:
                    await conn.execute("INSERT INTO t VALUES ($1)", n)
            finished.append("writes")

        async def tick() -> None:
            nonlocal ticks
            while "scan" not in finished:
                ticks += 1
                await asyncio.sleep(0)

        reading = asyncio.create_task(scan())
        await asyncio.sleep(0.01)  # the scan is under way in its thread
        await asyncio.gather(write(), tick(), reading)
        assert finished == ["writes", "scan"]
        assert ticks > 20  # the loop ran meanwhile
        async with driver.scan() as conn:
            assert (await conn.fetchrow("SELECT count(*) AS n FROM t"))["n"] == 20  # type: ignore[index]
    finally:
        await driver.close()
