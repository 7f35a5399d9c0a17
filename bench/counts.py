"""`python -m bench.counts [--rows 1000000]`: what housekeeping's store-wide counts cost on
PostgreSQL beside that many open deliveries and kept events (received over 30 days, written
straight into the tables with `generate_series`): the pending gauge's full count, its bounded
count and the planner's estimate, the full census of sealed values (`rekey`'s), and the rolling
census's first and later passes (with a budget of a twentieth of the rows, as 1,000,000 of a
20,000,000-row history) after 3,000 new events. Each read timed alone, the median of three
(docs/decisions/0018-store-wide-counts-at-scale.md).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from cryptography.fernet import Fernet
from pydantic import SecretStr

from bench.stack import Backends
from service.delivery.census import RollingCensus
from service.settings import load_settings
from service.store import CENSUS_BUCKETS, open_store
from tests.support.postgres import scratch_database

BUCKETS = 30 * 86_400_000 // CENSUS_BUCKETS["events"]


async def _median_ms(call: Callable[[], Awaitable[Any]], rounds: int = 3) -> tuple[Any, float]:
    took = []
    value = None
    for _ in range(rounds):
        started = time.perf_counter()
        value = await call()
        took.append((time.perf_counter() - started) * 1000)
    return value, round(sorted(took)[len(took) // 2], 1)


async def _events(conn: asyncpg.Connection, prefix: str, rows: int, spread: bool) -> None:
    now = int(time.time() * 1000)
    received = (
        f"{now} - (g % {BUCKETS})::bigint * {CENSUS_BUCKETS['events']}" if spread else str(now)
    )
    tag = "e" if spread else "n"
    await conn.execute(
        "INSERT INTO events (id, org_id, event, occurred_at, body, source, received_at) "
        f"SELECT '{tag}' || g, 'org_x', 'verification.created', {now}, "
        f"('\\x{prefix}' || 'abcdef')::bytea, 'bench', {received} "
        f"FROM generate_series(1, {rows}) g"
    )


async def run(rows: int) -> dict[str, Any]:
    backends = Backends.from_env()
    assert backends.postgres is not None
    async with scratch_database(backends.postgres, "bench_counts") as url:
        key = Fernet.generate_key().decode()
        store = await open_store(load_settings(database_url=url, encryption_key=SecretStr(key)))
        conn = await asyncpg.connect(url)
        try:
            prefix = store._keyring.binary_prefixes()[0].hex()  # type: ignore[attr-defined]
            await _events(conn, prefix, rows, spread=True)
            now = int(time.time() * 1000)
            await conn.execute(
                "INSERT INTO deliveries (id, event_id, org_id, subscription_id, event, status, "
                "next_attempt_at, created_at, updated_at) SELECT 'd' || g, 'e' || g, 'org_x', "
                f"'sub_' || (g % 5), 'verification.created', 'retrying', {now + 86_400_000}, "
                f"{now}, {now} FROM generate_series(1, {rows}) g"
            )
            await conn.execute("VACUUM ANALYZE")
            result: dict[str, Any] = {"rows": rows}
            _, result["pending_count_ms"] = await _median_ms(store.pending_count)
            _, result["pending_at_most_100000_ms"] = await _median_ms(
                lambda: store.pending_at_most(100_000)
            )
            result["pending_estimate"], result["pending_estimate_ms"] = await _median_ms(
                store.pending_estimate
            )
            _, result["sealed_census_ms"] = await _median_ms(store.sealed_census)
            census = RollingCensus(store, budget=rows // 20)
            _, result["rolling_first_pass_ms"] = await _median_ms(census.take, rounds=1)
            await _events(conn, prefix, 3_000, spread=False)
            later = [(await _median_ms(census.take, rounds=1))[1] for _ in range(3)]
            result["rolling_later_passes_ms"] = later
            return result
        finally:
            await conn.close()
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.counts", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    print(orjson.dumps(asyncio.run(run(parser.parse_args().rows))).decode())
