"""The benchmark scenarios. Each returns a JSON-ready dict: per-run figures plus a summary
(median, min, max over the runs whose ledger balanced; a void run is listed, never counted).

1. floor       a plain aiohttp client POSTs signed bodies to the receiver: no Kafka, no store
2. max         the highest event rate at fan-out 1 the service keeps up with (ramp, then 60 s)
3. fanout10    the same search with ten subscriptions per event
4. latency     p50/p95/p99 from scheduled send to arrival at 500 events/s, fan-out 1
5. isolation   nine healthy subscriptions' p99 with a tenth that hangs, over the same without it
6. backlog     a dead endpoint (500) while 100,000 deliveries pile up for it: RSS, others' latency
7. recovery    the dead endpoint comes back: time to drain and the retry rate it saw
8. ordered     deliveries/s with `ordering: "customer"` across 1,000 customers beside the
               unordered figure (same events, same receiver, same service), and the healthy
               customers' p99 while one customer's endpoint path fails
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.ledger import latencies, latency_summary_ms
from bench.load import Phase, raw_floor, round_robin
from bench.runner import FAIL, HANG, OK, RunResult, ServiceRun
from bench.stack import Backends, proc_stats, subscription_blocked
from service.events import CATALOG
from tools.sink import SinkProcess

# The service keeps up while what it owes is under this many seconds of arrivals: at the end of a
# 60 s run, and (stricter, as a step is short) at the end of a ramp step.
LAG_TOLERANCE_S = 1.0
RAMP_LAG_TOLERANCE_S = 0.25
PAIRED_FLOOR_S = 4.0
RECOVERED_DELAY_S = 0.005
CONFIRM_FROM = 0.95
CONFIRM_BACKOFF = 0.9  # the next confirming run's rate after one fell behind
HANG_TIMEOUT = "2s"
CONNECT_TIMEOUT = "1s"  # may not exceed the delivery timeout
# Short enough that a recovered endpoint is retried soon, long enough (about 8 minutes in all)
# that no delivery of the backlog runs out of attempts during the scenario.
BACKLOG_RETRY_SCHEDULE = ",".join(["1s", "2s", "5s", "10s"] + ["15s"] * 30)


@dataclass(frozen=True)
class Plan:
    """Lengths and sizes of one bench invocation (`--quick` shrinks them)."""

    quick: bool
    runs: int
    floor_s: float
    ramp_start: float
    ramp_factor: float
    ramp_step_s: float
    warmup_s: float
    steady_s: float
    fanout10_steady_s: float
    latency_steady_s: float
    isolation_rate: float
    isolation_steady_s: float
    backlog_deliveries: int
    recovery_s: float
    recovery_cap_s: float
    drain_timeout_s: float
    ordered_burst_events: int
    ordered_burst_rate: float
    ordered_rate: float
    ordered_steady_s: float

    @classmethod
    def full(cls) -> Plan:
        return cls(quick=False, **{name: full for name, (full, _) in _PLANS.items()})

    @classmethod
    def reduced(cls) -> Plan:
        return cls(quick=True, **{name: reduced for name, (_, reduced) in _PLANS.items()})


# Each knob of a Plan side by side: (the full bench, `--quick`).
_PLANS: dict[str, tuple[Any, Any]] = {
    "runs": (3, 1),
    "floor_s": (8.0, 4.0),
    "ramp_start": (1500.0, 400.0),
    "ramp_factor": (1.12, 1.4),
    "ramp_step_s": (5.0, 4.0),
    "warmup_s": (3.0, 2.0),
    "steady_s": (60.0, 0.0),
    "fanout10_steady_s": (15.0, 0.0),
    "latency_steady_s": (10.0, 8.0),
    "isolation_rate": (50.0, 50.0),
    "isolation_steady_s": (12.0, 8.0),
    "backlog_deliveries": (100_000, 0),
    "recovery_s": (5.0, 0.0),
    "recovery_cap_s": (20.0, 0.0),
    "drain_timeout_s": (20.0, 15.0),
    "ordered_burst_events": (30_000, 10_000),
    "ordered_burst_rate": (5000.0, 3000.0),
    "ordered_rate": (200.0, 100.0),
    "ordered_steady_s": (20.0, 10.0),
}


@dataclass(frozen=True)
class Bench:
    backends: Backends
    plan: Plan
    lane_concurrency: int
    progress: Callable[[str], None]
    fetch_wait: str = "10ms"

    @property
    def lane_env(self) -> dict[str, str]:
        """The service's tuning for the throughput scenarios: wide lanes, fuller Kafka fetches."""
        return {
            "WEBHOOKS_LANE_CONCURRENCY": str(self.lane_concurrency),
            "WEBHOOKS_KAFKA_FETCH_WAIT": self.fetch_wait,
        }


def summarize(values: Sequence[float]) -> dict[str, float | None]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return {"median": None, "min": None, "max": None}
    return {
        "median": statistics.median(finite),
        "min": min(finite),
        "max": max(finite),
    }


def _endpoints(n: int) -> dict[str, str]:
    return {f"s{i}": OK for i in range(n)}


def _arrivals_between(result: RunResult, window: tuple[float, float], paths: set[str]) -> int:
    start, end = window
    return sum(
        1
        for p, at, s in zip(
            result.receipts.path, result.receipts.at, result.receipts.status, strict=True
        )
        if p in paths and 200 <= s < 300 and start <= at < end
    )


def _run_record(result: RunResult, **figures: Any) -> dict[str, Any]:
    return {
        "run_id": result.run_id,
        "store": result.store,
        "ledger": result.ledger.as_dict(),
        "void": not result.ledger.balanced,
        "cpu_us_per_delivery": result.cpu_us_per_delivery,
        "peak_rss_mb": result.peak_rss_mb,
        "generator_max_lateness_ms": result.produced.max_lateness_s * 1000,
        "drained_after_s": result.drained_after_s,
        **figures,
    }


# -- 1. the raw floor ---------------------------------------------------------------------------


async def floor_once(bench: Bench, concurrency: int, seconds: float) -> dict[str, Any]:
    """One raw-floor measurement against a fresh receiver."""
    receiver = await SinkProcess().start()
    try:
        result = await raw_floor(receiver.url("s0"), seconds=seconds, concurrency=concurrency)
        received = await receiver.ok_total()
        receiver_cpu = proc_stats(receiver.pid).cpu_s
    finally:
        await receiver.stop()
    return {
        "deliveries_per_s": received / result.seconds,
        "sent": result.sent,
        "received": received,
        "void": not received == result.sent == result.answered_2xx,
        "receiver_cpu_us_per_request": receiver_cpu / max(received, 1) * 1e6,
    }


async def repeated(
    bench: Bench,
    run: Callable[[], Awaitable[dict[str, Any]]],
    describe: Callable[[int, dict[str, Any]], str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The plan's number of runs of a scenario, each described on the progress line as it
    ends (`describe` gets its number from 1): all of them, and those that are not void."""
    runs: list[dict[str, Any]] = []
    for n in range(bench.plan.runs):
        record = await run()
        runs.append(record)
        bench.progress(describe(n + 1, record))
    return runs, [r for r in runs if not r["void"]]


async def floor(bench: Bench, concurrency: int) -> dict[str, Any]:
    runs, good = await repeated(
        bench,
        lambda: floor_once(bench, concurrency, bench.plan.floor_s),
        lambda n, run: f"floor run {n}: {run['deliveries_per_s']:,.0f}/s (void={run['void']})",
    )
    return {
        "concurrency": concurrency,
        "runs": runs,
        "deliveries_per_s": summarize([r["deliveries_per_s"] for r in good]),
    }


# -- 2 and 3. the highest rate the service keeps up with ------------------------------------------


async def ramp(
    bench: Bench, store: str, fanout: int, start: float, env: dict[str, str]
) -> dict[str, Any]:
    """One service run; the rate steps up every `ramp_step_s` until what the service owes at the
    end of a step exceeds RAMP_LAG_TOLERANCE_S seconds of arrivals. Returns the last rate it
    kept up with."""
    plan = bench.plan
    steps: list[dict[str, Any]] = []
    kept_rate = 0.0
    async with ServiceRun(bench.backends, store, _endpoints(fanout), env=env) as run:
        await run.produce([Phase("warmup", start, plan.warmup_s)])
        rate = start
        while True:
            name = f"step{len(steps)}"
            await run.produce([Phase(name, rate, plan.ramp_step_s)])
            owed = await run.outstanding()
            kept = owed <= rate * fanout * RAMP_LAG_TOLERANCE_S
            steps.append({"events_per_s": rate, "owed_at_end": owed, "kept_up": kept})
            bench.progress(
                f"  ramp {store} fan-out {fanout}: {rate:,.0f} ev/s, owed {owed:,} -> "
                + ("kept up" if kept else "behind")
            )
            if not kept:
                break
            kept_rate = rate
            rate *= plan.ramp_factor
        # A ramp ends behind on purpose: what is still owed stays open in the store, which the
        # ledger accepts, so a short wait is enough.
        drained = await run.wait_delivered(5.0)
        result = await run.finish()
    for i, step in enumerate(steps):
        window = result.produced.windows[f"step{i}"]
        step["delivered_per_s"] = _arrivals_between(result, window, run.paths) / (
            window[1] - window[0]
        )
    return _run_record(
        result,
        steps=steps,
        max_events_per_s=kept_rate,
        max_deliveries_per_s=kept_rate * fanout,
        drained=drained is not None,
    )


async def steady(
    bench: Bench,
    store: str,
    fanout: int,
    rate: float,
    steady_s: float,
    env: dict[str, str],
) -> dict[str, Any]:
    """Warm-up, steady and drain at one fixed rate: delivered rate, latency, whether it kept up."""
    plan = bench.plan
    async with ServiceRun(bench.backends, store, _endpoints(fanout), env=env) as run:
        await run.produce([Phase("warmup", rate, plan.warmup_s), Phase("steady", rate, steady_s)])
        owed = await run.outstanding()
        drained = await run.wait_delivered(plan.drain_timeout_s)
        result = await run.finish()
    window = result.produced.windows["steady"]
    delivered = _arrivals_between(result, window, run.paths) / (window[1] - window[0])
    lat = latencies(result.first, result.produced.scheduled_of(), paths=run.paths, window=window)
    kept = owed <= rate * fanout * LAG_TOLERANCE_S and drained is not None
    return _run_record(
        result,
        events_per_s=rate,
        fanout=fanout,
        delivered_per_s=delivered,
        owed_at_end_of_steady=owed,
        kept_up=kept,
        latency=latency_summary_ms(lat),
        latencies_ms=[x * 1000 for x in lat[:: max(1, len(lat) // 5000)]],
    )


async def max_throughput(
    bench: Bench, store: str, fanout: int, env: dict[str, str], start: float
) -> dict[str, Any]:
    """Scenario 2/3: a ramp finds the rate; then `runs` runs of `steady_s` (60 s; 15 s at fan-out
    10) at 95% of it confirm it (a run that falls behind sends the next one 10% lower and does
    not count)."""
    plan = bench.plan
    steady_s = plan.steady_s if fanout == 1 else plan.fanout10_steady_s
    concurrency = bench.lane_concurrency * fanout
    found = await ramp(bench, store, fanout, start, env)
    bench.progress(f"{store} fan-out {fanout}: ramp kept up to {found['max_events_per_s']:,.0f}")
    if plan.quick or not found["max_events_per_s"]:
        value = found["max_deliveries_per_s"] if not found["void"] else math.nan
        paired = await floor_once(bench, concurrency, PAIRED_FLOOR_S)
        share = value / paired["deliveries_per_s"] if not paired["void"] else math.nan
        return {
            "ramp": found,
            "confirm": [],
            "max_deliveries_per_s": summarize([value]),
            "paired_floors": [paired],
            "share_of_floor": summarize([share]),
            "method": "ramp only (--quick)" if plan.quick else "ramp",
        }
    # A 5 s ramp step flatters: start the long runs a notch lower.
    rate = found["max_events_per_s"] * CONFIRM_FROM
    confirm: list[dict[str, Any]] = []
    for _ in range(plan.runs + 1):
        if sum(1 for r in confirm if r["kept_up"] and not r["void"]) >= plan.runs:
            break
        # The floor measured right before each run, so their ratio shares the machine's noise.
        paired = await floor_once(bench, concurrency, PAIRED_FLOOR_S)
        record = await steady(bench, store, fanout, rate, steady_s, env)
        record["paired_floor"] = paired
        record["paired_floor_per_s"] = paired["deliveries_per_s"]
        # A void floor gives no ratio; the run's own figure still counts.
        record["share_of_floor"] = (
            math.nan if paired["void"] else record["delivered_per_s"] / paired["deliveries_per_s"]
        )
        confirm.append(record)
        bench.progress(
            f"  confirm {store} fan-out {fanout} at {rate:,.0f} ev/s: "
            f"{record['delivered_per_s']:,.0f} deliveries/s "
            f"({record['share_of_floor']:.0%} of a floor of {paired['deliveries_per_s']:,.0f}/s), "
            f"kept_up={record['kept_up']}, void={record['void']}"
        )
        if not record["kept_up"]:
            rate *= CONFIRM_BACKOFF
    counted = [r for r in confirm if r["kept_up"] and not r["void"]]
    return {
        "ramp": found,
        "confirm": confirm,
        "max_deliveries_per_s": summarize([r["delivered_per_s"] for r in counted]),
        "share_of_floor": summarize([r["share_of_floor"] for r in counted]),
        "method": f"ramp, then {steady_s:g} s steady runs",
    }


# -- 4. latency at a fixed rate -------------------------------------------------------------------


async def latency(bench: Bench, store: str, rate: float) -> dict[str, Any]:
    # Latency with the shipped fetch behaviour (the broker answers at once).
    env = {**bench.lane_env, "WEBHOOKS_KAFKA_FETCH_WAIT": "0"}
    runs, good = await repeated(
        bench,
        lambda: steady(bench, store, 1, rate, bench.plan.latency_steady_s, env),
        lambda n, record: (
            f"latency {store} run {n}: p99 {record['latency']['p99_ms']:.1f} ms "
            f"(void={record['void']})"
        ),
    )
    return {
        "events_per_s": rate,
        "runs": runs,
        **{
            key: summarize([r["latency"][key] for r in good])
            for key in ("p50_ms", "p95_ms", "p99_ms")
        },
        "cpu_us_per_delivery": summarize([r["cpu_us_per_delivery"] for r in good]),
    }


# -- 5. isolation ---------------------------------------------------------------------------------


async def _isolation_run(bench: Bench, hanging: bool) -> dict[str, Any]:
    plan = bench.plan
    endpoints = _endpoints(9)
    if hanging:
        endpoints["hang"] = HANG
    env = {
        **bench.lane_env,
        "WEBHOOKS_DELIVERY_TIMEOUT": HANG_TIMEOUT,
        "WEBHOOKS_DELIVERY_CONNECT_TIMEOUT": CONNECT_TIMEOUT,
    }
    async with ServiceRun(bench.backends, "sqlite", endpoints, env=env) as run:
        await run.produce(
            [
                Phase("warmup", plan.isolation_rate, plan.warmup_s),
                Phase("steady", plan.isolation_rate, plan.isolation_steady_s),
            ]
        )
        await run.wait_delivered(plan.drain_timeout_s)
        result = await run.finish()
    window = result.produced.windows["steady"]
    lat = latencies(result.first, result.produced.scheduled_of(), paths=run.paths, window=window)
    hang_attempts = sum(1 for p in result.receipts.path if p == "hang")
    return _run_record(
        result,
        hanging=hanging,
        latency=latency_summary_ms(lat),
        hang_attempts=hang_attempts,
        latencies_ms=[x * 1000 for x in lat[:: max(1, len(lat) // 5000)]],
    )


async def isolation(bench: Bench) -> dict[str, Any]:
    pairs = []
    for n in range(bench.plan.runs):
        with_hang = await _isolation_run(bench, hanging=True)
        without = await _isolation_run(bench, hanging=False)
        void = with_hang["void"] or without["void"]
        ratio = with_hang["latency"]["p99_ms"] / without["latency"]["p99_ms"]
        p50_ratio = with_hang["latency"]["p50_ms"] / without["latency"]["p50_ms"]
        pairs.append(
            {
                "with_hang": with_hang,
                "without": without,
                "ratio": ratio,
                "p50_ratio": p50_ratio,
                # Each run carries its own `void` (counted once by the report); a pair counts
                # when neither run is void.
                "counted": not void,
            }
        )
        bench.progress(
            f"isolation pair {n + 1}: p99 {with_hang['latency']['p99_ms']:.1f} ms with the "
            f"hanging endpoint, {without['latency']['p99_ms']:.1f} ms without: "
            f"ratio {ratio:.2f} (void={void})"
        )
    good = [p for p in pairs if p["counted"]]
    return {
        "events_per_s": bench.plan.isolation_rate,
        "delivery_timeout": HANG_TIMEOUT,
        "pairs": pairs,
        "p99_ratio": summarize([p["ratio"] for p in good]),
        "p50_ratio": summarize([p["p50_ratio"] for p in good]),
        "p99_ms_with_hang": summarize([p["with_hang"]["latency"]["p99_ms"] for p in good]),
        "p99_ms_without": summarize([p["without"]["latency"]["p99_ms"] for p in good]),
    }


# -- 6 and 7. backlog and recovery ----------------------------------------------------------------


def _per_second(times: Sequence[float], window: tuple[float, float]) -> dict[str, float]:
    start, end = window
    bins = Counter(int(t - start) for t in times if start <= t < end)
    seconds = max(1, math.ceil(end - start))
    return {
        "mean_per_s": sum(bins.values()) / seconds,
        "peak_per_s": float(max(bins.values(), default=0)),
    }


async def _backlog_run(bench: Bench, rate: float) -> dict[str, Any]:
    plan = bench.plan
    endpoints = {"s0": OK, "s1": OK, "dead": FAIL}
    env = {
        **bench.lane_env,
        "WEBHOOKS_RETRY_SCHEDULE": BACKLOG_RETRY_SCHEDULE,
        "WEBHOOKS_DELIVERY_TIMEOUT": HANG_TIMEOUT,
        "WEBHOOKS_DELIVERY_CONNECT_TIMEOUT": CONNECT_TIMEOUT,
    }
    live = {"s0", "s1"}
    fill_s = plan.backlog_deliveries / rate
    # The live endpoints take one event of three, so the backlog fills fast while they still
    # have steady traffic to measure.
    only_one = dict.fromkeys(live, (CATALOG[0],))
    async with ServiceRun(
        bench.backends,
        "sqlite",
        endpoints,
        env=env,
        ledger_paths={"s0", "s1", "dead"},
        events=only_one,
    ) as run:
        await run.produce([Phase("backlog", rate, fill_s)])
        rss_at_peak_backlog = run.service.stats().rss_mb
        # Back, answering in RECOVERED_DELAY_S, so the receiver can see how many of the lane's
        # requests are in flight at once.
        await run.receiver.set("dead", status=204, delay=RECOVERED_DELAY_S)
        recovered_at = time.time()
        await run.produce([Phase("recovery", rate, plan.recovery_s)])
        remaining = plan.recovery_cap_s - (time.time() - recovered_at)
        drained = await run.wait_delivered(max(1.0, remaining), paths={"dead"}, poll=0.5)
        drain_s = None if drained is None else time.time() - recovered_at
        await run.wait_delivered(plan.drain_timeout_s, paths=live)
        max_in_flight = await run.receiver.max_in_flight("dead")
        result = await run.finish()
    scheduled = result.produced.scheduled_of()
    during = result.produced.windows["backlog"]
    after = result.produced.windows["recovery"]
    dead_times = [
        at for p, at in zip(result.receipts.path, result.receipts.at, strict=True) if p == "dead"
    ]
    dead_ok = [
        at
        for p, at, s in zip(
            result.receipts.path, result.receipts.at, result.receipts.status, strict=True
        )
        if p == "dead" and 200 <= s < 300
    ]
    recovery_window = (recovered_at, max([recovered_at + 1, *dead_times]))
    delivered_late = len(dead_ok)
    drain_rate = delivered_late / max(1e-9, recovery_window[1] - recovery_window[0])
    # What the dead endpoint is still owed: one delivery per event produced.
    owed = len(result.produced.ids) - sum(1 for _, path in result.first if path == "dead")
    # Past the cap, how long the whole drain would have taken at the rate it was going.
    projected = drain_s if drain_s is not None else (delivered_late + owed) / max(drain_rate, 1e-9)
    return _run_record(
        result,
        events_per_s=rate,
        backlog_deliveries=int(fill_s * rate),
        rss_mb_at_end_of_backlog=rss_at_peak_backlog,
        rss_mb_series=[(s.at - during[0], s.rss_mb) for s in result.samples],
        live_latency_during=latency_summary_ms(
            latencies(result.first, scheduled, paths=live, window=during)
        ),
        live_latency_after=latency_summary_ms(
            latencies(result.first, scheduled, paths=live, window=after)
        ),
        dead_attempts_during=_per_second(dead_times, during),
        dead_attempts_recovery=_per_second(dead_times, recovery_window),
        recovered_max_in_flight=max_in_flight,
        recovery_drained=drained is not None,
        recovery_drain_s=drain_s,
        recovery_delivered=delivered_late,
        recovery_deliveries_per_s=drain_rate,
        still_owed_at_stop=owed,
        projected_drain_s=projected,
        lane_concurrency=bench.lane_concurrency,
    )


async def backlog(bench: Bench, rate: float) -> dict[str, Any]:
    runs, good = await repeated(
        bench,
        lambda: _backlog_run(bench, rate),
        lambda n, record: (
            f"backlog run {n}: peak RSS {record['peak_rss_mb']:.0f} MB, live p99 "
            f"during {record['live_latency_during']['p99_ms']:.0f} ms, "
            f"drained={record['recovery_drained']} "
            f"({record['recovery_deliveries_per_s']:,.0f}/s), void={record['void']}"
        ),
    )
    return {
        "events_per_s": rate,
        "runs": runs,
        "peak_rss_mb": summarize([r["peak_rss_mb"] for r in good]),
        "live_p99_ms_during": summarize([r["live_latency_during"]["p99_ms"] for r in good]),
        "live_p99_ms_after": summarize([r["live_latency_after"]["p99_ms"] for r in good]),
        "recovery_drain_s": summarize(
            [r["recovery_drain_s"] if r["recovery_drained"] else math.nan for r in good]
        ),
        "recovery_deliveries_per_s": summarize([r["recovery_deliveries_per_s"] for r in good]),
        "projected_drain_s": summarize([r["projected_drain_s"] or math.nan for r in good]),
        "dead_peak_attempts_per_s_recovery": summarize(
            [r["dead_attempts_recovery"]["peak_per_s"] for r in good]
        ),
        "recovered_max_in_flight": summarize([r["recovered_max_in_flight"] for r in good]),
        "dead_mean_attempts_per_s_during": summarize(
            [r["dead_attempts_during"]["mean_per_s"] for r in good]
        ),
    }


# -- 8. ordered delivery -------------------------------------------------------------------------

ORDERED_CUSTOMERS = 1000
FAILING_CUSTOMER = "cus_b0000"
FAILING_SHARE = 20  # in the latency phases, every 20th event is about the failing customer
# Quick retries, and enough of them that the failing customer's deliveries outlast the scenario.
ORDERED_RETRY_SCHEDULE = ",".join(["200ms", "500ms"] + ["1s"] * 120)


def _hot_customer(n: int) -> str:
    """One event in FAILING_SHARE is about the failing customer; the rest go round the others."""
    if n % FAILING_SHARE == 0:
        return FAILING_CUSTOMER
    return f"cus_b{1 + n % (ORDERED_CUSTOMERS - 1):04d}"


def _drain_rate(
    result: RunResult, path: str, window: tuple[float, float]
) -> tuple[float, float, int]:
    """Deliveries/s to `path` of the events scheduled in `window`: how many arrived, over the
    time from the window's start to the last first arrival; also that time and the count."""
    scheduled = result.produced.scheduled_of()
    start, end = window
    arrivals = [
        at
        for (event, p), at in result.first.items()
        if p == path and start <= scheduled.get(event, -1.0) < end
    ]
    if not arrivals:
        return math.nan, math.nan, 0
    span = max(arrivals) - start
    return len(arrivals) / span, span, len(arrivals)


async def _ordered_run(bench: Bench, store: str) -> dict[str, Any]:
    plan = bench.plan
    paths = {"unordered", "ordered"}
    env = {**bench.lane_env, "WEBHOOKS_RETRY_SCHEDULE": ORDERED_RETRY_SCHEDULE}
    async with ServiceRun(
        bench.backends,
        store,
        dict.fromkeys(paths, OK),
        env=env,
        ordering={"ordered": "customer"},
        customer_of=round_robin(ORDERED_CUSTOMERS),
    ) as run:
        # Throughput: a burst faster than the service delivers, drained by both subscriptions.
        burst_s = plan.ordered_burst_events / plan.ordered_burst_rate
        await run.produce([Phase("burst", plan.ordered_burst_rate, burst_s)])
        burst_drained = await run.wait_delivered(max(60.0, 4 * plan.drain_timeout_s))
        # Latency: a steady rate, healthy, then with one customer's endpoint path failing.
        run.load.customer_of = _hot_customer
        await run.produce([Phase("healthy", plan.ordered_rate, plan.ordered_steady_s)])
        await run.receiver.set_customer(FAILING_CUSTOMER, status=500)
        await run.produce([Phase("one_failing", plan.ordered_rate, plan.ordered_steady_s)])
        blocked_at_end = await _blocked_customers(run)
        await run.receiver.clear_customer(FAILING_CUSTOMER)
        await run.wait_delivered(plan.drain_timeout_s * 2)
        result = await run.finish()
    windows = result.produced.windows
    failing_events = {
        e
        for e, c in zip(result.receipts.event, result.receipts.customer, strict=True)
        if c == FAILING_CUSTOMER
    }
    healthy_first = {k: v for k, v in result.first.items() if k[0] not in failing_events}
    scheduled = result.produced.scheduled_of()
    throughput: dict[str, Any] = {}
    latency: dict[str, Any] = {}
    for path in sorted(paths):
        rate, span, n = _drain_rate(result, path, windows["burst"])
        throughput[path] = {"deliveries_per_s": rate, "drain_s": span, "deliveries": n}
        latency[path] = {
            phase: latency_summary_ms(
                latencies(healthy_first, scheduled, paths={path}, window=windows[phase])
            )
            for phase in ("healthy", "one_failing")
        }
    failing_attempts = sum(
        1
        for p, c, st in zip(
            result.receipts.path, result.receipts.customer, result.receipts.status, strict=True
        )
        if c == FAILING_CUSTOMER and st >= 500 and p in paths
    )
    return _run_record(
        result,
        customers=ORDERED_CUSTOMERS,
        burst_events=plan.ordered_burst_events,
        burst_events_per_s=plan.ordered_burst_rate,
        burst_drained=burst_drained is not None,
        throughput=throughput,
        events_per_s=plan.ordered_rate,
        failing_share=1 / FAILING_SHARE,
        healthy_latency=latency,
        failing_customer_failed_attempts=failing_attempts,
        blocked_customers_at_end_of_failure=blocked_at_end,
    )


async def _blocked_customers(run: ServiceRun) -> int | None:
    """The ordered subscription's `blockedCustomers`, read from the store (None if unreadable)."""
    names = {name: sid for sid, name in run.names.items()}
    try:
        return await subscription_blocked(run.database_url, names["ordered"])
    except Exception:
        return None


async def ordered(bench: Bench, store: str) -> dict[str, Any]:

    def describe(n: int, record: dict[str, Any]) -> str:
        tp, lat = record["throughput"], record["healthy_latency"]
        return (
            f"ordered {store} run {n}: {tp['ordered']['deliveries_per_s']:,.0f} deliveries/s "
            f"ordered vs {tp['unordered']['deliveries_per_s']:,.0f} unordered; healthy p99 "
            f"{lat['ordered']['healthy']['p99_ms']:.0f} ms -> "
            f"{lat['ordered']['one_failing']['p99_ms']:.0f} ms with one customer failing "
            f"(void={record['void']})"
        )

    runs, good = await repeated(bench, lambda: _ordered_run(bench, store), describe)
    out: dict[str, Any] = {"runs": runs}
    for path in ("ordered", "unordered"):
        out[f"{path}_deliveries_per_s"] = summarize(
            [r["throughput"][path]["deliveries_per_s"] for r in good]
        )
        for phase in ("healthy", "one_failing"):
            out[f"{path}_p99_ms_{phase}"] = summarize(
                [r["healthy_latency"][path][phase]["p99_ms"] for r in good]
            )
    return out


Scenario = Callable[[], Awaitable[dict[str, Any]]]


async def timed(bench: Bench, name: str, scenario: Scenario) -> dict[str, Any]:
    began = time.monotonic()
    bench.progress(f"== {name}")
    result = await scenario()
    result["elapsed_s"] = time.monotonic() - began
    return result
