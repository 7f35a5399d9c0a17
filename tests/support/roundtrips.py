"""Round trips a store makes, counted at its driver: every statement is one, and a transaction
adds two on PostgreSQL (`BEGIN`, `COMMIT`; on SQLite they are calls in this process, counted
too). The store's own code runs unchanged: only the sessions it opens are wrapped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from service.store import Store
from service.store.sql.base import Conn, Row


@dataclass
class Trips:
    """What the store sent while counting: its statements' SQL, and the transactions opened;
    and which task sent each (`of_task`)."""

    statements: list[str] = field(default_factory=list)
    transactions: int = 0
    senders: list[tuple[asyncio.Task[Any] | None, str]] = field(default_factory=list)

    @property
    def round_trips(self) -> int:
        return len(self.statements) + 2 * self.transactions

    def reset(self) -> None:
        self.statements.clear()
        self.transactions = 0
        self.senders.clear()

    def sent(self, what: str) -> None:
        self.senders.append((asyncio.current_task(), what))
        if what != _TRANSACTION:
            self.statements.append(what)

    def of_task(self, containing: str) -> Trips:
        """What the one task that sent a statement containing `containing` sent (an API
        request's handler, say, apart from the background tasks counted beside it)."""
        (task,) = {task for task, what in self.senders if containing in what}
        mine = Trips()
        for sender, what in self.senders:
            if sender is task:
                mine.sent(what)
                mine.transactions += what == _TRANSACTION
        return mine


_TRANSACTION = "<transaction>"


class _CountedConn:
    def __init__(self, conn: Conn, trips: Trips) -> None:
        self._conn = conn
        self._trips = trips

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        self._trips.sent(sql)
        return await self._conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        self._trips.sent(sql)
        return await self._conn.fetchrow(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        self._trips.sent(sql)
        return await self._conn.execute(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._trips.sent(sql)
        await self._conn.executemany(sql, rows)


class _CountedDriver:
    """The store's driver, its sessions' statements counted; everything else passed on."""

    def __init__(self, driver: Any, trips: Trips) -> None:
        self._driver = driver
        self._trips = trips

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)

    def transaction(self) -> AbstractAsyncContextManager[Conn]:
        self._trips.transactions += 1
        self._trips.sent(_TRANSACTION)
        return self._counted(self._driver.transaction())

    def connection(self) -> AbstractAsyncContextManager[Conn]:
        return self._counted(self._driver.connection())

    def atomic(self) -> AbstractAsyncContextManager[Conn]:
        return self._counted(self._driver.atomic())

    def scan(self) -> AbstractAsyncContextManager[Conn]:
        return self._counted(self._driver.scan())

    @contextlib.asynccontextmanager
    async def _counted(self, session: AbstractAsyncContextManager[Conn]) -> AsyncIterator[Conn]:
        async with session as conn:
            yield _CountedConn(conn, self._trips)


@contextlib.contextmanager
def counting(store: Store) -> Iterator[Trips]:
    """Counts the round trips `store` (an `SqlStore`) makes inside the block."""
    trips = Trips()
    driver = store._driver  # type: ignore[attr-defined]  # the SQL store's, wrapped a while
    store._driver = _CountedDriver(driver, trips)  # type: ignore[attr-defined]
    try:
        yield trips
    finally:
        store._driver = driver  # type: ignore[attr-defined]
