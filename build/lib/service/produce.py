"""`identity-webhooks produce`: sample catalog events (and, on request, records that must be
dead-lettered) published to Kafka, for demos and load. Event i leaves at start + i/rate (an open
schedule) when a rate is given, as fast as the broker takes them otherwise."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from service.events import CATALOG
from service.samples import poison_records, record_key, sample_event
from service.settings import Settings

Record = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]
"""What `produce` sends: topic, key, value, headers."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What to publish: `count` events of `events` (default: the whole catalog, taking turns)
    for `org`, then `invalid` poison records, at `rate` a second (0: as fast as possible)."""

    count: int
    rate: float
    org: str
    events: Sequence[str] | None
    sibling_service: str | None
    invalid: int


async def produce(settings: Settings, plan: Plan) -> int:
    """Publishes the plan; the exit code (2: no topic for an event, 1: not all produced)."""
    count, org, invalid = plan.count, plan.org, plan.invalid
    names: list[str] = list(dict.fromkeys(plan.events or CATALOG))
    topics: dict[str, str] = {}
    for event in names:
        topic = topic_for(event, settings.kafka_topics)
        if topic is None:
            print(
                f"no topic in WEBHOOKS_KAFKA_TOPICS ({','.join(settings.kafka_topics)}) "
                f"ends with {event!r}",
                file=sys.stderr,
            )
            return 2
        topics[event] = topic
    sibling = plan.sibling_service
    headers = [] if not sibling else [("x-sibling-service", sibling.encode())]

    def records() -> Iterator[Record]:
        for i in range(count):
            envelope = sample_event(names[i % len(names)], org, datetime.now(UTC))
            yield topics[envelope["event"]], record_key(envelope), orjson.dumps(envelope), headers
        poisons = poison_records(invalid, org, datetime.now(UTC), names, settings.max_event_bytes)
        for poison in poisons:
            yield topics[poison.event], poison.key, poison.value, headers

    return await _publish(settings, records(), count, invalid, plan.rate)


def topic_for(event: str, topics: Sequence[str]) -> str | None:
    """The configured topic named for `event`: `identity.verification.created` for
    `verification.created`, or any topic that ends with `.<event>`."""
    for topic in topics:
        if topic == event or topic.endswith("." + event):
            return topic
    return None


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


async def _publish(
    settings: Settings, records: Iterator[Record], events: int, invalid: int, rate: float
) -> int:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="identity-webhooks-produce",
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        # A poison record of --invalid may be just over WEBHOOKS_MAX_EVENT_BYTES.
        max_request_size=max(1024 * 1024, settings.max_event_bytes * 2),
    )
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        print(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}", file=sys.stderr)
        return 1
    pending: set[asyncio.Future[object]] = set()
    failures: list[BaseException] = []

    def settled(future: asyncio.Future[object]) -> None:
        pending.discard(future)
        error = None if future.cancelled() else future.exception()
        if error is not None:
            failures.append(error)

    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    start = loop.time()
    try:
        for i, (topic, key, value, headers) in enumerate(records):
            if rate:
                # Open model: record i leaves at start + i/rate, however long earlier sends took.
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            try:
                future = await producer.send(topic, value=value, key=key, headers=headers)
            except KafkaError as exc:
                failures.append(exc)
                continue
            pending.add(future)
            future.add_done_callback(settled)
        if pending:
            await asyncio.wait(list(pending))
    finally:
        await producer.stop()
    elapsed = time.perf_counter() - started
    total = events + invalid
    if failures:
        print(
            f"{len(failures)} of {total} records were not produced in {elapsed:.2f} s; "
            f"the first error: {failures[0]!r}",
            file=sys.stderr,
        )
        return 1
    extra = f" and {_plural(invalid, 'invalid record')}" if invalid else ""
    rate_done = total / max(elapsed, 1e-6)
    print(f"produced {_plural(events, 'event')}{extra} in {elapsed:.2f} s ({rate_done:.0f}/s)")
    return 0
