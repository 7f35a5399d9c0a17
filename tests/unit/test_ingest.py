"""The consume loop's ordering rules, with fakes for Kafka and the store: nothing is committed
before it is recorded or dead-lettered; a store outage, a stale subscription index or a
dead-letter topic that refuses writes pauses partitions while polling goes on; readiness follows
the consumer's group membership."""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    MessageSizeTooLargeError,
    OffsetOutOfRangeError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from service.clock import now_ms
from service.domain import DeliveryJob, IncomingEvent, NewDelivery, Subscription
from service.health import Readiness
from service.ingest import COMMIT_INTERVAL, Ingest, _Listener, fetch_options
from service.matching import Matched, SubscriptionIndex
from service.metrics import Metrics
from service.samples import sample_event
from service.settings import load_settings
from service.store import ChangedSubscriptions, IndexBehind, Lease, Store, StoreUnavailable
from tests.support.virtual_time import in_virtual_time

TP = TopicPartition("identity.verification.created", 0)
TP1 = TopicPartition("identity.verification.created", 1)
POISON = b"not json"


def Record(
    offset: int, value: bytes | None, tp: TopicPartition = TP
) -> ConsumerRecord[bytes, bytes]:
    """A record as aiokafka hands it out."""
    return ConsumerRecord(
        topic=tp.topic,
        partition=tp.partition,
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
    commits: dict[TopicPartition, int] = field(default_factory=dict)
    assigned: set[TopicPartition] = field(default_factory=lambda: {TP})
    paused: set[TopicPartition] = field(default_factory=set)
    # What getmany() answers in turn (an exception is raised), then nothing; None keeps the
    # store-outage story below.
    script: list[Any] | None = None

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self.log.append("pause")
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.log.append("resume")
        self.paused.difference_update(partitions)

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, Any]:
        self.log.append("poll")
        if self.script is not None:
            if not self.script:
                await asyncio.sleep(min(timeout_ms, 20) / 1000)
                return {}
            step = self.script.pop(0)
            if isinstance(step, BaseException):
                raise step
            return cast(dict[Any, Any], step)
        # A rebalance hands the partition back unpaused once: records arrive while paused.
        if self.log.count("poll") == 2:
            return {TP: [Record(41, b"{}"), Record(42, b"{}")]}
        return {}

    async def committed(self, partition: TopicPartition) -> int | None:
        return self.commits.get(partition)

    def highwater(self, partition: TopicPartition) -> int | None:
        return None

    async def stop(self) -> None:
        self.log.append("stop")

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.log.append(f"seek {offset}")

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.log.append(" ".join(["commit", *(str(offsets[tp]) for tp in sorted(offsets))]))
        self.commits.update(offsets)


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

    async def record_matched(
        self,
        events: Sequence[IncomingEvent],
        deliveries: Sequence[NewDelivery],
        lease: Lease,
        revision: int,
    ) -> list[NewDelivery] | IndexBehind:
        return await self.record_events(events, deliveries, lease)


@dataclass
class FakeDispatcher:
    submitted: list[DeliveryJob] = field(default_factory=list)

    def submit(self, jobs: Sequence[DeliveryJob]) -> None:
        self.submitted.extend(jobs)


@dataclass
class FakeProducer:
    """The dead-letter producer: `broken` fails every write with that error (`"hang"`: the
    write never completes, as when the topic's metadata never comes), else writes succeed."""

    broken: KafkaError | str | None = None
    # Writes refused only while they carry a value (the record is too large for the topic).
    too_large_with_value: bool = False
    sent: list[tuple[str, bytes | None, dict[str, bytes]]] = field(default_factory=list)

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[None]:
        if self.broken == "hang":
            await asyncio.Event().wait()
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if isinstance(self.broken, KafkaError):
            ack.set_exception(copy.copy(self.broken))
        elif self.too_large_with_value and value is not None:
            ack.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append((topic, value, dict(headers or [])))
            ack.set_result(None)
        return ack

    async def stop(self) -> None:
        pass


class FakeIndex:
    revision = 1

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription

    async def refresh(self, *, force: bool = False) -> bool:
        return False

    def match(
        self, org_id: str, event: str, occurred_at_ms: int, envelope: Mapping[str, Any]
    ) -> Matched:
        return Matched((self.subscription,) if org_id == self.subscription.org_id else (), 0)


def subscription(subscription_id: str = "whk_1", created_at: int = 0) -> Subscription:
    return Subscription(
        subscription_id,
        "org_a",
        "https://x.example/",
        ("verification.created",),
        None,
        True,
        None,
        created_at,
        created_at,
        None,
        "qe_whsec_x",
    )


def make(failures: int) -> tuple[Ingest, FakeConsumer, FlakyStore, FakeDispatcher]:
    consumer = FakeConsumer()
    store = FlakyStore(failures, consumer.log)
    dispatcher = FakeDispatcher()
    index = cast(SubscriptionIndex, FakeIndex(subscription()))
    return wired(consumer, store, index, dispatcher), consumer, store, dispatcher


def wired(
    consumer: FakeConsumer, store: FlakyStore, index: SubscriptionIndex, dispatcher: FakeDispatcher
) -> Ingest:
    """An Ingest on the fakes, as if started."""
    ingest = Ingest(
        settings=load_settings(),
        store=cast(Store, store),
        index=index,
        submit=dispatcher.submit,
        lease=Lease("me", 60_000),
        metrics=Metrics(),
    )
    ingest._consumer = cast(AIOKafkaConsumer, consumer)
    ingest._producer = cast(AIOKafkaProducer, FakeProducer())
    return ingest


def producer_of(ingest: Ingest) -> FakeProducer:
    return cast(FakeProducer, ingest._producer)


def event(org: str = "org_a", at: datetime | None = None) -> bytes:
    return orjson.dumps(sample_event("verification.created", org, at or datetime.now(UTC)))


@in_virtual_time
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


@in_virtual_time
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
    assert consumer.commits == {TP: 1}
    assert len(dispatcher.submitted) == 1


@in_virtual_time
async def test_a_batch_of_only_unmatched_events_still_commits() -> None:
    ingest, consumer, store, _ = make(failures=5)
    await ingest._handle({TP: [Record(3, event("org_nobody"))]})
    await ingest.commit_if_due()
    # No store write was needed, so an outage does not hold the offset back.
    assert consumer.log == ["commit 4"]
    assert store.failures == 5


@in_virtual_time
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
    assert consumer.commits == {TP: 3}


@in_virtual_time
async def test_commits_skip_partitions_no_longer_owned() -> None:
    ingest, consumer, _, _ = make(failures=0)
    gone = TopicPartition("identity.verification.created", 2)
    ingest._recorded[gone] = 5
    ingest._recorded[TP] = 3
    await ingest.commit_recorded(None)
    assert consumer.commits == {TP: 3}


def test_the_fetch_wait_setting_picks_thefetch_options() -> None:
    # 0: aiokafka's own defaults, an answer as soon as any record is there.
    assert fetch_options(0.0) == {"fetch_min_bytes": 1, "fetch_max_wait_ms": 500}
    # Above 0: fuller fetches, held at most that long.
    assert fetch_options(0.01) == {"fetch_min_bytes": 64 * 1024, "fetch_max_wait_ms": 10}
    assert fetch_options(0.0001)["fetch_max_wait_ms"] == 1


# -- the fetch adapts to the rate -----------------------------------------------------------


@dataclass
class FakeFetcher:
    _fetch_min_bytes: int = 1
    _fetch_max_wait_ms: int = 500


@in_virtual_time
async def test_in_a_stream_the_broker_holds_fetches_and_a_lone_record_is_fetched_at_once() -> None:
    ingest, consumer, _, _ = make(failures=0)
    fetcher = FakeFetcher()
    consumer._fetcher = fetcher  # type: ignore[attr-defined]
    consumer.script = [
        {TP: [Record(1, event())]},  # a lone record: nothing to wait for
        {TP: [Record(2, event()), Record(3, event())]},  # several at once: a stream
        {TP: [Record(4, event())]},  # a moment after the last batch: still a stream
    ]
    await ingest._fetch()
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (1, 500)
    await ingest._fetch()
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (64 * 1024, 5)
    await ingest._fetch()
    assert fetcher._fetch_max_wait_ms == 5
    # The stream ends: a fetch that brings nothing (after 50 ms in a stream, not half a
    # second) puts the broker back to answering at once.
    assert await ingest._fetch() == {}
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (1, 500)
    # A lone record after a pause is not a stream.
    ingest._last_batch_at -= 1
    consumer.script = [{TP: [Record(5, event())]}]
    await ingest._fetch()
    assert fetcher._fetch_max_wait_ms == 500


@in_virtual_time
async def test_a_fixed_fetch_wait_is_left_alone() -> None:
    ingest, consumer, _, _ = make(failures=0)
    ingest._settings = load_settings(kafka_fetch_wait=0.01)
    fetcher = FakeFetcher(64 * 1024, 10)
    consumer._fetcher = fetcher  # type: ignore[attr-defined]
    consumer.script = [{TP: [Record(1, event()), Record(2, event())]}]
    await ingest._fetch()
    assert (fetcher._fetch_min_bytes, fetcher._fetch_max_wait_ms) == (64 * 1024, 10)


def test_aiokafka_still_builds_each_fetch_from_the_attributes_ingest_adapts() -> None:
    # Ingest sets these private attributes of aiokafka's Fetcher; should an upgrade rename
    # them, the fetch would silently stop adapting. This fails instead.
    source = inspect.getsource(Fetcher._get_actions_per_node)
    assert "self._fetch_max_wait_ms" in source
    assert "self._fetch_min_bytes" in source
    assert "_fetch_min_bytes" in inspect.getsource(Fetcher.__init__)


# -- readiness follows the group ---------------------------------------------------------------


@in_virtual_time
async def test_readiness_follows_the_group_assignment() -> None:
    ingest, _, _, _ = make(failures=0)
    listener = _Listener(ingest)
    assert not await ingest.ready()
    await listener.on_partitions_assigned({TP})
    assert await ingest.ready()
    # Every rebalance, and the group dropping us, starts with a revocation: not ready until
    # the group assigns again.
    await listener.on_partitions_revoked({TP})
    assert not await ingest.ready()
    await listener.on_partitions_assigned(set())
    assert await ingest.ready()


@in_virtual_time
async def test_a_group_error_or_a_stop_makes_the_consumer_unready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingest, consumer, _, _ = make(failures=0)
    # A partition's fetch error says nothing about the group; a group error does.
    consumer.script = [OffsetOutOfRangeError({TP: 1}), GroupAuthorizationFailedError()]
    seen: list[bool] = []

    async def start() -> None:
        ingest.joined = True

    async def pause_for(seconds: float) -> None:
        seen.append(await ingest.ready())

    monkeypatch.setattr(ingest, "_start", start)
    monkeypatch.setattr(ingest, "_pause_for", pause_for)
    task = asyncio.create_task(ingest._run())
    async with asyncio.timeout(5):
        while len(seen) < 2:
            await asyncio.sleep(0.01)
    assert seen == [True, False]
    await _Listener(ingest).on_partitions_assigned({TP})
    assert await ingest.ready()
    ingest._stopping.set()
    await asyncio.wait_for(task, 5)
    assert consumer.log[-1] == "stop"
    assert not await ingest.ready()


# -- a stale subscription index ----------------------------------------------------------------


@dataclass
class IndexedStore(FlakyStore):
    """Also what the subscription index loads; the revision query fails `revision_failures`
    times."""

    subscriptions: list[Subscription] = field(default_factory=list)
    revision: int = 1
    revision_failures: int = 0

    async def record_matched(
        self,
        events: Sequence[IncomingEvent],
        deliveries: Sequence[NewDelivery],
        lease: Lease,
        revision: int,
    ) -> list[NewDelivery] | IndexBehind:
        if revision != self.revision:
            self.log.append("index behind")
            return IndexBehind(self.revision)
        return await self.record_events(events, deliveries, lease)

    async def subscriptions_revision(self) -> int:
        if self.revision_failures:
            self.revision_failures -= 1
            self.log.append("index refresh failed")
            raise StoreUnavailable("connection refused")
        self.log.append("revision read")
        return self.revision

    async def active_subscriptions(self) -> list[Subscription]:
        return list(self.subscriptions)

    async def changed_subscriptions(self, after: int) -> ChangedSubscriptions:
        """Every subscription, each time (the fake keeps no stamps): a change made to the list
        is applied, one removed from it is not (the tests only add)."""
        return ChangedSubscriptions(list(self.subscriptions), [], self.revision)


async def make_indexed(
    subscriptions: Sequence[Subscription] = (),
) -> tuple[Ingest, FakeConsumer, IndexedStore]:
    consumer = FakeConsumer(script=[])
    store = IndexedStore(0, consumer.log, subscriptions=list(subscriptions))
    index = SubscriptionIndex(cast(Store, store))
    await index.refresh(force=True)
    return wired(consumer, store, index, FakeDispatcher()), consumer, store


@in_virtual_time
async def test_events_newer_than_a_stale_index_wait_for_it_to_load() -> None:
    ingest, consumer, store = await make_indexed()
    # After the index loaded, a subscription is made (by another replica's API, say), and an
    # event it wants occurs; then the store stops answering the index's refresh for a while.
    created = now_ms() + 50
    store.subscriptions.append(subscription("whk_new", created))
    store.revision += 1
    store.revision_failures = 2
    occurred = datetime.fromtimestamp((created + 10) / 1000, UTC)
    await ingest._handle({TP: [Record(0, event(at=occurred))]})
    await ingest.commit_if_due()
    # Matched only once the index caught up, never against the stale one: no event is lost.
    assert [d.subscription_id for d in store.recorded] == ["whk_new"]
    assert consumer.log.count("index refresh failed") == 2
    assert consumer.log.index("pause") < consumer.log.index("recorded")
    assert consumer.log.index("recorded") < consumer.log.index("commit 1")
    assert "resume" in consumer.log


@in_virtual_time
async def test_a_failed_refresh_does_not_hold_events_the_index_already_covers() -> None:
    ingest, consumer, store = await make_indexed([subscription("whk_old", 0)])
    store.revision_failures = 5
    # Occurred before the index last loaded: the index as it stands is right for it.
    occurred = datetime.now(UTC) - timedelta(seconds=5)
    await ingest._handle({TP: [Record(0, event(at=occurred))]})
    assert [d.subscription_id for d in store.recorded] == ["whk_old"]
    assert "pause" not in consumer.log


@in_virtual_time
async def test_a_write_behind_the_stores_subscriptions_is_matched_again_before_it_is_recorded() -> (
    None
):
    ingest, consumer, store = await make_indexed([subscription("whk_old", 0)])
    # Another replica makes a subscription the event wants; this index has not read it.
    store.subscriptions.append(subscription("whk_new", now_ms() - 1000))
    store.revision += 1
    await ingest._handle({TP: [Record(0, event())]})
    # The write found the index behind and wrote nothing; the index caught up, and the
    # batch, matched again, was written once with both.
    assert consumer.log.count("index behind") == 1
    assert consumer.log.count("recorded") == 1
    assert sorted(d.subscription_id for d in store.recorded) == ["whk_new", "whk_old"]
    # With the index current, an event costs the write alone: no revision read before it.
    before = consumer.log.count("revision read")
    await ingest._handle({TP: [Record(1, event())]})
    assert consumer.log.count("revision read") == before
    assert consumer.log.count("recorded") == 2


@dataclass
class GatedStore(IndexedStore):
    """An `IndexedStore` whose read of changes waits for `gate` while it is set."""

    gate: asyncio.Event | None = None

    async def changed_subscriptions(self, after: int) -> ChangedSubscriptions:
        if self.gate is not None:
            await self.gate.wait()
        return await super().changed_subscriptions(after)


@in_virtual_time
async def test_a_batch_that_matched_nothing_is_matched_again_after_a_refresh_in_flight() -> None:
    consumer = FakeConsumer(script=[])
    store = GatedStore(0, consumer.log)
    index = SubscriptionIndex(cast(Store, store))
    await index.refresh(force=True)
    ingest = wired(consumer, store, index, FakeDispatcher())
    # A subscription is made (through this process's API: the index follows in its own
    # task), and that refresh is still reading the change when an event it wants arrives.
    store.subscriptions.append(subscription("whk_new", now_ms() - 1000))
    store.revision += 1
    store.gate = asyncio.Event()
    following = asyncio.create_task(index.refresh())
    await asyncio.sleep(0)
    handled = asyncio.create_task(ingest._handle({TP: [Record(0, event())]}))
    await asyncio.sleep(0.01)
    store.gate.set()
    await following
    await handled
    # Matched against the index as it was (nothing), then again once the refresh in flight
    # had applied the new subscription, whose change this batch's own refresh did not read.
    assert [d.subscription_id for d in store.recorded] == ["whk_new"]


# -- a dead-letter topic that refuses writes -------------------------------------------------


@pytest.fixture
def quick_dead_letters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dead-letter writes waited for and retried in milliseconds, not seconds."""
    monkeypatch.setattr("service.deadletter.ACK_WAIT", 0.05)
    monkeypatch.setattr("service.deadletter.RETRY_FIRST", 0.01)


async def until_released(ingest: Ingest, consumer: FakeConsumer, tp: TopicPartition) -> None:
    """Runs the loop's dead-letter step until `tp` is no longer held."""
    async with asyncio.timeout(5):
        while tp in consumer.paused:
            await asyncio.sleep(0.02)
            ingest._retry_dead_letters()


@pytest.mark.usefixtures("quick_dead_letters")
@in_virtual_time
async def test_a_dead_letter_topic_that_refuses_writes_holds_only_its_partition() -> None:
    ingest, consumer, store, _ = make(failures=0)
    consumer.assigned = {TP, TP1}
    readiness = Readiness()
    ingest.register(readiness)
    producer = producer_of(ingest)
    producer.broken = UnknownTopicOrPartitionError()  # the topic is missing
    batch = {
        TP: [Record(0, event()), Record(1, POISON), Record(2, event())],
        TP1: [Record(5, event(), TP1)],
    }
    async with asyncio.timeout(5):
        await ingest._handle(batch)
    # The good records are recorded, even the one after the poison (a replay of it is a
    # no-op); only the poison's partition waits, and its offset stays at the poison.
    assert len(store.recorded) == 3
    assert consumer.paused == {TP}
    await ingest.commit_recorded(None)
    assert consumer.commits == {TP: 1, TP1: 6}
    assert (await readiness.report())["dead_letter"] is False
    registry = ingest._metrics.registry
    refused = {"error": "UnknownTopicOrPartitionError"}
    assert (registry.get_sample_value("webhooks_dlq_write_failures_total", refused) or 0) >= 1
    assert registry.get_sample_value("webhooks_partitions_held_for_dlq") == 1

    producer.broken = None  # the topic is created
    await until_released(ingest, consumer, TP)
    await ingest.commit_recorded(None)
    assert consumer.commits == {TP: 3, TP1: 6}
    ((_, value, headers),) = producer.sent
    assert value == POISON
    assert headers["x-dlq-source-offset"] == b"1"
    assert (await readiness.report())["dead_letter"] is True
    assert registry.get_sample_value("webhooks_partitions_held_for_dlq") == 0


@pytest.mark.usefixtures("quick_dead_letters")
@in_virtual_time
async def test_a_non_retriable_dead_letter_error_backs_off_instead_of_crashing() -> None:
    ingest, consumer, _, _ = make(failures=0)
    producer = producer_of(ingest)
    producer.broken = TopicAuthorizationFailedError()
    async with asyncio.timeout(5):
        await ingest._handle({TP: [Record(3, POISON)]})
    assert consumer.paused == {TP}
    ingest._retry_dead_letters()  # retried, not raised
    producer.broken = None  # the ACL is fixed
    await until_released(ingest, consumer, TP)
    # Only a size error costs the record its value.
    assert [value for _, value, _ in producer.sent] == [POISON]
    await ingest.commit_recorded(None)
    assert consumer.commits == {TP: 4}


@pytest.mark.usefixtures("quick_dead_letters")
@in_virtual_time
async def test_a_record_too_large_for_the_dead_letter_topic_goes_without_its_value() -> None:
    ingest, consumer, _, _ = make(failures=0)
    producer = producer_of(ingest)
    producer.too_large_with_value = True
    await ingest._handle({TP: [Record(3, POISON)]})
    await until_released(ingest, consumer, TP)
    ((_, value, headers),) = producer.sent
    assert value is None
    assert headers["x-dlq-value-dropped"] == str(len(POISON)).encode()


@pytest.mark.usefixtures("quick_dead_letters")
@in_virtual_time
async def test_stop_ends_the_loop_while_dead_lettering_hangs_and_commits_only_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingest, consumer, store, _ = make(failures=0)
    producer_of(ingest).broken = "hang"
    consumer.script = [{TP: [Record(0, event()), Record(1, POISON), Record(2, event())]}]

    async def start() -> None:
        ingest.joined = True

    monkeypatch.setattr(ingest, "_start", start)
    task = asyncio.create_task(ingest._run())
    async with asyncio.timeout(5):
        while len(store.recorded) < 2 or consumer.log.count("poll") < 5:
            await asyncio.sleep(0.01)  # polling goes on meanwhile
    ingest._stopping.set()
    await asyncio.wait_for(task, 5)
    assert consumer.commits == {TP: 1}
    assert consumer.log[-1] == "stop"


@pytest.mark.usefixtures("quick_dead_letters")
@in_virtual_time
async def test_a_held_partition_revoked_is_committed_up_to_its_poison_and_let_go() -> None:
    ingest, consumer, _, _ = make(failures=0)
    producer_of(ingest).broken = "hang"
    await ingest._handle({TP: [Record(0, event()), Record(1, POISON)]})
    await _Listener(ingest).on_partitions_revoked({TP})
    assert consumer.commits == {TP: 1}
    assert await ingest.dead_letters_flowing()


@in_virtual_time
async def test_a_partition_revoked_while_its_dead_letters_are_awaited_is_let_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # aiokafka runs the rebalance listener in its own task, so a revocation can come while a
    # batch waits for its dead-letter acknowledgements.
    monkeypatch.setattr("service.deadletter.ACK_WAIT", 0.3)
    ingest, consumer, _, _ = make(failures=0)
    producer_of(ingest).broken = "hang"
    handling = asyncio.create_task(ingest._handle({TP: [Record(0, POISON), Record(1, event())]}))
    await asyncio.sleep(0.05)
    await _Listener(ingest).on_partitions_revoked({TP})
    consumer.assigned = set()
    await asyncio.wait_for(handling, 5)
    assert consumer.paused == set()
    assert await ingest.dead_letters_flowing()
    assert consumer.commits == {}  # the new owner replays the batch
