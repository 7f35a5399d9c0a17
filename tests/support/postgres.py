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
