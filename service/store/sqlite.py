"""The embedded store: one SQLite file, zero set-up. One process owns it.

One connection, serialised by a lock: SQLite has a single writer anyway, and a lock held for the
whole of a transaction keeps another coroutine's statement out of it. WAL journal with
`synchronous=FULL`: a commit is on disk before ingest commits the Kafka offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from service.store.base import StoreUnavailable
from service.store.crypto import SecretBox
from service.store.models import DeliveryJob, IncomingEvent, NewDelivery
from service.store.sql import _JOB_COLUMNS, _JOIN_EVENTS, Row, SqlStore, now_ms

_PLACEHOLDER = re.compile(r"\$(\d+)")


@lru_cache(maxsize=512)
def _sqlite_sql(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


class _SqliteConn:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._c = connection

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._c.execute(_sqlite_sql(sql), args) as cursor:
            return list(await cursor.fetchall())  # type: ignore[arg-type]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._c.execute(_sqlite_sql(sql), args) as cursor:
            return await cursor.fetchone()  # type: ignore[return-value]

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._c.execute(_sqlite_sql(sql), args) as cursor:
            return cursor.rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._c.executemany(_sqlite_sql(sql), rows)


class _SqliteDatabase:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection
        self._conn = _SqliteConn(connection)
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteConn]:
        async with self._lock:
            try:
                await self._connection.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreUnavailable(str(exc)) from exc
            try:
                yield self._conn
                await self._connection.execute("COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    await self._connection.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    # Locked, disk full, I/O error: the database is away, not the query wrong.
                    raise StoreUnavailable(str(exc)) from exc
                raise

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_SqliteConn]:
        async with self._lock:
            yield self._conn

    def in_list(self, placeholder: str) -> str:
        return f"IN (SELECT value FROM json_each({placeholder}))"

    def list_param(self, values: Sequence[str]) -> Any:
        return orjson.dumps(list(values)).decode()

    async def close(self) -> None:
        await self._connection.close()


class SqliteStore(SqlStore):
    """The SQLite implementation of the store."""

    def __init__(self, db: _SqliteDatabase, box: SecretBox) -> None:
        super().__init__(db, box)
        self._sqlite = db

    @classmethod
    async def open(cls, path: Path, box: SecretBox) -> SqliteStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path, isolation_level=None)
        connection.row_factory = aiosqlite.Row
        for pragma in (
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=FULL",
            "PRAGMA busy_timeout=5000",
            "PRAGMA temp_store=MEMORY",
        ):
            await connection.execute(pragma)
        return cls(_SqliteDatabase(connection), box)

    async def record_events(
        self,
        events: Sequence[IncomingEvent],
        deliveries: Sequence[NewDelivery],
        lease_owner: str,
        lease_ms: int,
    ) -> list[NewDelivery]:
        now = now_ms()
        async with self._sqlite.transaction() as conn:
            await conn.executemany(
                "INSERT INTO events (id, org_id, event, occurred_at, body, sibling_service, "
                "source, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                "ON CONFLICT (org_id, id) DO NOTHING",
                [
                    (
                        e.id,
                        e.org_id,
                        e.event,
                        e.occurred_at,
                        e.body,
                        e.sibling_service,
                        e.source,
                        now,
                    )
                    for e in events
                ],
            )
            if not deliveries:
                return []
            rows = await conn.fetch(
                "INSERT INTO deliveries (id, event_id, subscription_id, event, org_id, status, "
                "attempts, next_attempt_at, created_at, updated_at, lease_owner, lease_until) "
                "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
                "json_extract(value, '$[2]'), json_extract(value, '$[3]'), "
                "json_extract(value, '$[4]'), 'pending', 0, "
                "$2, $2, $2, $3, $4 FROM json_each($1) WHERE true "
                "ON CONFLICT (event_id, subscription_id) DO NOTHING RETURNING id",
                orjson.dumps(
                    [(d.id, d.event_id, d.subscription_id, d.event, d.org_id) for d in deliveries]
                ),
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
        async with self._sqlite.transaction() as conn:
            claimed = await conn.fetch(
                "UPDATE deliveries SET lease_owner = $2, lease_until = $3 WHERE id IN ("
                f"SELECT id FROM deliveries WHERE {where} "
                "ORDER BY next_attempt_at LIMIT $4) RETURNING id",
                *args,
            )
            if not claimed:
                return []
            rows = await conn.fetch(
                f"SELECT {_JOB_COLUMNS} FROM deliveries d {_JOIN_EVENTS} "
                f"WHERE d.id {self._sqlite.in_list('$1')} ORDER BY d.next_attempt_at",
                self._sqlite.list_param([row["id"] for row in claimed]),
            )
        return [self._job(row) for row in rows]
