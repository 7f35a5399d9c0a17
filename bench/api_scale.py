"""`python -m bench.api_scale [--store sqlite|postgres] [--subscriptions 100000] [--orgs 30000]`:
API changes at the platform's size while ingest runs.

The store is seeded with `--subscriptions` active subscriptions over `--orgs` orgs straight into
their table (secrets sealed by the run's key, one change stamp: what a first load reads), plus the
load's own subscription; then the real service starts (`bench.stallwatch`: each process with a
ticker in its event loop; on PostgreSQL `--replicas`, by default two), events go to Kafka at
`--rate` a second, and `--changes` API calls (creates and PATCHes, alternating, each in a random
seeded org with a key of its own) go to the first replica one after another (an embedded store has
one owner: one process on SQLite); a subscription made through the last replica in the load's org
must be matched by every replica (each has some of the partitions): every event that occurred after
it was made reaches it.

Prints one JSON line: API p50/p99/max (ms), the longest loop stall of each replica while the
changes ran and while ingest ran alone before them, RSS, CPU, the counts; `--json` writes it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import sqlite3
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
from pydantic import SecretStr

from bench.load import Phase
from bench.runner import OK, ServiceRun
from bench.stack import ORG, VAR, Backends, fresh_database, new_encryption_key, new_run_id
from service import credentials, ids
from service.settings import load_settings
from service.store import open_store
from service.store.crypto import Keyring
from service.store.sql.base import secret_context

API = "/api/identity/webhooks"
EVENTS = ("verification.created", "customer.kyc_updated")
# Where the index's work runs: the index, and the store's reads of changes.
INDEX_WORK = ("matching.py", "changed_subscriptions")
KEYED_ORGS = 200  # orgs the API calls are made in, each with a key
_COLUMNS = (
    "id",
    "org_id",
    "url",
    "events",
    "installed_by",
    "secret_enc",
    "active",
    "created_at",
    "updated_at",
    "change_seq",
)


async def seed(database_url: str, key: str, count: int, orgs: int) -> dict[str, list[str]]:
    """`count` active subscriptions over `orgs` orgs, straight into the table: their ids by org.
    The schema is made by the store first."""
    store = await open_store(
        load_settings(database_url=database_url, encryption_key=SecretStr(key))
    )
    await store.close()
    keyring = Keyring(key)
    now = int(time.time() * 1000)
    events = orjson.dumps(list(EVENTS)).decode()
    by_org: dict[str, list[str]] = {}
    rows = []
    postgres = not database_url.startswith("sqlite:///")
    for n in range(count):
        org = f"org_s{n % orgs:05d}"
        subscription_id = ids.new_id(ids.SUBSCRIPTION)
        by_org.setdefault(org, []).append(subscription_id)
        secret = keyring.seal_text(credentials.new_secret(), secret_context(subscription_id))
        url = f"https://h{n}.example/webhooks"
        active: bool | int = True if postgres else 1
        rows.append((subscription_id, org, url, events, "seed", secret, active, now, now, 1))
    bump = "UPDATE store_meta SET value = value + 1 WHERE name = 'subscriptions_revision'"
    if not postgres:
        path = database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as db:
            marks = ", ".join("?" for _ in _COLUMNS)
            db.executemany(
                f"INSERT INTO subscriptions ({', '.join(_COLUMNS)}) VALUES ({marks})", rows
            )
            db.execute(bump)
            db.execute("ANALYZE")
        return by_org
    conn = await asyncpg.connect(database_url)
    try:
        await conn.copy_records_to_table("subscriptions", records=rows, columns=list(_COLUMNS))
        await conn.execute(bump)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return by_org


async def api_keys(database_url: str, key: str, orgs: list[str]) -> dict[str, str]:
    store = await open_store(
        load_settings(database_url=database_url, encryption_key=SecretStr(key))
    )
    try:
        return {org: (await store.create_api_key(org, "bench"))[1] for org in orgs}
    finally:
        await store.close()


def _stalls(prefix: Path, pid: int, start: float, end: float) -> dict[str, Any]:
    """What replica `pid` noted between `start` and `end` (epoch s): its longest stall (ms) and
    where it was, and its longest while the subscription index or its read of changes held
    the loop."""
    path = Path(f"{prefix}.{pid}")
    found: dict[str, Any] = {"max_ms": 0.0, "in": "-", "index_max_ms": 0.0, "count": 0}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        at, late, held = line.split(" ", 2)
        if not start <= float(at) <= end:
            continue
        found["count"] += 1
        if float(late) > found["max_ms"]:
            found["max_ms"], found["in"] = float(late), held
        if any(part in held for part in INDEX_WORK):
            found["index_max_ms"] = max(found["index_max_ms"], float(late))
    return found


@dataclass(frozen=True)
class _Ticks:
    busy: int
    steal: int
    total: int

    def __sub__(self, other: _Ticks) -> _Ticks:
        return _Ticks(self.busy - other.busy, self.steal - other.steal, self.total - other.total)

    @property
    def busy_pct(self) -> float:
        return round(100 * self.busy / max(1, self.total), 1)

    @property
    def steal_pct(self) -> float:
        return round(100 * self.steal / max(1, self.total), 1)


def _machine_ticks() -> _Ticks:
    """All CPUs' time since boot from /proc/stat: busy (user, nice, system, irq, softirq),
    stolen, and in all."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq
    return _Ticks(busy, steal, busy + idle + iowait + steal)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    backends = Backends.from_env(postgres=args.store == "postgres")
    run_id = new_run_id()
    key = new_encryption_key()
    stalls = VAR / f"stalls-{run_id}"
    rng = random.Random(args.seed)
    async with fresh_database(args.store, backends, run_id) as database_url:
        started = time.monotonic()
        by_org = await seed(database_url, key, args.subscriptions, args.orgs)
        seeded_s = time.monotonic() - started
        keyed = rng.sample(sorted(by_org), KEYED_ORGS)
        keys = await api_keys(database_url, key, [*keyed, ORG])
        os.environ["BENCH_STALLS"] = str(stalls)
        service_run = ServiceRun(
            backends,
            args.store,
            {"ok": OK},
            events={"ok": EVENTS},
            database=(database_url, key),
            # An embedded store has one owner: replicas share PostgreSQL only.
            replicas=args.replicas or (2 if args.store == "postgres" else 1),
            module="bench.stallwatch",
            env={"BENCH_STALLS": str(stalls)},
        )
        async with service_run as service, aiohttp.ClientSession() as http:
            first = service.service
            replicas = [first, *service.others]
            second = replicas[-1]
            rss_started = [replica.stats().rss_mb for replica in replicas]
            produce = asyncio.create_task(
                service.produce([Phase("steady", args.rate, args.ingest_alone + args.seconds)])
            )
            await asyncio.sleep(args.ingest_alone)
            alone = (time.time() - args.ingest_alone / 2, time.time())  # after start-up
            cpu_before = [replica.stats().cpu_s for replica in replicas]
            # Made through the second replica: the first must match it too.
            made = await _call(
                http,
                second.port,
                keys[ORG],
                "POST",
                API,
                {"url": service.receiver.url("late"), "events": list(EVENTS)},
            )
            assert made[1] == 201, made
            # Events that occurred from its createdAt on are its own.
            late_at = datetime.fromisoformat(made[2]["createdAt"]).timestamp()
            latencies: dict[str, list[float]] = {"create": [], "patch": []}
            changes_start = time.time()
            machine_before = _machine_ticks()
            deadline = time.monotonic() + args.seconds
            n = 0
            while n < args.changes and time.monotonic() < deadline:
                org = keyed[n % len(keyed)]
                if n % 2 == 0:
                    body: dict[str, Any] = {
                        # The receiver's: no name to resolve, never sent to (another org).
                        "url": service.receiver.url(f"new{n}"),
                        "events": [EVENTS[0]],
                    }
                    took, status, _ = await _call(http, first.port, keys[org], "POST", API, body)
                    assert status == 201, status
                    latencies["create"].append(took)
                else:
                    target = rng.choice(by_org[org])
                    body = {"rateLimit": 1 + n % 50}
                    took, status, _ = await _call(
                        http, first.port, keys[org], "PATCH", f"{API}/{target}", body
                    )
                    assert status == 200, status
                    latencies["patch"].append(took)
                n += 1
                await asyncio.sleep(args.pause)
            changes_end = time.time()
            machine = _machine_ticks() - machine_before
            cpu_after = [replica.stats().cpu_s for replica in replicas]
            rss = [replica.stats().rss_mb for replica in replicas]
            await produce
            await service.wait_delivered(timeout=120, paths={"ok"})
            await asyncio.sleep(3)
            receipts = await service.receiver.dump()
            produced = service.load.produced
            after = {
                event_id
                for event_id, name, at in zip(
                    produced.ids, produced.names, produced.scheduled, strict=True
                )
                if at >= late_at + 0.001 and name in EVENTS
            }
            reached = {
                event
                for path, event in zip(receipts.path, receipts.event, strict=True)
                if path == "late"
            }
            late_first = min(
                (at for path, at in zip(receipts.path, receipts.at, strict=True) if path == "late"),
                default=None,
            )
            every = latencies["create"] + latencies["patch"]
            during = [_stalls(stalls, r.pid, changes_start, changes_end) for r in replicas]
            before = [_stalls(stalls, r.pid, *alone) for r in replicas]
            result = {
                "store": args.store,
                "subscriptions": args.subscriptions,
                "orgs": args.orgs,
                "seeded_s": round(seeded_s, 1),
                "rate": args.rate,
                "changes": len(every),
                "creates": len(latencies["create"]),
                "patches": len(latencies["patch"]),
                "changes_per_s": round(len(every) / (changes_end - changes_start), 1),
                "p50_ms": round(statistics.median(every), 1),
                "p99_ms": round(_percentile(every, 0.99), 1),
                "max_ms": round(max(every), 1),
                "create_p99_ms": round(_percentile(latencies["create"], 0.99), 1),
                "patch_p99_ms": round(_percentile(latencies["patch"], 0.99), 1),
                # Per replica: the longest stall, where, the longest in index work, how many
                # over 5 ms.
                "stalls_during_changes": during,
                "stalls_ingest_alone": before,
                # The machine's share during the changes: busy (every process, this run's and
                # anyone else's) and stolen by the host; a starved run shows here.
                "machine_busy_pct": machine.busy_pct,
                "machine_steal_pct": machine.steal_pct,
                "cpu_s_during_changes": [
                    round(b - a, 1) for a, b in zip(cpu_before, cpu_after, strict=True)
                ],
                "rss_mb_started": [round(r) for r in rss_started],
                "rss_mb": [round(r) for r in rss],
                "events_produced": len(produced.ids),
                "replicas": len(replicas),
                "late_subscription_missed": len(after - reached),
                # How long after its createdAt the missed events occurred (ms), the latest.
                "late_missed_within_ms": max(
                    (
                        round((at - late_at) * 1000)
                        for event_id, at in zip(produced.ids, produced.scheduled, strict=True)
                        if event_id in after - reached
                    ),
                    default=None,
                ),
                "late_subscription_matched": len(after & reached),
                "first_match_after_s": None
                if late_first is None
                else round(late_first - late_at, 2),
                "bench_peak_rss_mb": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                ),
            }
            await service.finish()
    for path in VAR.glob(f"stalls-{run_id}.*"):
        path.unlink()
    return result


async def _call(
    http: aiohttp.ClientSession, port: int, key: str, method: str, path: str, body: Any
) -> tuple[float, int, Any]:
    """The call's time (ms), status and answer."""
    started = time.perf_counter()
    async with http.request(
        method,
        f"http://127.0.0.1:{port}{path}",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        answer = await response.read()
    took = (time.perf_counter() - started) * 1000
    return took, response.status, orjson.loads(answer) if answer else None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api_scale", description=__doc__)
    parser.add_argument("--store", default="sqlite", choices=("sqlite", "postgres"))
    parser.add_argument(
        "--replicas",
        type=int,
        default=0,
        help="service processes (PostgreSQL only; default 2 there, 1 on SQLite)",
    )
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--orgs", type=int, default=30_000)
    parser.add_argument("--rate", type=float, default=300.0, help="events/s into Kafka")
    parser.add_argument("--changes", type=int, default=600)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between changes")
    parser.add_argument("--seconds", type=float, default=60.0, help="at most, for the changes")
    parser.add_argument("--ingest-alone", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(orjson.dumps(result).decode(), flush=True)
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(result))


if __name__ == "__main__":
    main()
