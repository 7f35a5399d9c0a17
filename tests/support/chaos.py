"""What every fault test shares: a stream of events produced on an open schedule, the service as
child processes, and the ledger each test ends with.

The ledger balances the receiver against what was produced: every (event, matching subscription)
pair delivered at least once, nothing to a subscription that did not want it, duplicates counted
with their delivery ids (a duplicate must carry the same `X-Identity-Delivery`: one delivery sent
twice, never two deliveries of one pair), nothing valid dead-lettered, and the time from the fault
to the last missing pair.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from service.samples import sample_event
from service.settings import Settings
from service.store import open_store
from tests.support import process
from tools.receiver import Receiver

# `make test` runs a bounded set; `make test-chaos` sets WEBHOOKS_CHAOS_FULL=1 for the full one.
FULL = os.environ.get("WEBHOOKS_CHAOS_FULL") == "1"


def scale(bounded: int, full: int) -> int:
    return full if FULL else bounded


def service_env(settings: Settings, topics: Sequence[str]) -> dict[str, str]:
    """A replica on these topics and this store, with leases and retries short enough for a
    fault test (every replica of one test shares the group it names)."""
    return process.service_env(
        settings,
        topics,
        WEBHOOKS_LEASE="3s",
        WEBHOOKS_RETRY_SCHEDULE="200ms,500ms,1s,1s,1s,1s,1s,1s,1s,1s",
    )


@dataclass
class Stream:
    """`count` verification.created events for `org`, at `rate` a second, in the background."""

    bootstrap: str
    topic: str
    count: int
    rate: float
    org: str = "org_chaos"
    ids: list[str] = field(default_factory=list)
    failed: int = 0
    _task: asyncio.Task[None] | None = None

    def start(self) -> Stream:
        self._task = asyncio.create_task(self._run(), name="chaos-stream")
        return self

    async def done(self) -> None:
        assert self._task is not None
        await self._task

    @property
    def sent(self) -> int:
        return len(self.ids)

    async def _run(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )
        await producer.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        pending: list[asyncio.Future[Any]] = []
        try:
            for i in range(self.count):
                delay = start + i / self.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                event = sample_event("verification.created", self.org, datetime.now(UTC))
                event["data"]["customerId"] = f"cus_{i % 997}"
                self.ids.append(event["id"])
                pending.append(
                    await producer.send(
                        self.topic, orjson.dumps(event), key=event["data"]["customerId"].encode()
                    )
                )
            results = await asyncio.gather(*pending, return_exceptions=True)
            self.failed = sum(isinstance(r, BaseException) for r in results)
        finally:
            await producer.stop()


@dataclass(frozen=True)
class Ledger:
    expected: int
    delivered: int
    missing: int
    unexpected: int
    duplicates: int
    duplicate_deliveries: int  # of those, distinct delivery ids sent more than once
    split_pairs: int  # pairs that reached the receiver under two delivery ids: must be 0
    recovered_s: float | None  # from the fault to the last missing pair

    def balanced(self) -> bool:
        return self.missing == 0 and self.unexpected == 0 and self.split_pairs == 0


def balance(
    receiver: Receiver,
    stream: Stream,
    paths: Sequence[str],
    *,
    fault_at: float | None = None,
    ignore: Sequence[str] = (),
) -> Ledger:
    """The receiver's 2xx answers against every (path, event) of `paths` (the subscriptions
    that want the stream) and `stream`; requests to `ignore`d paths are left out."""
    expected = {(path, event) for path in paths for event in stream.ids}
    seen: Counter[tuple[str, str]] = Counter()
    by_delivery: Counter[str] = Counter()
    ids_of: dict[tuple[str, str], set[str]] = {}
    unexpected = 0
    last_new = 0.0
    for r in receiver.requests:
        if r.path in ignore or not 200 <= r.status < 300:
            continue
        pair = (r.path, r.event_id)
        if pair not in expected:
            unexpected += 1
            continue
        if pair not in seen:
            last_new = max(last_new, r.at)
        seen[pair] += 1
        by_delivery[r.delivery] += 1
        ids_of.setdefault(pair, set()).add(r.delivery)
    return Ledger(
        expected=len(expected),
        delivered=len(seen),
        missing=len(expected - set(seen)),
        unexpected=unexpected,
        duplicates=sum(n - 1 for n in seen.values()),
        duplicate_deliveries=sum(1 for n in by_delivery.values() if n > 1),
        split_pairs=sum(1 for ids in ids_of.values() if len(ids) > 1),
        recovered_s=None if fault_at is None or not seen else max(0.0, last_new - fault_at),
    )


async def wait_balanced(
    receiver: Receiver,
    stream: Stream,
    paths: Sequence[str],
    *,
    timeout: float,
    fault_at: float | None = None,
) -> Ledger:
    """Polls until nothing is missing (or the timeout); the ledger at that point."""
    deadline = time.monotonic() + timeout
    while True:
        ledger = balance(receiver, stream, paths, fault_at=fault_at)
        if ledger.missing == 0 or time.monotonic() > deadline:
            return ledger
        await asyncio.sleep(0.2)


async def dead_lettered(bootstrap: str, topic: str) -> int:
    """How many records the DLQ topic holds."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=1000)
        return sum(len(records) for records in batches.values())
    finally:
        await consumer.stop()


def report(name: str, ledger: Ledger, **facts: object) -> None:
    """One line per fault run, collected by `make test-chaos` for the fault table of
    docs/reliability.md."""
    line = {"fault": name, **ledger.__dict__, **facts}
    print("chaos-ledger " + orjson.dumps(line).decode())


PATHS = ("a", "b")  # two subscriptions want verification.created

ELSEWHERE = "other"  # one wants only customer.kyc_updated: must receive nothing


async def subscribe(settings: Settings, receiver: Receiver, *, run_migrations: bool = True) -> None:
    """The chaos runs' subscriptions, written to the store of `settings` before the service
    starts: PATHS want verification.created, ELSEWHERE only customer.kyc_updated."""
    store = await open_store(settings, run_migrations=run_migrations)
    try:
        for path in PATHS:
            await store.create_subscription(
                "org_chaos", receiver.url(path), ("verification.created",), None
            )
        await store.create_subscription(
            "org_chaos", receiver.url(ELSEWHERE), ("customer.kyc_updated",), None
        )
    finally:
        await store.close()
