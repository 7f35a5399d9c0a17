"""PostgreSQL's own count of the bench's statements (`pg_stat_statements`), for
`python -m bench.profile --stages --store postgres`.

The extension must be in the server's `shared_preload_libraries` (deploy/local/postgres.sh puts
it there when it starts the server and Debian's package ships it); when it is not, the bench says
so and goes on without it. Only the bench database's own statements are reset and read: other
databases on a shared server are left alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import asyncpg

TOP = 15


def server_cpu_s() -> float:
    """The CPU seconds (user and system) used so far by every PostgreSQL process on this machine
    (the postmaster, its backends and background workers: each is named `postgres`): the
    database's side of the service's cost, read before and after a run. The local server is the
    bench's alone; on a shared one this counts the others' work too."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "postgres":
                continue
            # After the command name in parentheses: utime, stime, and the reaped children's
            # cutime, cstime (fields 14 to 17: a backend that exited is in the postmaster's).
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        total += sum(int(field) for field in fields[11:15])
    return total / tick


async def start(url: str) -> bool:
    """Makes the extension in the bench database and zeroes its counts there; False when the
    server was started without the library."""
    connection = await asyncpg.connect(url)
    try:
        loaded = await connection.fetchval("SHOW shared_preload_libraries")
        if "pg_stat_statements" not in loaded:
            return False
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await connection.execute(
            "SELECT pg_stat_statements_reset(0, "
            "(SELECT oid FROM pg_database WHERE datname = current_database()), 0)"
        )
        return True
    finally:
        await connection.close()


async def read(url: str, events: int) -> dict[str, Any]:
    """The bench database's statements since `start`, the costliest first, with each one's
    calls, rows and server time per event handed to the service."""
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(
            "SELECT query, calls, rows, total_exec_time, total_plan_time FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND query NOT LIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC"
        )
    finally:
        await connection.close()
    statements = [
        {
            "query": " ".join(row["query"].split()),
            "calls": row["calls"],
            "rows": row["rows"],
            "calls_per_event": row["calls"] / events if events else None,
            "exec_us_per_event": row["total_exec_time"] * 1000 / events if events else None,
            "mean_exec_ms": row["total_exec_time"] / row["calls"] if row["calls"] else 0.0,
        }
        for row in rows
    ]
    return {
        "events": events,
        "calls_per_event": sum(s["calls"] for s in statements) / events if events else None,
        "exec_us_per_event": sum(row["total_exec_time"] for row in rows) * 1000 / events
        if events
        else None,
        "statements": statements,
    }


def table(found: dict[str, Any]) -> str:
    lines = [
        f"PostgreSQL's own count (pg_stat_statements, steady phase, {found['events']} events): "
        f"{found['calls_per_event']:.2f} statements and "
        f"{found['exec_us_per_event']:.0f} µs of execution per event; the costliest:"
    ]
    for s in found["statements"][:TOP]:
        lines.append(
            f"  {s['exec_us_per_event']:7.1f} µs/event  {s['calls_per_event']:5.2f} calls/event  "
            f"{s['mean_exec_ms']:7.3f} ms/call  {s['query'][:110]}"
        )
    return "\n".join(lines)
