"""`python -m bench.profile`: where the service's CPU goes at a fixed rate.

Runs the service as the bench does (fresh topics and store, one subscription, the bench
receiver), produces at `--rate` events/s, and samples the service with py-spy during the steady
phase. Only samples holding the GIL count (py-spy `--gil`): waiting in epoll or in aiosqlite's
queue would otherwise look busy; C work that releases the GIL (SQLite's own) is left out. Writes the
collapsed stacks to var/bench/profile-<timestamp>.txt and prints the share of samples by
package (inclusive: a frame anywhere in the stack) and the top functions by self time.
`--json PATH` also writes the figures of the printed line (and deliveries/s, latency and lag of
the steady phase) as JSON, for `bench.paired`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from bench import history, pgstats, stages
from bench.backlog import Backlog
from bench.ledger import latencies, latency_summary_ms
from bench.load import Phase
from bench.runner import OK, ServiceRun
from bench.stack import VAR, Backends

# Inclusive buckets, first match wins when reading a stack from its leaf upwards.
# Every event the load generator sends (service/samples.py) passes it, so the ledger still
# balances: the cost is the filter's evaluation alone, one per subscription and event.
COMPOUND_FILTER = (
    '{"$or":['
    '{"event":"verification.created","data":{"status":{"$in":["verified","rejected",'
    '"requires_review"]},"score":{"$gte":0},"method":{"$neq":"nik_format"}}},'
    '{"event":"customer.kyc_updated","data":{"kycLevel":{"$exist":true},'
    '"kycExpiresAt":{"$gt":"2000-01-01T00:00:00Z"}}},'
    '{"event":"review.overridden","data":{"toStatus":{"$nin":["pending"]}}}]}'
)

BUCKETS = (
    ("aiohttp client", ("aiohttp/client", "aiohttp/connector", "aiohttp/streams", "aiohttp/http")),
    ("aiokafka", ("aiokafka/",)),
    ("store", ("service/store/", "aiosqlite/", "asyncpg/", "sqlite3")),
    ("prometheus", ("prometheus_client/",)),
    ("signing", ("service/signing",)),
    ("parse", ("service/events", "pydantic", "orjson")),
    ("delivery", ("service/delivery/",)),
    ("ingest", ("service/ingest", "service/matching")),
    ("event loop", ("asyncio/",)),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--rate", type=float, default=1500.0, help="events/s (%(default)s)")
    parser.add_argument("--seconds", type=float, default=20.0, help="steady phase (%(default)s)")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--lane-concurrency", type=int, default=64)
    parser.add_argument(
        "--cost-only", action="store_true", help="no py-spy: only CPU per delivery and lag"
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the figures as JSON to this file"
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="open deliveries owed to dead endpoints, seeded before the run (bench.backlog)",
    )
    parser.add_argument(
        "--history-retention-days",
        type=float,
        default=None,
        help="run on the database `python -m bench.history seed` made (PostgreSQL), with "
        "WEBHOOKS_RETENTION at this many days: its retention purges while the load runs",
    )
    parser.add_argument(
        "--filter",
        choices=("none", "compound"),
        default="none",
        help="the bench subscription's content filter: none, or compound (COMPOUND_FILTER: "
        "an $or of three branches, one per event type, with $in, $gte, $neq, $exist, a "
        "timestamp comparison and $nin, that every bench event matches)",
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="also time each stage of the bench's events in the service (bench.stages)",
    )
    return parser


def _bucket(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for name, needles in BUCKETS:
            if any(n in frame for n in needles):
                return name
    return "other"


def summarize(collapsed: Path, top: int = 25) -> str:
    total = 0
    buckets: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        buckets[_bucket(stack)] += count
        leaves[stack.split(";")[-1]] += count
    if not total:
        return "no samples"
    lines = [f"{total} samples", "", "by package (the innermost known frame of each sample):"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in buckets.most_common()]
    lines += ["", f"top {top} functions by self time:"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in leaves.most_common(top)]
    return "\n".join(lines)


async def _profile(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    backends = Backends.from_env(postgres=args.store == "postgres")
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    env = {"WEBHOOKS_LANE_CONCURRENCY": str(args.lane_concurrency)}
    if args.stages:
        env |= stages.hook_env(out.with_suffix(".stages.json"))
    backlog = Backlog(args.backlog) if args.backlog else None
    database = None
    if args.history_retention_days is not None:
        seeded = history.state()
        database = (seeded["url"], seeded["key"])
        env["WEBHOOKS_RETENTION"] = f"{args.history_retention_days * 86400:.0f}"
    content_filter = COMPOUND_FILTER if args.filter == "compound" else None
    async with ServiceRun(
        backends,
        args.store,
        {"s0": OK},
        env=env,
        backlog=backlog,
        database=database,
        content_filter=content_filter,
    ) as run:
        await run.produce([Phase("warmup", args.rate, 5.0)])
        command = [spy, "record", "-p", str(run.service.pid), "-d", str(int(args.seconds))]
        command += ["-r", "250", "-f", "raw", "-o", str(out), "--nonblocking", "--gil"]
        spy_process = None
        if not args.cost_only:
            spy_process = await asyncio.create_subprocess_exec(
                *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        counting = args.stages and args.store == "postgres"
        if counting and not await pgstats.start(run.database_url):
            counting = False
            print("pg_stat_statements is not loaded by the server: no statement counts")
        on_postgres = args.store == "postgres"
        database_before = pgstats.server_cpu_s() if on_postgres else 0.0
        first = run.service.stats()
        before = first.cpu_s
        started = time.time()
        await run.produce([Phase("steady", args.rate, args.seconds)])
        last = run.service.stats()
        database_cpu = pgstats.server_cpu_s() - database_before if on_postgres else 0.0
        cpu = last.cpu_s - before
        system = last.system_s - first.system_s
        elapsed = time.time() - started
        if spy_process is not None:
            await spy_process.wait()
        if counting:
            statements = await pgstats.read(run.database_url, round(args.rate * args.seconds))
        owed = await run.outstanding()
        drained_after = await run.wait_delivered(30)
        result = await run.finish()
    produced = args.rate * args.seconds
    window = result.produced.windows["steady"]
    steady_end = started + elapsed
    delivered = sum(
        1
        for at, status in zip(result.receipts.at, result.receipts.status, strict=True)
        if 200 <= status < 300 and started <= at < steady_end
    )
    latency = latency_summary_ms(
        latencies(result.first, result.produced.scheduled_of(), paths=run.paths, window=window)
    )
    figures: dict[str, Any] = {
        "rate": args.rate,
        "seconds": args.seconds,
        "store": args.store,
        "lane_concurrency": args.lane_concurrency,
        "backlog": args.backlog,
        "history_retention_days": args.history_retention_days,
        "filter": args.filter,
        "cpu_share_of_core": cpu / elapsed,
        "cpu_us_per_delivery": cpu / produced * 1e6,
        "kernel_share_of_cpu": system / cpu if cpu else math.nan,
        # PostgreSQL's processes over the same window (0 on SQLite, which runs in the service).
        "database_cpu_us_per_delivery": database_cpu / produced * 1e6,
        "service_and_database_cpu_us_per_delivery": (cpu + database_cpu) / produced * 1e6,
        "deliveries_per_s": delivered / elapsed,
        "owed_at_end": owed,
        "lag_s_at_end": owed / args.rate,
        "drained_after_s": drained_after,
        "p50_ms": latency["p50_ms"],
        "p99_ms": latency["p99_ms"],
        "ledger_balanced": result.ledger.balanced,
    }
    if counting:
        figures["pg_stat_statements"] = statements
        print(pgstats.table(statements))
    print(
        f"{args.rate:,.0f} ev/s for {args.seconds:g} s on {args.store}: service CPU "
        f"{cpu / elapsed:.0%} of a core, {cpu / (args.rate * args.seconds) * 1e6:,.0f} us per "
        f"delivery ({system / cpu:.0%} of it in the kernel), PostgreSQL "
        f"{database_cpu / produced * 1e6:,.0f} us per delivery, owed {owed} at the end, "
        f"ledger balanced: {result.ledger.balanced}"
    )
    return figures


def main() -> None:
    args = _parser().parse_args()
    VAR.mkdir(parents=True, exist_ok=True)
    out = VAR / f"profile-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.txt"
    figures = asyncio.run(_profile(args, out))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    if args.stages:
        print(stages.table(out.with_suffix(".stages.json")))
    if args.cost_only:
        return
    print(summarize(out))
    print(f"\ncollapsed stacks: {out}")


if __name__ == "__main__":
    main()
