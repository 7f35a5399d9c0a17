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

import atexit
import builtins
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

    async def timed_handle(self: Ingest, records: Any) -> None:
        now = time.time()
        for batch in records.values():
            for r in batch:
                envelope = orjson.loads(r.value)
                if "benchScheduledAt" in envelope:
                    marks[envelope["id"]] = {
                        "due": envelope["benchScheduledAt"],
                        "created": r.timestamp / 1000,
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
    setattr(SqlStore, ingest_write, timed_record)
    Sender.send = timed_send  # type: ignore[method-assign]

    def write() -> None:
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
                }
            )
        )

    atexit.register(write)


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
    if found["simple_queries"]:
        lines.append(
            "  simple queries: "
            + ", ".join(f"{q} {n}" for q, n in sorted(found["simple_queries"].items()))
        )
    return "\n".join(lines)
