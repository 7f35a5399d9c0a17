"""SQLite's virtual-machine steps, counted on the store's connections while a block runs: a
measure of how much a statement read that, unlike a time, does not move with the machine's
load (the `*_work` tests assert that it stays flat as the store grows)."""

from __future__ import annotations

import sqlite3

from service.store import Store


class SqliteSteps:
    """Steps (in hundreds) on the store's loop connection and its scans' connection, or on the
    one of them asked for."""

    def __init__(self, store: Store, *, loop: bool = True, scans: bool = True) -> None:
        driver = store._driver  # type: ignore[attr-defined]
        self._connections: list[sqlite3.Connection] = []
        if loop:
            self._connections.append(driver._connection)
        if scans:
            self._connections.append(driver._reader)
        self.count = 0

    def _step(self) -> int:
        self.count += 1
        return 0

    def __enter__(self) -> SqliteSteps:
        for connection in self._connections:
            connection.set_progress_handler(self._step, 100)
        return self

    def __exit__(self, *_: object) -> None:
        for connection in self._connections:
            connection.set_progress_handler(None, 0)
