"""Rejected records on their way to the dead-letter topic, held per partition until written.

Ingest hands over each batch's rejected records (SPEC 1). Their writes start at once and the batch
waits ACK_WAIT for the acknowledgements, which on a healthy broker come in milliseconds. A
partition whose rejected records are not all acknowledged by then is *held*: ingest pauses it, and
its committable offset stays at its first record not yet written, so no offset is committed past
a record that is neither recorded nor dead-lettered. Its writes go on in the background, retried
with a backoff (RETRY_FIRST doubling to RETRY_MAX) whatever the error — a missing topic, a refused
ACL, a broker down — because a crash would only replay the same record into the same error; the
consume loop meanwhile keeps polling the other partitions. Once every one is written, the
partition is released and its offset moves to the end of the batch that held it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError

from service.metrics import Metrics

log = structlog.get_logger(__name__)

Record = ConsumerRecord[bytes, bytes]
Send = Callable[[Record, str, bool], Awaitable[None]]
"""Writes one rejected record (record, reason, without its value) and waits for the ack."""

# A batch waits this long for its dead letters' acks before their partitions are held: far
# above a healthy broker's few milliseconds, far below a missing topic's 40 s metadata wait.
ACK_WAIT = 2.0
RETRY_FIRST = 1.0
RETRY_MAX = 30.0
_SIZE_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError)


@dataclass(eq=False, slots=True)
class _Letter:
    record: Record
    reason: str
    drop_value: bool = False
    write: asyncio.Task[KafkaError | None] | None = None


@dataclass(slots=True)
class _Held:
    letters: list[_Letter]  # in offset order; the first is where the committable offset stays
    end: int  # offset after the batch that held them
    backoff: float = RETRY_FIRST
    retry_at: float = 0.0


class DeadLetters:
    """Dead-letter writes of the partitions this consumer owns; see the module docstring."""

    def __init__(self, send: Send, metrics: Metrics) -> None:
        self._send = send
        self._metrics = metrics
        self._held: dict[TopicPartition, _Held] = {}

    def held(self) -> set[TopicPartition]:
        """Partitions waiting for a dead-letter write: ingest keeps them paused."""
        return set(self._held)

    async def write(
        self, dead: dict[TopicPartition, list[tuple[Record, str]]], ends: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Writes a batch's rejected records. Returns, per partition now held, the offset of
        its first record not yet written: the most that may be committed for it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACK_WAIT
        batch: dict[TopicPartition, _Held] = {}
        for tp, end in ends.items():
            letters = [_Letter(record, reason) for record, reason in dead.get(tp, ())]
            held = self._held.get(tp)
            if held is not None:
                # Ingest keeps held partitions paused, so a batch should bring none of their
                # records; if one does, they join the hold rather than overtake it.
                held.letters += letters
                held.end = end
            elif letters:
                held = self._held[tp] = _Held(letters, end, retry_at=loop.time())
            else:
                continue
            batch[tp] = held
            for letter in letters:
                self._start(letter)
        # Held from the start, so that a revocation while we wait (forget) cancels them too.
        # Settled more than once when a record too large goes again without its value.
        while (writes := _in_flight(batch.values())) and (left := deadline - loop.time()) > 0:
            await asyncio.wait(writes, timeout=left)
            now = loop.time()
            for tp, held in batch.items():
                self._settle(tp, held, now)
        holds: dict[TopicPartition, int] = {}
        for tp, held in batch.items():
            if self._held.get(tp) is not held:
                continue  # revoked meanwhile: its new owner replays from the committed offset
            if not held.letters:
                del self._held[tp]
                continue
            holds[tp] = held.letters[0].record.offset
            log.warning(
                "ingest.partition_held_for_dlq",
                topic=tp.topic,
                partition=tp.partition,
                offset=holds[tp],
            )
        self._metrics.partitions_held_for_dlq.set(len(self._held))
        return holds

    def retry(self) -> dict[TopicPartition, int]:
        """Takes in finished writes and restarts failed ones that are due; never waits.
        Returns the partitions whose records are all written now, each with the offset after
        the batch that held it."""
        now = asyncio.get_running_loop().time()
        released: dict[TopicPartition, int] = {}
        for tp, held in list(self._held.items()):
            self._settle(tp, held, now)
            if not held.letters:
                del self._held[tp]
                released[tp] = held.end
                log.info("ingest.partition_released", topic=tp.topic, partition=tp.partition)
        self._metrics.partitions_held_for_dlq.set(len(self._held))
        return released

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drops revoked partitions: their new owner replays from the committed offset, which
        never passed a record not yet written."""
        for tp in partitions:
            held = self._held.pop(tp, None)
            if held is not None:
                _cancel(held.letters)
        self._metrics.partitions_held_for_dlq.set(len(self._held))

    async def close(self) -> None:
        """Cancels the writes still going (on stop: what was not acknowledged is replayed)."""
        writes = [write for held in self._held.values() for write in _cancel(held.letters)]
        self._held.clear()
        await asyncio.gather(*writes, return_exceptions=True)
        self._metrics.partitions_held_for_dlq.set(0)

    def _start(self, letter: _Letter) -> asyncio.Task[KafkaError | None]:
        letter.write = asyncio.create_task(self._attempt(letter))
        return letter.write

    async def _attempt(self, letter: _Letter) -> KafkaError | None:
        # A Kafka error is an outcome to act on; anything else is a bug, raised by result().
        try:
            await self._send(letter.record, letter.reason, letter.drop_value)
        except KafkaError as exc:
            return exc
        return None

    def _settle(self, tp: TopicPartition, held: _Held, now: float) -> None:
        """Takes in the held letters' finished writes; restarts the failed ones when due."""
        failed = False
        waiting: list[_Letter] = []
        for letter in held.letters:
            if letter.write is None:
                waiting.append(letter)
                continue
            if not letter.write.done():
                waiting.append(letter)
                continue
            error = letter.write.result()
            letter.write = None
            if error is None:
                self._written(letter)
                continue
            waiting.append(letter)
            if self._failed(tp, letter, error):
                failed = True
        held.letters = waiting
        if failed:
            held.retry_at = now + held.backoff
            held.backoff = min(held.backoff * 2, RETRY_MAX)
        if now >= held.retry_at:
            for letter in held.letters:
                if letter.write is None:
                    self._start(letter)

    def _failed(self, tp: TopicPartition, letter: _Letter, error: KafkaError) -> bool:
        """Counts and logs a refused write; False when it is retried at once instead of after
        the backoff (a record too large goes again without its value)."""
        name = type(error).__name__
        self._metrics.child(self._metrics.dlq_write_failures, name).inc()
        log.warning(
            "ingest.dlq_write_failed",
            topic=tp.topic,
            partition=tp.partition,
            offset=letter.record.offset,
            error=name,
            retriable=bool(getattr(error, "retriable", False)),
        )
        if isinstance(error, _SIZE_ERRORS) and not letter.drop_value:
            letter.drop_value = True
            letter.write = None
            self._start(letter)
            return False
        # Refused even without its value, the record is not what is wrong (the topic's size
        # limit or the broker is): the next attempt carries the value again.
        letter.drop_value = False
        return True

    def _written(self, letter: _Letter) -> None:
        record = letter.record
        self._metrics.events_dead_lettered.labels(record.topic, letter.reason.split(":")[0]).inc()
        log.warning(
            "ingest.dead_lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            reason=letter.reason,
        )


def _in_flight(helds: Iterable[_Held]) -> list[asyncio.Task[KafkaError | None]]:
    return [
        letter.write
        for held in helds
        for letter in held.letters
        if letter.write is not None and not letter.write.done()
    ]


def _cancel(letters: list[_Letter]) -> list[asyncio.Task[KafkaError | None]]:
    """Cancels the letters' writes and lets go of the letters, so that no one settles them."""
    writes = [letter.write for letter in letters if letter.write is not None]
    for write in writes:
        write.cancel()
    letters.clear()
    return writes
