"""Load: the open-model event generator, and the raw HTTP client that measures the floor.

The generator schedules event n of a phase at `phase start + n / rate` and sends it when that
time comes, whatever the service does (an open model: a slow service sees a backlog, never a
slower arrival rate). Each envelope carries its schedule as the extra top-level field
`benchScheduledAt` (epoch seconds), which the service keeps and delivers as-is; latency is
measured from that time, so a late generator would show up as latency, and its own lateness is
reported beside it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from bench.stack import ORG, Topics
from service.events import CATALOG
from service.samples import record_key, sample_event

SLEEP_QUANTUM = 0.001

CustomerOf = Callable[[int], str]


def round_robin(customers: int) -> CustomerOf:
    """Event n is about `cus_b<n mod customers>`."""
    return lambda n: f"cus_b{n % customers:04d}"


@dataclass(frozen=True)
class Phase:
    name: str
    rate: float  # events per second
    seconds: float


@dataclass
class Produced:
    """What the generator sent: per event, its id, name and scheduled time; each phase's window."""

    ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    scheduled: list[float] = field(default_factory=list)
    acked: int = 0
    failed: int = 0
    max_lateness_s: float = 0.0
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)  # phase -> (start, end)

    def scheduled_of(self) -> dict[str, float]:
        return dict(zip(self.ids, self.scheduled, strict=True))


class OpenLoad:
    """Produces catalog events to the run's topics on a fixed schedule."""

    def __init__(
        self, bootstrap: str, topics: Topics, customer_of: CustomerOf | None = None
    ) -> None:
        self._bootstrap = bootstrap
        # Which customer the n-th event is about (None: a new one each); may change between runs.
        self.customer_of = customer_of
        self._topics = topics
        self.produced = Produced()
        self._producer: AIOKafkaProducer | None = None
        self._resume_at = 0.0

    async def __aenter__(self) -> OpenLoad:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, acks=1, linger_ms=2, max_batch_size=65536
        )
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._producer is not None:
            await self._producer.stop()

    def _acked(self, future: asyncio.Future[object]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.produced.failed += 1
        else:
            self.produced.acked += 1

    async def run(self, phases: Sequence[Phase], stop: asyncio.Event | None = None) -> None:
        """Sends every phase's events on schedule (or until `stop` is set). A
        second call carries on where the first one's schedule ended, without a gap."""
        assert self._producer is not None
        producer = self._producer
        produced = self.produced
        events = itertools.cycle(CATALOG)
        start = max(time.time() + 0.005, self._resume_at)
        for phase in phases:
            end = start + phase.seconds
            produced.windows[phase.name] = (start, end)
            if phase.rate <= 0:
                await asyncio.sleep(max(0.0, end - time.time()))
                start = end
                continue
            step = 1.0 / phase.rate
            n = 0
            due = start
            while due < end:
                if stop is not None and stop.is_set():
                    produced.windows[phase.name] = (start, due)
                    self._resume_at = due
                    return
                now = time.time()
                while due <= now and due < end:
                    name = next(events)
                    envelope = sample_event(name, ORG, datetime.fromtimestamp(due, UTC))
                    envelope["benchScheduledAt"] = due
                    if self.customer_of is not None:
                        envelope["data"]["customerId"] = self.customer_of(len(produced.ids))
                    value = orjson.dumps(envelope)
                    key = record_key(envelope)
                    future = await producer.send(self._topics.catalog[name], value, key=key)
                    future.add_done_callback(self._acked)
                    produced.ids.append(envelope["id"])
                    produced.names.append(name)
                    produced.scheduled.append(due)
                    lateness = time.time() - due
                    produced.max_lateness_s = max(produced.max_lateness_s, lateness)
                    n += 1
                    due = start + n * step
                await asyncio.sleep(max(SLEEP_QUANTUM, due - time.time()))
            start = end
        self._resume_at = start

    async def flush(self) -> None:
        assert self._producer is not None
        await self._producer.flush()


@dataclass(frozen=True)
class FloorResult:
    sent: int
    answered_2xx: int
    seconds: float


async def raw_floor(
    url: str, *, seconds: float, concurrency: int, secret: str = "qe_whsec_" + "0" * 64
) -> FloorResult:
    """POSTs signed catalog envelopes to `url` as fast as `concurrency` requests in flight allow,
    with the service's headers, signatures and one pooled session: no Kafka, no store."""
    # Imported here: `bench.profile` imports this module, and a paired run's baseline side
    # imports it beside an older `service` whose signing API differs.
    from service.signing import ALL_SCHEMES, signature_headers  # noqa: PLC0415

    def sign(body: bytes, delivery_id: str) -> dict[str, str]:
        return signature_headers(ALL_SCHEMES, [secret], body, int(time.time()), delivery_id)

    now = datetime.now(UTC)
    bodies = [
        orjson.dumps(sample_event(name, ORG, now))
        for name in itertools.islice(itertools.cycle(CATALOG), 3000)
    ]
    sent = answered = 0
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(offset: int) -> None:
            nonlocal sent, answered
            i = offset
            while time.monotonic() < deadline:
                body = bodies[i % len(bodies)]
                i += concurrency
                headers = {
                    "Content-Type": "application/json",
                    "X-Identity-Event": "verification.created",
                    "X-Identity-Delivery": f"whd_floor{i}",
                    **sign(body, f"whd_floor{i}"),
                }
                sent += 1
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status < 300:
                        answered += 1

        began = time.monotonic()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.monotonic() - began
    return FloorResult(sent, answered, elapsed)
