"""A backlog of open deliveries owed to dead endpoints, seeded into a store before a run.

What a platform carries when a few customers' endpoints have been down for days: most of the
backlog belongs to subscriptions still active whose deliveries wait for their next retry (spread
over the next day, a few of them due at any moment), the rest to subscriptions the failure clock
disabled, whose deliveries stay open, all of them due, until someone re-enables them. The rows go
in through the store's own ingest transaction (sealed bodies, counters and all) and are then
moved to that state with one UPDATE per shape.

Seeding a million rows takes minutes, so it is done once per store, size and schema revision,
into a template kept under var/bench/backlog-cache/ (a SQLite file, or a PostgreSQL database
named after it) with the key that sealed it; each run copies the template, points the dead
subscriptions at its own receiver and ages the rows anew from now.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from pydantic import SecretStr

from bench.stack import VAR, Backends, fresh_database, new_encryption_key
from service.domain import IncomingEvent, NewDelivery
from service.ids import new_id
from service.settings import load_settings
from service.store import open_store
from service.store.interfaces import Lease
from service.store.migrate import head_revision
from tests.support.postgres import scratch_database, with_database

DEAD_ORG = "org_dead"
DEAD_URL = "http://127.0.0.1:9/dead"  # replaced by each run's own
EVENTS = ("verification.created",)
DAY_MS = 86_400_000
BATCH_EVENTS = 2_000


@dataclass(frozen=True)
class Backlog:
    """`open_deliveries` open rows over `retrying` active and `disabled` subscriptions."""

    open_deliveries: int
    retrying: int = 3
    disabled: int = 2

    @property
    def subscriptions(self) -> int:
        return self.retrying + self.disabled


CACHE = VAR / "backlog-cache"


@contextlib.asynccontextmanager
async def backlog_database(
    store: str, backends: Backends, run: str, backlog: Backlog, url: str
) -> AsyncIterator[tuple[str, str]]:
    """A fresh database of kind `store` holding the backlog, its dead subscriptions pointing
    at `url`: its URL and encryption key. Removed afterwards; the template it was copied from
    is kept."""
    template, key = await _template(store, backends, backlog)
    if store == "sqlite":
        async with fresh_database(store, backends, run) as database_url:
            shutil.copyfile(template, database_url.removeprefix("sqlite:///"))
            await _age(database_url, backlog, url)
            yield database_url, key
        return
    assert backends.postgres is not None
    async with scratch_database(backends.postgres, f"bench_{run}", template=template) as copy:
        await _age(copy, backlog, url)
        yield copy, key


async def _template(store: str, backends: Backends, backlog: Backlog) -> tuple[str, str]:
    """The template's path (SQLite) or database name (PostgreSQL), and its key: seeded now
    unless the cache holds it."""
    shape = f"{backlog.open_deliveries}_{backlog.retrying}_{backlog.disabled}"
    name = f"{store}_{shape}_r{head_revision()}"
    CACHE.mkdir(parents=True, exist_ok=True)
    key_file = CACHE / f"{name}.key"
    if store == "sqlite":
        template = str(CACHE / f"{name}.db")
        database_url = f"sqlite:///{template}"
    else:
        assert backends.postgres is not None
        template = f"bench_backlog_{name}"
        database_url = with_database(backends.postgres, template)
    if key_file.exists() and (store == "sqlite" or await _exists(backends, template)):
        return template, key_file.read_text()
    key = new_encryption_key()
    if store == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{template}{suffix}")
    else:
        admin = await asyncpg.connect(backends.postgres)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{template}"')
        finally:
            await admin.close()
    await seed_backlog(database_url, key, backlog)
    if store == "sqlite":
        with contextlib.closing(sqlite3.connect(template)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    key_file.write_text(key)
    return template, key


async def _exists(backends: Backends, database: str) -> bool:
    assert backends.postgres is not None
    admin = await asyncpg.connect(backends.postgres)
    try:
        return bool(await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database))
    finally:
        await admin.close()


async def seed_backlog(database_url: str, encryption_key: str, backlog: Backlog) -> None:
    """Creates the backlog's subscriptions and their open deliveries: each event goes to every
    one of them."""
    settings = load_settings(database_url=database_url, encryption_key=SecretStr(encryption_key))
    store = await open_store(settings)
    try:
        ids = [
            (await store.create_subscription(DEAD_ORG, DEAD_URL, EVENTS, "bench")).id
            for _ in range(backlog.subscriptions)
        ]
        events = -(-backlog.open_deliveries // len(ids))
        body = b'{"event":"verification.created","data":{"status":"approved"}}'
        lease = Lease("bench-seed", 1)
        for start in range(0, events, BATCH_EVENTS):
            batch = [
                IncomingEvent(new_id("evt"), DEAD_ORG, "verification.created", 0, body, None, None)
                for _ in range(min(BATCH_EVENTS, events - start))
            ]
            deliveries = [
                NewDelivery(new_id("dlv"), e.id, s, e.event, DEAD_ORG) for e in batch for s in ids
            ]
            await store.record_events(batch, deliveries, lease)
    finally:
        await store.close()


async def _age(database_url: str, backlog: Backlog, url: str) -> None:
    """The dead subscriptions pointed at `url`; the retrying ones' deliveries tried three times,
    the next try spread over the next day; the disabled ones' due now; no lease held."""
    sqlite = database_url.startswith("sqlite:///")
    query = "SELECT id FROM subscriptions WHERE org_id = '{}' ORDER BY created_at, id"
    if sqlite:
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            ids = [row[0] for row in db.execute(query.format(DEAD_ORG))]
    else:
        connection = await asyncpg.connect(database_url)
        try:
            ids = [row["id"] for row in await connection.fetch(query.format(DEAD_ORG))]
        finally:
            await connection.close()
    retrying, disabled = ids[: backlog.retrying], ids[backlog.retrying :]
    now = int(time.time() * 1000)
    spread = f"abs(random()) % {DAY_MS}" if sqlite else f"(random() * {DAY_MS})::bigint"
    statements = [
        ("UPDATE subscriptions SET url = '" + url.replace("'", "''") + "' WHERE id = {}", ids),
        (
            "UPDATE deliveries SET status = 'retrying', attempts = 3, lease_owner = NULL, "
            f"lease_until = NULL, next_attempt_at = {now} + {spread} WHERE subscription_id = {{}}",
            retrying,
        ),
        (
            "UPDATE deliveries SET status = 'retrying', attempts = 3, lease_owner = NULL, "
            f"lease_until = NULL, next_attempt_at = {now - 60_000} WHERE subscription_id = {{}}",
            disabled,
        ),
        (
            "UPDATE subscriptions SET active = false, disabled_at = "
            f"{now}, deactivated_reason = 'failing for 5 days' WHERE id = {{}}",
            disabled,
        ),
    ]
    if sqlite:
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            for sql, rows in statements:
                db.executemany(sql.format("?"), [(i,) for i in rows])
            db.commit()
            db.execute("ANALYZE")
        return
    connection = await asyncpg.connect(database_url)
    try:
        for sql, rows in statements:
            await connection.executemany(sql.format("$1"), [(i,) for i in rows])
        await connection.execute("VACUUM ANALYZE deliveries")
    finally:
        await connection.close()
