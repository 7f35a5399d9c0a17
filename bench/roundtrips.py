"""Round trips to PostgreSQL per kind of store call, for `python -m bench.profile --stages`.

Installed beside the stage clocks (`bench.stages`) in the service child only. It wraps asyncpg's
`Connection` where a message goes to the server and its answer is awaited: a simple query (no
arguments: `BEGIN`, `COMMIT`, the pool's reset on release), a statement's bind and execute
(`fetch`, `fetchrow`, `execute` with arguments, and `executemany`, one pipelined round trip for
all its rows), and a statement's prepare (a miss in the connection's statement cache). Each is
counted under the store call it happened in — ingest's `record_events`, the outcome write
`record_attempts`, `claim_due`, lease renewals and releases, anything else ("other":
housekeeping, gauges, the API) — with each call's duration and the time it waited for a pooled
connection. On SQLite nothing is counted but the calls and their durations.
"""

from __future__ import annotations

import contextvars
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

KINDS = {
    "record_events": "ingest (record_events)",
    "record_matched": "ingest (record_events)",  # ingest's write since it checks the revision
    "record_attempts": "outcomes (record_attempts)",
    "claim_due": "claims (claim_due)",
    "renew": "lease renewals (renew)",
    "release": "lease releases (release)",
}
OTHER = "other"
# What is counted: a simple query, a bind and execute, a prepare.
SIMPLE, EXECUTE, PREPARE = "simple", "execute", "prepare"

_kind: contextvars.ContextVar[str] = contextvars.ContextVar("bench_store_kind", default=OTHER)


class Tally:
    def __init__(self) -> None:
        self.trips: dict[str, Counter[str]] = defaultdict(Counter)
        self.durations: dict[str, list[float]] = defaultdict(list)
        self.pool_waits: dict[str, list[float]] = defaultdict(list)
        self.simple: Counter[str] = Counter()  # the simple queries' own text: BEGIN, COMMIT, …

    def table(self, events: int) -> list[dict[str, Any]]:
        rows = []
        for kind in [*dict.fromkeys(KINDS.values()), OTHER]:
            calls = self.durations.get(kind, [])
            trips = self.trips.get(kind, Counter())
            if not calls and not trips:
                continue
            spans = sorted(calls)
            total = sum(trips.values())
            rows.append(
                {
                    "kind": kind,
                    "calls": len(calls),
                    "round_trips": total,
                    "round_trips_per_call": total / len(calls) if calls else None,
                    "round_trips_per_event": total / events if events else None,
                    "statements_per_call": trips[EXECUTE] / len(calls) if calls else None,
                    "simple_queries": trips[SIMPLE],
                    "prepares": trips[PREPARE],
                    "p50_ms": statistics.median(spans) if spans else None,
                    "p99_ms": spans[int(len(spans) * 0.99)] if spans else None,
                    "mean_pool_wait_ms": statistics.fmean(self.pool_waits[kind])
                    if self.pool_waits.get(kind)
                    else 0.0,
                }
            )
        return rows


def install(tally: Tally) -> None:
    """Wraps the store's calls and asyncpg's round trips (asyncpg is imported only when the
    store is PostgreSQL's, but is installed with the service either way)."""
    from service.store.sql import SqlStore  # noqa: PLC0415 - only in the service child

    for name, kind in KINDS.items():
        if hasattr(SqlStore, name):  # an older service may lack one
            setattr(SqlStore, name, _kinded(getattr(SqlStore, name), kind, tally))
    try:
        from asyncpg import connection, pool  # noqa: PLC0415
    except ImportError:
        return
    # Private methods of asyncpg's, read and replaced by name.
    conn_class: Any = connection.Connection
    pool_class: Any = pool.Pool
    execute, do_execute = conn_class.execute, conn_class._do_execute
    get_statement, acquire = conn_class._get_statement, pool_class._acquire
    prepared: set[int] = set()

    async def counted_execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        if not args:  # a simple query; with arguments it is counted in `_do_execute`
            tally.trips[_kind.get()][SIMPLE] += 1
            tally.simple[query.split(None, 1)[0].upper() if query.strip() else ""] += 1
        return await execute(self, query, *args, **kwargs)

    async def counted_do_execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        tally.trips[_kind.get()][EXECUTE] += 1
        return await do_execute(self, *args, **kwargs)

    async def counted_get_statement(self: Any, *args: Any, **kwargs: Any) -> Any:
        statement = await get_statement(self, *args, **kwargs)
        if id(statement) not in prepared:
            prepared.add(id(statement))
            tally.trips[_kind.get()][PREPARE] += 1
        return statement

    async def timed_acquire(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await acquire(self, *args, **kwargs)
        finally:
            tally.pool_waits[_kind.get()].append((time.perf_counter() - started) * 1000)

    conn_class.execute = counted_execute
    conn_class._do_execute = counted_do_execute
    conn_class._get_statement = counted_get_statement
    pool_class._acquire = timed_acquire


def _kinded(method: Callable[..., Any], kind: str, tally: Tally) -> Callable[..., Any]:
    async def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _kind.set(kind)
        started = time.perf_counter()
        try:
            return await method(self, *args, **kwargs)
        finally:
            tally.durations[kind].append((time.perf_counter() - started) * 1000)
            _kind.reset(token)

    return wrapped
