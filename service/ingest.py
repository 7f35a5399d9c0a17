"""Kafka in: consume, validate, match, record, and only then commit (docs/contract.md, "Events in").

For each batch from `getmany()`: every record is parsed; bad ones are dead-lettered
(`service.deadletter`: a partition whose bad records the dead-letter topic has not acknowledged
is paused, and its offset stays at the first of them until they are written); good ones are
matched to the subscriptions that want them, against an index no older than the events (else the
batch waits for it); the events and one delivery per match are written in one transaction; the
new deliveries are handed to delivery (the `submit` callable); and, per partition, the offset
after the last recorded record becomes committable: it is committed within COMMIT_INTERVAL,
before a partition is revoked, and on stop. While the store is away, every partition is paused
and polling goes on, so the group keeps us. A crash anywhere replays from the last commit, and
the store's unique (event, subscription) key turns the replay into a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import structlog
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import (
    CommitFailedError,
    CorruptRecordException,
    KafkaError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
)

from service import ids
from service.deadletter import DeadLetters
from service.domain import DeliveryJob, IncomingEvent, NewDelivery
from service.events import Accepted, Rejected, Skipped, parse_event
from service.health import Readiness
from service.matching import SubscriptionIndex
from service.metrics import Metrics
from service.settings import Settings
from service.store import IndexBehind, Lease, Pipeline, StoreUnavailable
from service.supervise import Fatal, in_background
from service.tracing import Tracing

log = structlog.get_logger(__name__)

SIBLING_HEADER = "x-sibling-service"
# A header value we forward into customers' HTTP requests: a plain token or nothing.
_SIBLING = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_BATCH = 1000
# In a stream the broker holds each fetch up to this long (or until 64 KiB are there), so that
# one fetch, one store transaction and one offset commit cover many records; a lone record after
# a pause is fetched at once (see `Ingest._adapt_fetch`).
STREAM_FETCH_WAIT = 0.005
STREAM_END = 0.05  # in a stream, a poll that brings nothing for this long ends it
# Recorded offsets are committed at most this often (and always on revoke and on stop): a commit
# is a broker round trip, and a replay of what was recorded but not yet committed is a no-op.
# The lag gauge follows on the same beat, not after every fetch.
COMMIT_INTERVAL = 0.25
FETCH_BATCH_BYTES = 64 * 1024
# What a fetch raises about one partition; anything else getmany() raises comes from the group
# coordinator (or a stopped consumer).
_PARTITION_ERRORS = (
    OffsetOutOfRangeError,
    TopicAuthorizationFailedError,
    RecordTooLargeError,
    CorruptRecordException,
)

T = TypeVar("T")


Record = ConsumerRecord[bytes, bytes]
Records = dict[TopicPartition, list[Record]]
Submit = Callable[[Sequence[DeliveryJob]], None]
"""Hands new deliveries, leased to this process, to delivery."""


@dataclass(slots=True)
class _Batch:
    accepted: list[tuple[Accepted, Record, int]]  # (event, record, occurredAt in ms)
    events: list[IncomingEvent]
    deliveries: list[NewDelivery]
    dead: dict[TopicPartition, list[tuple[Record, str]]]  # (record, reason)
    last: dict[TopicPartition, int]  # offset after the last record seen, per partition
    filtered: Counter[str] = field(default_factory=Counter)  # refused by filters, by event


class _Listener(ConsumerRebalanceListener):
    def __init__(self, ingest: Ingest) -> None:
        self._ingest = ingest

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Every rebalance, and the group dropping us, starts here: until it assigns again, the
        # consumer is not in the group.
        self._ingest.joined = False
        await self._ingest.commit_recorded(set(revoked))
        self._ingest.forget(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._ingest.joined = True
        await self._ingest.learn_committed(set(assigned))
        log.info(
            "ingest.assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)
        )


class Ingest:
    """The consumer loop. Runs in the background under `running()`."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Pipeline,
        index: SubscriptionIndex,
        submit: Submit,
        lease: Lease,
        metrics: Metrics,
        fatal: Fatal | None = None,
        tracing: Tracing | None = None,
        wake: Callable[[], None] = lambda: None,
        fed: Callable[[Iterable[str]], None] = lambda _: None,
    ) -> None:
        self._settings = settings
        self._wake = wake  # ordered deliveries were recorded: the claimer takes their heads
        self._fed = fed  # polling subscriptions' feeds got deliveries: their reads wake
        self._tracing = tracing or Tracing()
        self._fatal = fatal or Fatal()
        self._store = store
        self._index = index
        self._submit = submit
        self._lease = lease
        self._metrics = metrics
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._recorded: dict[TopicPartition, int] = {}  # recorded, not yet committed
        self._committed: dict[TopicPartition, int] = {}
        self._stopping = asyncio.Event()
        self._last_commit = 0.0
        self._committing: asyncio.Task[None] | None = None  # the loop's commit in flight
        self._last_batch_at = 0.0  # loop time of the last batch's first records
        self._streaming = False
        self._dead = DeadLetters(self._send_dead, metrics)
        self._readiness: Readiness | None = None
        self.joined = False

    async def ready(self) -> bool:
        return self.joined and self._consumer is not None

    async def dead_letters_flowing(self) -> bool:
        """False while a partition waits for the dead-letter topic to take its records."""
        return not self._dead.held()

    def register(self, readiness: Readiness) -> None:
        readiness.register("consumer", self.ready)
        readiness.register("dead_letter", self.dead_letters_flowing)
        self._readiness = readiness

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Ingest]:
        async with in_background(self._run(), "ingest", self._fatal) as task:
            try:
                yield self
            finally:
                # Let the loop commit what it recorded and leave the group; cut it short after
                # the grace (the block's end then cancels it).
                self._stopping.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), self._settings.shutdown_grace)
                if self._readiness is not None:
                    self._readiness.unregister("dead_letter")

    # -- the loop ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._start()
                break
            except KafkaError as exc:
                log.warning("ingest.kafka_unavailable", error=str(exc))
                await self._pause_for(2.0)
        else:
            return
        assert self._consumer is not None
        try:
            while not self._stopping.is_set():
                try:
                    records = await self._fetch()
                except KafkaError as exc:
                    self._poll_failed(exc)
                    await self._pause_for(1.0)
                    continue
                if records:
                    await self._handle(records)
                self._retry_dead_letters()
                self._commit_aside()
        finally:
            await self.commit_recorded(None)
            aside = self._committing
            error = aside.exception() if aside and aside.done() and not aside.cancelled() else None
            if error is not None:
                log.error("ingest.commit_error", error=repr(error))
            await self._dead.close()
            await self._stop()

    async def _fetch(self) -> Records:
        """Up to MAX_BATCH records: what the consumer has, or the first to come within half a
        second (STREAM_END in a stream, so that its end is noticed soon)."""
        assert self._consumer is not None
        timeout_ms = int(STREAM_END * 1000) if self._streaming else 500
        records: Records = await self._consumer.getmany(
            timeout_ms=timeout_ms, max_records=MAX_BATCH
        )
        count = sum(len(r) for r in records.values())
        now = asyncio.get_running_loop().time()
        # A stream: several records at once, or the last batch a moment ago. Waiting for more
        # pays only then (above ~200 events/s); a lone record after a pause has nothing to
        # wait for, and waiting would only add to its latency.
        streaming = count > 1 or (count > 0 and now - self._last_batch_at < STREAM_FETCH_WAIT)
        if count:
            self._last_batch_at = now
        self._adapt_fetch(streaming)
        return records

    def _adapt_fetch(self, streaming: bool) -> None:
        """With WEBHOOKS_KAFKA_FETCH_WAIT at 0 (the default), the fetch adapts to the rate: in
        a stream the broker holds each fetch up to STREAM_FETCH_WAIT for 64 KiB, otherwise it
        answers as soon as a record is there. Set on the consumer's fetcher, which reads both
        values for every request it builds (aiokafka has no public setter; a unit test checks
        that the attributes are still there). Why, and what it replaced:
        docs/decisions/0002-adaptive-fetch.md."""
        if streaming == self._streaming or self._settings.kafka_fetch_wait > 0:
            return
        self._streaming = streaming
        fetcher = getattr(self._consumer, "_fetcher", None)
        if fetcher is None or not hasattr(fetcher, "_fetch_min_bytes"):
            return
        options = fetch_options(STREAM_FETCH_WAIT if streaming else 0.0)
        fetcher._fetch_min_bytes = options["fetch_min_bytes"]
        fetcher._fetch_max_wait_ms = options["fetch_max_wait_ms"]

    async def _pause_for(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _start(self) -> None:
        s = self._settings
        producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            client_id="identity-webhooks-dlq",
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap_servers,
            group_id=s.kafka_group_id,
            client_id="identity-webhooks",
            enable_auto_commit=False,
            auto_offset_reset=s.kafka_auto_offset_reset.value,
            isolation_level="read_committed",
            max_partition_fetch_bytes=max(1024 * 1024, s.max_event_bytes * 4),
            **fetch_options(s.kafka_fetch_wait),
        )
        try:
            await producer.start()
            consumer.subscribe(s.kafka_topics, listener=_Listener(self))
            await consumer.start()
        except BaseException:
            await consumer.stop()
            await producer.stop()
            raise
        self._producer, self._consumer = producer, consumer
        log.info("ingest.started", topics=s.kafka_topics, group=s.kafka_group_id)

    def _poll_failed(self, exc: KafkaError) -> None:
        log.warning("ingest.fetch_failed", error=str(exc))
        if not isinstance(exc, _PARTITION_ERRORS):
            # The group refused or dropped us: no partition is ours until it assigns again.
            self.joined = False

    async def _stop(self) -> None:
        self.joined = False
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        log.info("ingest.stopped")

    # -- one batch ---------------------------------------------------------------------------

    async def _handle(self, records: Records) -> None:
        """One batch, in a span when tracing is on (first attempts become its children)."""
        if not self._tracing.enabled:
            await self._handle_batch(records)
            return
        with self._tracing.batch_span(
            {(tp.topic, tp.partition): len(r) for tp, r in records.items()}
        ):
            await self._handle_batch(records)

    async def _handle_batch(self, records: Records) -> None:
        assert self._consumer is not None
        batch = self._parse(records)
        # A partition whose bad records are not dead-lettered yet is paused: its good records
        # of this batch are still recorded (a replay of them is a no-op), but its offset stays
        # at the first unwritten bad one. Fetching on past it would keep ever more rejected
        # records in memory, and a restart would replay them all anyway.
        holds = await self._dead.write(batch.dead, batch.last)
        if held := holds.keys() & self._consumer.assignment():
            self._consumer.pause(*held)
        if not await self._match(batch):
            return  # stopping: nothing of this batch becomes committable
        created = await self._record(batch)
        if created is None:
            return
        for event_type, filtered in batch.filtered.items():
            self._metrics.child(self._metrics.events_filtered, event_type).inc(filtered)
        if created:
            by_event = {(e.org_id, e.id): e for e in batch.events}
            # An ordered delivery waits, unleased, until it heads its customer's queue: the
            # claimer, woken, takes the heads.
            self._submit(
                [
                    DeliveryJob.first(d, by_event[(d.org_id, d.event_id)])
                    for d in created
                    if d.ordering_key is None and not d.poll
                ]
            )
            if any(d.ordering_key is not None for d in created):
                self._wake()
            if fed := {d.subscription_id for d in created if d.poll}:
                self._fed(fed)
            for event, count in Counter(d.event for d in created).items():
                self._metrics.child(self._metrics.deliveries, event, "created").inc(count)
        duplicates = len(batch.deliveries) - len(created)
        if duplicates:
            self._metrics.deliveries.labels("any", "duplicate").inc(duplicates)
        owned = self._consumer.assignment()
        for tp, offset in batch.last.items():
            if tp in owned:  # a partition revoked meanwhile is someone else's to commit
                self._advance(tp, holds.get(tp, offset))

    def _parse(self, records: Records) -> _Batch:
        batch = _Batch([], [], [], {}, {})
        # Counted once per batch and kind: a metric's update takes a lock.
        consumed: Counter[tuple[str, str]] = Counter()
        for tp, partition_records in records.items():
            for record in partition_records:
                batch.last[tp] = record.offset + 1
                parsed = parse_event(record.value, self._settings.max_event_bytes)
                if isinstance(parsed, Rejected):
                    batch.dead.setdefault(tp, []).append((record, parsed.reason))
                elif isinstance(parsed, Skipped):
                    self._metrics.events_skipped.labels(tp.topic, "other").inc()
                else:
                    consumed[tp.topic, parsed.event] += 1
                    occurred_ms = int(parsed.occurred_at.timestamp() * 1000)
                    batch.accepted.append((parsed, record, occurred_ms))
        for (topic, event), count in consumed.items():
            self._metrics.child(self._metrics.events_consumed, topic, event).inc(count)
        return batch

    async def _match(self, batch: _Batch) -> bool:
        """Matches the accepted events against the index as it stands. Whether a subscription
        changed since (made a moment ago by another process's API, say) is asked by the write
        that records them (`record_matched`, `_record`), in the same round trip. A batch that
        matched nothing has no write to ask in: the index reads the store's revision first, and
        the batch is matched again if it moved (docs/decisions/0019-fewer-statements-per-event.md;
        docs/contract.md, "Events in": events at or after a subscription's createdAt). False
        when stop came first."""
        matched_at = self._index.revision
        self._accept_all(batch)
        if batch.events or not batch.accepted:
            return True
        try:
            await self._index.refresh()
        except (StoreUnavailable, OSError):
            # The index may lack a subscription made since it last loaded; an event that
            # occurred before then is matched right, but a newer one could miss it for good,
            # so such a batch waits for the index like a store outage.
            self._metrics.store_errors.labels("index_refresh").inc()
            newest = max((occurred for _, _, occurred in batch.accepted), default=None)
            if newest is None or self._index.covers(newest):
                return True
            if await self._while_store_away("index_refresh", self._index.refresh) is None:
                return False
        # Moved by this refresh or by another one in flight meanwhile (the API's, the timer's),
        # whose change this one, waiting for it, did not read again.
        if self._index.revision != matched_at:
            self._accept_all(batch)
        return True

    def _accept_all(self, batch: _Batch) -> None:
        """(Re)matches every accepted event of the batch against the index."""
        batch.events.clear()
        batch.deliveries.clear()
        batch.filtered.clear()
        for event, record, occurred_ms in batch.accepted:
            self._accept(event, record, occurred_ms, batch)

    def _accept(self, event: Accepted, record: Record, occurred_ms: int, batch: _Batch) -> None:
        matches, filtered = self._index.match(
            event.org_id, event.event, occurred_ms, event.document
        )
        if filtered:
            batch.filtered[event.event] += filtered
        if not matches:
            return
        batch.events.append(
            IncomingEvent(
                id=event.event_id,
                org_id=event.org_id,
                event=event.event,
                occurred_at=occurred_ms,
                body=event.body,
                sibling_service=_sibling(record),
                source=f"{record.topic}/{record.partition}/{record.offset}",
                customer_id=event.customer_id,
                verification_id=event.verification_id,
            )
        )
        batch.deliveries.extend(
            NewDelivery(
                ids.new_id(ids.DELIVERY),
                event.event_id,
                s.id,
                event.event,
                event.org_id,
                ordering_key=event.customer_id if s.ordered and not s.polled else None,
                poll=s.polled,
            )
            for s in matches
        )

    async def _send_dead(self, record: Record, reason: str, drop_value: bool) -> None:
        """One record to the dead-letter topic, with where it came from and why; without its
        value (its size in `x-dlq-value-dropped`) when the topic cannot take it."""
        assert self._producer is not None
        value: bytes | None = record.value
        headers = [
            *record.headers,
            ("x-dlq-reason", reason.encode()),
            ("x-dlq-source-topic", record.topic.encode()),
            ("x-dlq-source-partition", str(record.partition).encode()),
            ("x-dlq-source-offset", str(record.offset).encode()),
        ]
        if drop_value:
            headers.append(("x-dlq-value-dropped", str(len(value or b"")).encode()))
            value = None
        ack = await self._producer.send(
            self._settings.kafka_dlq_topic, value=value, key=record.key, headers=headers
        )
        await ack

    async def _record(self, batch: _Batch) -> list[NewDelivery] | None:
        """Writes the batch, waiting out a store outage; when the store's subscriptions moved
        past the index that matched it, the index catches up and the batch is matched and
        written again. None when stop came first."""
        while batch.events:
            revision = self._index.revision
            if revision is None:  # not loaded: the write has nothing to compare with
                if await self._while_store_away("index_refresh", self._index.refresh) is None:
                    return None
                self._accept_all(batch)
                continue
            recorded = await self._while_store_away(
                "record_events",
                functools.partial(
                    self._store.record_matched,
                    batch.events,
                    batch.deliveries,
                    self._lease,
                    revision,
                ),
            )
            if not isinstance(recorded, IndexBehind):
                return recorded
            log.debug("ingest.index_behind", revision=recorded.revision)
            if await self._while_store_away("index_refresh", self._index.refresh) is None:
                return None
            self._accept_all(batch)
        return []

    async def _while_store_away(self, operation: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """`call()`, retried while the store is away: meanwhile every partition is paused and
        polling goes on (so the group keeps us). None when stop came first."""
        backoff = 0.2
        paused = False
        try:
            while True:
                try:
                    return await call()
                except (StoreUnavailable, OSError) as exc:
                    self._metrics.store_errors.labels(operation).inc()
                    if not paused:
                        log.warning(
                            "ingest.store_unavailable_paused", operation=operation, error=str(exc)
                        )
                    paused = True
                    if self._stopping.is_set():
                        return None
                    await self._poll_paused(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            if paused:
                self._resume()
                log.info("ingest.store_back_resumed", operation=operation)

    def _resume(self) -> None:
        """Resumes every partition but those held for the dead-letter topic."""
        assert self._consumer is not None
        self._consumer.resume(*(self._consumer.assignment() - self._dead.held()))

    def _retry_dead_letters(self) -> None:
        """Moves the dead-letter writes on; a partition whose records are all written now
        resumes, and its offset moves to the end of the batch that held it."""
        released = self._dead.retry()
        if not released:
            return
        assert self._consumer is not None
        owned = self._consumer.assignment()
        for tp, end in released.items():
            if tp in owned:
                self._advance(tp, end)
        self._consumer.resume(*(owned & released.keys()))

    async def _poll_paused(self, seconds: float) -> None:
        """Polls with every partition paused, so the group keeps us. A rebalance meanwhile
        hands out partitions unpaused: whatever they return is not ours to take yet, so each
        such partition is rewound to its first returned offset and paused again."""
        assert self._consumer is not None
        self._consumer.pause(*self._consumer.assignment())
        try:
            got = await self._consumer.getmany(timeout_ms=int(seconds * 1000))
        except KafkaError as exc:
            self._poll_failed(exc)
            return
        for tp, records in got.items():
            if records:
                self._consumer.seek(tp, records[0].offset)
        self._consumer.pause(*self._consumer.assignment())

    # -- offsets -----------------------------------------------------------------------------

    def _advance(self, tp: TopicPartition, offset: int) -> None:
        """Makes `offset` committable for `tp`: every record before it is recorded or
        dead-lettered."""
        self._recorded[tp] = max(offset, self._recorded.get(tp, 0))

    async def commit_if_due(self) -> None:
        """Commits what is recorded, and updates the lag gauge, once per COMMIT_INTERVAL (the
        one place that keeps that beat)."""
        if asyncio.get_running_loop().time() - self._last_commit >= COMMIT_INTERVAL:
            self._last_commit = asyncio.get_running_loop().time()
            await self.commit_recorded(None)
            self._update_lag()

    def _commit_aside(self) -> None:
        """`commit_if_due` for the loop, which does not wait for the broker's answer: a commit
        takes a round trip to the group's coordinator (2 ms, and tens of milliseconds when the
        broker is busy), and a record that arrived meanwhile would wait that long before its
        batch began. One commit at a time; a failed one's error is raised here, in the loop
        (docs/decisions/0019-fewer-statements-per-event.md)."""
        if self._committing is not None:
            if not self._committing.done():
                return
            committed, self._committing = self._committing, None
            committed.result()
        if asyncio.get_running_loop().time() - self._last_commit >= COMMIT_INTERVAL:
            self._committing = asyncio.create_task(self.commit_if_due())

    async def commit_recorded(self, only: set[TopicPartition] | None) -> None:
        """Commits recorded offsets of partitions this consumer still owns (and, when given,
        only of those in `only`), after the loop's commit in flight: commits go out in order."""
        aside = self._committing
        if aside is not None and aside is not asyncio.current_task() and not aside.done():
            await asyncio.wait([aside])
        consumer = self._consumer
        if consumer is None or not self._recorded:
            return
        owned = consumer.assignment()
        offsets = {
            tp: offset
            for tp, offset in self._recorded.items()
            if tp in owned and (only is None or tp in only)
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The records are recorded; a replay after the rebalance is a no-op.
            log.warning("ingest.commit_failed", error=str(exc))
            return
        for tp, offset in offsets.items():
            if self._recorded.get(tp) == offset:
                del self._recorded[tp]
            self._committed[tp] = offset
            self._metrics.offsets_committed.labels(tp.topic).inc()

    async def learn_committed(self, partitions: set[TopicPartition]) -> None:
        """The group's committed offsets of newly assigned partitions, for the lag gauge."""
        if self._consumer is None:
            return
        for tp in partitions:
            with contextlib.suppress(KafkaError):
                offset = await self._consumer.committed(tp)
                if offset is not None:
                    self._committed[tp] = offset

    def forget(self, partitions: set[TopicPartition]) -> None:
        self._dead.forget(partitions)
        for tp in partitions:
            self._recorded.pop(tp, None)
            self._committed.pop(tp, None)
            with contextlib.suppress(KeyError):
                self._metrics.consumer_lag.remove(tp.topic, str(tp.partition))

    def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            done = self._committed.get(tp)
            if high is None or done is None:
                continue
            self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, high - done))


def fetch_options(wait: float) -> dict[str, int]:
    """The broker's hold on a fetch. 0: it answers as soon as one byte is there (or after
    500 ms when idle). Above 0: it holds a fetch until 64 KiB are there or `wait` has passed.
    WEBHOOKS_KAFKA_FETCH_WAIT at 0 (the default) switches between the two with the rate (see
    `Ingest._adapt_fetch`); above 0 it fixes the second, which saves a little CPU per delivery
    near the service's limit at the price of that much more latency and of a hundred fetches a
    second when idle (docs/decisions/0002-adaptive-fetch.md)."""
    if wait <= 0:
        return {"fetch_min_bytes": 1, "fetch_max_wait_ms": 500}
    return {"fetch_min_bytes": FETCH_BATCH_BYTES, "fetch_max_wait_ms": max(1, int(wait * 1000))}


def _sibling(record: Record) -> str | None:
    for key, value in record.headers:
        if key.lower() == SIBLING_HEADER and value:
            text = value.decode("utf-8", errors="replace").strip()
            return text if _SIBLING.match(text) else None
    return None
