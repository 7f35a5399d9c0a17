"""What a database holds on disk, read as raw bytes: the SQLite files of a store (database, WAL,
shared memory) and every file of a PostgreSQL server's data directory (heap, TOAST, indexes,
WAL, its own logs), for tests that a value never reaches the disk in clear."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from service.store import sqlite_path


def sqlite_files(database_url: str) -> dict[Path, bytes]:
    """The store's database file and its -wal and -shm, those that exist, as they are now."""
    path = sqlite_path(database_url)
    files = {}
    for suffix in ("", "-wal", "-shm"):
        candidate = path.with_name(path.name + suffix)
        if candidate.exists():
            files[candidate] = candidate.read_bytes()
    assert path in files, f"no database at {path}"
    return files


async def postgres_data_directory(database_url: str) -> Path:
    """The server's data directory after a CHECKPOINT (every page it holds in memory written
    out); it must be on this machine and readable, as with `deploy/local/postgres.sh`."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("CHECKPOINT")
        directory = Path(await connection.fetchval("SHOW data_directory"))
    finally:
        await connection.close()
    if not os.access(directory, os.R_OK | os.X_OK):
        pytest.fail(f"PostgreSQL's data directory {directory} cannot be read by these tests")
    return directory


def _files_under(directory: Path) -> Iterator[Path]:
    """Every regular file (not the server's socket)."""
    for root, _, names in os.walk(directory):
        for name in names:
            path = Path(root) / name
            if path.is_file():
                yield path


def holding(files: Iterable[Path] | Mapping[Path, bytes], needles: Iterable[bytes]) -> set[bytes]:
    """The needles found in any of the files (a path that went away meanwhile is skipped)."""
    wanted = set(needles)
    found: set[bytes] = set()
    items = files.items() if isinstance(files, Mapping) else ((path, None) for path in files)
    for path, given in items:
        try:
            content = path.read_bytes() if given is None else given
        except FileNotFoundError:
            continue
        found |= {needle for needle in wanted - found if needle in content}
        if found == wanted:
            break
    return found


async def postgres_holding(database_url: str, needles: Iterable[bytes]) -> set[bytes]:
    """The needles found anywhere in the server's data directory, after a CHECKPOINT. Other
    databases of the server are read too: a needle must be unique to its test."""
    directory = await postgres_data_directory(database_url)
    return holding(_files_under(directory), needles)


async def query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    """A query's rows as stored (bytes as bytes), read on a connection of its own."""
    if database_url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(sqlite_path(database_url))) as embedded:
            return [tuple(row) for row in embedded.execute(sql)]
    server = await asyncpg.connect(database_url)
    try:
        return [tuple(row) for row in await server.fetch(sql)]
    finally:
        await server.close()


async def column_values(database_url: str, table: str, column: str) -> list[Any]:
    """Every non-null value of a column as stored."""
    sql = f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"
    return [row[0] for row in await query(database_url, sql)]
