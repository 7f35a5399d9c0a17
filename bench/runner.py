"""One bench run of the real service: set up, load, drain, stop, balance the ledger, clean up.

async with ServiceRun(env, store="sqlite", endpoints={"s0": OK}) as run:
    await run.produce([Phase("warmup", 500, 5), Phase("steady", 500, 60)])
    await run.wait_delivered(timeout=30)
    result = await run.finish()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from bench.backlog import Backlog, backlog_database
from bench.ledger import Ledger, balance, first_arrivals
from bench.load import CustomerOf, OpenLoad, Phase, Produced
from bench.stack import (
    VAR,
    Backends,
    ServiceChild,
    create_subscriptions,
    fresh_database,
    fresh_topics,
    new_encryption_key,
    new_run_id,
    service_env,
    store_deliveries,
)
from service.events import CATALOG
from tools.sink import Receipts, SinkProcess

OK = "ok"
FAIL = "fail"  # answers 500
HANG = "hang"  # answers only after `hang_seconds`, long past the service's timeout
DEAD_PATH = "dead"  # the backlog's endpoint: answers 503


@dataclass(frozen=True)
class Sample:
    at: float
    rss_mb: float


@dataclass
class RunResult:
    run_id: str
    store: str
    ledger: Ledger
    produced: Produced
    first: dict[tuple[str, str], float]  # (event, path) -> first 2xx arrival
    receipts: Receipts
    samples: list[Sample]
    cpu_s: float  # service CPU from the start of the load until everything was delivered
    delivered_in_cpu_window: int
    peak_rss_mb: float
    drained_after_s: float | None  # from the end of the load until all was delivered

    @property
    def cpu_us_per_delivery(self) -> float:
        if not self.delivered_in_cpu_window:
            return float("nan")
        return self.cpu_s / self.delivered_in_cpu_window * 1e6


@dataclass
class ServiceRun:
    backends: Backends
    store: str
    endpoints: dict[str, str]  # receiver path -> behaviour
    env: dict[str, str] = field(default_factory=dict)
    ledger_paths: set[str] | None = None  # default: the OK endpoints
    events: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # default: catalog
    ordering: Mapping[str, str] = field(default_factory=dict)  # path -> "customer"; else "none"
    customer_of: CustomerOf | None = None  # who event n is about (None: a new customer each)
    content_filter: str | None = None  # every subscription's filter (JSON); None: no filter
    hang_seconds: float = 30.0
    backlog: Backlog | None = None  # open deliveries owed to dead endpoints, seeded first
    database: tuple[str, str] | None = None  # an existing database's URL and key, kept after
    replicas: int = 1  # service processes in one consumer group, on one store
    sample_every: float = 0.5
    module: str = "service"  # what `python -m … serve` runs (`bench.stallwatch`: with a ticker)

    def __post_init__(self) -> None:
        self.run_id = new_run_id()
        self.receiver = SinkProcess()
        self.names: dict[str, str] = {}
        self.paths = self.ledger_paths or {p for p, b in self.endpoints.items() if b == OK}
        self.samples: list[Sample] = []
        self._stack = contextlib.AsyncExitStack()
        self._load: OpenLoad | None = None
        self._service: ServiceChild | None = None
        self._database_url = ""
        self._sampler: asyncio.Task[None] | None = None
        self._cpu_start = 0.0
        self._cpu_end: float | None = None
        self._cpu_end_at: float | None = None
        self._load_end = 0.0
        self._drained_after: float | None = None
        self._drained_paths: set[str] = set()
        self.others: list[ServiceChild] = []  # the replicas beyond the first

    @property
    def service(self) -> ServiceChild:
        assert self._service is not None
        return self._service

    @property
    def database_url(self) -> str:
        return self._database_url

    @property
    def load(self) -> OpenLoad:
        assert self._load is not None
        return self._load

    async def __aenter__(self) -> ServiceRun:
        stack = self._stack
        try:
            await self.receiver.start()
            stack.push_async_callback(self.receiver.stop)
            for path, behaviour in self.endpoints.items():
                if behaviour == FAIL:
                    await self.receiver.set(path, status=500)
                elif behaviour == HANG:
                    await self.receiver.set(path, hang=self.hang_seconds)
            topics = await stack.enter_async_context(fresh_topics(self.backends.kafka, self.run_id))
            if self.database is not None:
                self._database_url, key = self.database
            elif self.backlog is None:
                self._database_url = await stack.enter_async_context(
                    fresh_database(self.store, self.backends, self.run_id)
                )
                key = new_encryption_key()
            else:
                await self.receiver.set(DEAD_PATH, status=503)
                self._database_url, key = await stack.enter_async_context(
                    backlog_database(
                        self.store,
                        self.backends,
                        self.run_id,
                        self.backlog,
                        self.receiver.url(DEAD_PATH),
                    )
                )
            self.names = await create_subscriptions(
                self._database_url,
                key,
                {p: self.receiver.url(p) for p in self.endpoints},
                self.events,
                self.ordering,
                content_filter=self.content_filter,
                replacing=self.database is not None,
            )
            env = service_env(
                backends=self.backends,
                topics=topics,
                database_url=self._database_url,
                encryption_key=key,
                run=self.run_id,
                extra=self.env,
            )
            self._service = ServiceChild(
                env, VAR / "logs" / f"{self.run_id}.log", module=self.module
            )
            stack.push_async_callback(self._service.stop)
            await self._service.start()
            for n in range(1, self.replicas):
                replica = ServiceChild(
                    env, VAR / "logs" / f"{self.run_id}-{n}.log", module=self.module
                )
                stack.push_async_callback(replica.stop)
                await replica.start()
                self.others.append(replica)
            self._load = await stack.enter_async_context(
                OpenLoad(self.backends.kafka, topics, self.customer_of)
            )
            self._sampler = asyncio.create_task(self._sample())
        except BaseException:
            await stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_sampler()
        await self._stack.aclose()

    async def _stop_sampler(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None

    async def _sample(self) -> None:
        while True:
            self.samples.append(Sample(time.time(), self.service.stats().rss_mb))
            await asyncio.sleep(self.sample_every)

    async def produce(self, phases: Sequence[Phase], stop: asyncio.Event | None = None) -> None:
        """Runs the open-model load through `phases` (or until `stop`)."""
        if not self._cpu_start:
            self._cpu_start = self.service.stats().cpu_s
        await self.load.run(phases, stop)
        self._load_end = time.time()

    def expected_pairs(self) -> set[tuple[str, str]]:
        produced = self.load.produced
        return {
            (event_id, path)
            for path in self.paths
            for event_id, name in zip(produced.ids, produced.names, strict=True)
            if name in self.events.get(path, CATALOG)
        }

    def _owed(self, paths: set[str]) -> int:
        counts = Counter(self.load.produced.names)
        return sum(
            n
            for path in paths
            for name, n in counts.items()
            if name in self.events.get(path, CATALOG)
        )

    async def outstanding(self, paths: set[str] | None = None) -> int:
        """Deliveries produced so far that the receiver has not yet answered 2xx."""
        paths = paths or self.paths
        ok = await self.receiver.ok_total(paths)
        return self._owed(paths) - ok

    async def wait_delivered(
        self, timeout: float, paths: set[str] | None = None, poll: float = 0.1
    ) -> float | None:
        """Waits until every produced event reached each of `paths` (default: the ledger's);
        returns the seconds since the load ended, or None on timeout."""
        paths = paths or self.paths
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.outstanding(paths) <= 0:
                self._drained_paths |= paths
                self._drained_after = time.time() - self._load_end
                self._cpu_end = self.service.stats().cpu_s
                self._cpu_end_at = time.time()
                return self._drained_after
            await asyncio.sleep(poll)
        return None

    async def finish(self) -> RunResult:
        """Stops the service gracefully, then balances the ledger against receiver and store."""
        await self._stop_sampler()
        # Every send resolved (acknowledged or failed) before the ledger reads the counts.
        await self.load.flush()
        cpu_end = self._cpu_end
        stop_at = time.time()
        last = await self.service.stop()
        assert last is not None, "the service had already exited"
        if cpu_end is None:
            cpu_end = last.cpu_s
        receipts = await self.receiver.dump()
        rows = await store_deliveries(self._database_url)
        produced = self.load.produced
        unresolved = len(produced.ids) - produced.acked - produced.failed
        first, duplicates = first_arrivals(receipts, self.paths)
        ledger = balance(
            expected_pairs=self.expected_pairs(),
            produce_failed=produced.failed + unresolved,
            paths=self.paths,
            first=first,
            duplicates=duplicates,
            store_rows=rows,
            names=self.names,
            drained=self.paths <= self._drained_paths,
        )
        # Every 2xx answer up to the moment the CPU figure was read, whatever the path.
        until = self._cpu_end_at or stop_at
        delivered = sum(
            1
            for at, s in zip(receipts.at, receipts.status, strict=True)
            if 200 <= s < 300 and at <= until
        )
        return RunResult(
            run_id=self.run_id,
            store=self.store,
            ledger=ledger,
            produced=produced,
            first=first,
            receipts=receipts,
            samples=self.samples,
            cpu_s=cpu_end - self._cpu_start,
            delivered_in_cpu_window=delivered,
            peak_rss_mb=last.peak_rss_mb,
            drained_after_s=self._drained_after,
        )
