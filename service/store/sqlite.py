"""The SQLite driver: the embedded store, one file, zero set-up. One process owns it.

One connection, serialised by a lock: SQLite has a single writer anyway, and a lock held for the
whole of a transaction keeps another coroutine's statement out of it. WAL journal with
`synchronous=FULL`: a commit is on disk before ingest commits the Kafka offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import re
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import orjson
import structlog

from service.errors import StoreInUse
from service.store.crypto import Keyring, is_sealed
from service.store.sql import SqlStore
from service.store.sql.base import Column, Conn, Row

T = TypeVar("T")
log = structlog.get_logger(__name__)
_PLACEHOLDER = re.compile(r"\$(\d+)")

# Primary result codes that mean the file is away, locked or full, not that the SQL is wrong
# (a "no such table" is an OperationalError too, and a bug).
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


# A COMMIT runs on the loop's thread while commits take less than this (see `_commit`).
INLINE_COMMIT_MAX = 0.001
# Commits between two checkpoints: at ~25 pages a commit, about SQLite's own default of a
# checkpoint per 1,000 WAL pages.
CHECKPOINT_EVERY = 40
# How long a statement waits for another process's lock (an admin command writing) before the
# store counts as unavailable; `_NO_WAIT` for the first, non-blocking try at the write lock.
BUSY_TIMEOUT_MS = 5000
_NO_WAIT = 0


@lru_cache(maxsize=512)
def _sqlite_sql(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


class _SqliteConn:
    """Statements on the event loop's thread: a statement of this service's takes microseconds
    on a local file whose pages are cached, far less than handing it to a thread and back
    (aiosqlite's three hand-offs per statement were most of the store's CPU at low rates). What
    can wait — taking the write lock and the commit's fsync — goes to the store's thread
    (docs/decisions/0001-sqlite-on-the-loop.md)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._c = connection

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return self._c.execute(_sqlite_sql(sql), args).fetchall()

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = self._c.execute(_sqlite_sql(sql), args).fetchone()
        return row

    async def execute(self, sql: str, *args: Any) -> int:
        return self._c.execute(_sqlite_sql(sql), args).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._c.executemany(_sqlite_sql(sql), rows)


class _Worker:
    """The store's one thread, and what was last handed to it. A statement handed over runs to
    its end even when its caller is cancelled (asyncio cancels only the wait): `settle()` waits
    for it, so no one else uses the connection while it still runs there.

    Its own thread and queue rather than a ThreadPoolExecutor and `wrap_future`: a hand-off is
    one queue put and one `call_soon_threadsafe`, where the executor's chained futures cost
    about twice the Python. Most transactions need none: see `SqliteDriver`."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name="sqlite", daemon=True)
        self._thread.start()
        self._busy = 0  # handed over, not yet finished (the thread's side reported back)
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self, call: Callable[[], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._busy += 1
        self._idle.clear()
        self._calls.put((call, future))
        result: T = await future
        return result

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            call, future = item
            try:
                result = call()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting coroutine
                future.get_loop().call_soon_threadsafe(self._finish, future, None, exc)
            else:
                future.get_loop().call_soon_threadsafe(self._finish, future, result, None)

    def _finish(
        self, future: asyncio.Future[Any], result: Any, error: BaseException | None
    ) -> None:
        self._busy -= 1
        if not self._busy:
            self._idle.set()
        if future.done():  # its caller was cancelled
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    async def settle(self) -> None:
        while self._busy:
            # To the end: a second cancel must not let the lock go early either.
            with contextlib.suppress(BaseException):
                await self._idle.wait()

    def shutdown(self) -> None:
        self._calls.put(None)


class _ThreadedConn(_SqliteConn):
    """Statements in the store's thread, one hand-off each: for reads that may go through
    many rows (`SqliteDriver.scan`), which would stall the loop's thread."""

    def __init__(self, connection: sqlite3.Connection, worker: _Worker) -> None:
        super().__init__(connection)
        self._worker = worker

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._worker.run(lambda: self._c.execute(_sqlite_sql(sql), args).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = await self._worker.run(
            lambda: self._c.execute(_sqlite_sql(sql), args).fetchone()
        )
        return row


class SqliteDriver:
    """One sqlite3 connection behind a lock, and one thread for what blocks.

    A write transaction takes the lock, then `BEGIN IMMEDIATE`: on the loop's thread when the
    write lock is free, else in the store's thread (the only statement that can wait, for
    another process's write lock, up to `busy_timeout`); its statements run on the loop's
    thread; `COMMIT` (the WAL's write and fsync) on the loop's thread too while commits take
    under INLINE_COMMIT_MAX, else in the store's thread (see `_commit`). Checkpoints, which copy
    the WAL into the database and may take milliseconds, never run inside a COMMIT: the driver
    runs one in the store's thread after every CHECKPOINT_EVERY commits, holding the lock, once
    the transaction that made it due has returned.
    Reads (`connection()`) run on the loop's thread: in WAL mode they never wait for a lock.
    Reads that may go through many rows (`scan()`: counts over a backlog, the census, the
    claim's search for due work) use a second, read-only connection in a thread of its own, so
    they hold up neither the loop nor the writer: WAL readers see the last commit and block no
    one.
    """

    lock_due = ""  # one process owns the file: nobody to skip
    lock_row = ""  # a write transaction (BEGIN IMMEDIATE) is the only one: nobody to wait for
    share_row = ""
    # julianday('now') has millisecond precision; `unixepoch('subsec')` needs SQLite 3.42.
    now_ms_sql = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
    # One writer: a counter row is the sequence (its new top; the values below it are ours).
    sequence_sql = (
        "UPDATE store_meta SET value = value + $1 WHERE name = 'delivery_seq' RETURNING value AS v"
    )
    writes_in_with = False  # SQLite's WITH cannot hold an INSERT or UPDATE

    def __init__(self, connection: sqlite3.Connection, reader: sqlite3.Connection) -> None:
        self._connection = connection
        self._conn = _SqliteConn(connection)
        self._lock = asyncio.Lock()
        self._worker = _Worker()
        self._reader = reader
        self._reader_lock = asyncio.Lock()
        self._reader_worker = _Worker()
        self._commit_s = 0.0  # how long a COMMIT takes: up at once, down slowly (`_timed_commit`)
        self._since_checkpoint = 0
        self._checkpointing: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path) -> SqliteDriver:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = await asyncio.to_thread(_connect, path)
        reader = await asyncio.to_thread(_connect, path, read_only=True)
        return cls(connection, reader)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteConn]:
        if self._checkpointing is not None:
            # A checkpoint due goes before the next write, or writes in a row would outrun it.
            await asyncio.shield(self._checkpointing)
        async with self._lock:
            try:
                await self._begin()
                yield self._conn
                await self._commit()
            except BaseException:
                # Whatever was handed to the thread still runs there when its caller is
                # cancelled (a BEGIN waiting for another process's write lock, a slow disk's
                # COMMIT, a checkpoint): wait for it, then roll back whatever is open, before
                # the lock is released.
                await self._worker.settle()
                if self._connection.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._connection.execute("ROLLBACK")
                raise

    async def _commit(self) -> None:
        """On the loop's thread while a COMMIT takes under INLINE_COMMIT_MAX (a local disk's
        fsync), which spares the hand-off to the store's thread and back; in the thread when
        the disk is slower, so that a slow fsync never stalls the loop more than once
        (docs/decisions/0001-sqlite-on-the-loop.md).

        Every CHECKPOINT_EVERY commits, a checkpoint in the thread, holding the lock once this
        transaction has let it go: with no write between it and the next BEGIN, that BEGIN
        finds the WAL wholly copied and starts it over. A checkpoint beside ongoing
        writes would never catch up with them under a steady load, and the WAL would grow."""
        if self._commit_s < INLINE_COMMIT_MAX:
            self._timed_commit()
        else:
            await self._worker.run(self._timed_commit)
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY and self._checkpointing is None:
            self._since_checkpoint = 0
            # Taken after this transaction lets the lock go, not inside it: the caller (ingest,
            # a delivery's outcome) is not kept waiting for the copy.
            self._checkpointing = asyncio.create_task(self._checkpoint_next())

    async def _checkpoint_next(self) -> None:
        """A checkpoint in the store's thread, holding the lock: the next transaction to begin
        waits for it (one already waiting for the lock goes first)."""
        try:
            async with self._lock:
                try:
                    await self._worker.run(self._checkpoint)
                except sqlite3.Error as exc:
                    # The WAL grows until the next one works; nothing written is at risk.
                    log.warning("sqlite.checkpoint_failed", error=str(exc))
        finally:
            self._checkpointing = None

    def _timed_commit(self) -> None:
        started = time.perf_counter()
        self._connection.execute("COMMIT")
        took = time.perf_counter() - started
        # A slow commit moves the next ones to the thread at once; fast ones bring them back
        # after a few.
        self._commit_s = max(took, 0.8 * self._commit_s + 0.2 * took)

    async def scrub(self) -> None:
        """After an erasure: the WAL, which still holds the pages as they were before it, is
        copied into the database (whose freed bytes `secure_delete` zeroed) and truncated to
        nothing, so neither file keeps the erased bytes."""
        async with self._lock:
            await self._worker.run(
                lambda: self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            )

    def _checkpoint(self) -> None:
        """PASSIVE: copies what no reader (an admin command) still needs, waits for nobody."""
        self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def _begin(self) -> None:
        """`BEGIN IMMEDIATE`: tried on the loop's thread without waiting (the write lock is
        free unless an admin command holds it, nearly always), else in the store's thread with
        the busy timeout. Saves a hand-off per transaction: at low rates, with two transactions
        per delivery, the hand-offs were a tenth of the service's CPU."""
        if not self._try_begin():
            await self._worker.run(lambda: self._connection.execute("BEGIN IMMEDIATE"))

    def _try_begin(self) -> bool:
        execute = self._connection.execute
        execute(f"PRAGMA busy_timeout={_NO_WAIT}")
        try:
            execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            return False
        finally:
            execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return True

    def atomic(self) -> AbstractAsyncContextManager[_SqliteConn]:
        return self.transaction()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[_SqliteConn]:
        async with self._lock:
            yield self._conn

    @asynccontextmanager
    async def scan(self) -> AsyncIterator[_ThreadedConn]:
        async with self._reader_lock:
            try:
                yield _ThreadedConn(self._reader, self._reader_worker)
            finally:
                await self._reader_worker.settle()  # a cancelled read may still run there

    def unavailable(self, exc: Exception) -> bool:
        if isinstance(exc, sqlite3.DatabaseError) and hasattr(exc, "sqlite_errorcode"):
            return (exc.sqlite_errorcode & 0xFF) in _UNAVAILABLE_CODES
        # SQLITE_NOMEM is raised as MemoryError by the sqlite3 module.
        return isinstance(exc, OSError | MemoryError)

    async def estimated_rows(self, conn: Conn, query: str) -> int | None:
        return None  # its planner keeps no row counts of a condition

    def in_list(self, placeholder: str) -> str:
        return f"IN (SELECT value FROM json_each({placeholder}))"

    def list_param(self, values: Sequence[str]) -> Any:
        return orjson.dumps(list(values)).decode()

    def row_source(
        self, columns: Sequence[Column], rows: Sequence[Sequence[Any]], first: int
    ) -> tuple[str, list[Any]]:
        """One JSON array of rows, taken apart by `json_each`. Bytes travel as JSON text when
        they are UTF-8 (event bodies always are: ingest accepts only valid JSON), turned back
        into the same bytes by SQLite's own CAST; anything else as `[hex]`, through `unhex`, a
        Python call per row that the common case avoids."""
        blobs = [i for i, (_, kind) in enumerate(columns) if kind == "bytea"]
        if blobs:
            rows = [[_blob(v) if i in blobs else v for i, v in enumerate(row)] for row in rows]
        picks = []
        for i, (name, kind) in enumerate(columns):
            pick = f"json_extract(value, '$[{i}]')"
            if kind == "bytea":
                pick = (
                    f"CASE json_type(value, '$[{i}]') WHEN 'text' THEN CAST({pick} AS BLOB) "
                    f"WHEN 'array' THEN unhex(json_extract(value, '$[{i}][0]')) END"
                )
            picks.append(f"{pick} AS {name}")
        return f"SELECT {', '.join(picks)} FROM json_each(${first})", [orjson.dumps(rows)]

    async def close(self) -> None:
        async with self._reader_lock:
            await self._reader_worker.settle()
            await self._reader_worker.run(self._reader.close)
        self._reader_worker.shutdown()
        if self._checkpointing is not None:
            await self._checkpointing
        async with self._lock:
            await self._worker.settle()
            await self._worker.run(self._connection.close)
        self._worker.shutdown()


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    # Autocommit mode (isolation_level None): transactions are the driver's BEGIN and COMMIT.
    # Used from the loop's thread and the store's thread, never both at once (the lock).
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    if read_only:
        # The scans' connection: the writer set the file up; this one only reads.
        for pragma in (
            f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
            "PRAGMA temp_store=MEMORY",
            "PRAGMA query_only=ON",
        ):
            connection.execute(pragma)
        connection.create_function("unhex", 1, _unhex, deterministic=True)
        return connection
    for pragma in (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
        "PRAGMA temp_store=MEMORY",
        # Deleted and overwritten content is zeroed, not left in free pages: an erased
        # payload's bytes do not outlive it in the file (with `scrub`, nor in the WAL).
        "PRAGMA secure_delete=ON",
        # Checkpoints are the driver's, in its thread (`SqliteDriver._commit`), never inside
        # a COMMIT that may run on the loop's thread.
        "PRAGMA wal_autocheckpoint=0",
    ):
        connection.execute(pragma)
    # For bulk rows of bytes, which JSON cannot carry but hex can (SQLite has `unhex` only
    # from 3.41).
    connection.create_function("unhex", 1, _unhex, deterministic=True)
    return connection


def _blob(value: bytes | None) -> str | list[str] | None:
    if value is None:
        return None
    if is_sealed(value):  # never UTF-8 worth trying: its second byte on are random
        return [value.hex()]
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return [value.hex()]


def _unhex(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text)


async def open_sqlite(path: Path, keyring: Keyring) -> SqlStore:
    return SqlStore(await SqliteDriver.open(path), keyring)


class Ownership:
    """The one `serve` process of an embedded store: an exclusive lock on `<db>.owner`, held
    for the process's life (the kernel drops it when the process dies, even by SIGKILL). A
    second `serve` on the same file is refused; admin commands never take it."""

    def __init__(self, path: Path) -> None:
        self._path = path.with_name(path.name + ".owner")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Raises StoreInUse when another process owns the store."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreInUse(str(self._path.with_suffix("")), holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None
