"""`python -m bench.history`: a month of delivered history on PostgreSQL, and what it costs.

    seed  --deliveries N --days D   a database `bench_history` (kept between runs; its URL and
                                    key in var/bench/history.json) holding N delivered deliveries
                                    of N/2 events to two subscriptions, spread evenly over the
                                    last D days, one attempt each; payloads older than a week
                                    already removed, as the service's retention leaves them
    sizes                           each table's size with its indexes and TOAST, and its rows
    purge --retention-days R        the store's own retention (`Retention.purge` in the
                                    service's batches) down to R days: rows a second, and each
                                    batch's time (p50, p99, max)

The rows are written by SQL (generate_series), not through the service: twenty million rows
through ingest would take hours. What the service reads of them (status, times, ids) is
realistic; the bodies are the sealing key's prefix and random bytes of a sealed body's size,
never opened.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from pydantic import SecretStr

from bench.stack import DEFAULT_POSTGRES, VAR, new_encryption_key
from service.settings import load_settings
from service.store import open_store
from service.store.crypto import Keyring
from service.store.migrate import migrate
from tests.support.postgres import with_database

DAY_MS = 86_400_000
ORG = "org_history"
NAME = "bench_history"
STATE = VAR / "history.json"
CHUNK_EVENTS = 250_000
BODY_BYTES = 380  # a sealed verification.created body
PURGE_BATCH = 500  # the service's (service/delivery/housekeeping.py)
EVENTS = ("verification.created",)
TABLES = ("events", "deliveries", "attempts", "subscription_stats")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True)
    seed = verbs.add_parser("seed")
    seed.add_argument("--deliveries", type=int, default=20_000_000)
    seed.add_argument("--days", type=float, default=35.0)
    sizes = verbs.add_parser("sizes")
    purge = verbs.add_parser("purge")
    purge.add_argument("--retention-days", type=float, default=30.0)
    purge.add_argument("--seconds", type=float, default=60.0, help="stop after (%(default)s)")
    for verb in (sizes, purge):
        verb.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser


def state() -> dict[str, Any]:
    """The seeded database's URL and key (`seed` writes them)."""
    if not STATE.exists():
        raise SystemExit(f"no history database: run `python -m bench.history seed` ({STATE})")
    return dict(orjson.loads(STATE.read_bytes()))


async def seed(deliveries: int, days: float) -> dict[str, Any]:
    admin = os.environ.get("WEBHOOKS_TEST_POSTGRES", DEFAULT_POSTGRES)
    connection = await asyncpg.connect(admin)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{NAME}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{NAME}"')
    finally:
        await connection.close()
    url = with_database(admin, NAME)
    key = new_encryption_key()
    await migrate(url)
    store = await open_store(load_settings(database_url=url, encryption_key=SecretStr(key)))
    try:
        subscriptions = [
            (await store.create_subscription(ORG, f"https://h{n}.example/hook", EVENTS, "bench")).id
            for n in range(2)
        ]
    finally:
        await store.close()
    # Sealed bodies begin with the sealing key's prefix: the census groups by it.
    prefix = Keyring(key).binary_prefixes()[0].hex()
    events = deliveries // 2
    now = int(time.time() * 1000)
    start = now - int(days * DAY_MS)
    step = (now - start) / events
    expunged_before = now - 7 * DAY_MS
    started = time.perf_counter()
    connection = await asyncpg.connect(url)
    try:
        # Loaded without the secondary indexes, which are built once at the end (minutes, not
        # the hours of keeping a dozen indexes up to date row by row).
        indexes = await connection.fetch(
            "SELECT i.indexname AS name, i.indexdef AS definition FROM pg_indexes i "
            "JOIN pg_class c ON c.relname = i.indexname JOIN pg_index x ON x.indexrelid = c.oid "
            "WHERE i.tablename = ANY($1::text[]) AND NOT x.indisunique",
            list(TABLES),
        )
        for index in indexes:
            await connection.execute(f'DROP INDEX "{index["name"]}"')
        await connection.execute("SET maintenance_work_mem = '1GB'")
        for first in range(0, events, CHUNK_EVENTS):
            last = min(first + CHUNK_EVENTS, events) - 1
            await _seed_chunk(
                connection, first, last, start, step, expunged_before, subscriptions, prefix
            )
            print(f"  {2 * (last + 1):,} deliveries ({time.perf_counter() - started:,.0f} s)")
        for index in indexes:
            await connection.execute(index["definition"])
            print(f"  index {index['name']} ({time.perf_counter() - started:,.0f} s)")
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    figures = {
        "url": url,
        "key": key,
        "deliveries": 2 * events,
        "days": days,
        "seeded_at": now,
        "seed_s": round(time.perf_counter() - started),
    }
    STATE.parent.mkdir(parents=True, exist_ok=True)
    STATE.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return figures


async def _seed_chunk(
    connection: asyncpg.Connection,
    first: int,
    last: int,
    start: int,
    step: float,
    expunged_before: int,
    subscriptions: list[str],
    prefix: str,
) -> None:
    series = (
        f"(SELECT g, lpad(g::text, 10, '0') AS n, ({start} + g * {step})::bigint AS t "
        f"FROM generate_series({first}, {last}) g) s"
    )
    async with connection.transaction():
        await connection.execute(
            "INSERT INTO events (org_id, id, event, occurred_at, body, source, received_at, "
            "payload_removed_at, payload_removed_reason) "
            f"SELECT '{ORG}', 'evt_h' || n, 'verification.created', t, "
            f"CASE WHEN t < {expunged_before} THEN ''::bytea "
            f"ELSE decode('{prefix}' || repeat(md5(n), {BODY_BYTES // 16}), 'hex') END, "
            f"'history/0/' || g, t, CASE WHEN t < {expunged_before} THEN t + {7 * DAY_MS} END, "
            f"CASE WHEN t < {expunged_before} THEN 'expired' END FROM {series}"
        )
        await connection.execute(
            "INSERT INTO deliveries (id, event_id, org_id, subscription_id, event, status, "
            "attempts, next_attempt_at, created_at, updated_at, last_attempt_at, "
            "last_status_code) SELECT 'whd_h' || k || n, 'evt_h' || n, "
            f"'{ORG}', sub, 'verification.created', 'sent', 1, t, t, t + 40, t + 20, 200 "
            f"FROM {series}, (VALUES (0, $1), (1, $2)) v(k, sub)",
            *subscriptions,
        )
        await connection.execute(
            "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, "
            "result) SELECT 'whd_h' || k || n, 1, t + 20, 20, 200, '2xx' "
            f"FROM {series}, (VALUES (0), (1)) v(k)"
        )


async def sizes(url: str) -> dict[str, dict[str, int]]:
    connection = await asyncpg.connect(url)
    try:
        out = {}
        for table in TABLES:
            row = await connection.fetchrow(
                "SELECT pg_total_relation_size($1::text::regclass) AS total, "
                "pg_relation_size($1::text::regclass) AS heap, "
                "(SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = $1::text) AS live, "
                "(SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = $1::text) AS dead",
                table,
            )
            assert row is not None
            out[table] = {k: int(row[k] or 0) for k in ("total", "heap", "live", "dead")}
        return out
    finally:
        await connection.close()


async def purge(url: str, key: str, retention_days: float, seconds: float) -> dict[str, Any]:
    """The store's purge at the service's batch size until nothing is left or `seconds`."""
    store = await open_store(load_settings(database_url=url, encryption_key=SecretStr(key)))
    cutoff = int(time.time() * 1000) - int(retention_days * DAY_MS)
    took: list[float] = []
    removed = 0
    started = time.perf_counter()
    cursor = None
    try:
        while time.perf_counter() - started < seconds:
            t = time.perf_counter()
            step = await store.purge(cutoff, PURGE_BATCH, cursor)
            took.append(time.perf_counter() - t)
            removed += step.removed
            cursor = step.cursor
            if step.done:
                break
    finally:
        await store.close()
    elapsed = time.perf_counter() - started
    took.sort()
    return {
        "retention_days": retention_days,
        "rows_removed": removed,
        "rows_per_s": round(removed / elapsed),
        "batches": len(took),
        "batch_ms_p50": round(statistics.median(took) * 1000, 1),
        "batch_ms_p99": round(took[int(0.99 * (len(took) - 1))] * 1000, 1),
        "batch_ms_max": round(took[-1] * 1000, 1),
    }


def _print(figures: Any, out: Path | None = None) -> None:
    text = orjson.dumps(figures, option=orjson.OPT_INDENT_2)
    print(text.decode())
    if out is not None:
        out.write_bytes(text)


def main() -> None:
    args = _parser().parse_args()
    if args.verb == "seed":
        figures = asyncio.run(seed(args.deliveries, args.days))
        _print({k: v for k, v in figures.items() if k != "key"})
        _print(asyncio.run(sizes(figures["url"])))
    elif args.verb == "sizes":
        _print(asyncio.run(sizes(state()["url"])), args.json)
    else:
        seeded = state()
        url, key = seeded["url"], seeded["key"]
        figures = asyncio.run(purge(url, key, args.retention_days, args.seconds))
        _print(figures, args.json)
        _print(asyncio.run(sizes(seeded["url"])))


if __name__ == "__main__":
    main()
