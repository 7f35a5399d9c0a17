"""`python -m bench [--quick]`: runs the scenarios and writes var/bench/<timestamp>.json.

Expects the local Kafka (and PostgreSQL unless `--no-postgres`) to be up, as
`deploy/local/with-services.sh` leaves them: it reads WEBHOOKS_TEST_KAFKA and
WEBHOOKS_TEST_POSTGRES, falling back to the local defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report, scenarios
from bench.scenarios import Bench, Plan, timed
from bench.stack import VAR, Backends
from service.settings import Settings

# The service's default, measured apart as 'defaults'.
SHIPPED_LANE_CONCURRENCY: int = Settings.model_fields["lane_concurrency"].default


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="scenarios 1, 2, 4 (at 50 events/s) and 5 only, shortened (< 4 minutes)",
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenarios to run: floor,max,defaults,fanout10,latency,isolation,"
        "backlog,ordered (default: all, or the quick set)",
    )
    parser.add_argument(
        "--lane-concurrency",
        type=int,
        default=64,
        help="WEBHOOKS_LANE_CONCURRENCY for the service, and the floor client's concurrency per "
        f"subscription (default %(default)s; the service ships with {SHIPPED_LANE_CONCURRENCY}, "
        "measured apart as "
        "'defaults')",
    )
    parser.add_argument(
        "--backlog-deliveries",
        type=int,
        default=100_000,
        help="deliveries piled up for the dead endpoint in scenario 6 (default %(default)s)",
    )
    parser.add_argument(
        "--fetch-wait",
        default="10ms",
        help="WEBHOOKS_KAFKA_FETCH_WAIT for every scenario but latency, which runs with the "
        "shipped 0 (default %(default)s)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--out", type=Path, default=VAR, help="results folder (%(default)s)")
    return parser


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = Plan.reduced() if args.quick else Plan.full()
    if not args.quick:
        plan = dataclasses.replace(plan, backlog_deliveries=args.backlog_deliveries)
    backends = Backends.from_env(postgres=not args.no_postgres)
    bench = Bench(backends, plan, args.lane_concurrency, _progress, args.fetch_wait)
    quick_set = {"floor", "max", "latency", "isolation"}
    everything = {
        "floor",
        "max",
        "defaults",
        "fanout10",
        "latency",
        "isolation",
        "backlog",
        "ordered",
    }
    wanted = set(args.only.split(",")) if args.only else (quick_set if args.quick else everything)
    stores = ["sqlite"] + ([] if args.no_postgres else ["postgres"])
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": shlex.join(["python", "-m", "bench", *sys.argv[1:]]),
        "quick": args.quick,
        "machine": report.machine(),
        "lane_concurrency": args.lane_concurrency,
        "fetch_wait": args.fetch_wait,
        "plan": plan.__dict__,
        "scenarios": {},
    }
    found: dict[str, Any] = results["scenarios"]
    spans: dict[str, Any] = {}
    env = bench.lane_env

    def median(key: str, span: dict[str, Any]) -> None:
        spans[key] = span
        results[key] = span.get("median")

    async def per_store(
        key: str, title: str, scenario: Callable[[str], Awaitable[dict[str, Any]]]
    ) -> dict[str, dict[str, Any]]:
        """`scenario` on each store in turn, found under `key`_<store>; the results by store."""
        for store in stores:
            found[f"{key}_{store}"] = await timed(
                bench, f"{title}, {store}", functools.partial(scenario, store)
            )
        return {store: found[f"{key}_{store}"] for store in stores}

    if "floor" in wanted:
        found["floor"] = await timed(
            bench, "1. raw floor", lambda: scenarios.floor(bench, args.lane_concurrency)
        )
        median("floor_deliveries_per_s", found["floor"]["deliveries_per_s"])
    if "max" in wanted:
        maxima = await per_store(
            "max",
            "2. max sustained, fan-out 1",
            functools.partial(
                scenarios.max_throughput, bench, fanout=1, env=env, start=plan.ramp_start
            ),
        )
        for store, found_max in maxima.items():
            median(f"max_deliveries_per_s_{store}", found_max["max_deliveries_per_s"])
            median(f"{store}_share_of_floor", found_max["share_of_floor"])
    if "defaults" in wanted:
        shipped = {"WEBHOOKS_LANE_CONCURRENCY": str(SHIPPED_LANE_CONCURRENCY)}
        found["defaults"] = await timed(
            bench,
            "2b. max sustained, fan-out 1, SQLite, shipped lane concurrency (ramp)",
            lambda: scenarios.ramp(bench, "sqlite", 1, plan.ramp_start, shipped),
        )
        median(
            "max_deliveries_per_s_sqlite_default_lanes",
            scenarios.summarize(
                [found["defaults"]["max_deliveries_per_s"]] if not found["defaults"]["void"] else []
            ),
        )
    if "fanout10" in wanted:
        per_event = (results.get("max_deliveries_per_s_sqlite") or 2000.0) / 10
        found["fanout10"] = await timed(
            bench,
            "3. max sustained, fan-out 10, sqlite",
            lambda: scenarios.max_throughput(bench, "sqlite", 10, env, max(20.0, per_event * 0.5)),
        )
        median("max_deliveries_per_s_fanout10", found["fanout10"]["max_deliveries_per_s"])
    if "latency" in wanted:
        # 500 events/s (not in --quick), and 50/s: a lone event at a time, where fixed costs
        # per event (a fetch, two transactions, the exchange) show.
        for per_s in (50, 500) if not args.quick else (50,):
            name = "latency" if per_s == 500 else f"latency{per_s}"
            await per_store(
                name,
                f"4. latency at {per_s} events/s",
                functools.partial(scenarios.latency, bench, rate=float(per_s)),
            )
            runs = found[f"{name}_sqlite"]
            median(f"p50_ms_at_{per_s}", runs["p50_ms"])
            median(f"p99_ms_at_{per_s}", runs["p99_ms"])
            median(f"cpu_us_per_delivery_at_{per_s}", runs["cpu_us_per_delivery"])
            postgres = found.get(f"{name}_postgres")
            if postgres is not None:
                median(f"p99_ms_at_{per_s}_postgres", postgres["p99_ms"])
    if "isolation" in wanted:
        found["isolation"] = await timed(bench, "5. isolation", lambda: scenarios.isolation(bench))
        median("isolation_p99_ratio", found["isolation"]["p99_ratio"])
    if "backlog" in wanted and plan.backlog_deliveries:
        best = results.get("max_deliveries_per_s_sqlite") or 1500.0
        # Each event brings one delivery for the dead endpoint and 2/3 of one for the live
        # ones; stay well under what the service sustains.
        rate = float(min(2000.0, max(200.0, round(best * 0.6 / 100) * 100)))
        found["backlog"] = await timed(
            bench, "6+7. backlog and recovery", lambda: scenarios.backlog(bench, rate)
        )
        backlog = found["backlog"]
        median("backlog_peak_rss_mb", backlog["peak_rss_mb"])
        median("backlog_live_p99_ms_during", backlog["live_p99_ms_during"])
        median("backlog_live_p99_ms_after", backlog["live_p99_ms_after"])
        median("recovery_drain_s", backlog["projected_drain_s"])
        median("recovery_deliveries_per_s", backlog["recovery_deliveries_per_s"])
        median("recovery_peak_retry_per_s", backlog["dead_peak_attempts_per_s_recovery"])
        median("recovery_max_in_flight", backlog["recovered_max_in_flight"])
        median("backlog_dead_attempts_per_s", backlog["dead_mean_attempts_per_s_during"])
    if "ordered" in wanted:
        orders = await per_store(
            "ordered",
            "8. ordered delivery across 1,000 customers",
            functools.partial(scenarios.ordered, bench),
        )
        for store, found_order in orders.items():
            for figure in (
                "ordered_deliveries_per_s",
                "unordered_deliveries_per_s",
                "ordered_p99_ms_healthy",
                "ordered_p99_ms_one_failing",
                "unordered_p99_ms_one_failing",
            ):
                median(f"{figure}_{store}", found_order[figure])
    cpu_source = found.get("max_sqlite", {})
    cpu_runs = [r["cpu_us_per_delivery"] for r in cpu_source.get("confirm", []) if not r["void"]]
    if not cpu_runs and cpu_source and not cpu_source["ramp"]["void"]:
        cpu_runs = [cpu_source["ramp"]["cpu_us_per_delivery"]]
    median("cpu_us_per_delivery", scenarios.summarize(cpu_runs))
    results["extra_rows"] = [
        (key, label)
        for key, label in (
            ("max_deliveries_per_s_fanout10", "max deliveries/s, fan-out 10, SQLite"),
            (
                "max_deliveries_per_s_sqlite_default_lanes",
                f"max deliveries/s, fan-out 1, SQLite, lane concurrency {SHIPPED_LANE_CONCURRENCY}"
                " (ramp step only)",
            ),
            ("postgres_share_of_floor", "PostgreSQL max as share of the raw floor"),
            ("p99_ms_at_500_postgres", "p99 ms at 500 events/s, fan-out 1 (PostgreSQL)"),
            *(
                (f"{figure}_{store}", f"{label} ({name})")
                for store, name in (("sqlite", "SQLite"), ("postgres", "PostgreSQL"))
                for figure, label in (
                    ("ordered_deliveries_per_s", "ordered: deliveries/s, 1,000 customers"),
                    ("unordered_deliveries_per_s", "ordered: the same events unordered, /s"),
                    ("ordered_p99_ms_healthy", "ordered: p99 ms, all customers healthy"),
                    (
                        "ordered_p99_ms_one_failing",
                        "ordered: healthy customers' p99 ms, one customer failing",
                    ),
                    (
                        "unordered_p99_ms_one_failing",
                        "unordered: healthy customers' p99 ms, one customer failing",
                    ),
                )
            ),
            ("backlog_live_p99_ms_during", "backlog: live subscriptions' p99 ms during"),
            ("backlog_live_p99_ms_after", "backlog: live subscriptions' p99 ms after recovery"),
            ("recovery_deliveries_per_s", "recovery: deliveries/s to the recovered endpoint"),
            ("recovery_drain_s", "recovery: seconds to drain the backlog (measured or projected)"),
            ("cpu_us_per_delivery_at_500", "service CPU us per delivery at 500 events/s (SQLite)"),
            ("backlog_dead_attempts_per_s", "backlog: attempts/s at the dead endpoint meanwhile"),
            ("recovery_peak_retry_per_s", "recovery: peak attempts/s at the recovered endpoint"),
            (
                "recovery_max_in_flight",
                f"recovery: most requests in flight there (lane limit {args.lane_concurrency})",
            ),
        )
        if key in results
    ]
    results["spans"] = spans
    flags = list(report.void_runs(found))
    results["void_runs"] = sum(flags)
    results["ledger_balanced"] = bool(flags) and not any(flags)
    return results


def main() -> int:
    args = _parser().parse_args()
    began = time.monotonic()
    results = asyncio.run(run(args))
    results["elapsed_s"] = time.monotonic() - began
    stamp = results["started_at"].replace(":", "").replace("-", "")
    path = report.write(results, args.out, stamp)
    png = args.out / f"{stamp}.png"
    why_not = report.plot(results, png)
    if why_not is None:
        (args.out / "latest.png").write_bytes(png.read_bytes())
    print()
    print(report.table(results))
    print()
    print(f"machine: {results['machine']}")
    print(f"took {results['elapsed_s']:.0f} s; results: {path}")
    print(why_not or f"plot: {png}")
    return 0 if results["ledger_balanced"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
