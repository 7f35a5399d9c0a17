"""Which driver errors mean "the database is away" (StoreUnavailable: ingest pauses, the recorder
retries, the API answers 503) and which are bugs that must surface."""

from __future__ import annotations

import sqlite3
from typing import cast

import asyncpg
import pytest

from service.store.postgres import PostgresDriver
from service.store.sqlite import SqliteDriver


def sqlite_error(code: int, message: str) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code
    return exc


@pytest.mark.parametrize(
    ("exc", "away"),
    [
        (sqlite_error(sqlite3.SQLITE_BUSY, "database is locked"), True),
        (sqlite_error(sqlite3.SQLITE_IOERR | (3 << 8), "disk I/O error"), True),
        (sqlite_error(sqlite3.SQLITE_FULL, "database or disk is full"), True),
        (sqlite_error(sqlite3.SQLITE_READONLY, "attempt to write a readonly database"), True),
        (OSError("No space left on device"), True),
        (sqlite_error(sqlite3.SQLITE_ERROR, "no such table: deliveries"), False),
        (ValueError("a bug"), False),
    ],
)
def test_sqlite_errors_by_kind(exc: Exception, away: bool) -> None:
    nothing = cast(sqlite3.Connection, object())
    driver = SqliteDriver(nothing, nothing)
    assert driver.unavailable(exc) is away


@pytest.mark.parametrize(
    ("exc", "away"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), True),
        (TimeoutError(), True),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), True),
        (asyncpg.CannotConnectNowError("the database system is starting up"), True),
        (asyncpg.AdminShutdownError("terminating connection"), True),
        (asyncpg.TooManyConnectionsError("too many clients"), True),
        (asyncpg.ReadOnlySQLTransactionError("read-only transaction"), True),
        (asyncpg.InterfaceError("pool is closing"), True),
        (asyncpg.InternalClientError("cannot switch to state 15"), True),
        (asyncpg.DeadlockDetectedError("deadlock detected"), True),
        (asyncpg.UndefinedTableError("relation does not exist"), False),
        (asyncpg.UniqueViolationError("duplicate key"), False),
    ],
)
def test_postgres_errors_by_kind(exc: Exception, away: bool) -> None:
    driver = PostgresDriver(cast(asyncpg.Pool, object()))
    assert driver.unavailable(exc) is away
