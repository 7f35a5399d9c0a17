"""`python -m bench.index_scale [--sizes 1000,10000] [--json F]`: what the subscription index
costs as subscriptions grow, on an embedded (SQLite) store of N active subscriptions over N/3
orgs: the first full load, and one change as the API makes it (a create, then the index told at
once, the garbage collector settled after the load as `serve` settles it), each with the longest
stall of the event loop meanwhile (a 1 ms ticker's worst lateness), and the process's peak RSS
(sizes run in the order given: give the largest last).

It uses only the store's `create_subscription` and the index's `refresh` and `on_change`, so an
older `service` can be measured by the same script: put a folder holding only that revision's
`service` first on PYTHONPATH and run it again (docs/performance.md, "The subscription index").
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
from cryptography.fernet import Fernet
from pydantic import SecretStr

from bench.api_scale import seed as seed_rows
from service.app import GC_THRESHOLDS
from service.matching import SubscriptionIndex
from service.settings import load_settings
from service.store import Store, open_store

T = TypeVar("T")
EVENTS = ("verification.created", "customer.kyc_updated")
CHANGES = 20  # API changes timed per size


class Ticker:
    """A task waking every millisecond; the worst lateness of its wake-ups is how long
    something held the event loop."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - before - 0.001)

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def timed(call: Callable[[], Awaitable[T]]) -> tuple[float, float]:
    """`call`'s wall time and the loop's longest stall during it, both in ms."""
    with Ticker() as ticker:
        await asyncio.sleep(0.002)  # the ticker's first wake-up
        ticker.worst = 0.0
        started = time.perf_counter()
        await call()
        took = time.perf_counter() - started
        await asyncio.sleep(0.002)
    return took * 1000, ticker.worst * 1000


async def seed(store: Store, n: int) -> None:
    for i in range(n):
        await store.create_subscription(f"org_{i // 3}", f"https://h{i}.example/w", EVENTS, None)


async def measure(size: int, folder: Path, fast: bool) -> dict[str, Any]:
    key = Fernet.generate_key().decode()
    settings = load_settings(
        database_url=f"sqlite:///{folder}/index-{size}.db", encryption_key=SecretStr(key)
    )
    if fast:
        await seed_rows(settings.database_url, key, size, size // 3)
    store = await open_store(settings)
    try:
        if not fast:
            await seed(store, size)
        index = SubscriptionIndex(store)
        load_ms, load_stall = await timed(lambda: index.refresh(force=True))
        # What `serve` does once started (docs/decisions/0004-gc-thresholds.md): the index is
        # frozen out of later collections, which would otherwise walk it during a change.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        changes: list[tuple[float, float]] = []
        for i in range(CHANGES):
            made = await store.create_subscription(
                f"org_new_{i}", "https://new.example/w", EVENTS, None
            )
            changes.append(await timed(functools.partial(index.on_change, made.id)))
            assert index.get(made.id) is not None
    finally:
        await store.close()
    return {
        "subscriptions": size,
        "full_load_ms": round(load_ms, 1),
        "full_load_stall_ms": round(load_stall, 1),
        "change_p50_ms": round(statistics.median(c[0] for c in changes), 2),
        "change_max_ms": round(max(c[0] for c in changes), 2),
        "change_stall_max_ms": round(max(c[1] for c in changes), 2),
        # This process's peak: the store, the index and the bench's own objects.
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


async def main(sizes: list[int], fast: bool = False) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            result = await measure(size, Path(folder), fast)
            print(orjson.dumps(result).decode(), flush=True)
            results.append(result)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--fast-seed",
        action="store_true",
        help="rows written straight into the table (bench.api_scale.seed), not by the store's "
        "create: seconds instead of minutes at 100,000",
    )
    args = parser.parse_args()
    measured = asyncio.run(main([int(s) for s in args.sizes.split(",")], args.fast_seed))
    if args.json is not None:
        import service

        args.json.write_bytes(orjson.dumps({"service": service.__file__, "results": measured}))
    sys.exit(0)
