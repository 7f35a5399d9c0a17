"""Where each millisecond of a delivery goes, for `python -m bench.profile --stages`.

Loaded into the service child only (by `stages_hook/sitecustomize.py`, put on its PYTHONPATH
with WEBHOOKS_BENCH_STAGES naming a JSON file): once `service.app` is imported, it wraps three
methods with clocks — ingest's batch (records in hand), the store's `record_events` (recorded)
and the sender (attempt started, answer read) — and, at exit, writes per-stage p50, p90, p95 and
p99 for the bench's events (read by their `benchScheduledAt`), beside the producer's timestamp of
each record (Kafka's CreateTime: when the generator handed it to its client), and the round trips
to PostgreSQL per kind of store call (`bench.roundtrips`). The service's own code is untouched;
the wrappers cost a few µs per event.
"""

from __future__ import annotations

import asyncio
import atexit
import builtins
import gc
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench import roundtrips

STAGES = (
    ("generator: scheduled -> handed to its Kafka client", "due", "created"),
    ("Kafka: producer linger, broker, fetch, to ingest's batch", "created", "batch"),
    ("  of which: ingest's loop elsewhere (a batch, a commit) when produced", "created", "polled"),
    ("  of which: from ingest's poll to the batch in hand", "polled", "batch"),
    ("ingest: parse, match, the store transaction", "batch", "recorded"),
    ("hand-off: lane queue to the attempt's start", "recorded", "sent"),
    ("HTTP: sign, POST, the answer read", "sent", "answered"),
)


def install(path: str) -> None:
    from service.delivery.attempt import Sender  # noqa: PLC0415 - only in the service child
    from service.ingest import Ingest  # noqa: PLC0415
    from service.store.sql import SqlStore  # noqa: PLC0415

    marks: dict[str, dict[str, float]] = {}
    tally = roundtrips.Tally()
    recorded = [0]  # events handed to the store
    roundtrips.install(tally)
    # Ingest's write: `record_matched` (checked against the index's revision), or, in a
    # service from before it, `record_events`.
    ingest_write = "record_matched" if hasattr(SqlStore, "record_matched") else "record_events"
    handle, record, send = Ingest._handle_batch, getattr(SqlStore, ingest_write), Sender.send
    fetch, commit = Ingest._fetch, Ingest.commit_recorded
    polled = [0.0]  # when ingest last asked the consumer for records
    waits: dict[str, list[float]] = {"offset commit": [], "fetch": []}

    async def timed_fetch(self: Ingest) -> Any:
        polled[0] = time.time()
        records = await fetch(self)
        if records:
            waits["fetch"].append((time.time() - polled[0]) * 1000)
        return records

    async def timed_commit(self: Ingest, only: Any) -> None:
        started = time.perf_counter()
        await commit(self, only)
        waits["offset commit"].append((time.perf_counter() - started) * 1000)

    async def timed_handle(self: Ingest, records: Any) -> None:
        now = time.time()
        for batch in records.values():
            for r in batch:
                envelope = orjson.loads(r.value)
                if "benchScheduledAt" in envelope:
                    created = r.timestamp / 1000
                    marks[envelope["id"]] = {
                        "due": envelope["benchScheduledAt"],
                        "created": created,
                        "polled": max(created, polled[0]),
                        "batch": now,
                    }
        await handle(self, records)

    async def timed_record(self: Any, events: Any, *args: Any, **kwargs: Any) -> Any:
        created = await record(self, events, *args, **kwargs)
        now = time.time()
        recorded[0] += len(events)
        for event in events:
            marks.get(event.id, {}).setdefault("recorded", now)
        return created

    async def timed_send(self: Sender, job: Any, subscription: Any) -> Any:
        started = time.time()
        exchange = await send(self, job, subscription)
        if (mark := marks.get(job.event_id)) is not None and "sent" not in mark:
            mark.update(sent=started, answered=time.time())
        return exchange

    Ingest._handle_batch = timed_handle  # type: ignore[method-assign]
    Ingest._fetch = timed_fetch  # type: ignore[method-assign]
    Ingest.commit_recorded = timed_commit  # type: ignore[method-assign]
    pauses = _time_collections()
    _time_sqlite(waits)
    lags = _watch_loop()
    setattr(SqlStore, ingest_write, timed_record)
    Sender.send = timed_send  # type: ignore[method-assign]

    def write() -> None:
        collected = {f"gc generation {g}": p for g, p in pauses.items()} | waits
        collected["event loop lag (10 ms ticks)"] = lags
        done = [m for m in marks.values() if "answered" in m]
        table = []
        for name, start, end in STAGES:
            spans = sorted((m[end] - m[start]) * 1000 for m in done)
            if spans:
                table.append(
                    {
                        "stage": name,
                        "p50_ms": statistics.median(spans),
                        "p90_ms": spans[int(len(spans) * 0.9)],
                        "p95_ms": spans[int(len(spans) * 0.95)],
                        "p99_ms": spans[int(len(spans) * 0.99)],
                        "mean_ms": statistics.fmean(spans),
                    }
                )
        Path(path).write_bytes(
            orjson.dumps(
                {
                    "events": len(done),
                    "stages": table,
                    "recorded_events": recorded[0],
                    "store_calls": tally.table(recorded[0]),
                    "simple_queries": dict(tally.simple),
                    "pauses": collected,
                }
            )
        )

    atexit.register(write)


def _time_collections() -> dict[int, list[float]]:
    """The garbage collector's passes, ms, by generation (`gc.callbacks`)."""
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append((time.perf_counter() - started[0]) * 1000)

    gc.callbacks.append(callback)
    return pauses


def _time_sqlite(waits: dict[str, list[float]]) -> None:
    """The SQLite driver's COMMIT (its WAL write and fsync) and its checkpoints, ms."""
    from service.store.sqlite import SqliteDriver  # noqa: PLC0415 - only in the service child

    for name, label in (("_timed_commit", "sqlite commit"), ("_checkpoint", "sqlite checkpoint")):
        method = getattr(SqliteDriver, name, None)
        if method is None:
            continue
        spans = waits.setdefault(label, [])

        def timed(self: Any, method: Any = method, spans: list[float] = spans) -> None:
            started = time.perf_counter()
            method(self)
            spans.append((time.perf_counter() - started) * 1000)

        setattr(SqliteDriver, name, timed)


def _watch_loop() -> list[float]:
    """How late the event loop wakes a 10 ms timer, ms: what any work on the loop (a batch, a
    statement on SQLite's loop thread, a collection) costs whatever waits behind it. Started
    with the loop's first task."""
    lags: list[float] = []

    async def watch() -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            lags.append((loop.time() - due) * 1000)

    from service.ingest import Ingest  # noqa: PLC0415 - only in the service child

    run = Ingest._run
    tasks: list[asyncio.Task[None]] = []

    async def run_watched(self: Ingest) -> None:
        tasks.append(asyncio.create_task(watch()))
        await run(self)

    Ingest._run = run_watched  # type: ignore[method-assign]
    return lags


def arm(path: str) -> None:
    """Installs the clocks as soon as `service.app` has been imported (the service child's
    first import of its own); other processes sharing the PYTHONPATH never import it."""
    original: Callable[..., Any] = builtins.__import__
    armed = [False]

    def importing(name: str, *args: Any, **kwargs: Any) -> Any:
        module = original(name, *args, **kwargs)
        if not armed[0] and name == "service.app":
            armed[0] = True
            builtins.__import__ = original
            install(path)
        return module

    builtins.__import__ = importing


def hook_env(path: Path) -> dict[str, str]:
    """The service child's environment additions for `--stages`."""
    paths = [str(Path(__file__).with_name("stages_hook")), str(Path(__file__).parents[1])]
    if os.environ.get("PYTHONPATH"):
        paths.insert(1, os.environ["PYTHONPATH"])
    return {"WEBHOOKS_BENCH_STAGES": str(path), "PYTHONPATH": os.pathsep.join(paths)}


def table(path: Path) -> str:
    found = orjson.loads(path.read_bytes())
    lines = [f"where the time goes ({found['events']} events; ms):"]
    lines += [
        f"  p50 {row['p50_ms']:6.2f}  p90 {row['p90_ms']:6.2f}  p95 {row['p95_ms']:6.2f}  "
        f"p99 {row['p99_ms']:6.2f}  {row['stage']}"
        for row in found["stages"]
    ]
    lines += [
        "",
        f"store calls ({found['recorded_events']} events recorded, warm-up included; "
        "round trips = simple queries + executes + prepares):",
    ]
    for row in found["store_calls"]:
        per_call = row["round_trips_per_call"]
        timing = (
            f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms  "
            if row["p50_ms"] is not None
            else " " * 32
        )
        lines.append(
            f"  {row['kind']:28} {row['calls']:6} calls  {timing}"
            f"round trips {row['round_trips']:6} ("
            + ("-" if per_call is None else f"{per_call:.2f}")
            + f"/call, {row['round_trips_per_event'] or 0:.2f}/event; "
            f"{row['simple_queries']} simple, {row['prepares']} prepares)  "
            f"pool wait {row['mean_pool_wait_ms']:.3f} ms"
        )
    if pauses := found.get("pauses"):
        lines += ["", "what else took the loop or the ingest path (ms):"]
        for name, values in pauses.items():
            if values:
                ranked = sorted(values)
                lines.append(
                    f"  {name:30} {len(ranked):7} times  p50 {statistics.median(ranked):7.2f}  "
                    f"p99 {ranked[int(len(ranked) * 0.99)]:7.2f}  max {ranked[-1]:7.2f}  "
                    f"over 5 ms: {sum(v > 5 for v in ranked)}"
                )
    if found["simple_queries"]:
        lines.append(
            "  simple queries: "
            + ", ".join(f"{q} {n}" for q, n in sorted(found["simple_queries"].items()))
        )
    return "\n".join(lines)
