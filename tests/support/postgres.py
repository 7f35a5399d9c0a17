"""Throw-away PostgreSQL databases for tests and the bench."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg


def with_database(url: str, name: str) -> str:
    """`url` pointing at database `name` instead of its own."""
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _admin(url: str, statement: str) -> None:
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def scratch_database(
    admin_url: str, name: str, *, template: str | None = None
) -> AsyncIterator[str]:
    """Creates database `name` (a copy of `template` when given) on the server of `admin_url`,
    yields its URL, and drops it afterwards, connections and all."""
    copy = f' TEMPLATE "{template}"' if template else ""
    await _admin(admin_url, f'CREATE DATABASE "{name}"{copy}')
    try:
        yield with_database(admin_url, name)
    finally:
        await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def raw_database_bytes(database_url: str) -> bytes:
    """Every file of every table, index and TOAST relation of the database, as on disk."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("CHECKPOINT")
        paths = await connection.fetch(
            "SELECT pg_relation_filepath(c.oid) AS path FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname IN ('public', 'pg_toast') AND c.relkind IN ('r', 'i', 't') "
            "AND pg_relation_filepath(c.oid) IS NOT NULL"
        )
        chunks = []
        for row in paths:
            with contextlib.suppress(asyncpg.UndefinedFileError):
                chunks.append(
                    await connection.fetchval("SELECT pg_read_binary_file($1)", row["path"])
                )
        return b"".join(chunks)
    finally:
        await connection.close()
