"""`python -m bench.replicas [--replicas 1,2,3] [--events 20000] [--rounds 2]`: throughput with
1, 2 and 3 replicas on one PostgreSQL.

Each run starts that many `serve` processes in one consumer group on a fresh database and fresh
topics of 3 partitions, produces `--events` events at once (one subscription, the bench's
receiver answering 204 at once), and times until the receiver has every delivery: deliveries a
second, and the CPU all the replicas spent per delivery. Rounds alternate the order. On a
machine with fewer cores than the replicas, the service processes, Kafka, PostgreSQL and the
receiver share the same cores: what such a run shows is the cost of coordination (claims,
leases, the consumer group's rebalance), not the gain of more machines
(docs/performance.md, "Beyond one machine").
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import orjson

from bench.load import Phase
from bench.runner import OK, ServiceRun
from bench.stack import VAR, Backends


async def one_run(replicas: int, events: int) -> dict[str, Any]:
    backends = Backends.from_env(postgres=True)
    async with ServiceRun(backends, "postgres", {"s0": OK}, replicas=replicas) as run:
        children = [run.service, *run.others]
        cpu_before = sum(child.stats().cpu_s for child in children)
        started = time.time()
        # As fast as the generator goes: a burst, not a rate.
        await run.produce([Phase("burst", events / 2.0, 2.0)])
        drained = await run.wait_delivered(300)
        elapsed = time.time() - started
        cpu = sum(child.stats().cpu_s for child in children) - cpu_before
        result = await run.finish()
    return {
        "replicas": replicas,
        "events": events,
        "seconds": round(elapsed, 2),
        "deliveries_per_s": round(events / elapsed) if drained is not None else None,
        "cpu_us_per_delivery": round(cpu / events * 1e6),
        "ledger_balanced": result.ledger.balanced,
    }


async def main(replicas: list[int], events: int, rounds: int) -> list[dict[str, Any]]:
    runs: dict[int, list[dict[str, Any]]] = {}
    for n in range(rounds):
        for count in replicas if n % 2 == 0 else list(reversed(replicas)):
            figures = await one_run(count, events)
            print(orjson.dumps(figures).decode(), flush=True)
            runs.setdefault(count, []).append(figures)
    return [
        {
            "replicas": count,
            "deliveries_per_s": statistics.median(r["deliveries_per_s"] or 0 for r in found),
            "cpu_us_per_delivery": statistics.median(r["cpu_us_per_delivery"] for r in found),
            "all_balanced": all(r["ledger_balanced"] for r in found),
        }
        for count, found in sorted(runs.items())
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    summary = asyncio.run(
        main([int(n) for n in args.replicas.split(",")], args.events, args.rounds)
    )
    out = VAR / f"replicas-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    for row in summary:
        print(row)
    print(f"results: {out}")
