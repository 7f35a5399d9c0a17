"""The PostgreSQL store: for production and for several replicas sharing the work.

Replicas lease due deliveries with `FOR UPDATE SKIP LOCKED`, so two never attempt the same
delivery at once and none waits on another's locked rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg

from service.store.base import StoreUnavailable
from service.store.crypto import SecretBox
from service.store.models import DeliveryJob, IncomingEvent, NewDelivery
from service.store.sql import _JOB_COLUMNS, _JOIN_EVENTS, Row, SqlStore, now_ms

# Errors that mean "the database is away", not "the statement is wrong": callers back off and
# retry on StoreUnavailable, and let anything else surface as the bug it is.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
    # Transient by nature: the transaction is retried as a whole.
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


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


class _PgDatabase:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgConn]:
        try:
            connection = await self._pool.acquire()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        try:
            async with connection.transaction():
                yield _PgConn(connection)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        finally:
            await self._pool.release(connection)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_PgConn]:
        try:
            connection = await self._pool.acquire()
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        try:
            yield _PgConn(connection)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(str(exc)) from exc
        finally:
            await self._pool.release(connection)

    def in_list(self, placeholder: str) -> str:
        return f"= ANY({placeholder}::text[])"

    def list_param(self, values: Sequence[str]) -> Any:
        return list(values)

    async def close(self) -> None:
        await self._pool.close()


class PostgresStore(SqlStore):
    """The PostgreSQL implementation of the store."""

    def __init__(self, db: _PgDatabase, box: SecretBox) -> None:
        super().__init__(db, box)
        self._pg = db

    @classmethod
    async def open(cls, url: str, box: SecretBox, *, max_size: int = 10) -> PostgresStore:
        pool = await asyncpg.create_pool(
            url, min_size=1, max_size=max_size, command_timeout=30, timeout=10
        )
        return cls(_PgDatabase(pool), box)

    async def record_events(
        self,
        events: Sequence[IncomingEvent],
        deliveries: Sequence[NewDelivery],
        lease_owner: str,
        lease_ms: int,
    ) -> list[NewDelivery]:
        now = now_ms()
        async with self._pg.transaction() as conn:
            await conn.execute(
                "INSERT INTO events (id, org_id, event, occurred_at, body, sibling_service, "
                "source, received_at) SELECT *, $8::bigint FROM unnest($1::text[], $2::text[], "
                "$3::text[], $4::bigint[], $5::bytea[], $6::text[], $7::text[]) "
                "ON CONFLICT (org_id, id) DO NOTHING",
                [e.id for e in events],
                [e.org_id for e in events],
                [e.event for e in events],
                [e.occurred_at for e in events],
                [e.body for e in events],
                [e.sibling_service for e in events],
                [e.source for e in events],
                now,
            )
            if not deliveries:
                return []
            rows = await conn.fetch(
                "INSERT INTO deliveries (id, event_id, subscription_id, event, org_id, status, "
                "attempts, next_attempt_at, created_at, updated_at, lease_owner, lease_until) "
                "SELECT d.id, d.event_id, d.subscription_id, d.event, d.org_id, 'pending', 0, "
                "$6, $6, $6, $7, $8 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
                "$5::text[]) AS d(id, event_id, subscription_id, event, org_id) "
                "ON CONFLICT (event_id, subscription_id) DO NOTHING RETURNING id",
                [d.id for d in deliveries],
                [d.event_id for d in deliveries],
                [d.subscription_id for d in deliveries],
                [d.event for d in deliveries],
                [d.org_id for d in deliveries],
                now,
                lease_owner,
                now + lease_ms,
            )
        created = {row["id"] for row in rows}
        return [d for d in deliveries if d.id in created]

    async def claim_due(
        self,
        owner: str,
        limit: int,
        lease_ms: int,
        *,
        subscription_id: str | None = None,
        exclude: Sequence[str] = (),
    ) -> list[DeliveryJob]:
        where, args = self._due(owner, limit, lease_ms, subscription_id, exclude)
        async with self._pg.transaction() as conn:
            rows = await conn.fetch(
                "WITH due AS (SELECT id FROM deliveries "
                f"WHERE {where} ORDER BY next_attempt_at LIMIT $4 "
                "FOR UPDATE SKIP LOCKED), claimed AS (UPDATE deliveries d "
                "SET lease_owner = $2, lease_until = $3 FROM due WHERE d.id = due.id "
                "RETURNING d.*) "
                f"SELECT {_JOB_COLUMNS} FROM claimed d {_JOIN_EVENTS} "
                "ORDER BY d.next_attempt_at",
                *args,
            )
        return [self._job(row) for row in rows]
