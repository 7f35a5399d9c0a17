"""A backlog of open deliveries owed to dead endpoints, seeded into a store before a run.

What a platform carries when a few customers' endpoints have been down for days: most of the
backlog belongs to subscriptions still active whose deliveries wait for their next retry (spread
over the next day, a few of them due at any moment), the rest to subscriptions the failure clock
disabled, whose deliveries stay open, all of them due, until someone re-enables them. The rows go
in through the store's own ingest transaction (sealed bodies, counters and all) and are then
moved to that state with one UPDATE per shape.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

import asyncpg
from pydantic import SecretStr

from service.domain import IncomingEvent, NewDelivery
from service.ids import new_id
from service.settings import load_settings
from service.store import open_store
from service.store.interfaces import Lease

DEAD_ORG = "org_dead"
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


async def seed_backlog(database_url: str, encryption_key: str, url: str, backlog: Backlog) -> None:
    """Creates the backlog's subscriptions (all pointing at `url`, an endpoint that fails) and
    their open deliveries: each event goes to every one of them."""
    if backlog.open_deliveries <= 0:
        return
    settings = load_settings(database_url=database_url, encryption_key=SecretStr(encryption_key))
    store = await open_store(settings)
    try:
        ids = [
            (await store.create_subscription(DEAD_ORG, url, ("verification.created",), "bench")).id
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
    await _age(database_url, ids[: backlog.retrying], ids[backlog.retrying :])


async def _age(database_url: str, retrying: list[str], disabled: list[str]) -> None:
    """The retrying subscriptions' deliveries tried three times, the next try spread over the
    next day; the disabled subscriptions' due now; no lease held."""
    now = int(time.time() * 1000)
    sqlite = database_url.startswith("sqlite:///")
    spread = f"abs(random()) % {DAY_MS}" if sqlite else f"(random() * {DAY_MS})::bigint"
    statements = [
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
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as db:
            for sql, ids in statements:
                db.executemany(sql.format("?"), [(i,) for i in ids])
            db.execute("ANALYZE")
        return
    connection = await asyncpg.connect(database_url)
    try:
        for sql, ids in statements:
            await connection.executemany(sql.format("$1"), [(i,) for i in ids])
        await connection.execute("VACUUM ANALYZE deliveries")
    finally:
        await connection.close()
