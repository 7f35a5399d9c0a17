"""SQLite's virtual-machine steps, counted on the store's connections while a block runs: a
measure of how much a statement read that, unlike a time, does not move with the machine's
load (the `*_work` tests assert that it stays flat as the store grows)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator

from service.store import Store


class SqliteSteps:
    """Steps (in hundreds) on the store's loop connection and its scans' connection, or on the
    one of them asked for."""

    def __init__(self, store: Store, *, loop: bool = True, scans: bool = True) -> None:
        driver = self._driver = store._driver  # type: ignore[attr-defined]
        self._connections: list[sqlite3.Connection] = []
        if loop:
            self._connections.append(driver._connection)
        if scans:
            self._connections.append(driver._reader)
        self.count = 0

    def _step(self) -> int:
        self.count += 1
        return 0

    async def __aenter__(self) -> SqliteSteps:
        async with self._scans_held():
            for connection in self._connections:
                connection.set_progress_handler(self._step, 100)
        return self

    async def __aexit__(self, *_: object) -> None:
        async with self._scans_held():
            for connection in self._connections:
                connection.set_progress_handler(None, 0)

    @contextlib.asynccontextmanager
    async def _scans_held(self) -> AsyncIterator[None]:
        """No read running in the scans' thread meanwhile: setting a handler waits for the
        connection's mutex while holding the GIL, and a read in that thread calling the
        handler waits for the GIL while holding the mutex (a background read, such as the
        index following a change, deadlocked the two)."""
        async with self._driver._reader_lock:
            await self._driver._reader_worker.settle()
            yield
