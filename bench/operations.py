"""`python -m bench.operations [--deliveries 100000] [--store sqlite|postgres|both]`:
"the log and the summaries stay fast with 100,000 deliveries in the store", as figures.

Per store, a fresh database (a SQLite file in a temporary folder; a PostgreSQL database made for
the run on the server of WEBHOOKS_TEST_POSTGRES and dropped after) gets ~50 subscriptions of one
org and `--deliveries` deliveries over the last 48 hours, most of them (90 %) to one "big"
subscription, each with its event and 1-3 attempts (2xx, 5xx and timeouts, 5 ms to 10 s).

Seeding goes through the store's own write path, as the service does: `record_events` in
ingest-sized batches, `record_attempts` for the first attempts, `claim_due` + `record_attempts`
for the retries. So `subscription_stats` (the hourly counters the summaries read) is filled by the
code that fills it in production, not by a copy of it. The only stand-in is the clock: the
store's `now_ms` is replaced while seeding by a simulated one walking the 48 hours, which is what
stamps `createdAt` and decides which retries are due. (~30 s per 100,000 deliveries per store;
a bulk `INSERT … SELECT` would be faster but would have to re-implement the counters.)

Then, each timed with `time.perf_counter` over `--repeat` repetitions after a warm-up (median
and p95 in ms): `subscription_summaries` for the page of all 50, the log's first page and a deep
page (after walking `--depth` pages by cursor) for the big subscription unfiltered, with
`status=failed` and with an event filter, `get_delivery`, and the API end to end (aiohttp test
client: GET the list, GET the big one's log). Once per query, its plan: PostgreSQL's
`EXPLAIN (ANALYZE, BUFFERS)` or SQLite's `EXPLAIN QUERY PLAN` of exactly the SQL the store ran
(recorded from its connection), with whether it reads an index and how many rows it threw away.

Results: a table per store on stdout and var/bench/operations/<timestamp>.json (and
latest.json). `--baseline <json>` prints an earlier result's medians beside this run's.
Nothing here is asserted: tests/integration/test_operations_bench.py checks the seeding and
the summaries it reads back, by value.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from unittest import mock

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.fernet import Fernet
from pydantic import SecretStr

from bench.report import machine
from bench.stack import DEFAULT_POSTGRES, VAR
from service import ids
from service.api.setup import setup_api
from service.appkeys import SETTINGS, STORE
from service.clock import now_ms
from service.domain import (
    AttemptRecord,
    DeliveryFilter,
    DeliveryStatus,
    IncomingEvent,
    NewDelivery,
    Summary,
)
from service.events import CATALOG
from service.settings import Settings, load_settings
from service.store import Claim, Lease, PageRequest, Store, open_store
from service.store.sql import SqlStore
from service.store.sql import base as sql_base
from service.summaries import DAY_MS, HOUR_MS
from tests.support.postgres import scratch_database

ORG = "org_bench_ops"
OWNER = "bench-ops"
LEASE_MS = 600_000
OUT = VAR / "operations"
BASE = "/api/identity/webhooks"
PAGE = 50  # the API's default page


# -- seeding ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedPlan:
    deliveries: int = 100_000
    subscriptions: int = 50
    big_share: float = 0.9  # of the deliveries, to the first subscription
    span_ms: int = 48 * HOUR_MS  # spread over the hours before `now`
    batch: int = 1_000  # deliveries per round of attempts
    ingest_batch: int = 100  # deliveries per `record_events` call (an ingest batch)
    open_tail: int = 200  # of the last batch, left pending (never attempted)
    seed: int = 12


@dataclass
class Seeded:
    """What the seeding wrote, kept on the side to check the store's answers against."""

    org: str
    subscription_ids: list[str]
    now: int  # the simulated clock's end: the seeding's "now"
    created: Counter[str] = field(default_factory=Counter)  # per subscription
    # per subscription: (started_at, duration_ms, 2xx) of every attempt
    attempts: dict[str, list[tuple[int, int, bool]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    status: dict[str, str] = field(default_factory=dict)  # delivery -> its status at the end
    next_attempt: dict[str, int] = field(default_factory=dict)  # retrying delivery -> when
    subscription_of: dict[str, str] = field(default_factory=dict)  # delivery -> subscription
    event_of: dict[str, str] = field(default_factory=dict)  # delivery -> event name
    most_attempted: str = ""  # a delivery with three attempts, for get_delivery

    @property
    def big(self) -> str:
        return self.subscription_ids[0]

    def statuses(self, subscription_id: str) -> Counter[str]:
        return Counter(
            status
            for delivery, status in self.status.items()
            if self.subscription_of[delivery] == subscription_id
        )

    def expected_summary(self, subscription_id: str, now: int) -> dict[str, Any]:
        """What `subscription_summaries` should say at `now`: the hourly counters count an
        attempt in the 24 h when its hour starts at or after the hour of `now` - 24 h."""
        day_ago = (now - DAY_MS) // HOUR_MS * HOUR_MS
        recent = [a for a in self.attempts[subscription_id] if a[0] // HOUR_MS * HOUR_MS >= day_ago]
        opened = [
            d
            for d, s in self.status.items()
            if self.subscription_of[d] == subscription_id and s in ("pending", "retrying")
        ]
        retries = [
            self.next_attempt[d]
            for d in opened
            if self.status[d] == "retrying" and d in self.next_attempt
        ]
        return {
            "delivery_count": self.created[subscription_id],
            "attempts_24h": len(recent),
            "ok_24h": sum(1 for a in recent if a[2]),
            "pending_count": len(opened),
            "next_retry_at": min(retries) if retries else None,
        }


class SimulatedClock:
    """Stands in for the store's `now_ms` while installed: `at` when set, else the real one."""

    def __init__(self) -> None:
        self.at: int | None = None

    def __call__(self) -> int:
        return now_ms() if self.at is None else self.at

    @contextlib.contextmanager
    def installed(self) -> Iterator[SimulatedClock]:
        with mock.patch.object(sql_base, "now_ms", self):
            yield self


def _outcome(rng: random.Random, ok_share: float) -> tuple[int, int | None, str, str | None]:
    """(duration_ms, status code, result, error) of one attempt: mostly quick, a long tail,
    some 5xx and timeouts."""
    if rng.random() < ok_share:
        roll = rng.random()
        duration = (
            rng.randint(5, 150)
            if roll < 0.7
            else rng.randint(150, 1_000)
            if roll < 0.95
            else rng.randint(1_000, 6_000)
        )
        return duration, 200, "2xx", None
    if rng.random() < 0.8:
        return rng.randint(20, 2_000), rng.choice((500, 502, 503)), "5xx", "HTTP 5xx"
    return 10_000, None, "timeout", "timed out after 10 s"


def _body(event_id: str, event: str, at: int, n: int) -> bytes:
    return orjson.dumps(
        {
            "id": event_id,
            "type": event,
            "occurredAt": at,
            "data": {"customerId": f"cus_{n:08d}", "verificationId": f"ver_{n:08d}"},
        }
    )


async def create_subscriptions(store: Store, org: str, n: int) -> list[str]:
    made = []
    for i in range(n):
        subscription = await store.create_subscription(
            org, f"https://hooks{i}.example.com/webhooks", CATALOG, "bench-ops"
        )
        made.append(subscription.id)
    return made


async def seed(
    store: Store,
    plan: SeedPlan,
    *,
    org: str = ORG,
    progress: Callable[[str], None] | None = None,
) -> Seeded:
    """Fills `store` as described in the module's docstring; returns what it wrote."""
    rng = random.Random(plan.seed)
    end = now_ms()
    seeded = Seeded(org, await create_subscriptions(store, org, plan.subscriptions), end)
    big, others = (
        seeded.subscription_ids[0],
        seeded.subscription_ids[1:] or [seeded.subscription_ids[0]],
    )
    batches = max(1, math.ceil(plan.deliveries / plan.batch))
    step = plan.span_ms // batches
    clock = SimulatedClock()
    n = 0
    with clock.installed():
        for b in range(batches):
            start = end - plan.span_ms + b * step
            size = min(plan.batch, plan.deliveries - n)
            last_batch = b == batches - 1
            made: list[NewDelivery] = []
            for chunk_start in range(0, size, plan.ingest_batch):
                # Ingest batches spread over the first half of the batch's slot.
                clock.at = start + (step // 2) * chunk_start // max(1, size)
                events, deliveries = [], []
                for _ in range(min(plan.ingest_batch, size - chunk_start)):
                    sid = big if rng.random() < plan.big_share else rng.choice(others)
                    event = CATALOG[n % len(CATALOG)]
                    event_id = ids.new_id("evt")
                    events.append(
                        IncomingEvent(
                            event_id,
                            org,
                            event,
                            clock.at,
                            _body(event_id, event, clock.at, n),
                            "bench",
                            None,
                        )
                    )
                    deliveries.append(NewDelivery(ids.new_id("whd"), event_id, sid, event, org))
                    n += 1
                new = await store.record_events(events, deliveries, Lease(OWNER, LEASE_MS))
                assert len(new) == len(deliveries), "a fresh store took every delivery"
                for d in new:
                    seeded.created[d.subscription_id] += 1
                    seeded.status[d.id] = "pending"
                    seeded.subscription_of[d.id] = d.subscription_id
                    seeded.event_of[d.id] = d.event
                made += new
            attempted = made[: len(made) - plan.open_tail] if last_batch else made
            # First attempts, as the dispatcher sends what ingest hands it.
            await _attempt(
                store,
                seeded,
                rng,
                [(d.id, d.subscription_id, 1) for d in attempted],
                start + step // 2,
                ok_share=0.85,
                final=False,
            )
            # The retries: claimed when due by the simulated clock. The last batch's second
            # failures stay `retrying`, due in the future.
            for number, after_ms, ok_share in ((2, 60_000, 0.5), (3, 240_000, 0.4)):
                if last_batch and number == 3:
                    break
                clock.at = start + step // 2 + after_ms
                jobs = await store.claim_due(Claim(OWNER, plan.batch, LEASE_MS))
                await _attempt(
                    store,
                    seeded,
                    rng,
                    [(j.id, j.subscription_id, j.attempts + 1) for j in jobs],
                    clock.at,
                    ok_share=ok_share,
                    final=number == 3,
                )
            if progress and (b + 1) % max(1, batches // 5) == 0:
                progress(f"  seeded {n:,} deliveries")
    return seeded


async def _attempt(
    store: Store,
    seeded: Seeded,
    rng: random.Random,
    which: Sequence[tuple[str, str, int]],
    around: int,
    *,
    ok_share: float,
    final: bool,
) -> None:
    records = []
    for delivery_id, sid, number in which:
        started = around + rng.randint(0, 5_000)
        duration, code, result, error = _outcome(rng, ok_share)
        if code == 200:
            status, next_at = DeliveryStatus.SENT, None
        elif final:
            status, next_at = DeliveryStatus.FAILED, None
        else:
            status, next_at = DeliveryStatus.RETRYING, started + 30_000 * number
        records.append(
            AttemptRecord(
                delivery_id,
                sid,
                number,
                started,
                duration,
                code,
                result,
                error,
                None if code is None else "ok" if code == 200 else "upstream failed",
                status,
                next_at,
            )
        )
        seeded.attempts[sid].append((started, duration, code == 200))
        seeded.status[delivery_id] = status.value
        if next_at is not None:
            seeded.next_attempt[delivery_id] = next_at
        if number == 3:
            seeded.most_attempted = delivery_id
    recorded = await store.record_attempts(records, OWNER)
    assert not recorded.lost, "the seeding holds every lease it records"


# -- measuring --------------------------------------------------------------------------------


def span_ms(samples: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(p95 * 1000, 3),
        "n": len(ordered),
    }


async def timed(call: Callable[[], Awaitable[Any]], repeat: int, warmup: int = 3) -> dict[str, Any]:
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    return span_ms(samples)


async def walk(
    store: Store, org: str, sid: str, where: DeliveryFilter, pages: int
) -> tuple[str | None, int]:
    """The cursor after `pages` pages of the log (or as deep as it goes) and how deep."""
    after: str | None = None
    depth = 0
    for _ in range(pages):
        page = await store.list_deliveries(org, sid, where, PageRequest(PAGE, after))
        if page.next_after is None:
            break
        after, depth = page.next_after, depth + 1
    return after, depth


@dataclass
class Recording:
    queries: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)


class _RecordingConn:
    def __init__(self, conn: Any, recording: Recording) -> None:
        self._conn, self._recording = conn, recording

    async def fetch(self, sql: str, *args: Any) -> Any:
        self._recording.queries.append((sql, args))
        return await self._conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        self._recording.queries.append((sql, args))
        return await self._conn.fetchrow(sql, *args)


@contextlib.asynccontextmanager
async def recorded(store: Store) -> AsyncIterator[Recording]:
    """Every read query the store runs meanwhile, with its arguments."""
    sql_store = cast(SqlStore, store)
    recording = Recording()
    original = sql_store._connection

    @contextlib.asynccontextmanager
    async def connection() -> AsyncIterator[Any]:
        async with original() as conn:
            yield _RecordingConn(conn, recording)

    with mock.patch.object(sql_store, "_connection", connection):
        yield recording


async def explain(store: Store, postgres: bool, sql: str, args: Sequence[Any]) -> dict[str, Any]:
    """The plan of one query as the store ran it, and a verdict on how it reads deliveries."""
    sql_store = cast(SqlStore, store)
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
    async with sql_store._connection() as conn:
        rows = await conn.fetch(prefix + sql, *args)
    # PostgreSQL's plan is one text column ("QUERY PLAN"); SQLite's rows carry a `detail`.
    lines = [str(row["QUERY PLAN"] if postgres else row["detail"]) for row in rows]
    keep = ("Scan", "Index Cond", "Rows Removed by Filter", "Execution Time")
    summary = [
        _clip(line.strip()) for line in lines if not postgres or any(word in line for word in keep)
    ]
    whole = "\n".join(lines)
    removed = sum(
        int(line.split("Rows Removed by Filter:")[1].split()[0])
        for line in lines
        if "Rows Removed by Filter:" in line
    )
    if postgres:
        seq = "Seq Scan on deliveries" in whole or "Seq Scan on attempts" in whole
        indexed = "Index" in whole and not seq
    else:
        seq = any(
            line.startswith("SCAN ") and ("deliveries" in line or " d" in line or " x" in line)
            for line in lines
        )
        indexed = "INDEX" in whole and not seq
    return {
        "sql": sql,
        "uses_index": indexed,
        "full_scan": seq,
        "rows_removed_by_filter": removed if postgres else None,
        "plan": summary,
    }


def _clip(line: str, width: int = 160) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


async def api_client(settings: Settings, store: Store) -> tuple[TestClient[Any, Any], str]:
    """The management API alone (no dispatcher, no consumer) over `store`, and a key."""
    app = web.Application()
    app[SETTINGS] = settings
    app[STORE] = store
    setup_api(app)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    _, key = await store.create_api_key(ORG, "bench-ops")
    return client, key


async def measure(
    store: Store,
    settings: Settings,
    seeded: Seeded,
    *,
    repeat: int,
    depth: int,
    postgres: bool,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    org, big = seeded.org, seeded.big
    figures: dict[str, Any] = {}
    plans: dict[str, Any] = {}

    async def summaries() -> dict[str, Summary]:
        return await store.subscription_summaries(seeded.subscription_ids)

    calls: dict[str, Callable[[], Awaitable[Any]]] = {"health (50 subscriptions)": summaries}
    filters = {
        "": DeliveryFilter(),
        ", status=failed": DeliveryFilter(status=DeliveryStatus.FAILED),
        ", event=customer.kyc_updated": DeliveryFilter(event="customer.kyc_updated"),
    }
    depths: dict[str, int] = {}
    for label, where in filters.items():
        after, reached = await walk(store, org, big, where, depth)
        depths[label] = reached
        calls[f"log first page{label}"] = lambda where=where: store.list_deliveries(  # type: ignore[misc]
            org, big, where, PageRequest(PAGE, None)
        )
        calls[f"log page {reached + 1}{label}"] = lambda where=where, after=after: (  # type: ignore[misc]
            store.list_deliveries(org, big, where, PageRequest(PAGE, after))
        )
    sampled = seeded.most_attempted
    calls["get_delivery (3 attempts)"] = lambda: store.get_delivery(
        org, seeded.subscription_of[sampled], sampled
    )
    for name, call in calls.items():
        figures[name] = await timed(call, repeat)
        async with recorded(store) as recording:
            await call()
        plans[name] = [await explain(store, postgres, sql, args) for sql, args in recording.queries]
        progress(f"  {name}: median {figures[name]['median_ms']} ms")
    client, key = await api_client(settings, store)
    try:
        headers = {"Authorization": f"Bearer {key}"}

        async def get(path: str) -> None:
            async with client.get(BASE + path, headers=headers) as response:
                await response.read()
                assert response.status == 200, response.status

        for name, path in (
            ("API GET list (50 rows)", "?limit=50"),
            ("API GET log first page", f"/{big}/deliveries"),
            ("API GET log first page, status=failed", f"/{big}/deliveries?status=failed"),
        ):
            figures[name] = await timed(lambda path=path: get(path), repeat)  # type: ignore[misc]
            progress(f"  {name}: median {figures[name]['median_ms']} ms")
    finally:
        await client.close()
    return {"figures": figures, "plans": plans, "depths": depths}


# -- stores -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_store(kind: str) -> AsyncIterator[tuple[Store, Settings]]:
    key = SecretStr(Fernet.generate_key().decode())
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bench-ops-") as folder:
            settings = load_settings(database_url=f"sqlite:///{folder}/ops.db", encryption_key=key)
            store = await open_store(settings)
            try:
                yield store, settings
            finally:
                await store.close()
        return
    admin = os.environ.get("WEBHOOKS_TEST_POSTGRES", DEFAULT_POSTGRES)
    async with scratch_database(admin, f"bench_ops_{uuid.uuid4().hex[:10]}") as url:
        settings = load_settings(database_url=url, encryption_key=key)
        store = await open_store(settings)
        try:
            yield store, settings
        finally:
            await store.close()


async def bench_store(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    async with fresh_store(kind) as (store, settings):
        _progress(f"{kind}: seeding {args.deliveries:,} deliveries")
        began = time.monotonic()
        seeded = await seed(store, SeedPlan(deliveries=args.deliveries), progress=_progress)
        seed_s = time.monotonic() - began
        if kind == "postgres":
            # What autovacuum would have done by now on a live database: planner statistics.
            async with cast(SqlStore, store)._connection() as conn:
                await conn.execute("ANALYZE")
        _progress(f"{kind}: seeded in {seed_s:.1f} s; measuring")
        result = await measure(
            store,
            settings,
            seeded,
            repeat=args.repeat,
            depth=args.depth,
            postgres=kind == "postgres",
            progress=_progress,
        )
        statuses = seeded.statuses(seeded.big)
        result.update(
            seed_s=round(seed_s, 1),
            deliveries=args.deliveries,
            big_subscription_deliveries=seeded.created[seeded.big],
            big_subscription_statuses=dict(statuses),
            attempts=sum(len(a) for a in seeded.attempts.values()),
        )
        return result


# -- output -----------------------------------------------------------------------------------


def table(kind: str, result: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    head = f"{kind}: {result['deliveries']:,} deliveries ({result['big_subscription_deliveries']:,}"
    head += f" to the big subscription), {result['attempts']:,} attempts, seeded in "
    head += f"{result['seed_s']} s"
    before = (baseline or {}).get("stores", {}).get(kind, {}).get("figures", {})
    lines = [head, ""]
    if before:
        lines += [
            "| call | before median ms | before p95 ms | median ms | p95 ms |",
            "|---|---:|---:|---:|---:|",
        ]
    else:
        lines += ["| call | median ms | p95 ms |", "|---|---:|---:|"]
    for name, figure in result["figures"].items():
        now = f"{figure['median_ms']:.2f} | {figure['p95_ms']:.2f}"
        if before:
            old = before.get(name)
            was = "— | —" if old is None else f"{old['median_ms']:.2f} | {old['p95_ms']:.2f}"
            lines.append(f"| {name} | {was} | {now} |")
        else:
            lines.append(f"| {name} | {now} |")
    lines.append("")
    lines.append("plans (per query the call ran):")
    for name, plans in result["plans"].items():
        for i, plan in enumerate(plans, 1):
            verdict = "index" if plan["uses_index"] else "NO INDEX"
            if plan["full_scan"]:
                verdict += ", FULL SCAN"
            removed = plan["rows_removed_by_filter"]
            if removed:
                verdict += f", {removed:,} rows removed by filter"
            lines.append(f"- {name} [{i}/{len(plans)}]: {verdict}")
            lines += [f"    {line}" for line in plan["plan"]]
    return "\n".join(lines)


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.operations", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per call")
    parser.add_argument("--depth", type=int, default=50, help="pages walked for the deep page")
    parser.add_argument("--baseline", type=Path, help="an earlier result to print beside")
    parser.add_argument("--out", type=Path, default=OUT, help="results folder (%(default)s)")
    return parser


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": shlex.join(["python", "-m", "bench.operations", *sys.argv[1:]]),
        "machine": machine(),
        "repeat": args.repeat,
        "page": PAGE,
        "stores": {},
    }
    for kind in stores:
        results["stores"][kind] = await bench_store(kind, args)
    return results


def main() -> int:
    args = _parser().parse_args()
    baseline = orjson.loads(args.baseline.read_bytes()) if args.baseline else None
    began = time.monotonic()
    results = asyncio.run(run(args))
    results["elapsed_s"] = round(time.monotonic() - began, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = results["started_at"].replace(":", "").replace("-", "")
    data = orjson.dumps(results, option=orjson.OPT_INDENT_2)
    path = args.out / f"{stamp}.json"
    path.write_bytes(data)
    (args.out / "latest.json").write_bytes(data)
    print()
    for kind, result in results["stores"].items():
        print(table(kind, result, baseline))
        print()
    print(f"command: {results['command']}")
    print(f"took {results['elapsed_s']} s; results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
