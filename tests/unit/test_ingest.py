"""The consume loop's ordering rules, with fakes for Kafka and the store: nothing is committed
before it is recorded, and a store outage pauses the partitions while polling goes on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from service.ingest import COMMIT_INTERVAL, Ingest, Lease, fetch_options
from service.matching import SubscriptionIndex
from service.metrics import Metrics
from service.samples import sample_event
from service.settings import load_settings
from service.store import Store, StoreUnavailable
from service.store.models import DeliveryJob, IncomingEvent, NewDelivery, Subscription

TP = TopicPartition("identity.verification.created", 0)


def Record(offset: int, value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    """A record as aiokafka hands it out."""
    return ConsumerRecord(
        topic=TP.topic,
        partition=TP.partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"cus_1",
        value=value,
        checksum=None,
        serialized_key_size=5,
        serialized_value_size=len(value or b""),
        headers=(),
    )


@dataclass
class FakeConsumer:
    log: list[str] = field(default_factory=list)
    committed: dict[TopicPartition, int] = field(default_factory=dict)

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def pause(self, *partitions: TopicPartition) -> None:
        self.log.append("pause")

    def resume(self, *partitions: TopicPartition) -> None:
        self.log.append("resume")

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, Any]:
        self.log.append("poll")
        # A rebalance hands the partition back unpaused once: records arrive while paused.
        if self.log.count("poll") == 2:
            return {TP: [Record(41, b"{}"), Record(42, b"{}")]}
        return {}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.log.append(f"seek {offset}")

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.log.append(f"commit {offsets[TP]}")
        self.committed.update(offsets)


@dataclass
class FlakyStore:
    failures: int
    log: list[str]
    recorded: list[NewDelivery] = field(default_factory=list)

    async def record_events(
        self, events: Sequence[IncomingEvent], deliveries: Sequence[NewDelivery], *_: object
    ) -> list[NewDelivery]:
        if self.failures:
            self.failures -= 1
            self.log.append("store down")
            raise StoreUnavailable("connection refused")
        self.log.append("recorded")
        self.recorded.extend(deliveries)
        return list(deliveries)


@dataclass
class FakeDispatcher:
    submitted: list[DeliveryJob] = field(default_factory=list)

    def submit(self, jobs: Sequence[DeliveryJob]) -> None:
        self.submitted.extend(jobs)


class FakeIndex:
    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription

    async def refresh(self) -> bool:
        return False

    def match(self, org_id: str, event: str, occurred_at_ms: int) -> tuple[Subscription, ...]:
        return (self.subscription,) if org_id == self.subscription.org_id else ()


def subscription() -> Subscription:
    return Subscription(
        "whk_1",
        "org_a",
        "https://x.example/",
        ("verification.created",),
        None,
        True,
        None,
        0,
        0,
        None,
        "qe_whsec_x",
    )


def make(failures: int) -> tuple[Ingest, FakeConsumer, FlakyStore, FakeDispatcher]:
    consumer = FakeConsumer()
    store = FlakyStore(failures, consumer.log)
    dispatcher = FakeDispatcher()
    ingest = Ingest(
        settings=load_settings(),
        store=cast(Store, store),
        index=cast(SubscriptionIndex, FakeIndex(subscription())),
        submit=dispatcher.submit,
        lease=Lease("me", 60_000),
        metrics=Metrics(),
    )
    ingest._consumer = cast(AIOKafkaConsumer, consumer)
    return ingest, consumer, store, dispatcher


def event(org: str = "org_a") -> bytes:
    return orjson.dumps(sample_event("verification.created", org, datetime.now(UTC)))


async def test_commit_comes_after_record_and_covers_the_batch() -> None:
    ingest, consumer, store, dispatcher = make(failures=0)
    await ingest._handle(
        {TP: [Record(7, event()), Record(8, event("org_other")), Record(9, event())]}
    )
    assert consumer.log == ["recorded"]
    await ingest.commit_if_due()
    assert consumer.log == ["recorded", "commit 10"]
    assert len(store.recorded) == 2
    assert [job.id for job in dispatcher.submitted] == [d.id for d in store.recorded]


async def test_store_outage_pauses_keeps_polling_and_resumes() -> None:
    ingest, consumer, _, dispatcher = make(failures=3)
    await ingest._handle({TP: [Record(0, event())]})
    await ingest.commit_if_due()
    assert consumer.log[0] == "store down"
    assert consumer.log[1] == "pause"
    assert consumer.log.count("poll") == 3
    # What a poll returned while we could not record is rewound, not skipped.
    second_poll = [i for i, entry in enumerate(consumer.log) if entry == "poll"][1]
    assert consumer.log[second_poll + 1] == "seek 41"
    assert consumer.log.count("store down") == 3
    # Nothing was committed until the record went in, and the partitions came back.
    first_commit = consumer.log.index("commit 1")
    assert consumer.log.index("recorded") < first_commit
    assert "resume" in consumer.log[consumer.log.index("recorded") :]
    assert consumer.committed == {TP: 1}
    assert len(dispatcher.submitted) == 1


async def test_a_batch_of_only_unmatched_events_still_commits() -> None:
    ingest, consumer, store, _ = make(failures=5)
    await ingest._handle({TP: [Record(3, event("org_nobody"))]})
    await ingest.commit_if_due()
    # No store write was needed, so an outage does not hold the offset back.
    assert consumer.log == ["commit 4"]
    assert store.failures == 5


async def test_offsets_are_committed_at_most_every_commit_interval() -> None:
    ingest, consumer, _, _ = make(failures=0)
    await ingest._handle({TP: [Record(1, event())]})
    await ingest.commit_if_due()
    await ingest._handle({TP: [Record(2, event())]})
    await ingest.commit_if_due()  # too soon: one broker round trip covers many batches
    assert consumer.log == ["recorded", "commit 2", "recorded"]
    ingest._last_commit -= COMMIT_INTERVAL
    await ingest.commit_if_due()
    assert consumer.log[-1] == "commit 3"
    assert consumer.committed == {TP: 3}


async def test_commits_skip_partitions_no_longer_owned() -> None:
    ingest, consumer, _, _ = make(failures=0)
    gone = TopicPartition("identity.verification.created", 2)
    ingest._recorded[gone] = 5
    ingest._recorded[TP] = 3
    await ingest.commit_recorded(None)
    assert consumer.committed == {TP: 3}


def test_the_fetch_wait_setting_picks_thefetch_options() -> None:
    # 0: aiokafka's own defaults, an answer as soon as any record is there.
    assert fetch_options(0.0) == {"fetch_min_bytes": 1, "fetch_max_wait_ms": 500}
    # Above 0: fuller fetches, held at most that long.
    assert fetch_options(0.01) == {"fetch_min_bytes": 64 * 1024, "fetch_max_wait_ms": 10}
    assert fetch_options(0.0001)["fetch_max_wait_ms"] == 1
