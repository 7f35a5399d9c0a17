"""The PostgreSQL driver: for production and for several replicas sharing the work.

Replicas lease due deliveries with `FOR UPDATE SKIP LOCKED`, so two never attempt the same
delivery at once and none waits on another's locked rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, cast

import asyncpg
import orjson

from service.store.crypto import Keyring
from service.store.sql import SqlStore
from service.store.sql.base import Column, Conn, Row

# Errors that mean "the database is away", not "the statement is wrong": the connection broke
# or was refused, the server is starting, shutting down or out of connections, a failover left
# us on a read-only standby, or a transient conflict asks for the transaction to be retried.
CLOSE_WAIT = 3.0

_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # The protocol's state left broken by a server that went away mid-statement ("cannot
    # switch to state …; another operation is in progress"): seen when PostgreSQL stops.
    asyncpg.InternalClientError,
    asyncpg.OperatorInterventionError,  # admin or crash shutdown, cannot connect now
    asyncpg.TooManyConnectionsError,
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset of a connection given back, in place of asyncpg's default (advisory
    locks released, cursors closed, `UNLISTEN *`, `RESET ALL`: a round trip on every release).
    The store takes no advisory lock, opens no cursor outside a transaction, listens to nothing
    and sets no session setting, so a released connection has nothing to reset; asyncpg still
    rolls back a transaction left open and drops listeners before calling this
    (docs/decisions/0016-postgres-round-trips.md)."""


class _PgConn:
    def __init__(self, connection: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> None:
        self._c = connection

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return cast(list[Row], await self._c.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return cast(Row | None, await self._c.fetchrow(sql, *args))

    async def execute(self, sql: str, *args: Any) -> int:
        status: str = await self._c.execute(sql, *args)
        # "UPDATE 3", "INSERT 0 1", "DELETE 2": the last word is the row count.
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._c.executemany(sql, rows)


class PostgresDriver:
    """An asyncpg pool."""

    lock_due = "FOR UPDATE SKIP LOCKED"
    lock_row = "FOR UPDATE"
    share_row = "FOR KEY SHARE"
    # The server's clock at the start of the transaction: one clock for every replica.
    now_ms_sql = "(extract(epoch from now()) * 1000)::bigint"
    # A sequence: ingesting replicas never wait on each other for it.
    sequence_sql = "SELECT nextval('delivery_seq') AS v FROM generate_series(1, $1)"
    writes_in_with = True

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, max_size: int = 10) -> PostgresDriver:
        pool = await asyncpg.create_pool(
            url,
            min_size=1,
            max_size=max_size,
            command_timeout=30,
            timeout=10,
            reset=_keep_session,
            # Every statement of the service runs in milliseconds; JIT compiling one the
            # planner prices high (a walk through a month of history, bounded by its LIMIT)
            # took 240 ms for 3 ms of work. Set in the connection's start-up packet: no round
            # trip (docs/decisions/0013-history-at-scale.md).
            server_settings={"jit": "off"},
        )
        return cls(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgConn]:
        async with self._pool.acquire() as connection, connection.transaction():
            yield _PgConn(connection)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_PgConn]:
        async with self._pool.acquire() as connection:
            yield _PgConn(connection)

    def atomic(self) -> AbstractAsyncContextManager[_PgConn]:
        return self.connection()  # autocommit: the statement is its own transaction

    def scan(self) -> AbstractAsyncContextManager[_PgConn]:
        return self.connection()  # the server does the work; the loop only waits

    async def scrub(self) -> None:
        """Nothing to do at once: an erased row's old version is a dead tuple, reclaimed by
        (auto)vacuum; its bytes were sealed (docs/personal-data.md)."""

    def unavailable(self, exc: Exception) -> bool:
        return isinstance(exc, _UNAVAILABLE)

    async def estimated_rows(self, conn: Conn, query: str) -> int | None:
        row = await conn.fetchrow(f"EXPLAIN (FORMAT JSON) {query}")
        assert row is not None
        (plan,) = orjson.loads(row["QUERY PLAN"])
        return int(plan["Plan"]["Plan Rows"])

    def in_list(self, placeholder: str) -> str:
        return f"= ANY({placeholder}::text[])"

    def list_param(self, values: Sequence[str]) -> Any:
        return list(values)

    def row_source(
        self, columns: Sequence[Column], rows: Sequence[Sequence[Any]], first: int
    ) -> tuple[str, list[Any]]:
        """One array parameter per column, zipped back into rows by `unnest`."""
        arrays = ", ".join(f"${first + i}::{kind}[]" for i, (_, kind) in enumerate(columns))
        names = ", ".join(name for name, _ in columns)
        values = [[row[i] for row in rows] for i in range(len(columns))]
        return f"SELECT * FROM unnest({arrays}) AS u({names})", values

    async def close(self) -> None:
        # A connection stalled by a server that stopped answering must not hold a shutdown:
        # after CLOSE_WAIT the pool is terminated (its sockets closed) instead.
        try:
            await asyncio.wait_for(self._pool.close(), CLOSE_WAIT)
        except TimeoutError:
            self._pool.terminate()


async def open_postgres(url: str, keyring: Keyring, *, pool_size: int = 10) -> SqlStore:
    return SqlStore(await PostgresDriver.open(url, max_size=pool_size), keyring)
